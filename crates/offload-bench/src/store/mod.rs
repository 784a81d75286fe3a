//! The bench's own SQL: scratch databases and the `bench_counters` table
//! that transactional jobs update. One module per backend, like offload's.

pub mod postgres;
pub mod sqlite;

use std::future::Future;

use offload::Backend;
use sqlx::Pool;

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
}
