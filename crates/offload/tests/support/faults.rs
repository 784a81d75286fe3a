//! Faults the randomized schedules inject through the database itself, and
//! the reads their checker needs; the SQL for them, per backend, lives here.

use std::future::Future;
use std::time::Duration;

use sqlx::{Pool, Postgres, Sqlite};

use super::TestDb;

/// One job's row as the checker reads it at the end.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub attempt: i32,
    pub worker_id: Option<String>,
}

pub trait FaultDb: TestDb {
    /// Installs a trigger that fails completions of jobs in queues listed in
    /// `failing_completions` (PostgreSQL: a serialization failure, 40001;
    /// SQLite: an abort).
    fn install_completion_fault(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    /// Starts or ends failing completions in `queue`.
    fn fail_completions(
        pool: &Pool<Self>,
        queue: &str,
        failing: bool,
    ) -> impl Future<Output = ()> + Send;
    /// Holds a foreign lock for `hold` (PostgreSQL: the queue's unfinished
    /// rows, `FOR UPDATE`; SQLite: the database's write lock).
    fn hold_locks(
        pool: &Pool<Self>,
        queue: &str,
        hold: Duration,
    ) -> impl Future<Output = ()> + Send;
    /// Every job of `queue`.
    fn jobs_of(pool: &Pool<Self>, queue: &str) -> impl Future<Output = Vec<JobRow>> + Send;
    /// (job id, effect rows) for jobs of `queue` with any effect.
    fn effects_of(pool: &Pool<Self>, queue: &str) -> impl Future<Output = Vec<(i64, i64)>> + Send;
    /// Of the connections whose client ports are `ports`, those inside a
    /// transaction or running a statement (none on SQLite, which has no
    /// connections to cut).
    fn busy_connections(pool: &Pool<Self>, ports: &[u16]) -> impl Future<Output = Vec<u16>> + Send;
    /// Workers whose heartbeat is newer than `within`.
    fn live_workers(
        pool: &Pool<Self>,
        within: Duration,
    ) -> impl Future<Output = Vec<String>> + Send;
}

impl FaultDb for Postgres {
    async fn install_completion_fault(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE failing_completions (queue text PRIMARY KEY);
             CREATE FUNCTION fail_completions() RETURNS trigger AS $$
             BEGIN
               IF NEW.state = 'completed' AND OLD.state = 'running'
                  AND EXISTS (SELECT 1 FROM failing_completions WHERE queue = NEW.queue) THEN
                 RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
               END IF;
               RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER fail_completions BEFORE UPDATE ON offload_jobs
               FOR EACH ROW EXECUTE FUNCTION fail_completions();",
        )
        .execute(pool)
        .await
        .expect("completion fault trigger");
    }

    async fn fail_completions(pool: &Pool<Self>, queue: &str, failing: bool) {
        let sql = if failing {
            "INSERT INTO failing_completions VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM failing_completions WHERE queue = $1"
        };
        sqlx::query(sql)
            .bind(queue)
            .execute(pool)
            .await
            .expect("switch completion faults");
    }

    async fn hold_locks(pool: &Pool<Self>, queue: &str, hold: Duration) {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query(
            "SELECT id FROM offload_jobs WHERE queue = $1 AND state <> 'completed' FOR UPDATE",
        )
        .bind(queue)
        .fetch_all(&mut *tx)
        .await
        .expect("lock rows");
        tokio::time::sleep(hold).await;
        tx.rollback().await.expect("release locks");
    }

    async fn jobs_of(pool: &Pool<Self>, queue: &str) -> Vec<JobRow> {
        sqlx::query_as(
            "SELECT id, state, attempt, worker_id FROM offload_jobs WHERE queue = $1 ORDER BY id",
        )
        .bind(queue)
        .fetch_all(pool)
        .await
        .expect("jobs of the queue")
    }

    async fn effects_of(pool: &Pool<Self>, queue: &str) -> Vec<(i64, i64)> {
        sqlx::query_as(
            "SELECT e.job_id, count(*) FROM effects e JOIN offload_jobs j ON j.id = e.job_id \
             WHERE j.queue = $1 GROUP BY e.job_id",
        )
        .bind(queue)
        .fetch_all(pool)
        .await
        .expect("effects of the queue")
    }

    async fn busy_connections(pool: &Pool<Self>, ports: &[u16]) -> Vec<u16> {
        let ports: Vec<i32> = ports.iter().map(|port| i32::from(*port)).collect();
        let busy: Vec<i32> = sqlx::query_scalar(
            "SELECT client_port FROM pg_stat_activity WHERE client_port = ANY($1) \
             AND state IN ('active', 'idle in transaction') ORDER BY random()",
        )
        .bind(&ports)
        .fetch_all(pool)
        .await
        .expect("busy connections");
        busy.into_iter()
            .filter_map(|port| u16::try_from(port).ok())
            .collect()
    }

    async fn live_workers(pool: &Pool<Self>, within: Duration) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT id FROM offload_workers WHERE heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(within.as_secs_f64())
        .fetch_all(pool)
        .await
        .expect("live workers")
    }
}

impl FaultDb for Sqlite {
    async fn install_completion_fault(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE failing_completions (queue text PRIMARY KEY);
             CREATE TRIGGER fail_completions BEFORE UPDATE OF state ON offload_jobs
               WHEN NEW.state = 'completed' AND OLD.state = 'running'
                AND EXISTS (SELECT 1 FROM failing_completions WHERE queue = NEW.queue)
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .execute(pool)
        .await
        .expect("completion fault trigger");
    }

    async fn fail_completions(pool: &Pool<Self>, queue: &str, failing: bool) {
        let sql = if failing {
            "INSERT OR IGNORE INTO failing_completions VALUES (?1)"
        } else {
            "DELETE FROM failing_completions WHERE queue = ?1"
        };
        sqlx::query(sql)
            .bind(queue)
            .execute(pool)
            .await
            .expect("switch completion faults");
    }

    async fn hold_locks(pool: &Pool<Self>, _queue: &str, hold: Duration) {
        let mut conn = pool.acquire().await.expect("connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .expect("take the write lock");
        tokio::time::sleep(hold).await;
        sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .expect("release the write lock");
    }

    async fn jobs_of(pool: &Pool<Self>, queue: &str) -> Vec<JobRow> {
        sqlx::query_as(
            "SELECT id, state, attempt, worker_id FROM offload_jobs WHERE queue = ?1 ORDER BY id",
        )
        .bind(queue)
        .fetch_all(pool)
        .await
        .expect("jobs of the queue")
    }

    async fn effects_of(pool: &Pool<Self>, queue: &str) -> Vec<(i64, i64)> {
        sqlx::query_as(
            "SELECT e.job_id, count(*) FROM effects e JOIN offload_jobs j ON j.id = e.job_id \
             WHERE j.queue = ?1 GROUP BY e.job_id",
        )
        .bind(queue)
        .fetch_all(pool)
        .await
        .expect("effects of the queue")
    }

    async fn busy_connections(_pool: &Pool<Self>, _ports: &[u16]) -> Vec<u16> {
        Vec::new()
    }

    async fn live_workers(pool: &Pool<Self>, within: Duration) -> Vec<String> {
        // Heartbeats are Unix microseconds here.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        let since = now.saturating_sub(within).as_micros() as i64;
        sqlx::query_scalar("SELECT id FROM offload_workers WHERE heartbeat_at > ?1")
            .bind(since)
            .fetch_all(pool)
            .await
            .expect("live workers")
    }
}
