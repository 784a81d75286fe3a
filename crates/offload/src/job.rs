//! The [`Job`] trait and how a job reports failure.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::JobContext;
use crate::defaults::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};
use crate::storage::Backend;

/// A kind of background work: its args are the struct's fields, stored as
/// JSON, and [`run`](Job::run) does the work on database `DB`, with the
/// application state `S` the [`Registry`](crate::Registry) was built with
/// (`()` when there is none).
///
/// A job receives only its own [`JobContext`]: the enqueuing request's
/// transaction cannot reach it (a `Job` is `'static` and serializable, which
/// a borrowed transaction is not).
///
/// One definition can serve both backends: implement `Job<DB>` for every
/// `DB: Backend` and write its SQL once with [`Sql`](crate::Sql), or per
/// backend through [`JobContext::backend_tx`] (see the crate's "Both
/// backends" section).
///
/// ```
/// use offload::{Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// /// Marks a record processed, in the job's own transaction.
/// #[derive(Serialize, Deserialize)]
/// struct MarkProcessed {
///     record_id: i64,
/// }
///
/// impl Job<Sqlite> for MarkProcessed {
///     const KIND: &'static str = "mark_processed";
///     const MAX_ATTEMPTS: i32 = 5;
///
///     async fn run(self, ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
///         sqlx::query("UPDATE records SET status = 'done' WHERE id = ?1")
///             .bind(self.record_id)
///             .execute(ctx.tx().await?)
///             .await?;
///         // The update and the job's "completed" mark commit together.
///         Ok(())
///     }
/// }
/// ```
pub trait Job<DB: Backend, S: Send + Sync + 'static = ()>:
    Serialize + DeserializeOwned + Send + 'static
{
    /// The name stored with each job; it maps a row back to this type.
    const KIND: &'static str;
    /// The queue this kind runs on unless the enqueue names another.
    const QUEUE: &'static str = DEFAULT_QUEUE;
    /// Lower runs first.
    const PRIORITY: i16 = 0;
    /// Attempts before the job is discarded.
    const MAX_ATTEMPTS: i32 = DEFAULT_MAX_ATTEMPTS;
    /// Longest one attempt may run; it is then cancelled and rolled back.
    /// `None` lets it run until done.
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));

    /// Delay before attempt `attempt + 1` after attempt `attempt` failed.
    fn backoff(attempt: i32) -> Duration {
        crate::backoff::exponential(attempt)
    }

    /// The key a partitioned queue ([`Partition`](crate::Partition)) takes
    /// turns by and caps, read from the args at enqueue: a customer or
    /// tenant id, say. `None` (the default) leaves the job keyless unless
    /// the enqueue sets one ([`EnqueueOptions::partition_key`](crate::EnqueueOptions::partition_key)).
    /// Returning [`Self::KIND`] partitions a shared queue by kind.
    ///
    /// ```
    /// # use offload::{Job, JobContext, JobError};
    /// # use sqlx::Sqlite;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Export { customer_id: i64 }
    ///
    /// impl Job<Sqlite> for Export {
    ///     const KIND: &'static str = "export";
    ///     fn partition_key(&self) -> Option<String> {
    ///         Some(self.customer_id.to_string())
    ///     }
    ///     async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
    ///         Ok(())
    ///     }
    /// }
    /// assert_eq!(Job::<Sqlite>::partition_key(&Export { customer_id: 7 }).as_deref(), Some("7"));
    /// ```
    fn partition_key(&self) -> Option<String> {
        None
    }

    /// Does the work. `Ok(())` commits the job's transaction (if it opened
    /// one) together with its completion; an error rolls it back.
    fn run(self, ctx: &mut JobContext<DB, S>) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Why a job did not complete, and what happens next.
///
/// Any `std::error::Error` converts into [`JobError::Failed`], so `?` works
/// inside [`Job::run`].
///
/// ```
/// use std::time::Duration;
/// use offload::JobError;
///
/// let later = JobError::snooze(Duration::from_secs(30));
/// assert!(matches!(later, JobError::Snooze(_)));
/// let failed: JobError = std::io::Error::other("smtp refused").into();
/// assert_eq!(failed.to_string(), "smtp refused");
/// ```
pub enum JobError {
    /// Failed: retried with back-off, discarded after the last attempt.
    Failed(Box<dyn std::error::Error + Send + Sync>),
    /// Not ready: run again after this delay. Not a failure, uses no attempt.
    Snooze(Duration),
    /// Stop for good, as `cancelled`.
    Cancel(String),
    /// Stop for good, as `discarded`.
    Discard(String),
}

impl JobError {
    /// A failure with this message, to be retried.
    pub fn failed(message: impl fmt::Display) -> Self {
        JobError::Failed(message.to_string().into())
    }

    /// Run again after `delay`.
    pub fn snooze(delay: Duration) -> Self {
        JobError::Snooze(delay)
    }

    /// Stop for good, as `cancelled`.
    pub fn cancel(reason: impl fmt::Display) -> Self {
        JobError::Cancel(reason.to_string())
    }

    /// Stop for good, as `discarded`.
    pub fn discard(reason: impl fmt::Display) -> Self {
        JobError::Discard(reason.to_string())
    }
}

impl JobError {
    /// A failure made of a caught panic's payload, so a panic is recorded
    /// with its message.
    pub(crate) fn from_panic(context: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(message) = payload.downcast_ref::<&str>() {
            (*message).to_owned()
        } else if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        JobError::failed(format!("{context}: {message}"))
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError::Failed(Box::new(error))
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Failed(error) => {
                write!(f, "{error}")?;
                let mut source = error.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            JobError::Snooze(delay) => write!(f, "snoozed for {delay:?}"),
            JobError::Cancel(reason) => write!(f, "cancelled: {reason}"),
            JobError::Discard(reason) => write!(f, "discarded: {reason}"),
        }
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
