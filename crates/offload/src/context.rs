//! What a running job receives.

use std::time::Duration;

use sqlx::{Pool, Transaction};
use std::future::Future;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::job::JobError;
use crate::storage::{Backend, ClaimedJob};

/// A running job's own view of the world: its transaction, its identity and
/// its cancellation signal. It never holds the enqueuing request's session.
///
/// The transaction is opened on the first call to [`tx`](JobContext::tx), so
/// a job that does not touch the database holds no connection. Do slow,
/// non-database work (HTTP calls, mail) *before* opening it: an open
/// transaction pins a pooled connection and, on PostgreSQL, holds back
/// vacuum.
pub struct JobContext<DB: Backend> {
    job: ClaimedJob,
    pool: Pool<DB>,
    tx: Option<Transaction<'static, DB>>,
    cancel: CancellationToken,
}

impl<DB: Backend> JobContext<DB> {
    pub(crate) fn new(job: ClaimedJob, pool: Pool<DB>, cancel: CancellationToken) -> Self {
        Self {
            job,
            pool,
            tx: None,
            cancel,
        }
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
    pub async fn tx(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => DB::begin_write(&self.pool).await?,
        };
        Ok(&mut **self.tx.insert(tx))
    }

    /// Whether the job has opened its transaction.
    pub fn has_tx(&self) -> bool {
        self.tx.is_some()
    }

    pub(crate) fn take_tx(&mut self) -> Option<Transaction<'static, DB>> {
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
        let task = tokio::task::spawn_blocking(work);
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
