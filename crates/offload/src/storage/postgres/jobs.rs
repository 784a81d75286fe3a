//! The job statements on PostgreSQL: insert, claim, complete, record,
//! rescue, promote, prune, read.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::cluster::notify;
use crate::state::JobState;
use crate::storage::decode::{self, ClaimRow, JobRow};
use crate::storage::time::span_secs;
use crate::storage::{Attempt, ClaimedJob, JobRecord, NewJob, Outcome};
use crate::Result;

/// `SELECT` list of `JobRow`, for PostgreSQL (JSON columns as text).
const JOB_COLUMNS_PG: &str = "id, kind, queue, state, args::text AS args, priority, \
     attempt, max_attempts, errors::text AS errors, tags::text AS tags, created_at, run_at, \
     attempted_at, finalized_at, worker_id, partition_key";

/// `RETURNING` list of `ClaimRow`, for PostgreSQL.
pub(super) const CLAIM_COLUMNS_PG: &str =
    "j.id, j.kind, j.queue, j.args::text AS args, j.attempt, j.max_attempts, j.run_at";

const INSERT: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags,
                              partition_key)
    SELECT k, q, a::jsonb, p, m,
           CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
           COALESCE(r, now()), t::jsonb, pk
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int4[], $6::timestamptz[],
                $7::text[], $9::text[])
         AS u(k, q, a, p, m, r, t, pk)
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', q)) AS n
    FROM (SELECT DISTINCT queue AS q FROM ins WHERE state = 'available') s
    WHERE $8
)
SELECT ins.id FROM ins, woke ORDER BY ins.id
"#;

static CLAIM: LazyLock<String> = LazyLock::new(|| claim_sql("now()"));

/// Like `CLAIM`, stamping `attempted_at` with `$4`: the start a rate limit
/// counted.
pub(super) static CLAIM_AT: LazyLock<String> = LazyLock::new(|| claim_sql("$4"));

fn claim_sql(attempted_at: &str) -> String {
    format!(
        r#"
WITH picked AS (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = $1
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = $1 AND q.paused)
    ORDER BY priority, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j
SET state = 'running', attempt = j.attempt + 1, attempted_at = {attempted_at}, worker_id = $3
-- An id array probes the primary key; a join to the CTE plans as a hash
-- join over a scan of the whole table.
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING {CLAIM_COLUMNS_PG}
"#
    )
}

const COMPLETE_MANY: &str = r#"
UPDATE offload_jobs j
SET state = 'completed', finalized_at = now(), worker_id = NULL
FROM unnest($1::int8[], $2::int4[]) AS d(id, attempt)
-- `IS TRUE` keeps the planner from picking a plan by the (often stale)
-- estimate of running rows: one primary-key probe per completion.
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

const DELETE_MANY: &str = r#"
DELETE FROM offload_jobs j
USING unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

const COMPLETE_ONE: &str = "UPDATE offload_jobs SET state = 'completed', finalized_at = now(), \
     worker_id = NULL WHERE id = $1 AND attempt = $2 AND state = 'running'";

const DELETE_ONE: &str =
    "DELETE FROM offload_jobs WHERE id = $1 AND attempt = $2 AND state = 'running'";

/// A retry or snooze that is already due skips the promoter.
const RECORD_OUTCOME: &str = r#"
WITH recorded AS (
UPDATE offload_jobs
SET state = CASE WHEN $3::text IN ('scheduled', 'retryable') AND $4::timestamptz <= now()
                 THEN 'available' ELSE $3::text END,
    run_at = COALESCE($4, run_at),
    max_attempts = max_attempts + $5,
    finalized_at = CASE WHEN $6 THEN now() END,
    worker_id = NULL,
    errors = CASE WHEN $7::text IS NULL THEN errors
             ELSE errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', now(), 'error', $7::text))
             END
WHERE id = $1 AND attempt = $2 AND state = 'running'
RETURNING queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', queue)) AS n FROM recorded WHERE state = 'available'
)
SELECT recorded.queue FROM recorded, woke
"#;

const RESCUE: &str = r#"
WITH lost AS (
    SELECT j.id FROM offload_jobs j
    WHERE j.state = 'running'
      AND NOT EXISTS (
          SELECT 1 FROM offload_workers w
          WHERE w.id = j.worker_id AND w.heartbeat_at > now() - make_interval(secs => $1)
      )
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE offload_jobs j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END,
    finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', now(),
        'error', 'rescued: worker ' || COALESCE(j.worker_id, '?') || ' stopped heartbeating')),
    worker_id = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM lost))
RETURNING j.queue
"#;

const PROMOTE: &str = r#"
WITH due AS (
    SELECT id FROM offload_jobs
    WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
    ORDER BY run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j SET state = 'available'
WHERE j.id = ANY(ARRAY(SELECT id FROM due))
RETURNING j.queue
"#;

const INSERT_UNIQUE: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags,
                              unique_key, unique_states, partition_key)
    VALUES ($1, $2, $3::jsonb, $4, $5,
            CASE WHEN $6::timestamptz IS NULL OR $6 <= now() THEN 'available' ELSE 'scheduled' END,
            COALESCE($6, now()), $7::jsonb, $8, $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', queue)) AS n FROM ins WHERE state = 'available'
)
SELECT ins.id FROM ins, woke
"#;

const UNIQUE_REPLACE: &str = r#"
WITH replaced AS (
    UPDATE offload_jobs
    SET args = $2::jsonb, priority = $3, run_at = COALESCE($4::timestamptz, now()),
        state = CASE WHEN $4::timestamptz IS NULL OR $4 <= now() THEN 'available' ELSE 'scheduled' END
    WHERE unique_key = $1 AND strpos(unique_states, ',' || state || ',') > 0
      AND state IN ('scheduled', 'available')
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', queue)) AS n FROM replaced WHERE state = 'available'
)
SELECT replaced.id FROM replaced, woke
"#;

const UNIQUE_HOLDER: &str = "SELECT id FROM offload_jobs WHERE unique_key = $1 \
     AND strpos(unique_states, ',' || state || ',') > 0";

pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn insert_many(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    wake: bool,
) -> Result<Vec<i64>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut kinds = Vec::with_capacity(jobs.len());
    let mut queues = Vec::with_capacity(jobs.len());
    let mut args = Vec::with_capacity(jobs.len());
    let mut priorities = Vec::with_capacity(jobs.len());
    let mut max_attempts = Vec::with_capacity(jobs.len());
    let mut run_ats = Vec::with_capacity(jobs.len());
    let mut tags = Vec::with_capacity(jobs.len());
    let mut partition_keys = Vec::with_capacity(jobs.len());
    for job in jobs {
        kinds.push(job.kind.as_str());
        queues.push(job.queue.as_str());
        args.push(job.args.as_str());
        priorities.push(job.priority);
        max_attempts.push(job.max_attempts);
        run_ats.push(job.run_at);
        tags.push(job.tags_json());
        partition_keys.push(job.partition_key.as_str());
    }
    Ok(sqlx::query_scalar(INSERT)
        .bind(&kinds)
        .bind(&queues)
        .bind(&args)
        .bind(&priorities)
        .bind(&max_attempts)
        .bind(&run_ats)
        .bind(&tags)
        .bind(wake)
        .bind(&partition_keys)
        .fetch_all(conn)
        .await?)
}

pub(super) async fn insert_unique(conn: &mut PgConnection, job: &NewJob) -> Result<Option<i64>> {
    let (key, states) = job
        .unique
        .as_ref()
        .map(|u| (u.key.as_str(), u.states.as_str()))
        .unzip();
    Ok(sqlx::query_scalar(INSERT_UNIQUE)
        .bind(&job.kind)
        .bind(&job.queue)
        .bind(&job.args)
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(job.run_at)
        .bind(job.tags_json())
        .bind(key)
        .bind(states)
        .bind(&job.partition_key)
        .fetch_optional(conn)
        .await?)
}

pub(super) async fn unique_replace(conn: &mut PgConnection, job: &NewJob) -> Result<Option<i64>> {
    let Some(unique) = &job.unique else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar(UNIQUE_REPLACE)
        .bind(&unique.key)
        .bind(&job.args)
        .bind(job.priority)
        .bind(job.run_at)
        .fetch_optional(conn)
        .await?)
}

pub(super) async fn unique_holder(conn: &mut PgConnection, key: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(UNIQUE_HOLDER)
        .bind(key)
        .fetch_optional(conn)
        .await?)
}

/// Claims on `conn` (the caller's transaction, or a pooled connection).
pub(super) async fn claim_on(
    conn: &mut PgConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
) -> Result<Vec<ClaimedJob>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM.as_str())
        .bind(queue)
        .bind(limit(max))
        .bind(worker_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(ClaimedJob::from).collect())
}

pub(super) async fn complete_many(
    conn: &mut PgConnection,
    done: &[Attempt],
    delete: bool,
) -> Result<u64> {
    let ids: Vec<i64> = done.iter().map(|d| d.id).collect();
    let attempts: Vec<i32> = done.iter().map(|d| d.attempt).collect();
    let sql = if delete { DELETE_MANY } else { COMPLETE_MANY };
    let result = sqlx::query(sql)
        .bind(&ids)
        .bind(&attempts)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

pub(super) async fn complete_in_tx(
    conn: &mut PgConnection,
    done: Attempt,
    delete: bool,
) -> Result<bool> {
    let sql = if delete { DELETE_ONE } else { COMPLETE_ONE };
    let result = sqlx::query(sql)
        .bind(done.id)
        .bind(done.attempt)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub(super) async fn record_outcome(
    conn: &mut PgConnection,
    attempt: Attempt,
    outcome: &Outcome,
) -> Result<bool> {
    let change = outcome.change();
    let recorded: Option<String> = sqlx::query_scalar(RECORD_OUTCOME)
        .bind(attempt.id)
        .bind(attempt.attempt)
        .bind(change.state.as_str())
        .bind(change.run_at)
        .bind(change.extra_attempts)
        .bind(change.state.is_final())
        .bind(change.error)
        .fetch_optional(conn)
        .await?;
    Ok(recorded.is_some())
}

pub(super) async fn rescue(pool: &PgPool, lease: Duration) -> Result<Vec<String>> {
    let queues: Vec<String> = sqlx::query_scalar(RESCUE)
        .bind(span_secs(lease))
        .fetch_all(pool)
        .await?;
    notify(pool, &queues).await?;
    Ok(queues)
}

pub(super) async fn promote(pool: &PgPool, max: usize) -> Result<Vec<String>> {
    let queues: Vec<String> = sqlx::query_scalar(PROMOTE)
        .bind(limit(max))
        .fetch_all(pool)
        .await?;
    notify(pool, &queues).await?;
    Ok(queues)
}

pub(super) async fn prune(
    pool: &PgPool,
    state: JobState,
    older_than: Duration,
    max: usize,
) -> Result<u64> {
    let result = sqlx::query(
        "DELETE FROM offload_jobs WHERE id IN (SELECT id FROM offload_jobs \
         WHERE state = $1 AND finalized_at < now() - make_interval(secs => $2) LIMIT $3)",
    )
    .bind(state.as_str())
    .bind(span_secs(older_than))
    .bind(limit(max))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn get(pool: &PgPool, id: i64) -> Result<Option<JobRecord>> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS_PG} FROM offload_jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(JobRecord::try_from).transpose()
}

pub(super) async fn state(conn: &mut PgConnection, id: i64) -> Result<Option<JobState>> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM offload_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    state.as_deref().map(decode::parse_state).transpose()
}

pub(super) async fn count_by_state(
    pool: &PgPool,
    queue: Option<&str>,
) -> Result<Vec<(JobState, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM offload_jobs WHERE ($1::text IS NULL OR queue = $1) \
         GROUP BY state",
    )
    .bind(queue)
    .fetch_all(pool)
    .await?;
    decode::state_counts(rows)
}

// --- for the testing kit ---

static CLAIM_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE offload_jobs j \
         SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $2 \
         WHERE j.id = $1 AND j.state IN ('scheduled', 'available', 'retryable') \
         RETURNING {CLAIM_COLUMNS_PG}"
    )
});

pub(super) async fn claim_one(
    pool: &PgPool,
    id: i64,
    worker_id: &str,
) -> Result<Option<ClaimedJob>> {
    let row: Option<ClaimRow> = sqlx::query_as(CLAIM_ONE.as_str())
        .bind(id)
        .bind(worker_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(ClaimedJob::from))
}

pub(super) async fn promote_queue(pool: &PgPool, queue: &str) -> Result<u64> {
    let result = sqlx::query(
        "UPDATE offload_jobs SET state = 'available' \
         WHERE queue = $1 AND state IN ('scheduled', 'retryable')",
    )
    .bind(queue)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn list_of_kind(
    conn: &mut PgConnection,
    kind: &str,
) -> Result<Vec<(JobRecord, Option<String>)>> {
    let rows: Vec<decode::KeyedJobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS_PG}, unique_key FROM offload_jobs \
         WHERE kind = $1 ORDER BY id"
    ))
    .bind(kind)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(decode::KeyedJobRow::into_parts)
        .collect()
}
