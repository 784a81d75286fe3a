//! The claim of a partitioned queue: its keys take turns from the cursor
//! the last claim left, and a key at its cap is passed over. Inside the
//! claim's write transaction, so one index probe per key costs no round
//! trip.

use std::sync::LazyLock;

use sqlx::SqliteConnection;

use super::jobs::{limit, CLAIM_COLUMNS_SQLITE};
use crate::storage::decode::ClaimRow;
use crate::storage::{ClaimedJob, KeyUse};
use crate::{Partition, Result};

/// Who claims, on which queue, at which start time (microseconds; the one
/// a rate limit counted).
pub(super) struct Turn<'a> {
    pub queue: &'a str,
    pub worker_id: &'a str,
    pub now: i64,
}

const NEXT_KEY_AFTER: &str = "SELECT partition_key FROM offload_jobs \
     WHERE queue = ?1 AND state = 'available' AND partition_key > ?2 \
     ORDER BY partition_key LIMIT 1";

const FIRST_KEY: &str = "SELECT partition_key FROM offload_jobs \
     WHERE queue = ?1 AND state = 'available' AND partition_key >= ?2 \
     ORDER BY partition_key LIMIT 1";

const RUNNING_PER_KEY: &str = "SELECT partition_key, count(*) FROM offload_jobs \
     WHERE queue = ?1 AND state = 'running' GROUP BY partition_key";

/// A key's first jobs in the queue's claim order. Naming the key in the
/// `ORDER BY` (one value, so it changes nothing) keeps SQLite reading the
/// index in order; without it, it sorts the key's whole backlog.
const KEY_HEAD: &str = "SELECT id FROM offload_jobs \
     WHERE queue = ?1 AND state = 'available' AND partition_key = ?2 \
     ORDER BY partition_key, priority, run_at, id LIMIT ?3";

static CLAIM_IDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE offload_jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?1, \
         worker_id = ?2 WHERE id IN (SELECT value FROM json_each(?3)) \
         RETURNING {CLAIM_COLUMNS_SQLITE}"
    )
});

/// Keys with available jobs in order from `from` (itself included when
/// `inclusive`), up to `to` when set, less those in `full`, at most `want`.
async fn walk(
    conn: &mut SqliteConnection,
    queue: &str,
    (from, inclusive): (&str, bool),
    to: Option<&str>,
    full: &[String],
    want: usize,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut at = from.to_owned();
    let mut sql = if inclusive { FIRST_KEY } else { NEXT_KEY_AFTER };
    while keys.len() < want {
        let next: Option<String> = sqlx::query_scalar(sql)
            .bind(queue)
            .bind(&at)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(key) = next.filter(|key| to.is_none_or(|to| key.as_str() <= to)) else {
            break;
        };
        if !full.contains(&key) {
            keys.push(key.clone());
        }
        at = key;
        sql = NEXT_KEY_AFTER;
    }
    Ok(keys)
}

/// Claims up to `room` jobs of a partitioned queue.
pub(super) async fn claim_in_turn(
    conn: &mut SqliteConnection,
    turn: &Turn<'_>,
    room: usize,
    partition: Partition,
    cursor: &str,
) -> Result<Vec<ClaimedJob>> {
    let running: Vec<(String, i64)> = match partition.concurrency_limit() {
        Some(_) => {
            sqlx::query_as(RUNNING_PER_KEY)
                .bind(turn.queue)
                .fetch_all(&mut *conn)
                .await?
        }
        None => Vec::new(),
    };
    let keys = KeyUse::new(partition, running);
    let full = keys.full();
    let after = walk(conn, turn.queue, (cursor, false), None, &full, room).await?;
    let wrapped = if after.len() < room {
        let want = room - after.len();
        walk(conn, turn.queue, ("", true), Some(cursor), &full, want).await?
    } else {
        Vec::new()
    };
    let shares = keys.turn(room, after, wrapped);
    let Some((last, _)) = shares.last() else {
        return Ok(Vec::new());
    };
    let last = last.clone();
    let mut ids: Vec<i64> = Vec::with_capacity(room);
    for (key, share) in &shares {
        let head: Vec<i64> = sqlx::query_scalar(KEY_HEAD)
            .bind(turn.queue)
            .bind(key)
            .bind(limit(*share))
            .fetch_all(&mut *conn)
            .await?;
        ids.extend(head);
    }
    let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_IDS.as_str())
        .bind(turn.now)
        .bind(turn.worker_id)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("UPDATE offload_queues SET partition_cursor = ?2 WHERE name = ?1")
        .bind(turn.queue)
        .bind(last)
        .execute(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(ClaimedJob::from).collect())
}
