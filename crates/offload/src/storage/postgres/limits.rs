//! Queue limits over all workers: the settings, and the claim that keeps
//! to them (claimers take turns on the queue's row).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::jobs::{claim_on, limit, CLAIM_AT};
use super::partitions::{claim_in_turn, Turn};
use crate::storage::decode::ClaimRow;
use crate::storage::{Claimed, ClaimedJob, LimitChange, LimitColumns, LimitUse, QueueLimits};
use crate::Result;

/// A limited queue's settings with the counts its limits need, read after
/// the claimer took its turn: running jobs, and starts in the window before
/// the database's clock now (not the transaction's start: the claimer may
/// have waited for the queue's row).
const LIMITS: &str = r#"
WITH t AS (SELECT clock_timestamp() AS now)
SELECT q.paused, q.global_limit, q.rate_limit, q.rate_period_ms, q.partitioned,
       q.partition_limit, q.partition_cursor, t.now,
       (SELECT count(*) FROM offload_jobs WHERE queue = $1 AND state = 'running'
          AND q.global_limit IS NOT NULL),
       w.started, w.oldest, q.partition_rate_limit, q.partition_rate_period_ms
FROM offload_queues q, t,
     LATERAL (SELECT COALESCE(sum(s.starts), 0)::int8 AS started, min(s.started_at) AS oldest
              FROM offload_rate_starts s
              WHERE s.queue = $1 AND q.rate_limit IS NOT NULL
                AND s.started_at > t.now - q.rate_period_ms * interval '1 millisecond') w
WHERE q.name = $1
"#;

type LimitsRow = (
    bool,
    Option<i32>,
    Option<i32>,
    Option<i64>,
    bool,
    Option<i32>,
    String,
    DateTime<Utc>,
    i64,
    i64,
    Option<DateTime<Utc>>,
    Option<i32>,
    Option<i64>,
);

/// A claim's starts, in one row.
const RATE_RECORD: &str =
    "INSERT INTO offload_rate_starts (queue, started_at, starts) VALUES ($1, $2, $3)";

/// Starts older than the window and a minute: the minute covers a claimer
/// whose clock reading came before a lock wait.
const RATE_FORGET: &str = "DELETE FROM offload_rate_starts \
     WHERE queue = $1 AND started_at < $2 - ($3 * interval '1 millisecond') - interval '1 minute'";

pub(super) async fn claim_limited(
    conn: &mut PgConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
) -> Result<Claimed> {
    // One statement cannot see claims committed while it waited for a
    // lock (its snapshot is older), so claimers of a limited queue take
    // turns on the queue's row and count in a later statement.
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query("SELECT 1 FROM offload_queues WHERE name = $1 FOR UPDATE")
        .bind(queue)
        .execute(&mut *tx)
        .await?;
    let row: Option<LimitsRow> = sqlx::query_as(LIMITS)
        .bind(queue)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        let jobs = claim_on(&mut tx, queue, max, worker_id).await?;
        tx.commit().await?;
        return Ok(jobs.into());
    };
    let (paused, global, rate_limit, rate_period_ms, partitioned, partition_limit, cursor) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
    let (now, running, started, oldest) = (row.7, row.8, row.9, row.10);
    if paused {
        return Ok(Claimed::default());
    }
    let limits = QueueLimits::from(LimitColumns {
        global: global.map(i64::from),
        rate_limit: rate_limit.map(i64::from),
        rate_period_ms,
        partitioned,
        partition_limit: partition_limit.map(i64::from),
        partition_rate_limit: row.11.map(i64::from),
        partition_rate_period_ms: row.12,
    });
    let used = LimitUse {
        running,
        rate_started: started,
        rate_oldest_age: oldest.and_then(|oldest| (now - oldest).to_std().ok()),
    };
    let (room, throttled) = limits.room(max, &used);
    let mut jobs = Vec::new();
    if let (Some(partition), true) = (limits.partition, room > 0) {
        let turn = Turn {
            queue,
            worker_id,
            now,
        };
        jobs = claim_in_turn(&mut tx, &turn, room, partition, &cursor).await?;
    } else if room > 0 {
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_AT.as_str())
            .bind(queue)
            .bind(limit(room))
            .bind(worker_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        jobs = rows.into_iter().map(ClaimedJob::from).collect();
    }
    if let Some(rate) = limits.rate {
        if !jobs.is_empty() {
            sqlx::query(RATE_RECORD)
                .bind(queue)
                .bind(now)
                .bind(limit(jobs.len()))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(RATE_FORGET)
            .bind(queue)
            .bind(now)
            .bind(rate.period_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Claimed { jobs, throttled })
}

pub(super) async fn limits(pool: &PgPool, queue: &str) -> Result<QueueLimits> {
    type Row = (
        Option<i32>,
        Option<i32>,
        Option<i64>,
        bool,
        Option<i32>,
        Option<i32>,
        Option<i64>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT global_limit, rate_limit, rate_period_ms, partitioned, partition_limit, \
         partition_rate_limit, partition_rate_period_ms FROM offload_queues WHERE name = $1",
    )
    .bind(queue)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or_else(QueueLimits::default, |row| {
        QueueLimits::from(LimitColumns {
            global: row.0.map(i64::from),
            rate_limit: row.1.map(i64::from),
            rate_period_ms: row.2,
            partitioned: row.3,
            partition_limit: row.4.map(i64::from),
            partition_rate_limit: row.5.map(i64::from),
            partition_rate_period_ms: row.6,
        })
    }))
}

/// Sets one limit, creating the queue's row if it has none.
pub(super) async fn set_limit(pool: &PgPool, queue: &str, change: LimitChange) -> Result<()> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let query = match change {
        LimitChange::Global(limit) => sqlx::query(
            "INSERT INTO offload_queues (name, global_limit) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET global_limit = excluded.global_limit, \
             updated_at = now()",
        )
        .bind(queue)
        .bind(limit.map(count)),
        LimitChange::Rate(rate) => sqlx::query(
            "INSERT INTO offload_queues (name, rate_limit, rate_period_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET rate_limit = excluded.rate_limit, \
             rate_period_ms = excluded.rate_period_ms, updated_at = now()",
        )
        .bind(queue)
        .bind(rate.map(|rate| i32::try_from(rate.limit()).unwrap_or(i32::MAX)))
        .bind(rate.map(|rate| rate.period_ms())),
        LimitChange::Partition(partition) => sqlx::query(
            "INSERT INTO offload_queues (name, partitioned, partition_limit, \
             partition_rate_limit, partition_rate_period_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET partitioned = excluded.partitioned, \
             partition_limit = excluded.partition_limit, \
             partition_rate_limit = excluded.partition_rate_limit, \
             partition_rate_period_ms = excluded.partition_rate_period_ms, updated_at = now()",
        )
        .bind(queue)
        .bind(partition.is_some())
        .bind(partition.and_then(|p| p.concurrency_limit()).map(count))
        .bind(
            partition
                .and_then(|p| p.rate_limit())
                .map(|rate| i32::try_from(rate.limit()).unwrap_or(i32::MAX)),
        )
        .bind(
            partition
                .and_then(|p| p.rate_limit())
                .map(|rate| rate.period_ms()),
        ),
    };
    query.execute(pool).await?;
    Ok(())
}
