//! The admin operations' SQL on SQLite.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::super::admin::{
    AdminBackend, JobFilter, JobSummary, Page, QueueStateCount, ARGS_PREVIEW_LEN,
};
use super::super::{decode_tags, parse_state};
use super::{from_micros, micros, now_micros};
use crate::state::JobState;
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
    let states: &[JobState] = if filter.states.is_empty() && filter.queue.is_some() {
        &JobState::ALL
    } else {
        &filter.states
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
    }
    if let Some(queue) = &filter.queue {
        qb.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(kind) = &filter.kind {
        qb.push(" AND kind = ").push_bind(kind.clone());
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

fn summary(row: &SqliteRow) -> Result<JobSummary> {
    let state: String = row.try_get(3)?;
    let tags: String = row.try_get(7)?;
    let attempted_at: Option<i64> = row.try_get(12)?;
    let finalized_at: Option<i64> = row.try_get(13)?;
    Ok(JobSummary {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        queue: row.try_get(2)?,
        state: parse_state(&state)?,
        priority: row.try_get(4)?,
        attempt: row.try_get(5)?,
        max_attempts: row.try_get(6)?,
        tags: decode_tags(&tags),
        args_preview: row.try_get(8)?,
        last_error: row.try_get(9)?,
        created_at: from_micros(row.try_get(10)?),
        run_at: from_micros(row.try_get(11)?),
        attempted_at: attempted_at.map(from_micros),
        finalized_at: finalized_at.map(from_micros),
    })
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

impl AdminBackend for Sqlite {
    async fn list_jobs(
        pool: &SqlitePool,
        filter: &JobFilter,
        page: &Page,
    ) -> Result<Vec<JobSummary>> {
        let mut qb = QueryBuilder::new("WITH page AS (");
        push_page_ids(&mut qb, filter, page.before, page.limit);
        qb.push(format!(
            ") SELECT id, kind, queue, state, priority, attempt, max_attempts, tags, \
             substr(args, 1, {ARGS_PREVIEW_LEN}), errors ->> '$[#-1].error', created_at, run_at, \
             attempted_at, finalized_at FROM offload_jobs WHERE id IN (SELECT id FROM page) \
             ORDER BY id DESC"
        ));
        let rows = qb.build().fetch_all(pool).await?;
        rows.iter().map(summary).collect()
    }

    async fn job_ids(
        pool: &SqlitePool,
        filter: &JobFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<i64>> {
        let mut qb = QueryBuilder::new("");
        push_page_ids(&mut qb, filter, before, limit);
        Ok(qb.build_query_scalar().fetch_all(pool).await?)
    }

    async fn count_jobs(pool: &SqlitePool, filter: &JobFilter) -> Result<i64> {
        let mut qb = QueryBuilder::new("SELECT count(*) FROM offload_jobs");
        push_where(&mut qb, filter, None, None);
        if !filter.states.is_empty() {
            qb.push(" AND state IN (");
            let mut states = qb.separated(", ");
            for state in &filter.states {
                states.push_bind(state.as_str());
            }
            qb.push(")");
        }
        Ok(qb.build_query_scalar().fetch_one(pool).await?)
    }

    async fn queue_state_counts(pool: &SqlitePool) -> Result<Vec<QueueStateCount>> {
        // A scan of the (queue, state, id) index alone.
        let counts: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state")
                .fetch_all(pool)
                .await?;
        // Separate, so it reads only available rows (the claim index).
        let oldest: Vec<(String, i64)> = sqlx::query_as(
            "SELECT queue, min(run_at) FROM offload_jobs WHERE state = 'available' GROUP BY queue",
        )
        .fetch_all(pool)
        .await?;
        counts
            .into_iter()
            .map(|(queue, state, count)| {
                let state = parse_state(&state)?;
                let oldest_run_at = (state == JobState::Available)
                    .then(|| {
                        oldest
                            .iter()
                            .find(|(q, _)| *q == queue)
                            .map(|(_, at)| from_micros(*at))
                    })
                    .flatten();
                Ok(QueueStateCount {
                    queue,
                    state,
                    count,
                    oldest_run_at,
                })
            })
            .collect()
    }

    async fn completed_since(
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

    async fn queue_flags(pool: &SqlitePool) -> Result<Vec<(String, bool)>> {
        Ok(
            sqlx::query_as("SELECT name, paused <> 0 FROM offload_queues")
                .fetch_all(pool)
                .await?,
        )
    }

    async fn finished_per_minute(
        pool: &SqlitePool,
        since: DateTime<Utc>,
        queue: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, JobState, i64)>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
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
            .map(|(minute, state, n)| Ok((from_micros(minute), parse_state(&state)?, n)))
            .collect()
    }

    async fn retry_jobs(pool: &SqlitePool, ids: &[i64]) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "UPDATE offload_jobs
             SET state = 'available', run_at = ?1, finalized_at = NULL, worker_id = NULL,
                 max_attempts = max(max_attempts, attempt + 1)
             WHERE id IN (SELECT value FROM json_each(?2))
               AND state IN ('discarded', 'cancelled', 'retryable')
             RETURNING id, queue",
        )
        .bind(now_micros())
        .bind(ids_json(ids))
        .fetch_all(pool)
        .await?)
    }

    async fn cancel_jobs(pool: &SqlitePool, ids: &[i64]) -> Result<Vec<(i64, bool)>> {
        // One write transaction, so the running set read is the one changed.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let ids = ids_json(ids);
        let running: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM offload_jobs \
             WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running'",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
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
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        cancelled.sort_unstable();
        Ok(cancelled
            .into_iter()
            .map(|id| (id, running.contains(&id)))
            .collect())
    }

    async fn delete_jobs(pool: &SqlitePool, ids: &[i64]) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM offload_jobs \
             WHERE id IN (SELECT value FROM json_each(?1)) AND state <> 'running' RETURNING id",
        )
        .bind(ids_json(ids))
        .fetch_all(pool)
        .await?)
    }

    async fn set_queue_paused(pool: &SqlitePool, queue: &str, paused: bool) -> Result<()> {
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
}
