//! The claim of a partitioned queue: its keys take turns from the cursor
//! the last claim left, and a key at its cap is passed over.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::jobs::{limit, CLAIM_COLUMNS_PG};
use crate::storage::decode::ClaimRow;
use crate::storage::{ClaimedJob, KeyLoad, KeyUse, KeyWalk};
use crate::{Partition, Result};

/// Who claims, on which queue, at which start time (the one a rate limit
/// counted).
pub(super) struct Turn<'a> {
    pub queue: &'a str,
    pub worker_id: &'a str,
    pub now: DateTime<Utc>,
}

/// Keys with available jobs, in order from `$2` (`op` is `>` or `>=`),
/// up to `$3` when it is set, each with its running jobs and its starts in
/// the window of `$7` ms before `$8`, less those with `$4` running (the
/// cap) or `$6` started (the rate), when set: one index probe per key (a
/// loose index scan) and a count per limit, stopping at `$5` keys.
fn walk_sql(op: &str) -> String {
    format!(
        r#"
WITH RECURSIVE walk(k) AS (
    (SELECT partition_key FROM offload_jobs
     WHERE queue = $1 AND state = 'available' AND partition_key {op} $2
     ORDER BY partition_key LIMIT 1)
  UNION ALL
    SELECT (SELECT j.partition_key FROM offload_jobs j
            WHERE j.queue = $1 AND j.state = 'available' AND j.partition_key > walk.k
            ORDER BY j.partition_key LIMIT 1)
    FROM walk WHERE walk.k IS NOT NULL AND ($3::text IS NULL OR walk.k < $3)
)
SELECT walk.k, r.n, s.n FROM walk,
    LATERAL (SELECT count(*) AS n FROM offload_jobs j
             WHERE $4::int8 IS NOT NULL AND j.queue = $1 AND j.state = 'running'
               AND j.partition_key = walk.k) r,
    LATERAL (SELECT COALESCE(sum(ks.starts), 0)::int8 AS n FROM offload_key_starts ks
             WHERE $6::int8 IS NOT NULL AND ks.queue = $1 AND ks.partition_key = walk.k
               AND ks.started_at > $8 - $7::int8 * interval '1 millisecond') s
WHERE walk.k IS NOT NULL AND ($3::text IS NULL OR walk.k <= $3)
  AND ($4::int8 IS NULL OR r.n < $4) AND ($6::int8 IS NULL OR s.n < $6)
LIMIT $5
"#
    )
}

static WALK_AFTER: LazyLock<String> = LazyLock::new(|| walk_sql(">"));
static WALK_FROM: LazyLock<String> = LazyLock::new(|| walk_sql(">="));

/// Each key's first `n` jobs in the queue's claim order.
static CLAIM_SHARES: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
WITH picked AS (
    SELECT p.id FROM unnest($2::text[], $3::int8[]) AS s(k, n),
    LATERAL (SELECT id FROM offload_jobs
             WHERE queue = $1 AND state = 'available' AND partition_key = s.k
             ORDER BY priority, run_at, id
             LIMIT s.n
             FOR UPDATE SKIP LOCKED) p
)
UPDATE offload_jobs j
SET state = 'running', attempt = j.attempt + 1, attempted_at = $5, worker_id = $4
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING {CLAIM_COLUMNS_PG}
"#
    )
});

/// The claim's starts of each key, a row per key.
const KEY_RATE_RECORD: &str =
    "INSERT INTO offload_key_starts (queue, partition_key, started_at, starts) \
     SELECT $1, partition_key, $2, count(*) FROM offload_jobs WHERE id = ANY($3) \
     GROUP BY partition_key";

/// Starts older than the window and a minute (as the queue's rate limit).
const KEY_RATE_FORGET: &str = "DELETE FROM offload_key_starts \
     WHERE queue = $1 AND started_at < $2 - ($3 * interval '1 millisecond') - interval '1 minute'";

/// The keys of one walk, each with its running jobs and its starts in the
/// window (0 for a limit not set).
async fn walk(
    conn: &mut PgConnection,
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
        .bind(range.to)
        .bind(keys.cap())
        .bind(limit(range.want))
        .bind(rate)
        .bind(period_ms)
        .bind(turn.now)
        .fetch_all(conn)
        .await?)
}

/// Claims up to `room` jobs of a partitioned queue, holding the queue's
/// row (so the per-key counts stay true until the commit).
pub(super) async fn claim_in_turn(
    conn: &mut PgConnection,
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
    let (keys, counts): (Vec<String>, Vec<i64>) = shares
        .into_iter()
        .map(|(key, share)| (key, limit(share)))
        .unzip();
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_SHARES.as_str())
        .bind(turn.queue)
        .bind(&keys)
        .bind(&counts)
        .bind(turn.worker_id)
        .bind(turn.now)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("UPDATE offload_queues SET partition_cursor = $2 WHERE name = $1")
        .bind(turn.queue)
        .bind(last)
        .execute(&mut *conn)
        .await?;
    let jobs: Vec<ClaimedJob> = rows.into_iter().map(ClaimedJob::from).collect();
    if let Some(rate) = partition.rate_limit() {
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
        sqlx::query(KEY_RATE_RECORD)
            .bind(turn.queue)
            .bind(turn.now)
            .bind(&ids)
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
