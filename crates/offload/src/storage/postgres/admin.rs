//! The admin operations' SQL on PostgreSQL.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::state::JobState;
use crate::storage::decode::{self, parse_state, SummaryRow};
use crate::storage::{
    JobFilter, JobSummary, LimitColumns, Page, PartitionUse, QueueLimits, QueueSettings,
    ARGS_PREVIEW_LEN, PARTITION_USE,
};
use crate::Result;

/// `SELECT` list of [`SummaryRow`].
fn summary_columns() -> String {
    format!(
        "id, kind, queue, state, priority, attempt, max_attempts, tags::text AS tags, \
         left(args::text, {ARGS_PREVIEW_LEN}) AS args_preview, \
         errors -> -1 ->> 'error' AS last_error, created_at, run_at, attempted_at, finalized_at"
    )
}

/// Appends the ids of one page of jobs matching `filter`, newest first.
///
/// With several states this is one branch per state, merged: each branch
/// can walk an `(…, state, id)` index in id order, where a single
/// `state = ANY(…)` scan would fall back to the primary key and read every
/// row when few jobs match.
fn push_page_ids(
    qb: &mut QueryBuilder<'_, Postgres>,
    filter: &JobFilter,
    before: Option<i64>,
    limit: u32,
) {
    let states = filter.distinct_states();
    if states.len() <= 1 {
        qb.push("SELECT id FROM offload_jobs");
        push_where(qb, filter, states.first().copied(), before);
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        return;
    }
    qb.push("SELECT id FROM (");
    for (i, state) in states.iter().enumerate() {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push("(SELECT id FROM offload_jobs");
        push_where(qb, filter, Some(*state), before);
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit))
            .push(")");
    }
    qb.push(") branches ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit));
}

/// Appends `WHERE ...` for `filter` with `state` in place of its states
/// (and the keyset cursor).
fn push_where(
    qb: &mut QueryBuilder<'_, Postgres>,
    filter: &JobFilter,
    state: Option<JobState>,
    before: Option<i64>,
) {
    qb.push(" WHERE true");
    if let Some(state) = state {
        qb.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(queue) = &filter.queue {
        qb.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(kind) = &filter.kind {
        qb.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(worker_id) = &filter.worker_id {
        qb.push(" AND worker_id = ").push_bind(worker_id.clone());
    }
    if let Some(tag) = &filter.tag {
        qb.push(" AND tags @> jsonb_build_array(")
            .push_bind(tag.clone())
            .push("::text)");
    }
    if let Some(since) = filter.since {
        qb.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        qb.push(" AND created_at < ").push_bind(until);
    }
    if let Some(pattern) = filter.like_pattern() {
        qb.push(" AND (args::text ILIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR errors::text ILIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    if let Some(before) = before {
        qb.push(" AND id < ").push_bind(before);
    }
}

/// Every job of `$1` but a running one becomes available. A job whose state
/// does not hold its unique key (a finished one) would take the key again:
/// it is retried only if no other job holds the key now, and only the
/// newest of several such jobs of one key.
const RETRY: &str = r#"
WITH candidate AS (
    SELECT id, unique_key,
           unique_key IS NOT NULL AND strpos(unique_states, ',' || state || ',') = 0 AS takes_key
    FROM offload_jobs
    WHERE id = ANY($1) AND state <> 'running'
    FOR UPDATE
), target AS (
    SELECT c.id FROM candidate c
    WHERE NOT c.takes_key
       OR (c.id = (SELECT max(d.id) FROM candidate d WHERE d.takes_key AND d.unique_key = c.unique_key)
           AND NOT EXISTS (SELECT 1 FROM offload_jobs o
                           WHERE o.unique_key = c.unique_key
                             AND strpos(o.unique_states, ',' || o.state || ',') > 0))
), retried AS (
    UPDATE offload_jobs j
    SET state = 'available',
        run_at = CASE WHEN j.state = 'available' THEN j.run_at ELSE now() END,
        finalized_at = NULL, worker_id = NULL,
        max_attempts = GREATEST(j.max_attempts, j.attempt + 1)
    WHERE j.id = ANY(ARRAY(SELECT id FROM target))
    RETURNING j.id, j.queue
), woke AS (
    SELECT count(pg_notify('offload_jobs', q)) AS n
    FROM (SELECT DISTINCT queue AS q FROM retried) s
)
SELECT retried.id, retried.queue FROM retried, woke ORDER BY retried.id
"#;

const CANCEL: &str = r#"
WITH target AS (
    SELECT id, state AS was FROM offload_jobs
    WHERE id = ANY($1) AND state IN ('scheduled', 'available', 'retryable', 'running')
    FOR UPDATE
), cancelled AS (
    UPDATE offload_jobs j
    SET state = 'cancelled', finalized_at = now(), worker_id = NULL,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'error', 'cancelled by an operator'))
    FROM target
    WHERE j.id = target.id
    RETURNING j.id, target.was = 'running' AS was_running
), signalled AS (
    SELECT count(pg_notify('offload_cancel', id::text)) AS n
    FROM cancelled WHERE was_running
)
SELECT cancelled.id, cancelled.was_running FROM cancelled, signalled ORDER BY cancelled.id
"#;

pub(super) async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    page: &Page,
) -> Result<Vec<JobSummary>> {
    // Ids first (index-only where possible), then the rows of the page.
    let mut qb = QueryBuilder::new("WITH page AS MATERIALIZED (");
    push_page_ids(&mut qb, filter, page.before, page.limit);
    qb.push(format!(
        ") SELECT {} FROM offload_jobs JOIN page USING (id) ORDER BY id DESC",
        summary_columns()
    ));
    let rows: Vec<SummaryRow> = qb.build_query_as().fetch_all(pool).await?;
    decode::all(rows)
}

pub(super) async fn list_ids(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<i64>> {
    let mut qb = QueryBuilder::new("");
    push_page_ids(&mut qb, filter, before, limit);
    Ok(qb.build_query_scalar().fetch_all(pool).await?)
}

pub(super) async fn count(pool: &PgPool, filter: &JobFilter) -> Result<i64> {
    let mut qb = QueryBuilder::new("SELECT count(*) FROM offload_jobs");
    push_where(&mut qb, filter, None, None);
    if !filter.states.is_empty() {
        let states: Vec<&'static str> = filter.states.iter().map(|s| s.as_str()).collect();
        qb.push(" AND state = ANY(").push_bind(states).push(")");
    }
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}

pub(super) async fn queue_state_counts(pool: &PgPool) -> Result<Vec<(String, JobState, i64)>> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(queue, state, n)| Ok((queue, parse_state(&state)?, n)))
        .collect()
}

pub(super) async fn oldest_available(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>> {
    // Reads only available rows (the claim index).
    Ok(sqlx::query_as(
        "SELECT queue, min(run_at) FROM offload_jobs WHERE state = 'available' GROUP BY queue",
    )
    .fetch_all(pool)
    .await?)
}

pub(super) async fn completed_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT queue, count(*) FROM offload_jobs \
         WHERE state = 'completed' AND finalized_at >= $1 GROUP BY queue",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

type SettingsRow = (
    String,
    bool,
    Option<i32>,
    Option<i32>,
    Option<i64>,
    bool,
    Option<i32>,
    i64,
    i64,
    i64,
    i64,
    Option<i32>,
    Option<i64>,
);

pub(super) async fn settings(pool: &PgPool) -> Result<Vec<QueueSettings>> {
    static SETTINGS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT q.name, q.paused, q.global_limit, q.rate_limit, q.rate_period_ms, \
           q.partitioned, q.partition_limit, \
           (SELECT COALESCE(sum(s.starts), 0) FROM offload_rate_starts s WHERE s.queue = q.name \
              AND q.rate_limit IS NOT NULL \
              AND s.started_at > now() - q.rate_period_ms * interval '1 millisecond'), \
           COALESCE(p.keys_running, 0), COALESCE(p.keys_full, 0), COALESCE(p.waiting, 0), \
           q.partition_rate_limit, q.partition_rate_period_ms \
         FROM offload_queues q LEFT JOIN ({PARTITION_USE}) p ON p.queue = q.name"
        )
    });
    let rows: Vec<SettingsRow> = sqlx::query_as(SETTINGS.as_str()).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|row| QueueSettings {
            name: row.0,
            paused: row.1,
            limits: QueueLimits::from(LimitColumns {
                global: row.2.map(i64::from),
                rate_limit: row.3.map(i64::from),
                rate_period_ms: row.4,
                partitioned: row.5,
                partition_limit: row.6.map(i64::from),
                partition_rate_limit: row.11.map(i64::from),
                partition_rate_period_ms: row.12,
            }),
            rate_started: row.7,
            partition_use: PartitionUse {
                keys_running: row.8,
                keys_at_limit: row.9,
                waiting_at_limit: row.10,
            },
        })
        .collect())
}

pub(super) async fn finished_per_minute(
    pool: &PgPool,
    since: DateTime<Utc>,
    queue: Option<&str>,
) -> Result<Vec<(DateTime<Utc>, JobState, i64)>> {
    let rows: Vec<(DateTime<Utc>, String, i64)> = sqlx::query_as(
        "SELECT date_trunc('minute', finalized_at), state, count(*) FROM offload_jobs \
         WHERE state IN ('completed', 'discarded') AND finalized_at >= $1 \
           AND ($2::text IS NULL OR queue = $2) \
         GROUP BY 1, 2",
    )
    .bind(since)
    .bind(queue)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(minute, state, n)| Ok((minute, parse_state(&state)?, n)))
        .collect()
}

pub(super) async fn retry_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query_as(RETRY).bind(ids).fetch_all(conn).await?)
}

pub(super) async fn cancel_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<(i64, bool)>> {
    Ok(sqlx::query_as(CANCEL).bind(ids).fetch_all(conn).await?)
}

pub(super) async fn delete_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "DELETE FROM offload_jobs WHERE id = ANY($1) AND state <> 'running' RETURNING id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

pub(super) async fn set_paused(pool: &PgPool, queue: &str, paused: bool) -> Result<()> {
    sqlx::query(
        "WITH upsert AS (
             INSERT INTO offload_queues (name, paused, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
         )
         SELECT pg_notify('offload_jobs', $1) WHERE NOT $2",
    )
    .bind(queue)
    .bind(paused)
    .execute(pool)
    .await?;
    Ok(())
}
