//! What every task of one worker shares, and how they wait and retry.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::config::WorkerConfig;
use super::watchdog::Attempts;
use crate::hooks::JobEvent;
use crate::registry::Kinds;
use crate::storage::group::WriteGroup;
use crate::storage::{Attempt, Backend, WorkerInfo};

/// State every task of one worker shares.
pub(crate) struct Shared<DB: Backend> {
    pub pool: Pool<DB>,
    /// The watchdog thread's pool, for the leader's services that run
    /// there (the testing kit, which runs none, passes `pool`).
    pub maintenance_pool: Pool<DB>,
    pub kinds: Kinds<DB>,
    pub config: WorkerConfig,
    pub worker: WorkerInfo,
    /// The pool's identity (see `Driver::pool_identity`), shared by every
    /// job's signal.
    pub database: Arc<str>,
    pub completions: mpsc::Sender<Attempt>,
    /// The write group every write of this worker joins, with group commit.
    pub group: Option<Arc<WriteGroup<DB>>>,
    /// Cancelled when shutdown gives up waiting for running jobs.
    pub cancel_jobs: CancellationToken,
    /// Cancelled when the worker's last job has ended.
    pub stop_maintenance: CancellationToken,
    /// Whether this worker leads; see [`super::leader`].
    pub leading: watch::Receiver<bool>,
    /// Every attempt's end, for [`crate::WorkerHandle::events`].
    pub events: broadcast::Sender<JobEvent>,
    /// The running attempts the watchdog watches (a worker's; the testing
    /// kit runs without one).
    pub attempts: Option<Arc<Attempts>>,
}

impl<DB: Backend> Shared<DB> {
    pub fn poll_interval(&self) -> Duration {
        self.config
            .poll_interval
            .unwrap_or(DB::DEFAULT_POLL_INTERVAL)
    }

    /// `WorkerConfig::database_timeout` on this backend.
    pub fn database_timeout(&self) -> Option<Duration> {
        self.config.database_timeout_on::<DB>()
    }

    /// Whether this worker leads now.
    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

/// Awaits `work`, or gives it up after `limit` (dropping it abandons its
/// statement and its connection): `Err` says so, for the caller's log.
pub(crate) async fn within<T>(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, NoAnswer> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| NoAnswer(limit)),
        None => Ok(work.await),
    }
}

/// [`within`] for offload's own calls: a lost answer is an error like any
/// other of the database's.
pub(crate) async fn answered<T>(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    within(limit, work).await.map_err(crate::Error::from)?
}

/// A statement given up after `database_timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoAnswer(pub Duration);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the database did not answer within {:?} (database_timeout); the statement is given up",
            self.0
        )
    }
}

impl From<NoAnswer> for crate::Error {
    fn from(no_answer: NoAnswer) -> Self {
        crate::Error::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            no_answer.to_string(),
        )))
    }
}

/// Sleeps `delay`, or less if `stop` fires. Returns whether it fired.
pub(crate) async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stop.cancelled() => true,
    }
}

/// Doubles `delay` up to five seconds: the pause between retries of a
/// database call that failed.
pub(crate) fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(Duration::from_secs(5))
}
