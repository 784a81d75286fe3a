//! Many workers on one database: the jobs, the worker settings and the
//! SQL the multi-node tests need, per backend.

use std::future::Future;
use std::time::Duration;

use offload::{
    Job, JobContext, JobError, Partition, PeriodicJob, QueueConfig, RateLimit, Registry,
    WorkerConfig,
};
use serde::{Deserialize, Serialize};
use sqlx::{Pool, Postgres, Sqlite};

use super::{fast_config, TestDb};

/// The periodic job's name.
pub const TICK_SCHEDULE: &str = "tick_every_second";
/// The queue with a global limit.
pub const LIMITED_QUEUE: &str = "limited";
/// Its limit over all workers.
pub const GLOBAL_LIMIT: usize = 2;
/// The queue with a rate limit.
pub const RATED_QUEUE: &str = "rated";
/// Its limit over all workers: starts per [`RATE_PERIOD_MS`].
pub const RATE_LIMIT: u32 = 6;
/// The rate limit's period.
pub const RATE_PERIOD_MS: u64 = 400;
/// The partitioned queue.
pub const PARTITIONED_QUEUE: &str = "per_key";
/// Its cap per key over all workers.
pub const PER_KEY_LIMIT: usize = 2;
/// Slots per worker on every queue, more than the global limit.
pub const LOCAL_CONCURRENCY: usize = 4;

/// What the multi-node tests need beyond [`TestDb`].
pub trait ClusterDb: TestDb {
    /// Creates the concurrency gauges (a row per key: running now, most
    /// seen).
    fn create_gauge(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    /// One more job of `key` running; raises its most seen. Its own
    /// statement.
    fn enter_gauge(
        pool: &Pool<Self>,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// One job of `key` fewer running.
    fn leave_gauge(
        pool: &Pool<Self>,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// (key, running now, most seen) of every key, by key.
    fn gauges(pool: &Pool<Self>) -> impl Future<Output = Vec<(String, i64, i64)>> + Send;
    /// `run_at` of every job of `kind`, in microseconds, in order.
    fn run_ats(pool: &Pool<Self>, kind: &str) -> impl Future<Output = Vec<i64>> + Send;
    /// `attempted_at` of every job of `kind`, in microseconds, in order.
    fn attempted_ats(pool: &Pool<Self>, kind: &str) -> impl Future<Output = Vec<i64>> + Send;
    /// Pids of the registered workers.
    fn worker_pids(pool: &Pool<Self>) -> impl Future<Output = Vec<i32>> + Send;
}

impl ClusterDb for Postgres {
    async fn create_gauge(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE gauge (key text PRIMARY KEY, running_now bigint NOT NULL, max_seen bigint NOT NULL)",
        )
        .execute(pool)
        .await
        .expect("gauge table");
    }

    async fn enter_gauge(pool: &Pool<Self>, key: &str) -> Result<(), sqlx::Error> {
        // SET reads the row as it was before this update, under its lock.
        sqlx::query(
            "INSERT INTO gauge VALUES ($1, 1, 1) ON CONFLICT (key) DO UPDATE \
             SET running_now = gauge.running_now + 1, \
                 max_seen = GREATEST(gauge.max_seen, gauge.running_now + 1)",
        )
        .bind(key)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn leave_gauge(pool: &Pool<Self>, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gauge SET running_now = running_now - 1 WHERE key = $1")
            .bind(key)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn gauges(pool: &Pool<Self>) -> Vec<(String, i64, i64)> {
        sqlx::query_as("SELECT key, running_now, max_seen FROM gauge ORDER BY key")
            .fetch_all(pool)
            .await
            .expect("gauges")
    }

    async fn run_ats(pool: &Pool<Self>, kind: &str) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT (extract(epoch FROM run_at) * 1000000)::int8 FROM offload_jobs \
             WHERE kind = $1 ORDER BY run_at",
        )
        .bind(kind)
        .fetch_all(pool)
        .await
        .expect("run_ats")
    }

    async fn attempted_ats(pool: &Pool<Self>, kind: &str) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT (extract(epoch FROM attempted_at) * 1000000)::int8 FROM offload_jobs \
             WHERE kind = $1 ORDER BY attempted_at",
        )
        .bind(kind)
        .fetch_all(pool)
        .await
        .expect("attempted_ats")
    }

    async fn worker_pids(pool: &Pool<Self>) -> Vec<i32> {
        sqlx::query_scalar("SELECT pid FROM offload_workers ORDER BY pid")
            .fetch_all(pool)
            .await
            .expect("workers")
    }
}

impl ClusterDb for Sqlite {
    async fn create_gauge(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE gauge (key TEXT PRIMARY KEY, running_now INTEGER NOT NULL, max_seen INTEGER NOT NULL)",
        )
        .execute(pool)
        .await
        .expect("gauge table");
    }

    async fn enter_gauge(pool: &Pool<Self>, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO gauge VALUES (?1, 1, 1) ON CONFLICT (key) DO UPDATE \
             SET running_now = running_now + 1, max_seen = max(max_seen, running_now + 1)",
        )
        .bind(key)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn leave_gauge(pool: &Pool<Self>, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gauge SET running_now = running_now - 1 WHERE key = ?1")
            .bind(key)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn gauges(pool: &Pool<Self>) -> Vec<(String, i64, i64)> {
        sqlx::query_as("SELECT key, running_now, max_seen FROM gauge ORDER BY key")
            .fetch_all(pool)
            .await
            .expect("gauges")
    }

    async fn run_ats(pool: &Pool<Self>, kind: &str) -> Vec<i64> {
        sqlx::query_scalar("SELECT run_at FROM offload_jobs WHERE kind = ?1 ORDER BY run_at")
            .bind(kind)
            .fetch_all(pool)
            .await
            .expect("run_ats")
    }

    async fn attempted_ats(pool: &Pool<Self>, kind: &str) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT attempted_at FROM offload_jobs WHERE kind = ?1 ORDER BY attempted_at",
        )
        .bind(kind)
        .fetch_all(pool)
        .await
        .expect("attempted_ats")
    }

    async fn worker_pids(pool: &Pool<Self>) -> Vec<i32> {
        sqlx::query_scalar("SELECT pid FROM offload_workers ORDER BY pid")
            .fetch_all(pool)
            .await
            .expect("workers")
    }
}

/// The periodic job: does nothing; its rows are what the tests count.
#[derive(Serialize, Deserialize)]
pub struct Tick;

impl<DB: ClusterDb> Job<DB> for Tick {
    const KIND: &'static str = "tick";
    const QUEUE: &'static str = "ticks";

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

/// Counts itself in the gauge while it runs.
#[derive(Serialize, Deserialize)]
pub struct MeasureConcurrency {
    pub millis: u64,
}

impl<DB: ClusterDb> Job<DB> for MeasureConcurrency {
    const KIND: &'static str = "measure_concurrency";
    const QUEUE: &'static str = LIMITED_QUEUE;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        DB::enter_gauge(ctx.pool(), "all").await?;
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        DB::leave_gauge(ctx.pool(), "all").await?;
        Ok(())
    }
}

/// Counts itself in its key's gauge while it runs, on the partitioned
/// queue.
#[derive(Serialize, Deserialize)]
pub struct MeasureKeyConcurrency {
    pub key: String,
    pub millis: u64,
}

impl<DB: ClusterDb> Job<DB> for MeasureKeyConcurrency {
    const KIND: &'static str = "measure_key_concurrency";
    const QUEUE: &'static str = PARTITIONED_QUEUE;

    fn partition_key(&self) -> Option<String> {
        Some(self.key.clone())
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        DB::enter_gauge(ctx.pool(), &self.key).await?;
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        DB::leave_gauge(ctx.pool(), &self.key).await?;
        Ok(())
    }
}

/// Does nothing, on the rate-limited queue: its start times are what the
/// tests count.
#[derive(Serialize, Deserialize)]
pub struct RatedNoop;

impl<DB: ClusterDb> Job<DB> for RatedNoop {
    const KIND: &'static str = "rated_noop";
    const QUEUE: &'static str = RATED_QUEUE;

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

/// Writes an effect in its transaction, then holds it open (cancellably).
#[derive(Serialize, Deserialize)]
pub struct HoldsWrite {
    pub millis: u64,
}

impl<DB: ClusterDb> Job<DB> for HoldsWrite {
    const KIND: &'static str = "holds_write";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        ctx.sleep(Duration::from_millis(self.millis)).await
    }
}

/// Every job a cluster node runs.
pub fn node_registry<DB: ClusterDb>() -> Registry<DB> {
    super::jobs::registry::<DB>()
        .register::<Tick>()
        .register::<MeasureConcurrency>()
        .register::<HoldsWrite>()
        .register::<RatedNoop>()
        .register::<MeasureKeyConcurrency>()
}

/// [`node_registry`] with the periodic tick.
pub fn ticking_node_registry<DB: ClusterDb>() -> Registry<DB> {
    let tick =
        PeriodicJob::every(TICK_SCHEDULE, Duration::from_secs(1), || Tick).expect("valid schedule");
    node_registry::<DB>().periodic(tick)
}

/// A node's settings: the default queue, the tick queue and the limited
/// queue, with leadership lasting `leader_ttl`.
pub fn node_config(leader_ttl: Duration) -> WorkerConfig {
    fast_config()
        .leader_ttl(leader_ttl)
        .queue("default", LOCAL_CONCURRENCY)
        .queue("ticks", LOCAL_CONCURRENCY)
        .queue_with_global_limit(LIMITED_QUEUE, LOCAL_CONCURRENCY, GLOBAL_LIMIT)
        .queue_config(QueueConfig::new(RATED_QUEUE, LOCAL_CONCURRENCY).rate_limit(
            RateLimit::new(RATE_LIMIT, Duration::from_millis(RATE_PERIOD_MS)).expect("valid"),
        ))
        .queue_config(
            QueueConfig::new(PARTITIONED_QUEUE, LOCAL_CONCURRENCY)
                .partition(Partition::new().concurrency(PER_KEY_LIMIT).expect("valid")),
        )
}

/// The pid in a worker id (`host-pid-suffix`).
pub fn pid_of(worker_id: &str) -> Option<u32> {
    worker_id.rsplit('-').nth(1)?.parse().ok()
}
