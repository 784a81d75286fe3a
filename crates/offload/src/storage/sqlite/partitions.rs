//! The claim of a partitioned queue: its keys take turns from the cursor
//! the last claim left, and a key at its cap is passed over. Inside the
//! claim's write transaction, so one index probe per key costs no round
//! trip.

use std::sync::LazyLock;

use sqlx::SqliteConnection;

use super::jobs::{limit, CLAIM_COLUMNS_SQLITE};
use crate::storage::decode::ClaimRow;
use crate::storage::{ClaimedJob, KeyLoad, KeyUse, KeyWalk};
use crate::{Partition, Result};

/// Who claims, on which queue, at which start time (microseconds; the one
/// a rate limit counted).
pub(super) struct Turn<'a> {
    pub queue: &'a str,
    pub worker_id: &'a str,
    pub now: i64,
}

/// Keys with available jobs in order from `?2` (`op` is `>` or `>=`), up
/// to `?4` when set, each with its running jobs when `?3` (the cap) is set
/// and its starts in the window of `?7` ms before `?8` when `?6` (the rate)
/// is: one index probe per key (a loose index scan) and a count per limit,
/// stopping once `?5` keys under both are found (or one more: the count
/// lags a row). Keys at a limit are dropped by the caller.
fn walk_sql(op: &str) -> String {
    format!(
        r#"
WITH RECURSIVE walk(k, found) AS (
    SELECT (SELECT partition_key FROM offload_jobs
            WHERE queue = ?1 AND state = 'available' AND partition_key {op} ?2
            ORDER BY partition_key LIMIT 1), 0
  UNION ALL
    SELECT (SELECT j.partition_key FROM offload_jobs j
            WHERE j.queue = ?1 AND j.state = 'available' AND j.partition_key > walk.k
            ORDER BY j.partition_key LIMIT 1),
           walk.found + ((?3 IS NULL OR (SELECT count(*) FROM offload_jobs r
               WHERE r.queue = ?1 AND r.state = 'running' AND r.partition_key = walk.k) < ?3)
             AND (?6 IS NULL OR (SELECT COALESCE(sum(s.starts), 0) FROM offload_key_starts s
               WHERE s.queue = ?1 AND s.partition_key = walk.k
                 AND s.started_at > ?8 - ?7 * 1000) < ?6))
    FROM walk
    WHERE walk.k IS NOT NULL AND walk.found < ?5 AND (?4 IS NULL OR walk.k < ?4)
)
SELECT k, CASE WHEN ?3 IS NULL THEN 0 ELSE (SELECT count(*) FROM offload_jobs r
           WHERE r.queue = ?1 AND r.state = 'running' AND r.partition_key = walk.k) END,
       CASE WHEN ?6 IS NULL THEN 0 ELSE (SELECT COALESCE(sum(s.starts), 0)
           FROM offload_key_starts s WHERE s.queue = ?1 AND s.partition_key = walk.k
             AND s.started_at > ?8 - ?7 * 1000) END
FROM walk
WHERE k IS NOT NULL AND (?4 IS NULL OR k <= ?4)
"#
    )
}

static WALK_AFTER: LazyLock<String> = LazyLock::new(|| walk_sql(">"));
static WALK_FROM: LazyLock<String> = LazyLock::new(|| walk_sql(">="));

/// Claims each key's first jobs in the queue's claim order, the keys and
/// their shares in the JSON array `?4` (`[[key, n], ...]`): a recursive
/// walk that steps from each key's head to the job after it, one index
/// probe a job (SQLite has no LATERAL join, and a LIMIT cannot read the
/// outer row). Ordering by the whole index (the queue and key are one value
/// each, so it changes nothing) keeps SQLite reading the index in order;
/// by the claim order alone, it may sort the key's whole backlog.
static CLAIM_SHARES: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
WITH RECURSIVE share(k, n) AS (SELECT value ->> 0, value ->> 1 FROM json_each(?4)),
head(k, left, p, r, id) AS (
    SELECT share.k, share.n - 1, j.priority, j.run_at, j.id FROM share JOIN offload_jobs j
      ON j.id = (SELECT id FROM offload_jobs
                 WHERE queue = ?1 AND state = 'available' AND partition_key = share.k
                 ORDER BY queue, partition_key, priority, run_at, id LIMIT 1)
  UNION ALL
    SELECT head.k, head.left - 1, j.priority, j.run_at, j.id FROM head JOIN offload_jobs j
      ON j.id = (SELECT id FROM offload_jobs
                 WHERE queue = ?1 AND state = 'available' AND partition_key = head.k
                   AND (priority, run_at, id) > (head.p, head.r, head.id)
                 ORDER BY queue, partition_key, priority, run_at, id LIMIT 1)
    WHERE head.left > 0
)
UPDATE offload_jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?2, worker_id = ?3
WHERE id IN (SELECT id FROM head)
RETURNING {CLAIM_COLUMNS_SQLITE}
"#
    )
});

/// The claim's starts of each key, a row per key (`?3`: the ids, JSON).
const KEY_RATE_RECORD: &str =
    "INSERT INTO offload_key_starts (queue, partition_key, started_at, starts) \
     SELECT ?1, partition_key, ?2, count(*) FROM offload_jobs \
     WHERE id IN (SELECT value FROM json_each(?3)) GROUP BY partition_key";

/// Starts older than the window and a minute (as the queue's rate limit).
const KEY_RATE_FORGET: &str =
    "DELETE FROM offload_key_starts WHERE queue = ?1 AND started_at < ?2 - ?3 * 1000 - 60000000";

/// The keys of one walk, each with its running jobs and its starts in the
/// window (0 for a limit not set).
async fn walk(
    conn: &mut SqliteConnection,
    turn: &Turn<'_>,
    range: KeyWalk<'_>,
    keys: &KeyUse,
) -> Result<Vec<KeyLoad>> {
    let (rate, period_ms) = keys.rate_columns();
    let sql = if range.inclusive {
        &WALK_FROM
    } else {
        &WALK_AFTER
    };
    Ok(sqlx::query_as(sql.as_str())
        .bind(turn.queue)
        .bind(range.from)
        .bind(keys.cap())
        .bind(range.to)
        .bind(limit(range.want))
        .bind(rate)
        .bind(period_ms)
        .bind(turn.now)
        .fetch_all(conn)
        .await?)
}

/// Claims up to `room` jobs of a partitioned queue.
pub(super) async fn claim_in_turn(
    conn: &mut SqliteConnection,
    turn: &Turn<'_>,
    room: usize,
    partition: Partition,
    cursor: &str,
) -> Result<Vec<ClaimedJob>> {
    let keys = KeyUse::new(partition);
    let after = walk(conn, turn, KeyWalk::after(cursor, room), &keys).await?;
    let wrapped = match KeyWalk::wrapping(cursor, room, after.len()) {
        Some(range) => walk(conn, turn, range, &keys).await?,
        None => Vec::new(),
    };
    let shares = keys.turn(room, after, wrapped);
    let Some((last, _)) = shares.last() else {
        return Ok(Vec::new());
    };
    let last = last.clone();
    let shares_json = serde_json::to_string(&shares).unwrap_or_else(|_| "[]".to_owned());
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_SHARES.as_str())
        .bind(turn.queue)
        .bind(turn.now)
        .bind(turn.worker_id)
        .bind(shares_json)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("UPDATE offload_queues SET partition_cursor = ?2 WHERE name = ?1")
        .bind(turn.queue)
        .bind(last)
        .execute(&mut *conn)
        .await?;
    let jobs: Vec<ClaimedJob> = rows.into_iter().map(ClaimedJob::from).collect();
    if let Some(rate) = partition.rate_limit() {
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
        let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(KEY_RATE_RECORD)
            .bind(turn.queue)
            .bind(turn.now)
            .bind(ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query(KEY_RATE_FORGET)
            .bind(turn.queue)
            .bind(turn.now)
            .bind(rate.period_ms())
            .execute(&mut *conn)
            .await?;
    }
    Ok(jobs)
}
