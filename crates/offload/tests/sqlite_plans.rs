//! SQLite's partial indexes (migration 0006) serve the dashboard's lists and
//! counts and the pruner only when each statement repeats the index's own
//! WHERE terms. These are the statements of `storage/sqlite/{admin,jobs}.rs`
//! as they reach SQLite; none may read the whole table.

use offload::Backend;
use offload_test_fixture::FreshDatabase;
use sqlx::{Sqlite, SqlitePool};

async fn plan(pool: &SqlitePool, sql: &str) -> String {
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(pool)
        .await
        .expect("explain");
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn job_lists_counts_and_the_pruner_read_partial_indexes() {
    let db = FreshDatabase::sqlite();
    let pool = <Sqlite as Backend>::connect(db.url(), 2).await.unwrap();
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

    // partitions: the key walk and each key's head read the partition index
    // in its order (no sort), so a claim costs one probe per key served.
    let partition_statements = [
        "SELECT partition_key FROM offload_jobs \
         WHERE queue = 'q1' AND state = 'available' AND partition_key > 'a' \
         ORDER BY partition_key LIMIT 1",
        "SELECT id FROM offload_jobs \
         WHERE queue = 'q1' AND state = 'available' AND partition_key = 'a' \
         ORDER BY queue, partition_key, priority, run_at, id LIMIT 1",
        "SELECT id FROM offload_jobs \
         WHERE queue = 'q1' AND state = 'available' AND partition_key = 'a' \
         AND (priority, run_at, id) > (0, 5, 10) \
         ORDER BY queue, partition_key, priority, run_at, id LIMIT 1",
    ];
    for sql in partition_statements {
        let plan = plan(&pool, sql).await;
        assert!(
            plan.contains("offload_jobs_partition_claim") && !plan.contains("TEMP B-TREE"),
            "does not read the partition index in order:\n{sql}\n{plan}"
        );
    }
}
