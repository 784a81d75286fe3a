//! The bench's own SQL: scratch databases, the `bench_counters` table
//! that transactional jobs update, and the server readings behind a
//! measure's WAL and CPU per job. One module per backend, like offload's.

pub mod postgres;
pub mod sqlite;

use std::future::Future;

use offload::Backend;
use sqlx::Pool;

use crate::report::ServerCost;

/// The server's counters before a measured phase, taken by
/// [`BenchStore::server_reading`] and compared by [`BenchStore::server_cost`].
#[derive(Debug, Clone)]
pub struct ServerReading {
    /// Where the server's WAL ended, as the server prints a `pg_lsn`.
    pub(crate) wal_position: String,
    /// CPU clock ticks (user + system) of each server process serving the
    /// scratch database, by pid; `None` when `/proc` could not be read.
    pub(crate) cpu_ticks: Option<std::collections::HashMap<i32, u64>>,
}

/// What the bench needs from a backend beyond [`offload::Backend`].
pub trait BenchStore: Backend {
    /// Deletes every job, so that each phase starts from an empty table.
    fn clear_jobs(pool: &Pool<Self>) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Creates `bench_counters` (if needed) with `rows` rows at zero.
    fn reset_counters(
        pool: &Pool<Self>,
        rows: i64,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Adds one to counter `id`, on the job's own transaction.
    fn bump_counter(
        conn: &mut Self::Connection,
        id: i64,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// The sum of all counters: the number of committed bumps.
    fn counter_total(pool: &Pool<Self>) -> impl Future<Output = sqlx::Result<i64>> + Send;

    /// Reads the server's WAL position and the CPU time of the processes
    /// serving the scratch database, just before a measured phase. `None`
    /// on a backend without a server (SQLite).
    fn server_reading(
        pool: &Pool<Self>,
    ) -> impl Future<Output = sqlx::Result<Option<ServerReading>>> + Send;

    /// What the server spent since `before`, per job of the `jobs` the
    /// phase handled. `None` when `before` is.
    fn server_cost(
        pool: &Pool<Self>,
        before: Option<ServerReading>,
        jobs: u64,
    ) -> impl Future<Output = sqlx::Result<Option<ServerCost>>> + Send;
}
