//! A hand-written baseline: the least job queue that does the same work as
//! offload in each measure, written against the database directly, so that a
//! run can say how far offload is from what a user could write by hand.
//!
//! The schema is the least that does the job: `baseline_jobs` (`id`,
//! `queue`, `state`, `args`, `attempt`, `run_at`) with one partial index for
//! the claim, and `baseline_counters` for the transactional drain. Both live
//! in the run's scratch database beside offload's tables and never touch
//! them. On PostgreSQL the baseline uses sqlx on offload's own pool (same
//! size, same server); on SQLite it uses rusqlite on the same scratch file,
//! as an embedded user could.
//!
//! Every measure starts from an empty table and checks its own result
//! (rows completed or left, counter sum), failing loudly otherwise.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::future::Future;
use std::time::Duration;

use sqlx::Pool;

use crate::report::{Latency, Settings, Throughput};
use crate::store::BenchStore;

/// One backend's baseline: each method is the counterpart of an offload
/// phase with the same name and arguments.
pub(crate) trait Baseline: Send + Sync {
    /// Inserts `jobs` no-op jobs, `batch` per statement (PostgreSQL) or per
    /// transaction (SQLite), from up to `tasks` tasks.
    fn bulk_insert(
        &self,
        jobs: u64,
        batch: usize,
        tasks: usize,
    ) -> impl Future<Output = anyhow::Result<Throughput>> + Send;

    /// Drains a backlog of `jobs` no-op jobs (inserted untimed, `batch` at a
    /// time); with `delete`, completed rows are deleted instead of kept.
    fn drain(
        &self,
        jobs: u64,
        batch: usize,
        delete: bool,
    ) -> impl Future<Output = anyhow::Result<Throughput>> + Send;

    /// Drains `jobs` jobs that each add one to a counter row (of
    /// `counter_rows`) and complete themselves in one transaction, at most
    /// `concurrency` transactions at once.
    fn drain_tx(
        &self,
        jobs: u64,
        counter_rows: i64,
        batch: usize,
        concurrency: usize,
    ) -> impl Future<Output = anyhow::Result<Throughput>> + Send;

    /// Enqueues one job per insert at `rate` jobs/s for `duration` while a
    /// woken worker claims them; the delays go through the same histogram
    /// code as offload's latency phase.
    fn latency(
        &self,
        rate: f64,
        duration: Duration,
    ) -> impl Future<Output = anyhow::Result<Latency>> + Send;
}

/// A backend the bench has a baseline for.
pub(crate) trait WithBaseline: BenchStore {
    /// The baseline on this backend.
    type Baseline: Baseline;

    /// Creates the baseline's tables in the scratch database at `url`, whose
    /// offload pool is `pool`.
    fn baseline(
        pool: &Pool<Self>,
        url: &str,
        settings: &Settings,
    ) -> impl Future<Output = anyhow::Result<Self::Baseline>> + Send;
}

/// Completions a baseline writes per statement or transaction, and claims
/// per statement: offload's settings, so both sides batch alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batches {
    /// Most jobs claimed per statement.
    pub fetch: usize,
    /// Most completions per statement or transaction.
    pub complete: usize,
    /// Jobs claimed but not yet completed, at most (offload's queue
    /// concurrency for no-op jobs).
    pub in_flight: usize,
}

impl Batches {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            fetch: settings.fetch_batch.max(1),
            complete: settings.completer_batch.max(1),
            in_flight: settings.concurrency.max(1),
        }
    }
}
