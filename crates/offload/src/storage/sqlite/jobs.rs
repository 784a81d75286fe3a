//! The job statements on SQLite. Times are microseconds since the Unix
//! epoch, computed here rather than in SQL.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use sqlx::{SqliteConnection, SqlitePool};

use crate::state::JobState;
use crate::storage::decode::{self, ClaimRow, JobRow};
use crate::storage::time::{duration_micros, micros, now_micros};
use crate::storage::{Attempt, ClaimedJob, JobRecord, NewJob, Outcome};
use crate::{Error, Result};

/// `SELECT` list of `JobRow`, for SQLite.
const JOB_COLUMNS_SQLITE: &str = "id, kind, queue, state, args, priority, attempt, \
     max_attempts, errors, tags, created_at, run_at, attempted_at, finalized_at, worker_id, \
     partition_key";

/// `RETURNING` list of `ClaimRow`, for SQLite.
pub(super) const CLAIM_COLUMNS_SQLITE: &str =
    "id, kind, queue, args, attempt, max_attempts, run_at";

const INSERT: &str = r#"
INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, created_at, run_at, tags,
                          partition_key)
SELECT value ->> 0, value ->> 1, value -> 2, value ->> 3, value ->> 4,
       CASE WHEN COALESCE(value ->> 5, ?1) <= ?1 THEN 'available' ELSE 'scheduled' END,
       ?1, COALESCE(value ->> 5, ?1), value -> 6, value ->> 7
FROM json_each(?2)
ORDER BY key
RETURNING id
"#;

/// The claim with `limit` as its `LIMIT` expression (`?4` is the number
/// asked for).
fn claim_sql(limit: &str) -> String {
    format!(
        r#"
UPDATE offload_jobs
SET state = 'running', attempt = attempt + 1, attempted_at = ?1, worker_id = ?2
WHERE id IN (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = ?3
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = ?3 AND q.paused)
    ORDER BY priority, run_at, id
    LIMIT {limit}
)
RETURNING {CLAIM_COLUMNS_SQLITE}
"#
    )
}

static CLAIM: LazyLock<String> = LazyLock::new(|| claim_sql("?4"));

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

/// `COMPLETE_ONE` in a new savepoint. `RETURNING`, because SQLite's change
/// count still holds the last write's after a `SAVEPOINT`.
const SAVEPOINT_COMPLETE: &str = "SAVEPOINT offload_member; \
     UPDATE offload_jobs SET state = 'completed', finalized_at = ?1, worker_id = NULL \
     WHERE id = ?2 AND attempt = ?3 AND state = 'running' RETURNING id";

const SAVEPOINT_DELETE: &str = "SAVEPOINT offload_member; \
     DELETE FROM offload_jobs WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING id";

const DELETE_ONE: &str =
    "DELETE FROM offload_jobs WHERE id = ?1 AND attempt = ?2 AND state = 'running'";

/// A retry or snooze that is already due skips the promoter.
const RECORD_OUTCOME: &str = r#"
UPDATE offload_jobs
SET state = CASE WHEN ?3 IN ('scheduled', 'retryable') AND ?4 <= ?8 THEN 'available' ELSE ?3 END,
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
                          unique_key, unique_states, partition_key)
VALUES (?2, ?3, json(?4), ?5, ?6,
        CASE WHEN COALESCE(?7, ?1) <= ?1 THEN 'available' ELSE 'scheduled' END,
        ?1, COALESCE(?7, ?1), ?8, ?9, ?10, ?11)
ON CONFLICT DO NOTHING
RETURNING id
"#;

const UNIQUE_REPLACE: &str = r#"
UPDATE offload_jobs
SET args = json(?3), priority = ?4, run_at = COALESCE(?5, ?1),
    state = CASE WHEN COALESCE(?5, ?1) <= ?1 THEN 'available' ELSE 'scheduled' END
WHERE unique_key = ?2 AND instr(unique_states, ',' || state || ',') > 0
  AND state IN ('scheduled', 'available')
RETURNING id
"#;

const UNIQUE_HOLDER: &str = "SELECT id FROM offload_jobs WHERE unique_key = ?1 \
     AND instr(unique_states, ',' || state || ',') > 0";

pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn insert_many(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<Vec<i64>> {
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
            job.partition_key,
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

pub(super) async fn insert_unique(
    conn: &mut SqliteConnection,
    job: &NewJob,
) -> Result<Option<i64>> {
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
        .bind(job.tags_json())
        .bind(key)
        .bind(states)
        .bind(&job.partition_key)
        .fetch_optional(conn)
        .await?)
}

pub(super) async fn unique_replace(
    conn: &mut SqliteConnection,
    job: &NewJob,
) -> Result<Option<i64>> {
    let Some(unique) = &job.unique else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar(UNIQUE_REPLACE)
        .bind(now_micros())
        .bind(&unique.key)
        .bind(&job.args)
        .bind(job.priority)
        .bind(job.run_at.map(micros))
        .fetch_optional(conn)
        .await?)
}

pub(super) async fn unique_holder(conn: &mut SqliteConnection, key: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(UNIQUE_HOLDER)
        .bind(key)
        .fetch_optional(conn)
        .await?)
}

pub(super) async fn claim(
    conn: &mut SqliteConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
) -> Result<Vec<ClaimedJob>> {
    claim_at(conn, queue, max, worker_id, now_micros()).await
}

pub(super) async fn claim_at(
    conn: &mut SqliteConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM.as_str())
        .bind(now)
        .bind(worker_id)
        .bind(queue)
        .bind(limit(max))
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(ClaimedJob::from).collect())
}

pub(super) async fn complete_many(
    conn: &mut SqliteConnection,
    done: &[Attempt],
    delete: bool,
) -> Result<u64> {
    let pairs: Vec<(i64, i32)> = done.iter().map(|d| (d.id, d.attempt)).collect();
    let payload = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned());
    let sql = if delete { DELETE_MANY } else { COMPLETE_MANY };
    let result = sqlx::query(sql)
        .bind(now_micros())
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

pub(super) async fn complete_in_tx(
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

pub(super) async fn complete_in_savepoint(
    conn: &mut SqliteConnection,
    done: Attempt,
    delete: bool,
) -> Result<bool> {
    let query = if delete {
        sqlx::query_scalar(SAVEPOINT_DELETE)
    } else {
        sqlx::query_scalar(SAVEPOINT_COMPLETE).bind(now_micros())
    };
    let id: Option<i64> = query
        .bind(done.id)
        .bind(done.attempt)
        .fetch_optional(conn)
        .await?;
    Ok(id.is_some())
}

pub(super) async fn record_outcome(
    conn: &mut SqliteConnection,
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
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub(super) async fn rescue(pool: &SqlitePool, lease: Duration) -> Result<Vec<String>> {
    let now = Utc::now();
    let expired = micros(now) - duration_micros(lease);
    Ok(sqlx::query_scalar(RESCUE)
        .bind(micros(now))
        .bind(now.to_rfc3339())
        .bind(expired)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn promote(pool: &SqlitePool, max: usize) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(PROMOTE)
        .bind(now_micros())
        .bind(limit(max))
        .fetch_all(pool)
        .await?)
}

pub(super) async fn prune(
    pool: &SqlitePool,
    state: JobState,
    older_than: Duration,
    max: usize,
) -> Result<u64> {
    let result = sqlx::query(
        // The IN term is offload_jobs_finalized's own predicate: without
        // it SQLite would not use that partial index. Only finished jobs
        // are pruned.
        "DELETE FROM offload_jobs WHERE id IN (SELECT id FROM offload_jobs \
         WHERE state = ?1 AND state IN ('completed', 'discarded', 'cancelled') \
         AND finalized_at < ?2 LIMIT ?3)",
    )
    .bind(state.as_str())
    .bind(now_micros() - duration_micros(older_than))
    .bind(limit(max))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn get(pool: &SqlitePool, id: i64) -> Result<Option<JobRecord>> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS_SQLITE} FROM offload_jobs WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(JobRecord::try_from).transpose()
}

pub(super) async fn state(conn: &mut SqliteConnection, id: i64) -> Result<Option<JobState>> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM offload_jobs WHERE id = ?1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    state.as_deref().map(decode::parse_state).transpose()
}

pub(super) async fn count_by_state(
    pool: &SqlitePool,
    queue: Option<&str>,
) -> Result<Vec<(JobState, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM offload_jobs \
         WHERE state <> 'running' AND (?1 IS NULL OR queue = ?1) GROUP BY state \
         UNION ALL SELECT 'running', count(*) FROM offload_jobs \
         WHERE state = 'running' AND (?1 IS NULL OR queue = ?1) HAVING count(*) > 0",
    )
    .bind(queue)
    .fetch_all(pool)
    .await?;
    decode::state_counts(rows)
}

// --- for the testing kit ---

static CLAIM_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE offload_jobs \
         SET state = 'running', attempt = attempt + 1, attempted_at = ?1, worker_id = ?2 \
         WHERE id = ?3 AND state IN ('scheduled', 'available', 'retryable') \
         RETURNING {CLAIM_COLUMNS_SQLITE}"
    )
});

pub(super) async fn claim_one(
    pool: &SqlitePool,
    id: i64,
    worker_id: &str,
) -> Result<Option<ClaimedJob>> {
    let row: Option<ClaimRow> = sqlx::query_as(CLAIM_ONE.as_str())
        .bind(now_micros())
        .bind(worker_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(ClaimedJob::from))
}

pub(super) async fn promote_queue(pool: &SqlitePool, queue: &str) -> Result<u64> {
    let result = sqlx::query(
        "UPDATE offload_jobs SET state = 'available' \
         WHERE queue = ?1 AND state IN ('scheduled', 'retryable')",
    )
    .bind(queue)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn list_of_kind(
    conn: &mut SqliteConnection,
    kind: &str,
) -> Result<Vec<(JobRecord, Option<String>)>> {
    let rows: Vec<decode::KeyedJobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS_SQLITE}, unique_key FROM offload_jobs \
         WHERE kind = ?1 ORDER BY id"
    ))
    .bind(kind)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(decode::KeyedJobRow::into_parts)
        .collect()
}
