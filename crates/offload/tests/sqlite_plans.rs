//! SQLite's partial indexes (migration 0006) serve the dashboard's lists and
//! counts and the pruner only when each statement repeats the index's own
//! WHERE terms. These are the statements of `storage/sqlite/{admin,jobs}.rs`
//! as they reach SQLite; none may read the whole table.

use offload::Backend;
use offload_test_fixture::FreshDatabase;
use sqlx::{Sqlite, SqlitePool};

async fn plan(pool: &SqlitePool, sql: &str) -> String {
    plan_bound(pool, sql, &[]).await
}

async fn plan_bound(pool: &SqlitePool, sql: &str, binds: &[&str]) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
    for value in binds {
        query = query.bind(*value);
    }
    let rows = query.fetch_all(pool).await.expect("explain");
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn job_lists_counts_and_the_pruner_read_partial_indexes() {
    let db = FreshDatabase::sqlite();
    // One connection: the one that ran ANALYZE plans with its statistics.
    let pool = <Sqlite as Backend>::connect(db.url(), 1).await.unwrap();
    <Sqlite as Backend>::migrate(&pool).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO offload_jobs (kind, queue, args, state, max_attempts, created_at, run_at, \
                                   finalized_at, worker_id) \
         SELECT 'k', 'q' || (i % 5), '{}', \
                CASE i % 10 WHEN 0 THEN 'running' WHEN 1 THEN 'available' \
                WHEN 2 THEN 'scheduled' WHEN 3 THEN 'discarded' ELSE 'completed' END, \
                3, i, i, CASE WHEN i % 10 >= 3 THEN i END, CASE WHEN i % 10 = 0 THEN 'w' END \
         FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();

    let statements = [
        // admin::queue_state_counts
        "SELECT queue, state, count(*) FROM offload_jobs WHERE state <> 'running' \
         GROUP BY queue, state \
         UNION ALL SELECT queue, 'running', count(*) FROM offload_jobs \
         WHERE state = 'running' GROUP BY queue",
        // jobs::count_by_state
        "SELECT state, count(*) FROM offload_jobs \
         WHERE state <> 'running' AND ('q1' IS NULL OR queue = 'q1') GROUP BY state \
         UNION ALL SELECT 'running', count(*) FROM offload_jobs \
         WHERE state = 'running' AND ('q1' IS NULL OR queue = 'q1') HAVING count(*) > 0",
        // admin::list_ids, one state of one queue
        "SELECT id FROM offload_jobs WHERE 1 AND state = 'completed' AND state <> 'running' \
         AND state IN ('completed', 'discarded', 'cancelled') AND queue = 'q1' \
         ORDER BY id DESC LIMIT 50",
        "SELECT id FROM offload_jobs WHERE 1 AND state = 'available' AND state <> 'running' \
         AND queue = 'q1' ORDER BY id DESC LIMIT 50",
        "SELECT id FROM offload_jobs WHERE 1 AND state = 'running' AND queue = 'q1' \
         ORDER BY id DESC LIMIT 50",
        // admin::list_ids, one finished state
        "SELECT id FROM offload_jobs WHERE 1 AND state = 'discarded' AND state <> 'running' \
         AND state IN ('completed', 'discarded', 'cancelled') ORDER BY id DESC LIMIT 50",
        // admin::count, a queue
        "SELECT 0 + (SELECT count(*) FROM offload_jobs WHERE 1 AND queue = 'q1' \
         AND state <> 'running') + (SELECT count(*) FROM offload_jobs WHERE 1 \
         AND state = 'running' AND queue = 'q1')",
        // jobs::prune
        "DELETE FROM offload_jobs WHERE id IN (SELECT id FROM offload_jobs \
         WHERE state = 'completed' AND state IN ('completed', 'discarded', 'cancelled') \
         AND finalized_at < 5 LIMIT 10)",
    ];
    for sql in statements {
        let plan = plan(&pool, sql).await;
        for line in plan.lines() {
            let scans_table = line.contains("SCAN offload_jobs") && !line.contains("INDEX");
            assert!(!scans_table, "reads the whole table:\n{sql}\n{plan}");
        }
    }

    partition_statements_read_the_partition_index_in_order(&pool).await;
}

/// The key walk and each key's head read the partition index in its order
/// (no sort), so a claim costs one probe per key served. Each key comes
/// from the row before it, as in `storage/sqlite/partitions.rs`: with a
/// literal or bound key and ANALYZE's samples (STAT4), SQLite rightly sorts
/// a rare key's few rows, which says nothing of the claim's plan.
async fn partition_statements_read_the_partition_index_in_order(pool: &SqlitePool) {
    // A hot key holding a backlog of 10,000 and 1,000 keys of two jobs.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) \
         INSERT INTO offload_jobs (kind, queue, args, state, max_attempts, created_at, run_at, \
                                   partition_key) \
         SELECT 'k', 'keyed', '{}', CASE WHEN i % 7 = 0 THEN 'running' ELSE 'available' END, \
                3, i, i, CASE WHEN i <= 10000 THEN 'hot' ELSE 'key' || (i % 1000) END \
         FROM n",
    )
    .execute(pool)
    .await
    .unwrap();
    // The shapes of the walk's step, a key's head and the step to its next
    // job, each reading its key from the row before it.
    let partition_statements = [
        "WITH walk(k) AS (SELECT value FROM json_each(?2)) \
         SELECT (SELECT j.partition_key FROM offload_jobs j \
                 WHERE j.queue = ?1 AND j.state = 'available' AND j.partition_key > walk.k \
                 ORDER BY j.partition_key LIMIT 1) FROM walk",
        "WITH share(k) AS (SELECT value FROM json_each(?2)) \
         SELECT (SELECT id FROM offload_jobs \
                 WHERE queue = ?1 AND state = 'available' AND partition_key = share.k \
                 ORDER BY queue, partition_key, priority, run_at, id LIMIT 1) FROM share",
        "WITH head(k, p, r, id) AS (SELECT value, 0, 5, 10 FROM json_each(?2)) \
         SELECT (SELECT id FROM offload_jobs \
                 WHERE queue = ?1 AND state = 'available' AND partition_key = head.k \
                   AND (priority, run_at, id) > (head.p, head.r, head.id) \
                 ORDER BY queue, partition_key, priority, run_at, id LIMIT 1) FROM head",
    ];
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        }
        for key in ["hot", "key5", "absent"] {
            for sql in partition_statements {
                let keys = format!("[\"{key}\"]");
                let plan = plan_bound(pool, sql, &["keyed", &keys]).await;
                assert!(
                    plan.contains("offload_jobs_partition_claim") && !plan.contains("TEMP B-TREE"),
                    "does not read the partition index in order (key {key}, analyzed {analyzed}):\n{sql}\n{plan}"
                );
            }
        }
    }
}
