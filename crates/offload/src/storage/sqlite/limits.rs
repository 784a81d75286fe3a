//! Queue limits over all workers: the settings, and the claim that keeps
//! to them (inside one write transaction, so counts stay current).

use std::time::Duration;

use sqlx::{SqliteConnection, SqlitePool};

use super::jobs::{claim_at, limit};
use super::partitions::{claim_in_turn, Turn};
use crate::storage::time::now_micros;
use crate::storage::{Claimed, LimitChange, LimitColumns, LimitUse, QueueLimits};
use crate::Result;

/// A limited queue's settings, with the counts its limits need: running
/// jobs, and starts in the window ending at `?2` (microseconds).
const LIMITS: &str = r#"
SELECT q.paused, q.global_limit, q.rate_limit, q.rate_period_ms, q.partitioned <> 0,
       q.partition_limit, q.partition_cursor,
       (SELECT count(*) FROM offload_jobs WHERE queue = ?1 AND state = 'running'
          AND q.global_limit IS NOT NULL),
       (SELECT COALESCE(sum(s.starts), 0) FROM offload_rate_starts s
          WHERE s.queue = ?1 AND s.started_at > ?2 - q.rate_period_ms * 1000),
       (SELECT min(s.started_at) FROM offload_rate_starts s
          WHERE s.queue = ?1 AND s.started_at > ?2 - q.rate_period_ms * 1000),
       q.partition_rate_limit, q.partition_rate_period_ms
FROM offload_queues q WHERE q.name = ?1
"#;

type LimitsRow = (
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    Option<i64>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A claim's starts, in one row.
const RATE_RECORD: &str =
    "INSERT INTO offload_rate_starts (queue, started_at, starts) VALUES (?1, ?2, ?3)";

/// Starts older than the window and a minute: the minute covers a claimer
/// whose clock reading came before a wait for the write lock.
const RATE_FORGET: &str = "DELETE FROM offload_rate_starts \
     WHERE queue = ?1 AND started_at < ?2 - ?3 * 1000 - 60000000";

/// Claims within the queue's global and rate limits. The counts and the
/// claim share one write transaction (taken first, so no other writer
/// claims between the count and the claim).
pub(super) async fn claim_limited(
    conn: &mut SqliteConnection,
    queue: &str,
    max: usize,
    worker_id: &str,
) -> Result<Claimed> {
    use sqlx::Connection;
    let mut tx = if conn.is_in_transaction() {
        // A write group's transaction, which holds the write lock.
        conn.begin().await?
    } else {
        conn.begin_with("BEGIN IMMEDIATE").await?
    };
    let now = now_micros();
    let row: Option<LimitsRow> = sqlx::query_as(LIMITS)
        .bind(queue)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        let jobs = claim_at(&mut tx, queue, max, worker_id, now).await?;
        tx.commit().await?;
        return Ok(jobs.into());
    };
    let (paused, global, rate_limit, rate_period_ms, partitioned, partition_limit, cursor) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
    let (running, started, oldest) = (row.7, row.8, row.9);
    if paused {
        return Ok(Claimed::default());
    }
    let limits = QueueLimits::from(LimitColumns {
        global,
        rate_limit,
        rate_period_ms,
        partitioned,
        partition_limit,
        partition_rate_limit: row.10,
        partition_rate_period_ms: row.11,
    });
    let used = LimitUse {
        running,
        rate_started: started,
        rate_oldest_age: oldest
            .map(|oldest| Duration::from_micros(u64::try_from(now - oldest).unwrap_or(0))),
    };
    let (room, throttled) = limits.room(max, &used);
    let jobs = match (room, limits.partition) {
        (0, _) => Vec::new(),
        (_, Some(partition)) => {
            let turn = Turn {
                queue,
                worker_id,
                now,
            };
            claim_in_turn(&mut tx, &turn, room, partition, &cursor).await?
        }
        (_, None) => claim_at(&mut tx, queue, room, worker_id, now).await?,
    };
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

pub(super) async fn limits(pool: &SqlitePool, queue: &str) -> Result<QueueLimits> {
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        bool,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT global_limit, rate_limit, rate_period_ms, partitioned <> 0, partition_limit, \
         partition_rate_limit, partition_rate_period_ms FROM offload_queues WHERE name = ?1",
    )
    .bind(queue)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or_else(QueueLimits::default, |row| {
        QueueLimits::from(LimitColumns {
            global: row.0,
            rate_limit: row.1,
            rate_period_ms: row.2,
            partitioned: row.3,
            partition_limit: row.4,
            partition_rate_limit: row.5,
            partition_rate_period_ms: row.6,
        })
    }))
}

/// Sets one limit, creating the queue's row if it has none.
pub(super) async fn set_limit(pool: &SqlitePool, queue: &str, change: LimitChange) -> Result<()> {
    let query = match change {
        LimitChange::Global(max) => sqlx::query(
            "INSERT INTO offload_queues (name, global_limit, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET global_limit = excluded.global_limit, \
             updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(max.map(limit))
        .bind(now_micros()),
        LimitChange::Rate(rate) => sqlx::query(
            "INSERT INTO offload_queues (name, rate_limit, rate_period_ms, updated_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET rate_limit = excluded.rate_limit, \
             rate_period_ms = excluded.rate_period_ms, updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(rate.map(|rate| i64::from(rate.limit())))
        .bind(rate.map(|rate| rate.period_ms()))
        .bind(now_micros()),
        LimitChange::Partition(partition) => sqlx::query(
            "INSERT INTO offload_queues (name, partitioned, partition_limit, \
             partition_rate_limit, partition_rate_period_ms, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (name) DO UPDATE SET partitioned = excluded.partitioned, \
             partition_limit = excluded.partition_limit, \
             partition_rate_limit = excluded.partition_rate_limit, \
             partition_rate_period_ms = excluded.partition_rate_period_ms, \
             updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(partition.is_some())
        .bind(partition.and_then(|p| p.concurrency_limit()).map(limit))
        .bind(
            partition
                .and_then(|p| p.rate_limit())
                .map(|rate| i64::from(rate.limit())),
        )
        .bind(
            partition
                .and_then(|p| p.rate_limit())
                .map(|rate| rate.period_ms()),
        )
        .bind(now_micros()),
    };
    query.execute(pool).await?;
    Ok(())
}
