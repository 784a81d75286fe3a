//! PostgreSQL fault helpers: terminating the test database's own backends,
//! enqueueing as another process would, and the invariants' check.

use std::time::Duration;

use offload::{Backend, Job, JobContext, JobError, JobState};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres};

use super::{count_in, TestDatabase, TestDb};

/// A pool on the server's `postgres` database, to terminate backends from.
pub async fn admin() -> PgPool {
    PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("admin pool")
}

/// The `host:port` a PostgreSQL URL names, for a proxy in front of it.
pub fn server_address(url: &str) -> std::net::SocketAddr {
    let authority = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
        .unwrap_or_else(|| panic!("no host in {url}"));
    authority
        .parse()
        .unwrap_or_else(|error| panic!("{authority} in {url}: {error}"))
}

pub async fn database_name(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("database name")
}

/// Terminates the backends of `database` matching `filter` (SQL on
/// pg_stat_activity, `$2` bound to `arg`); returns how many.
pub async fn terminate(admin: &PgPool, database: &str, filter: &str, arg: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid() AND {filter}) AS t"
    ))
    .bind(database)
    .bind(arg)
    .fetch_one(admin)
    .await
    .expect("terminate")
}

/// Every job completed, each with one effect row, none left running.
pub async fn assert_each_completed_once(db: &TestDatabase<Postgres>, ids: &[i64]) {
    let (completed, effects, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE j.state = 'completed'), \
                (SELECT count(*) FROM effects WHERE job_id = ANY($1)), \
                (SELECT count(DISTINCT job_id) FROM effects WHERE job_id = ANY($1)) \
         FROM offload_jobs j WHERE j.id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let n = ids.len() as i64;
    assert_eq!(
        (completed, effects, distinct),
        (n, n, n),
        "completed, effects"
    );
    assert_eq!(count_in(&db.client, JobState::Running).await, 0);
}

/// Records its effect row; quick retries, so a failed attempt is
/// re-attempted within the test's bound.
#[derive(Serialize, Deserialize)]
pub struct RecordQuickly;

impl Job<Postgres> for RecordQuickly {
    const KIND: &'static str = "record_quickly";

    fn backoff(_: i32) -> Duration {
        Duration::from_millis(50)
    }

    async fn run(self, ctx: &mut JobContext<Postgres>) -> Result<(), JobError> {
        let id = ctx.id();
        Postgres::record_effect(ctx.tx().await?, id).await?;
        Ok(())
    }
}

/// Inserts a job as another process would: rows and a `NOTIFY`, no
/// in-process wake-up. Returns its id.
pub async fn enqueue_from_elsewhere(pool: &PgPool, queue: &str) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let id = sqlx::query_scalar(
        "INSERT INTO offload_jobs (kind, queue, args, state, max_attempts) \
         VALUES ('record_quickly', $1, 'null', 'available', 3) RETURNING id",
    )
    .bind(queue)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('offload_jobs', $1)")
        .bind(queue)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// From a job's insert to its completion, by the server's clock.
pub async fn latency(pool: &PgPool, id: i64) -> Duration {
    let millis: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM finalized_at - created_at)::float8 * 1000 \
         FROM offload_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    Duration::from_micros((millis * 1000.0) as u64)
}

/// A worker pool whose connections carry `name`, to find them by.
pub async fn named_pool(db: &TestDatabase<Postgres>, name: &str) -> PgPool {
    let sep = if db.url.contains('?') { '&' } else { '?' };
    Postgres::connect(&format!("{}{sep}application_name={name}", db.url), 16)
        .await
        .unwrap()
}

/// Sleeps, then records its effect row: running long enough to be
/// locked, without the counter row other jobs would wait for.
#[derive(Serialize, Deserialize)]
pub struct SlowRecord {
    pub millis: u64,
}

impl Job<Postgres> for SlowRecord {
    const KIND: &'static str = "slow_record";

    async fn run(self, ctx: &mut JobContext<Postgres>) -> Result<(), JobError> {
        ctx.sleep(Duration::from_millis(self.millis)).await?;
        let id = ctx.id();
        Postgres::record_effect(ctx.tx().await?, id).await?;
        Ok(())
    }
}
