//! Code that runs around every attempt ([`JobHook`]), and what it and the
//! worker's event stream are told about each attempt ([`JobEvent`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

/// The job an attempt belongs to, as hooks see it.
///
/// ```
/// use futures::future::BoxFuture;
/// use offload::{JobHook, JobInfo};
///
/// struct LogStarts;
///
/// impl JobHook for LogStarts {
///     fn before_attempt<'a>(&'a self, job: &'a JobInfo) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             tracing::info!(job.id, job.kind, job.attempt, job.max_attempts, "starting");
///         })
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// The queue it runs on.
    pub queue: String,
    /// This attempt's number, starting at 1.
    pub attempt: i32,
    /// Attempts before the job is discarded.
    pub max_attempts: i32,
}

/// How one attempt ended, once its outcome is recorded.
///
/// ```
/// use offload::AttemptOutcome;
/// let outcome = AttemptOutcome::Discarded { error: "smtp refused".into() };
/// assert_eq!(outcome.label(), "discarded");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Done; its transaction committed.
    Completed,
    /// Failed; it runs again at `at`.
    Retrying {
        /// The failure.
        error: String,
        /// When it runs again.
        at: DateTime<Utc>,
    },
    /// Asked to run again later, without using an attempt.
    Snoozed {
        /// When it runs again.
        until: DateTime<Utc>,
    },
    /// Stopped for good, as `cancelled` (by itself, or by an operator while
    /// it ran).
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Stopped for good, as `discarded`: its last attempt failed, or it
    /// asked to be discarded.
    Discarded {
        /// The last error.
        error: String,
    },
    /// Interrupted by the worker's shutdown and handed back to the queue.
    Requeued {
        /// Why.
        reason: String,
    },
}

impl AttemptOutcome {
    /// A short name: `completed`, `retrying`, `snoozed`, `cancelled`,
    /// `discarded` or `requeued`.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Retrying { .. } => "retrying",
            AttemptOutcome::Snoozed { .. } => "snoozed",
            AttemptOutcome::Cancelled { .. } => "cancelled",
            AttemptOutcome::Discarded { .. } => "discarded",
            AttemptOutcome::Requeued { .. } => "requeued",
        }
    }
}

/// One attempt, ended: what hooks' [`after_attempt`](JobHook::after_attempt)
/// get and [`WorkerHandle::events`](crate::WorkerHandle::events) sends.
///
/// ```no_run
/// use offload::{AttemptOutcome, Registry, Worker, WorkerConfig};
/// # async fn example(pool: sqlx::SqlitePool) -> offload::Result<()> {
/// let worker = Worker::new(pool, Registry::new(), WorkerConfig::default());
/// let mut events = worker.events();
/// let handle = worker.start().await?;
/// tokio::spawn(async move {
///     while let Ok(event) = events.recv().await {
///         if let AttemptOutcome::Retrying { error, at } = &event.outcome {
///             eprintln!("job {} failed ({error}); again at {at}", event.job.id);
///         }
///     }
/// });
/// # handle.shutdown().await; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job.
    pub job: JobInfo,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// How long the attempt ran.
    pub duration: Duration,
}

/// Code run around every attempt of every kind in a
/// [`Registry`](crate::Registry): error reporting (Sentry), audit rows,
/// tracing context, timing. Every method has a default that does nothing.
///
/// Hooks run in the attempt's task: a slow hook holds the job's slot, so
/// hand slow work to a channel or a spawned task. A hook that panics is
/// logged and does not change the job's outcome (`around` excepted: a panic
/// there fails the attempt).
///
/// ```
/// use futures::future::BoxFuture;
/// use offload::{AttemptOutcome, JobEvent, JobHook, JobInfo};
///
/// /// Counts discarded jobs, and runs each attempt inside a span of its own.
/// struct Audit {
///     discarded: std::sync::atomic::AtomicU64,
/// }
///
/// impl JobHook for Audit {
///     fn around<'a>(&'a self, job: &'a JobInfo, attempt: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
///         use tracing::Instrument;
///         Box::pin(attempt.instrument(tracing::info_span!("audited", job.id)))
///     }
///
///     fn on_discard<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             if let AttemptOutcome::Discarded { error } = &event.outcome {
///                 tracing::error!(id = event.job.id, %error, "job discarded");
///             }
///             self.discarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         })
///     }
/// }
///
/// let registry = offload::Registry::<sqlx::Sqlite>::new()
///     .hook(Audit { discarded: Default::default() });
/// # let _ = registry;
/// ```
pub trait JobHook: Send + Sync + 'static {
    /// Wraps the attempt: the job's own code runs when `attempt` is polled,
    /// so await it exactly once (to set a task-local, a tracing span or an
    /// error-reporting hub around it). Hooks nest in the order added, the
    /// first outermost.
    fn around<'a>(&'a self, job: &'a JobInfo, attempt: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        let _ = job;
        attempt
    }

    /// Runs before the attempt, once the job is claimed.
    fn before_attempt<'a>(&'a self, job: &'a JobInfo) -> BoxFuture<'a, ()> {
        let _ = job;
        Box::pin(std::future::ready(()))
    }

    /// Runs after the attempt's outcome is written, whatever it was (a
    /// completion without a transaction of its own: once handed to the
    /// batched completer).
    fn after_attempt<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
        let _ = event;
        Box::pin(std::future::ready(()))
    }

    /// Runs after a job is discarded (after [`after_attempt`](Self::after_attempt)).
    fn on_discard<'a>(&'a self, event: &'a JobEvent) -> BoxFuture<'a, ()> {
        let _ = event;
        Box::pin(std::future::ready(()))
    }
}
