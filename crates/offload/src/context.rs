//! What a running job receives.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::job::JobError;
use crate::storage::group::{JobTx, WriteGroup};
use crate::storage::{Backend, BackendTx, ClaimedJob, SqlTarget};

/// A running job's own view of the world: its transaction, its identity,
/// the application state `S` and its cancellation signal. It never holds the
/// enqueuing request's session.
///
/// The transaction is opened on the first call to [`tx`](JobContext::tx), so
/// a job that does not touch the database holds no connection. Do slow,
/// non-database work (HTTP calls, mail) *before* opening it: an open
/// transaction pins a pooled connection and, on PostgreSQL, holds back
/// vacuum.
///
/// ```
/// use offload::{Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct Archive { note_id: i64 }
///
/// impl Job<Sqlite> for Archive {
///     const KIND: &'static str = "archive";
///     async fn run(self, ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
///         if ctx.attempt() > 1 {
///             tracing::info!(id = ctx.id(), attempt = ctx.attempt(), "trying again");
///         }
///         // Slow work first, then the transaction: it commits with the
///         // job's completion.
///         ctx.sleep(std::time::Duration::from_millis(1)).await?;
///         sqlx::query("UPDATE notes SET archived = 1 WHERE id = ?1")
///             .bind(self.note_id)
///             .execute(ctx.tx().await?)
///             .await?;
///         Ok(())
///     }
/// }
/// ```
pub struct JobContext<DB: Backend, S = ()> {
    job: ClaimedJob,
    pool: Pool<DB>,
    /// The worker's write group, which the job's transaction joins.
    group: Option<Arc<WriteGroup<DB>>>,
    tx: Option<JobTx<DB>>,
    cancel: CancellationToken,
    state: Arc<S>,
}

impl<DB: Backend, S> JobContext<DB, S> {
    pub(crate) fn new(
        job: ClaimedJob,
        pool: Pool<DB>,
        group: Option<Arc<WriteGroup<DB>>>,
        cancel: CancellationToken,
        state: Arc<S>,
    ) -> Self {
        Self {
            job,
            pool,
            group,
            tx: None,
            cancel,
            state,
        }
    }

    /// The application state the [`Registry`](crate::Registry) was built
    /// with ([`Registry::with_state`](crate::Registry::with_state)).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The application state, shared, to move into spawned or blocking work.
    pub fn state_arc(&self) -> Arc<S> {
        self.state.clone()
    }

    /// The job's id.
    pub fn id(&self) -> i64 {
        self.job.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// The queue it runs on.
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> i32 {
        self.job.attempt
    }

    /// Attempts before the job is discarded.
    pub fn max_attempts(&self) -> i32 {
        self.job.max_attempts
    }

    /// The job's own transaction, begun on first use. It commits, with the
    /// job's completion, only when [`Job::run`](crate::Job::run) returns
    /// `Ok`; any error, panic, timeout or cancellation rolls it back.
    ///
    /// With group commit (the default on SQLite, see
    /// [`WorkerConfig::group_commit`](crate::WorkerConfig::group_commit)) it
    /// is a savepoint in a transaction the worker shares among its writes:
    /// still all or nothing with the completion, committed with the next
    /// group a moment later. Never send `COMMIT` or `ROLLBACK` on it.
    pub async fn tx(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => {
                let job = self.job.attempt_key();
                JobTx::begin(&self.pool, self.group.as_deref(), job).await?
            }
        };
        Ok(self.tx.insert(tx).conn())
    }

    /// The job's transaction as the backend's own connection type, for SQL
    /// written per backend in a job generic over `DB`.
    ///
    /// ```
    /// use offload::{Backend, BackendTx, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Touch { id: i64 }
    /// impl<DB: Backend> Job<DB> for Touch {
    ///     const KIND: &'static str = "touch";
    ///     async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
    ///         match ctx.backend_tx().await? {
    ///             BackendTx::Postgres(conn) => {
    ///                 sqlx::query("UPDATE notes SET seen = now() WHERE id = $1")
    ///                     .bind(self.id).execute(conn).await?;
    ///             }
    ///             BackendTx::Sqlite(conn) => {
    ///                 sqlx::query("UPDATE notes SET seen = unixepoch() WHERE id = ?1")
    ///                     .bind(self.id).execute(conn).await?;
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub async fn backend_tx(&mut self) -> Result<BackendTx<'_>, sqlx::Error> {
        Ok(DB::backend_tx(self.tx().await?))
    }

    /// Whether the job has opened its transaction.
    pub fn has_tx(&self) -> bool {
        self.tx.is_some()
    }

    pub(crate) fn take_tx(&mut self) -> Option<JobTx<DB>> {
        self.tx.take()
    }

    /// The pool, for reads that need not be part of the job's transaction.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Whether the worker asked this job to stop (shutdown or timeout).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the worker asks this job to stop (shutdown, or an
    /// operator cancelled it). Long jobs can `select!` on it to stop early.
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    /// Sleeps for `delay`, returning early with [`JobError::Failed`] if the
    /// job is cancelled meanwhile.
    pub fn sleep(
        &self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), JobError>> + Send + 'static {
        let cancelled = self.cancelled();
        async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => Ok(()),
                () = cancelled => Err(JobError::failed("cancelled while sleeping")),
            }
        }
    }

    /// Runs CPU-heavy `work` on the blocking thread pool, so it does not
    /// stall other jobs on the async workers. A panic in `work` becomes a
    /// failed attempt.
    pub fn blocking<T, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<T, JobError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Marked, so a panic in it is recorded, not printed.
        let task = tokio::task::spawn_blocking(move || crate::quiet_panic::quietly(work));
        async move {
            task.await.map_err(|error| {
                if error.is_panic() {
                    JobError::from_panic("blocking work panicked", error.into_panic().as_ref())
                } else {
                    JobError::failed("blocking work was cancelled")
                }
            })
        }
    }
}

/// [`Sql`](crate::Sql) run on a job's context goes into the job's own
/// transaction, opened if needed.
impl<DB: Backend, S: Send + Sync> SqlTarget<DB> for JobContext<DB, S> {
    async fn connection(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        self.tx().await
    }
}
