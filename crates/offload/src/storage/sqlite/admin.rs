//! The admin operations' SQL on SQLite.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{
    Connection, Database, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, TransactionManager,
};

use crate::state::JobState;
use crate::storage::decode::{self, parse_state, SummaryRow};
use crate::storage::time::{micros, now_micros, DbTime};
use crate::storage::{
    JobFilter, JobSummary, LimitColumns, Page, PartitionUse, QueueLimits, QueueSettings,
    ARGS_PREVIEW_LEN, PARTITION_USE,
};
use crate::Result;

const MINUTE_MICROS: i64 = 60_000_000;

/// Appends the ids of one page of jobs matching `filter`, newest first.
///
/// With several states, or a queue and no state, this is one branch per
/// state, merged: each branch walks the `(queue, state, id)` or
/// `(state, id)` index in id order instead of sorting a whole queue.
fn push_page_ids(
    qb: &mut QueryBuilder<'_, Sqlite>,
    filter: &JobFilter,
    before: Option<i64>,
    limit: u32,
) {
    let distinct = filter.distinct_states();
    let states: &[JobState] = if distinct.is_empty() && filter.queue.is_some() {
        &JobState::ALL
    } else {
        &distinct
    };
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
        qb.push("SELECT id FROM (SELECT id FROM offload_jobs");
        push_where(qb, filter, Some(*state), before);
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit))
            .push(")");
    }
    qb.push(") ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit));
}

/// Appends `WHERE ...` for `filter` with `state` in place of its states
/// (and the keyset cursor).
fn push_where(
    qb: &mut QueryBuilder<'_, Sqlite>,
    filter: &JobFilter,
    state: Option<JobState>,
    before: Option<i64>,
) {
    qb.push(" WHERE 1");
    if let Some(state) = state {
        qb.push(" AND state = ").push_bind(state.as_str());
        push_index_terms(qb, state);
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
        qb.push(" AND EXISTS (SELECT 1 FROM json_each(offload_jobs.tags) t WHERE t.value = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(since) = filter.since {
        qb.push(" AND created_at >= ").push_bind(micros(since));
    }
    if let Some(until) = filter.until {
        qb.push(" AND created_at < ").push_bind(micros(until));
    }
    if let Some(pattern) = filter.like_pattern() {
        // SQLite's LIKE ignores ASCII case, like PostgreSQL's ILIKE.
        qb.push(" AND (args LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR errors LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    if let Some(before) = before {
        qb.push(" AND id < ").push_bind(before);
    }
}

/// Repeats, as literals, the predicates of the partial indexes that hold
/// `state`: SQLite uses a partial index only for a query whose WHERE
/// clause contains the index's own terms, and a bound state is not one.
fn push_index_terms(qb: &mut QueryBuilder<'_, Sqlite>, state: JobState) {
    if state != JobState::Running {
        qb.push(" AND state <> 'running'");
    }
    if state.is_final() {
        qb.push(" AND state IN ('completed', 'discarded', 'cancelled')");
    }
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &JobFilter,
    page: &Page,
) -> Result<Vec<JobSummary>> {
    let mut qb = QueryBuilder::new("WITH page AS (");
    push_page_ids(&mut qb, filter, page.before, page.limit);
    qb.push(format!(
        ") SELECT id, kind, queue, state, priority, attempt, max_attempts, tags, \
         substr(args, 1, {ARGS_PREVIEW_LEN}) AS args_preview, \
         errors ->> '$[#-1].error' AS last_error, created_at, run_at, attempted_at, \
         finalized_at FROM offload_jobs WHERE id IN (SELECT id FROM page) ORDER BY id DESC"
    ));
    let rows: Vec<SummaryRow> = qb.build_query_as().fetch_all(pool).await?;
    decode::all(rows)
}

pub(super) async fn list_ids(
    pool: &SqlitePool,
    filter: &JobFilter,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<i64>> {
    let mut qb = QueryBuilder::new("");
    push_page_ids(&mut qb, filter, before, limit);
    Ok(qb.build_query_scalar().fetch_all(pool).await?)
}

pub(super) async fn count(pool: &SqlitePool, filter: &JobFilter) -> Result<i64> {
    // Running jobs and the rest are counted apart, each through its own
    // partial index (offload_jobs_running, offload_jobs_queue_state).
    let states = filter.distinct_states();
    let running = states.is_empty() || states.contains(&JobState::Running);
    let others: Vec<JobState> = states
        .iter()
        .copied()
        .filter(|s| *s != JobState::Running)
        .collect();
    let mut qb = QueryBuilder::new("SELECT 0");
    if states.is_empty() || !others.is_empty() {
        qb.push(" + (SELECT count(*) FROM offload_jobs");
        push_where(&mut qb, filter, None, None);
        qb.push(" AND state <> 'running'");
        if !others.is_empty() {
            qb.push(" AND state IN (");
            let mut list = qb.separated(", ");
            for state in &others {
                list.push_bind(state.as_str());
            }
            qb.push(")");
            if others.iter().all(|s| s.is_final()) {
                qb.push(" AND state IN ('completed', 'discarded', 'cancelled')");
            }
        }
        qb.push(")");
    }
    if running {
        qb.push(" + (SELECT count(*) FROM offload_jobs");
        push_where(&mut qb, filter, Some(JobState::Running), None);
        qb.push(")");
    }
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}

pub(super) async fn queue_state_counts(pool: &SqlitePool) -> Result<Vec<(String, JobState, i64)>> {
    // Scans of the (queue, state, id) and (queue, worker_id) partial
    // indexes alone.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT queue, state, count(*) FROM offload_jobs WHERE state <> 'running' \
         GROUP BY queue, state \
         UNION ALL SELECT queue, 'running', count(*) FROM offload_jobs \
         WHERE state = 'running' GROUP BY queue",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(queue, state, n)| Ok((queue, parse_state(&state)?, n)))
        .collect()
}

pub(super) async fn oldest_available(pool: &SqlitePool) -> Result<Vec<(String, DateTime<Utc>)>> {
    // Reads only available rows (the claim index).
    let rows: Vec<(String, DbTime)> = sqlx::query_as(
        "SELECT queue, min(run_at) FROM offload_jobs WHERE state = 'available' GROUP BY queue",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(q, at)| (q, at.into())).collect())
}

pub(super) async fn completed_since(
    pool: &SqlitePool,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    // Repeating the partial index's own WHERE term lets SQLite use
    // offload_jobs_finalized; `+queue` keeps it from grouping by another index.
    Ok(sqlx::query_as(
        "SELECT queue, count(*) FROM offload_jobs \
         WHERE state IN ('completed', 'discarded', 'cancelled') \
         AND state = 'completed' AND finalized_at >= ?1 GROUP BY +queue",
    )
    .bind(micros(since))
    .fetch_all(pool)
    .await?)
}

type SettingsRow = (
    String,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(super) async fn settings(pool: &SqlitePool) -> Result<Vec<QueueSettings>> {
    static SETTINGS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT q.name, q.paused <> 0, q.global_limit, q.rate_limit, q.rate_period_ms, \
           q.partitioned <> 0, q.partition_limit, \
           (SELECT COALESCE(sum(s.starts), 0) FROM offload_rate_starts s WHERE s.queue = q.name \
              AND q.rate_limit IS NOT NULL AND s.started_at > ?1 - q.rate_period_ms * 1000), \
           COALESCE(p.keys_running, 0), COALESCE(p.keys_full, 0), COALESCE(p.waiting, 0), \
           q.partition_rate_limit, q.partition_rate_period_ms \
         FROM offload_queues q LEFT JOIN ({PARTITION_USE}) p ON p.queue = q.name"
        )
    });
    let rows: Vec<SettingsRow> = sqlx::query_as(SETTINGS.as_str())
        .bind(now_micros())
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| QueueSettings {
            name: row.0,
            paused: row.1,
            limits: QueueLimits::from(LimitColumns {
                global: row.2,
                rate_limit: row.3,
                rate_period_ms: row.4,
                partitioned: row.5,
                partition_limit: row.6,
                partition_rate_limit: row.11,
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
    pool: &SqlitePool,
    since: DateTime<Utc>,
    queue: Option<&str>,
) -> Result<Vec<(DateTime<Utc>, JobState, i64)>> {
    let rows: Vec<(DbTime, String, i64)> = sqlx::query_as(
        "SELECT (finalized_at / ?3) * ?3 AS minute, state, count(*) FROM offload_jobs \
         WHERE state IN ('completed', 'discarded', 'cancelled') \
           AND state IN ('completed', 'discarded') AND finalized_at >= ?1 \
           AND (?2 IS NULL OR queue = ?2) \
         GROUP BY minute, state",
    )
    .bind(micros(since))
    .bind(queue)
    .bind(MINUTE_MICROS)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(minute, state, n)| Ok((minute.into(), parse_state(&state)?, n)))
        .collect()
}

/// Every job of `?2` but a running one becomes available. A job whose state
/// does not hold its unique key (a finished one) would take the key again:
/// it is retried only if no other job holds the key now, and only the
/// newest of several such jobs of one key.
const RETRY: &str = r#"
WITH candidate AS MATERIALIZED (
    SELECT id, unique_key,
           unique_key IS NOT NULL AND instr(unique_states, ',' || state || ',') = 0 AS takes_key
    FROM offload_jobs
    WHERE id IN (SELECT value FROM json_each(?2)) AND state <> 'running'
), target AS MATERIALIZED (
    SELECT c.id FROM candidate c
    WHERE NOT c.takes_key
       OR (c.id = (SELECT max(d.id) FROM candidate d WHERE d.takes_key AND d.unique_key = c.unique_key)
           AND NOT EXISTS (SELECT 1 FROM offload_jobs o
                           WHERE o.unique_key = c.unique_key
                             AND instr(o.unique_states, ',' || o.state || ',') > 0))
)
UPDATE offload_jobs
SET state = 'available',
    run_at = CASE WHEN state = 'available' THEN run_at ELSE ?1 END,
    finalized_at = NULL, worker_id = NULL,
    max_attempts = max(max_attempts, attempt + 1)
WHERE id IN (SELECT id FROM target)
RETURNING id, queue
"#;

pub(super) async fn retry_many(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<Vec<(i64, String)>> {
    let mut retried: Vec<(i64, String)> = sqlx::query_as(RETRY)
        .bind(now_micros())
        .bind(ids_json(ids))
        .fetch_all(conn)
        .await?;
    retried.sort_unstable();
    Ok(retried)
}

pub(super) async fn cancel_many(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<Vec<(i64, bool)>> {
    type Manager = <Sqlite as Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) > 0 {
        return cancel_in_tx(conn, ids).await;
    }
    // Alone, it takes the write lock first, so that the running jobs it
    // reads are the ones it cancels.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let cancelled = cancel_in_tx(&mut tx, ids).await?;
    tx.commit().await?;
    Ok(cancelled)
}

/// Cancels inside the transaction `conn` is in: its snapshot (or the write
/// lock it holds) makes the running set read the one changed.
async fn cancel_in_tx(conn: &mut SqliteConnection, ids: &[i64]) -> Result<Vec<(i64, bool)>> {
    let ids = ids_json(ids);
    let running: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM offload_jobs \
         WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running'",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let now = Utc::now();
    let mut cancelled: Vec<i64> = sqlx::query_scalar(
        "UPDATE offload_jobs
         SET state = 'cancelled', finalized_at = ?1, worker_id = NULL,
             errors = json_insert(errors, '$[#]', json_object(
                 'attempt', attempt, 'at', ?2, 'error', 'cancelled by an operator'))
         WHERE id IN (SELECT value FROM json_each(?3))
           AND state IN ('scheduled', 'available', 'retryable', 'running')
         RETURNING id",
    )
    .bind(micros(now))
    .bind(now.to_rfc3339())
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    cancelled.sort_unstable();
    Ok(cancelled
        .into_iter()
        .map(|id| (id, running.contains(&id)))
        .collect())
}

pub(super) async fn delete_many(conn: &mut SqliteConnection, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "DELETE FROM offload_jobs \
         WHERE id IN (SELECT value FROM json_each(?1)) AND state <> 'running' RETURNING id",
    )
    .bind(ids_json(ids))
    .fetch_all(conn)
    .await?)
}

pub(super) async fn set_paused(pool: &SqlitePool, queue: &str, paused: bool) -> Result<()> {
    sqlx::query(
        "INSERT INTO offload_queues (name, paused, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, \
         updated_at = excluded.updated_at",
    )
    .bind(queue)
    .bind(paused)
    .bind(now_micros())
    .execute(pool)
    .await?;
    Ok(())
}
