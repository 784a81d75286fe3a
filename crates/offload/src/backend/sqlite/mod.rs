//! SQLite: the embedded default, one host, WAL mode. Times are stored as
//! microseconds since the Unix epoch and computed here, not in SQL.

mod admin;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{
    Connection, Database, Executor, Row, Sqlite, SqliteConnection, SqlitePool, Transaction,
    TransactionManager,
};

use super::{
    decode_errors, decode_tags, migrate, Attempt, Backend, ClaimedJob, JobRecord, Leader, NewJob,
    Outcome, Signals, WorkerInfo,
};
use crate::state::JobState;
use crate::{Error, Result};

const INSERT: &str = r#"
INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, created_at, run_at, tags)
SELECT value ->> 0, value ->> 1, value -> 2, value ->> 3, value ->> 4,
       CASE WHEN COALESCE(value ->> 5, ?1) <= ?1 THEN 'available' ELSE 'scheduled' END,
       ?1, COALESCE(value ->> 5, ?1), value -> 6
FROM json_each(?2)
ORDER BY key
RETURNING id
"#;

const CLAIM: &str = r#"
UPDATE offload_jobs
SET state = 'running', attempt = attempt + 1, attempted_at = ?1, worker_id = ?2
WHERE id IN (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = ?3
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = ?3 AND q.paused)
    ORDER BY priority, id
    LIMIT ?4
)
RETURNING id, kind, queue, args, attempt, max_attempts, run_at
"#;

const COMPLETE_MANY: &str = r#"
UPDATE offload_jobs SET state = 'completed', finalized_at = ?1, worker_id = NULL
WHERE state = 'running' AND (id, attempt) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?2))
"#;

const DELETE_MANY: &str = r#"
DELETE FROM offload_jobs
WHERE state = 'running' AND (id, attempt) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?2))
"#;

const COMPLETE_ONE: &str = "UPDATE offload_jobs SET state = 'completed', finalized_at = ?1, \
     worker_id = NULL WHERE id = ?2 AND attempt = ?3 AND state = 'running'";

const DELETE_ONE: &str =
    "DELETE FROM offload_jobs WHERE id = ?1 AND attempt = ?2 AND state = 'running'";

const RECORD_OUTCOME: &str = r#"
UPDATE offload_jobs
SET state = ?3,
    run_at = COALESCE(?4, run_at),
    max_attempts = max_attempts + ?5,
    finalized_at = CASE WHEN ?6 THEN ?8 END,
    worker_id = NULL,
    errors = CASE WHEN ?7 IS NULL THEN errors
             ELSE json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', ?9, 'error', ?7))
             END
WHERE id = ?1 AND attempt = ?2 AND state = 'running'
"#;

const RESCUE: &str = r#"
UPDATE offload_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
    finalized_at = CASE WHEN attempt >= max_attempts THEN ?1 END,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempt, 'at', ?2,
        'error', 'rescued: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating')),
    worker_id = NULL
WHERE state = 'running'
  AND NOT EXISTS (
      SELECT 1 FROM offload_workers w
      WHERE w.id = offload_jobs.worker_id AND w.heartbeat_at > ?3
  )
RETURNING queue
"#;

const PROMOTE: &str = r#"
UPDATE offload_jobs SET state = 'available'
WHERE id IN (
    SELECT id FROM offload_jobs
    WHERE state IN ('scheduled', 'retryable') AND run_at <= ?1
    ORDER BY run_at
    LIMIT ?2
)
RETURNING queue
"#;

const INSERT_UNIQUE: &str = r#"
INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, created_at, run_at, tags,
                          unique_key, unique_states)
VALUES (?2, ?3, ?4, ?5, ?6,
        CASE WHEN COALESCE(?7, ?1) <= ?1 THEN 'available' ELSE 'scheduled' END,
        ?1, COALESCE(?7, ?1), ?8, ?9, ?10)
ON CONFLICT DO NOTHING
RETURNING id
"#;

const FIND_UNIQUE: &str = "SELECT id FROM offload_jobs WHERE unique_key = ?1 \
     AND instr(unique_states, ',' || state || ',') > 0";

/// Like `CLAIM`, never taking more than the queue's global limit leaves
/// free. SQLite runs one writer at a time, so the count is current.
const CLAIM_LIMITED: &str = r#"
UPDATE offload_jobs
SET state = 'running', attempt = attempt + 1, attempted_at = ?1, worker_id = ?2
WHERE id IN (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = ?3
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = ?3 AND q.paused)
    ORDER BY priority, id
    LIMIT max(0, min(?4, COALESCE(
        (SELECT global_limit FROM offload_queues WHERE name = ?3)
          - (SELECT count(*) FROM offload_jobs WHERE queue = ?3 AND state = 'running'),
        ?4)))
)
RETURNING id, kind, queue, args, attempt, max_attempts, run_at
"#;

const TRY_LEAD: &str = r#"
INSERT INTO offload_leader (name, leader_id, elected_at, expires_at)
VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id,
    elected_at = CASE WHEN offload_leader.leader_id = excluded.leader_id
                      THEN offload_leader.elected_at ELSE excluded.elected_at END,
    expires_at = excluded.expires_at
WHERE offload_leader.expires_at < excluded.elected_at
   OR offload_leader.leader_id = excluded.leader_id
RETURNING leader_id
"#;

const ADVANCE_TICK: &str = r#"
INSERT INTO offload_periodic (name, last_tick) VALUES (?1, ?2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
WHERE offload_periodic.last_tick < excluded.last_tick
RETURNING name
"#;

const JOB_COLUMNS: &str = "id, kind, queue, state, args, priority, attempt, max_attempts, \
     errors, tags, created_at, run_at, attempted_at, finalized_at, worker_id";

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// id, kind, queue, args, attempt, max_attempts, run_at in microseconds.
type ClaimRow = (i64, String, String, String, i32, i32, i64);

impl Backend for Sqlite {
    const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

    async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        Ok(SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_release(|conn, _| Box::pin(close_abandoned_transaction(conn)))
            .connect_with(options)
            .await?)
    }

    async fn migrate(pool: &SqlitePool) -> Result<()> {
        // IMMEDIATE takes the write lock first, so concurrent migrators queue up.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS offload_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM offload_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for migration in migrate::SQLITE
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            (&mut *tx)
                .execute(migration.sql)
                .await
                .map_err(|source| Error::Migration {
                    version: migration.version,
                    name: migration.name,
                    source,
                })?;
            sqlx::query(
                "INSERT INTO offload_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn identity(pool: &SqlitePool) -> String {
        format!(
            "sqlite://{}",
            pool.connect_options().get_filename().display()
        )
    }

    async fn begin_job_tx(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        // A deferred transaction that reads and then writes can fail with
        // SQLITE_BUSY without waiting; IMMEDIATE waits for the write lock.
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    const CROSS_PROCESS_WAKE: bool = false;

    const COMPLETION_WRITERS: usize = 1;

    async fn notify(_pool: &SqlitePool, _queues: &[String]) -> Result<()> {
        Ok(())
    }

    async fn insert_jobs(
        conn: &mut SqliteConnection,
        jobs: &[NewJob],
        _notify: bool,
    ) -> Result<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(jobs.len());
        for job in jobs {
            let args =
                serde_json::value::RawValue::from_string(job.args.clone()).map_err(|source| {
                    Error::EncodeArgs {
                        kind: job.kind.clone(),
                        source,
                    }
                })?;
            rows.push(serde_json::json!([
                job.kind,
                job.queue,
                args,
                job.priority,
                job.max_attempts,
                job.run_at.map(micros),
                job.tags,
            ]));
        }
        let payload = serde_json::Value::Array(rows).to_string();
        let mut ids: Vec<i64> = sqlx::query_scalar(INSERT)
            .bind(now_micros())
            .bind(payload)
            .fetch_all(conn)
            .await?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn claim(
        pool: &SqlitePool,
        queue: &str,
        max: usize,
        worker_id: &str,
    ) -> Result<Vec<ClaimedJob>> {
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
            .bind(now_micros())
            .bind(worker_id)
            .bind(queue)
            .bind(limit(max))
            .fetch_all(pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, queue, args, attempt, max_attempts, run_at)| ClaimedJob {
                    id,
                    kind,
                    queue,
                    args,
                    attempt,
                    max_attempts,
                    run_at: from_micros(run_at),
                },
            )
            .collect())
    }

    async fn complete_many(pool: &SqlitePool, done: &[Attempt], delete: bool) -> Result<u64> {
        let pairs: Vec<(i64, i32)> = done.iter().map(|d| (d.id, d.attempt)).collect();
        let payload = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned());
        let sql = if delete { DELETE_MANY } else { COMPLETE_MANY };
        let result = sqlx::query(sql)
            .bind(now_micros())
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn complete_in_tx(
        conn: &mut SqliteConnection,
        done: Attempt,
        delete: bool,
    ) -> Result<bool> {
        let query = if delete {
            sqlx::query(DELETE_ONE)
        } else {
            sqlx::query(COMPLETE_ONE).bind(now_micros())
        };
        let result = query.bind(done.id).bind(done.attempt).execute(conn).await?;
        Ok(result.rows_affected() == 1)
    }

    async fn record_outcome(
        pool: &SqlitePool,
        attempt: Attempt,
        outcome: &Outcome,
    ) -> Result<bool> {
        let change = outcome.change();
        let now = Utc::now();
        let result = sqlx::query(RECORD_OUTCOME)
            .bind(attempt.id)
            .bind(attempt.attempt)
            .bind(change.state.as_str())
            .bind(change.run_at.map(micros))
            .bind(change.extra_attempts)
            .bind(change.state.is_final())
            .bind(change.error)
            .bind(micros(now))
            .bind(now.to_rfc3339())
            .execute(pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn heartbeat(pool: &SqlitePool, worker: &WorkerInfo) -> Result<()> {
        sqlx::query(
            "INSERT INTO offload_workers (id, host, pid, queues, started_at, heartbeat_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO UPDATE SET heartbeat_at = ?5",
        )
        .bind(&worker.id)
        .bind(&worker.host)
        .bind(worker.pid)
        .bind(&worker.queues)
        .bind(now_micros())
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn deregister(pool: &SqlitePool, worker_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM offload_workers WHERE id = ?1")
            .bind(worker_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn rescue(pool: &SqlitePool, lease: Duration) -> Result<Vec<String>> {
        let now = Utc::now();
        let expired = micros(now) - duration_micros(lease);
        let queues = sqlx::query_scalar(RESCUE)
            .bind(micros(now))
            .bind(now.to_rfc3339())
            .bind(expired)
            .fetch_all(pool)
            .await?;
        sqlx::query("DELETE FROM offload_workers WHERE heartbeat_at < ?1")
            .bind(expired)
            .execute(pool)
            .await?;
        Ok(queues)
    }

    async fn promote(pool: &SqlitePool, max: usize) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(PROMOTE)
            .bind(now_micros())
            .bind(limit(max))
            .fetch_all(pool)
            .await?)
    }

    async fn prune(
        pool: &SqlitePool,
        state: JobState,
        older_than: Duration,
        max: usize,
    ) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM offload_jobs WHERE id IN (SELECT id FROM offload_jobs \
             WHERE state = ?1 AND finalized_at < ?2 LIMIT ?3)",
        )
        .bind(state.as_str())
        .bind(now_micros() - duration_micros(older_than))
        .bind(limit(max))
        .execute(pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn listen(_pool: &SqlitePool, _signals: Signals) -> Result<()> {
        // One host: enqueues in this process wake workers directly.
        Ok(())
    }

    async fn fetch_job(pool: &SqlitePool, id: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM offload_jobs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?;
        row.map(|row| job_record(&row)).transpose()
    }

    async fn count_by_state(
        pool: &SqlitePool,
        queue: Option<&str>,
    ) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM offload_jobs WHERE (?1 IS NULL OR queue = ?1) \
             GROUP BY state",
        )
        .bind(queue)
        .fetch_all(pool)
        .await?;
        Ok(super::parse_counts(rows))
    }

    async fn insert_unique(conn: &mut SqliteConnection, job: &NewJob) -> Result<Option<i64>> {
        let (key, states) = job
            .unique
            .as_ref()
            .map(|u| (u.key.as_str(), u.states.as_str()))
            .unzip();
        Ok(sqlx::query_scalar(INSERT_UNIQUE)
            .bind(now_micros())
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(job.run_at.map(micros))
            .bind(super::encode_tags(&job.tags))
            .bind(key)
            .bind(states)
            .fetch_optional(conn)
            .await?)
    }

    async fn find_unique(conn: &mut SqliteConnection, key: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(FIND_UNIQUE)
            .bind(key)
            .fetch_optional(conn)
            .await?)
    }

    async fn claim_limited(
        pool: &SqlitePool,
        queue: &str,
        max: usize,
        worker_id: &str,
    ) -> Result<Vec<ClaimedJob>> {
        let rows: Vec<(i64, String, String, String, i32, i32, i64)> = sqlx::query_as(CLAIM_LIMITED)
            .bind(now_micros())
            .bind(worker_id)
            .bind(queue)
            .bind(limit(max))
            .fetch_all(pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, queue, args, attempt, max_attempts, run_at)| ClaimedJob {
                    id,
                    kind,
                    queue,
                    args,
                    attempt,
                    max_attempts,
                    run_at: from_micros(run_at),
                },
            )
            .collect())
    }

    async fn global_limit(pool: &SqlitePool, queue: &str) -> Result<Option<usize>> {
        let limit: Option<Option<i64>> =
            sqlx::query_scalar("SELECT global_limit FROM offload_queues WHERE name = ?1")
                .bind(queue)
                .fetch_optional(pool)
                .await?;
        Ok(limit.flatten().and_then(|n| usize::try_from(n).ok()))
    }

    async fn set_global_limit(pool: &SqlitePool, queue: &str, max: Option<usize>) -> Result<()> {
        sqlx::query(
            "INSERT INTO offload_queues (name, global_limit, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET global_limit = excluded.global_limit, \
             updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(max.map(limit))
        .bind(now_micros())
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn try_lead(
        pool: &SqlitePool,
        name: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let now = now_micros();
        let leader: Option<String> = sqlx::query_scalar(TRY_LEAD)
            .bind(name)
            .bind(candidate)
            .bind(now)
            .bind(now.saturating_add(duration_micros(ttl)))
            .fetch_optional(pool)
            .await?;
        Ok(leader.is_some())
    }

    async fn resign(pool: &SqlitePool, name: &str, leader: &str) -> Result<()> {
        sqlx::query("DELETE FROM offload_leader WHERE name = ?1 AND leader_id = ?2")
            .bind(name)
            .bind(leader)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn leader(pool: &SqlitePool, name: &str) -> Result<Option<Leader>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT leader_id, elected_at, expires_at FROM offload_leader \
             WHERE name = ?1 AND expires_at >= ?2",
        )
        .bind(name)
        .bind(now_micros())
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(leader_id, elected_at, expires_at)| Leader {
            leader_id,
            elected_at: from_micros(elected_at),
            expires_at: from_micros(expires_at),
        }))
    }

    async fn last_tick(pool: &SqlitePool, name: &str) -> Result<Option<DateTime<Utc>>> {
        let tick: Option<i64> =
            sqlx::query_scalar("SELECT last_tick FROM offload_periodic WHERE name = ?1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        Ok(tick.map(from_micros))
    }

    async fn enqueue_tick(
        pool: &SqlitePool,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> Result<Option<i64>> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let advanced: Option<String> = sqlx::query_scalar(ADVANCE_TICK)
            .bind(name)
            .bind(micros(tick))
            .fetch_optional(&mut *tx)
            .await?;
        if advanced.is_none() {
            return Ok(None);
        }
        let id = Self::insert_unique(&mut tx, job).await?;
        tx.commit().await?;
        Ok(id)
    }
}

fn job_record(row: &SqliteRow) -> Result<JobRecord> {
    let state: String = row.try_get(3)?;
    let args: String = row.try_get(4)?;
    let errors: String = row.try_get(8)?;
    let tags: String = row.try_get(9)?;
    let attempted_at: Option<i64> = row.try_get(12)?;
    let finalized_at: Option<i64> = row.try_get(13)?;
    Ok(JobRecord {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        queue: row.try_get(2)?,
        state: super::parse_state(&state)?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args)),
        priority: row.try_get(5)?,
        attempt: row.try_get(6)?,
        max_attempts: row.try_get(7)?,
        errors: decode_errors(&errors),
        tags: decode_tags(&tags),
        created_at: from_micros(row.try_get(10)?),
        run_at: from_micros(row.try_get(11)?),
        attempted_at: attempted_at.map(from_micros),
        finalized_at: finalized_at.map(from_micros),
        worker_id: row.try_get(14)?,
    })
}

/// Rolls back a transaction left open on a connection going back to the
/// pool. sqlx 0.8's `begin_with` counts the transaction as begun and then
/// awaits the connection's handle; when its future is dropped there (a
/// request cancelled by a disconnecting client), no `Transaction` exists to
/// roll it back, and every later `BEGIN IMMEDIATE` on the connection fails.
async fn close_abandoned_transaction(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    type Manager = <Sqlite as Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A dropped `Transaction` queues its rollback; let it run first.
    conn.ping().await?;
    if Manager::get_transaction_depth(conn) > 0 {
        tracing::warn!("rolling back a transaction whose BEGIN was cancelled");
        while Manager::get_transaction_depth(conn) > 0 {
            Manager::rollback(conn).await?;
        }
    }
    Ok(true)
}
