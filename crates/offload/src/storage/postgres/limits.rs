//! Queue limits over all workers: the settings, and the claim that keeps
//! to them (claimers take turns on the queue's row).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::jobs::{claim_on, limit, CLAIM_AT};
use crate::storage::decode::ClaimRow;
use crate::storage::{Claimed, ClaimedJob, QueueLimits, Throttle};
use crate::{RateLimit, Result};

/// The database's clock now (not the transaction's start: the claimer may
/// have waited for the queue's lock) and the starts in the window before it.
const RATE_WINDOW: &str = r#"
WITH t AS (SELECT clock_timestamp() AS now),
w AS (SELECT count(*) AS started, min(s.started_at) AS oldest
      FROM offload_rate_starts s, t
      WHERE s.queue = $1 AND s.started_at > t.now - $2 * interval '1 millisecond')
SELECT t.now, w.started, w.oldest FROM t, w
"#;

const RATE_RECORD: &str = "INSERT INTO offload_rate_starts (queue, started_at) \
     SELECT $1, $2 FROM generate_series(1, $3)";

/// Starts older than the window and a minute: the minute covers a claimer
/// whose clock reading came before a lock wait.
const RATE_FORGET: &str = "DELETE FROM offload_rate_starts \
     WHERE queue = $1 AND started_at < $2 - ($3 * interval '1 millisecond') - interval '1 minute'";

/// `paused, global_limit, rate_limit, rate_period_ms` of a queue.
type LimitsRow = (bool, Option<i32>, Option<i32>, Option<i64>);

pub(super) async fn claim_limited(
    conn: &mut PgConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
) -> Result<Claimed> {
    // One statement cannot see claims committed while it waited for a
    // lock (its snapshot is older), so claimers of a limited queue take
    // turns on the queue's row and count in later statements.
    let mut tx = sqlx::Connection::begin(conn).await?;
    let settings: Option<LimitsRow> = sqlx::query_as(
        "SELECT paused, global_limit, rate_limit, rate_period_ms FROM offload_queues \
         WHERE name = $1 FOR UPDATE",
    )
    .bind(queue)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((paused, global, rate_limit, rate_period_ms)) = settings else {
        let jobs = claim_on(&mut tx, queue, max, worker_id).await?;
        tx.commit().await?;
        return Ok(jobs.into());
    };
    if paused {
        return Ok(Claimed::default());
    }
    let mut want = max;
    let mut throttled = None;
    if let Some(global) = global {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM offload_jobs WHERE queue = $1 AND state = 'running'",
        )
        .bind(queue)
        .fetch_one(&mut *tx)
        .await?;
        let free = usize::try_from(i64::from(global) - running).unwrap_or(0);
        if free < want {
            want = free;
            throttled = Some(Throttle::Global);
        }
    }
    let rate = RateLimit::from_columns(rate_limit.map(i64::from), rate_period_ms);
    let (Some(rate), true) = (rate, want > 0) else {
        let jobs = if want == 0 {
            Vec::new()
        } else {
            claim_on(&mut tx, queue, want, worker_id).await?
        };
        tx.commit().await?;
        return Ok(Claimed { jobs, throttled });
    };
    // A start counts in every window it falls in. Counting the window
    // before `now` with no upper bound holds the limit in every window,
    // whatever order claimers' clock readings and commits take.
    let (now, started, oldest): (DateTime<Utc>, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(RATE_WINDOW)
            .bind(queue)
            .bind(rate.period_ms())
            .fetch_one(&mut *tx)
            .await?;
    let free = usize::try_from(i64::from(rate.limit()) - started).unwrap_or(0);
    if free < want {
        want = free;
        let free_at = oldest.map_or(now, |oldest| oldest + rate.period());
        let free_in = (free_at - now).to_std().unwrap_or_default();
        throttled = Some(Throttle::Rate { free_in });
    }
    let mut jobs = Vec::new();
    if want > 0 {
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_AT.as_str())
            .bind(queue)
            .bind(limit(want))
            .bind(worker_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(RATE_RECORD)
            .bind(queue)
            .bind(now)
            .bind(limit(rows.len()))
            .execute(&mut *tx)
            .await?;
        jobs = rows.into_iter().map(ClaimedJob::from).collect();
    }
    sqlx::query(RATE_FORGET)
        .bind(queue)
        .bind(now)
        .bind(rate.period_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Claimed { jobs, throttled })
}

pub(super) async fn limits(pool: &PgPool, queue: &str) -> Result<QueueLimits> {
    let row: Option<(Option<i32>, Option<i32>, Option<i64>)> = sqlx::query_as(
        "SELECT global_limit, rate_limit, rate_period_ms FROM offload_queues WHERE name = $1",
    )
    .bind(queue)
    .fetch_optional(pool)
    .await?;
    let Some((global, rate_limit, rate_period_ms)) = row else {
        return Ok(QueueLimits::default());
    };
    Ok(QueueLimits {
        global: global.and_then(|n| usize::try_from(n).ok()),
        rate: RateLimit::from_columns(rate_limit.map(i64::from), rate_period_ms),
    })
}

pub(super) async fn set_rate_limit(
    pool: &PgPool,
    queue: &str,
    rate: Option<RateLimit>,
) -> Result<()> {
    let limit = rate.map(|rate| i32::try_from(rate.limit()).unwrap_or(i32::MAX));
    sqlx::query(
        "INSERT INTO offload_queues (name, rate_limit, rate_period_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET rate_limit = excluded.rate_limit, \
         rate_period_ms = excluded.rate_period_ms, updated_at = now()",
    )
    .bind(queue)
    .bind(limit)
    .bind(rate.map(|rate| rate.period_ms()))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn set_global_limit(
    pool: &PgPool,
    queue: &str,
    limit: Option<usize>,
) -> Result<()> {
    let limit = limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    sqlx::query(
        "INSERT INTO offload_queues (name, global_limit) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET global_limit = excluded.global_limit, updated_at = now()",
    )
    .bind(queue)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(())
}
