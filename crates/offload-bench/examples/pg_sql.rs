//! Times offload's PostgreSQL statements, and alternatives to them, directly
//! with sqlx on a scratch database: what the database can do without the
//! worker runtime in the way.
//!
//! `cargo run --release -p offload-bench --example pg_sql -- postgres://postgres@127.0.0.1:5432/test [experiment]`
//!
//! Experiments: insert, single, drain, indexes (all when none is named).

use std::time::{Duration, Instant};

use offload::Backend;
use offload_bench::store::postgres::ScratchDatabase;
use sqlx::{PgPool, Postgres};

/// offload's insert: unnest arrays, NOTIFY per distinct queue, ids in order.
const INSERT_CORE: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags)
    SELECT k, q, a::jsonb, p, m,
           CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
           COALESCE(r, now()), t::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int4[], $6::timestamptz[], $7::text[])
         AS u(k, q, a, p, m, r, t)
    RETURNING id, queue, state
), woke AS (
    SELECT count(pg_notify('offload_jobs', q)) AS n
    FROM (SELECT DISTINCT queue AS q FROM ins WHERE state = 'available') s
)
SELECT ins.id FROM ins, woke ORDER BY ins.id
"#;

/// The same without NOTIFY.
const INSERT_NO_NOTIFY: &str = r#"
WITH ins AS (
    INSERT INTO offload_jobs (kind, queue, args, priority, max_attempts, state, run_at, tags)
    SELECT k, q, a::jsonb, p, m,
           CASE WHEN r IS NULL OR r <= now() THEN 'available' ELSE 'scheduled' END,
           COALESCE(r, now()), t::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int4[], $6::timestamptz[], $7::text[])
         AS u(k, q, a, p, m, r, t)
    RETURNING id
)
SELECT id FROM ins ORDER BY id
"#;

const CLAIM: &str = r#"
WITH picked AS (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = $1
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = $1 AND q.paused)
    ORDER BY priority, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j
SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.kind, j.queue, j.args::text, j.attempt, j.max_attempts, j.run_at
"#;

/// The claim with the update driven by `id = ANY(ARRAY(...))`, which plans
/// as a primary-key index scan instead of a hash join over a sequential
/// scan of the whole table.
const CLAIM_ANY: &str = r#"
WITH picked AS (
    SELECT id FROM offload_jobs
    WHERE state = 'available' AND queue = $1
      AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = $1 AND q.paused)
    ORDER BY priority, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE offload_jobs j
SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.kind, j.queue, j.args::text, j.attempt, j.max_attempts, j.run_at
"#;

/// Completion with an extra `id = ANY($1)` so the rows are found through the
/// primary key.
const COMPLETE_ANY: &str = r#"
UPDATE offload_jobs j
SET state = 'completed', finalized_at = now(), worker_id = NULL
FROM unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = ANY($1) AND j.id = d.id AND j.attempt = d.attempt AND j.state = 'running'
"#;

/// Completion through primary-key lookups whatever the statistics say:
/// `IS TRUE` keeps the planner off the partial `running` index, whose
/// estimate (often "no running rows", from an ANALYZE taken before the
/// drain) otherwise yields a quadratic nested loop over `unnest`.
const COMPLETE_PK: &str = r#"
UPDATE offload_jobs j
SET state = 'completed', finalized_at = now(), worker_id = NULL
FROM unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

/// [`COMPLETE_PK`] for retention 0.
const DELETE_PK: &str = r#"
DELETE FROM offload_jobs j
USING unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND (j.state = 'running') IS TRUE
"#;

const COMPLETE_MANY: &str = r#"
UPDATE offload_jobs j
SET state = 'completed', finalized_at = now(), worker_id = NULL
FROM unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND j.state = 'running'
"#;

const DELETE_MANY: &str = r#"
DELETE FROM offload_jobs j
USING unnest($1::int8[], $2::int4[]) AS d(id, attempt)
WHERE j.id = d.id AND j.attempt = d.attempt AND j.state = 'running'
"#;

type Claimed = (
    i64,
    String,
    String,
    String,
    i32,
    i32,
    chrono::DateTime<chrono::Utc>,
);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let only = args.next();
    let scratch = ScratchDatabase::create(&server, false).await?;
    let result = experiments(scratch.url(), only.as_deref()).await;
    scratch.drop().await?;
    result
}

async fn experiments(url: &str, only: Option<&str>) -> anyhow::Result<()> {
    let pool = Postgres::connect(url, 20).await?;
    Postgres::migrate(&pool).await?;
    let runs = |name: &str| only.is_none_or(|o| o == name);
    if runs("insert") {
        for batch in [1_000, 5_000, 10_000] {
            let rate = insert(&pool, INSERT_CORE, 100_000, batch, 1).await?;
            println!("insert core (unnest+notify), batch {batch:>5}, 1 conn: {rate:>8.0} rows/s");
        }
        for (sql, name) in [(INSERT_CORE, "core"), (INSERT_NO_NOTIFY, "no notify")] {
            let rate = insert(&pool, sql, 100_000, 5_000, 2).await?;
            println!("insert {name:<9}, batch  5000, 2 conns:            {rate:>8.0} rows/s");
        }
        let rate = copy(&pool, 100_000, 5_000).await?;
        println!("COPY FROM STDIN text, batch 5000, 1 conn:                  {rate:>8.0} rows/s");
    }
    if runs("single") {
        for (sql, name) in [(INSERT_CORE, "core"), (INSERT_NO_NOTIFY, "no notify")] {
            for conns in [1, 8] {
                let rate = insert(&pool, sql, 3_000, 1, conns).await?;
                println!("single-row insert {name:<9}, {conns} conns: {rate:>8.0} rows/s");
            }
        }
    }
    if runs("drain") {
        for (batch, conns, delete) in [
            (500, 1, false),
            (1_000, 1, false),
            (2_000, 1, false),
            (1_000, 2, false),
            (1_000, 1, true),
            (1_000, 2, true),
        ] {
            let rate = drain(&pool, 100_000, batch, conns, delete).await?;
            let how = if delete { "delete" } else { "update" };
            println!("claim+complete({how}) batch {batch:>5}, {conns} loops: {rate:>8.0} jobs/s");
        }
    }
    if runs("plans") {
        // Alternated, so that load from other processes hits both alike.
        for round in 0..2 {
            for (claim, complete, name) in [
                (CLAIM, COMPLETE_MANY, "core claim, core complete"),
                (
                    CLAIM_ANY,
                    COMPLETE_MANY,
                    "claim id = ANY(ARRAY(..)), core complete",
                ),
                (
                    CLAIM_ANY,
                    COMPLETE_ANY,
                    "claim ANY, complete with id = ANY($1)",
                ),
            ] {
                let rate = drain_with(&pool, 100_000, 1_000, 2, claim, complete).await?;
                println!("round {round}: {name:<44} {rate:>8.0} jobs/s");
            }
        }
    }
    if runs("cpu") {
        // Server CPU and WAL per job on one connection: robust to load from
        // other processes, unlike wall-clock rates.
        for (claim, complete, name) in [
            (CLAIM, COMPLETE_MANY, "core claim + core complete"),
            (CLAIM_ANY, COMPLETE_MANY, "claim ANY(ARRAY) + core complete"),
            (CLAIM_ANY, COMPLETE_ANY, "claim ANY + complete ANY($1)"),
            (CLAIM_ANY, COMPLETE_PK, "claim ANY + complete by pkey"),
            (CLAIM, DELETE_MANY, "core claim + core delete"),
            (CLAIM_ANY, DELETE_PK, "claim ANY + delete by pkey"),
            (CLAIM, COMPLETE_MANY, "core claim + core complete"),
        ] {
            let cost = drain_cost(&pool, 50_000, 1_000, claim, complete).await?;
            println!("{name:<36} {cost}");
        }
        for batch in [100, 500, 2_000] {
            let cost = drain_cost(&pool, 50_000, batch, CLAIM_ANY, COMPLETE_PK).await?;
            println!("claim ANY + complete by pkey, batch {batch:<5} {cost}");
        }
        for (sql, name) in [
            (INSERT_CORE, "insert core"),
            (INSERT_NO_NOTIFY, "insert no notify"),
        ] {
            let cost = insert_cost(&pool, sql, 100_000, 5_000).await?;
            println!("{name:<36} {cost}");
        }
    }
    if runs("indexes") {
        // Every state change is a non-HOT update (state is in index keys and
        // predicates), so each full index costs an insert per transition.
        let base = drain_cost(&pool, 50_000, 1_000, CLAIM_ANY, COMPLETE_PK).await?;
        println!("all indexes:                           {base}");
        let ins = insert_cost(&pool, INSERT_NO_NOTIFY, 100_000, 5_000).await?;
        println!("insert, all indexes:                   {ins}");
        sqlx::query(
            "DROP INDEX offload_jobs_state_id, offload_jobs_kind_id, offload_jobs_queue_id",
        )
        .execute(&pool)
        .await?;
        let fewer = drain_cost(&pool, 50_000, 1_000, CLAIM_ANY, COMPLETE_PK).await?;
        println!("without (state,id) (kind,id) (queue,id): {fewer}");
        let ins = insert_cost(&pool, INSERT_NO_NOTIFY, 100_000, 5_000).await?;
        println!("insert, without those three:           {ins}");
        let again = drain_cost(&pool, 50_000, 1_000, CLAIM_ANY, COMPLETE_PK).await?;
        println!("without the three, again:              {again}");
    }
    pool.close().await;
    Ok(())
}

async fn clear(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE offload_jobs").execute(pool).await?;
    Ok(())
}

/// Inserts `total` rows with `sql`, `batch` per statement, on `conns`
/// connections at once. Returns rows/s.
async fn insert(
    pool: &PgPool,
    sql: &'static str,
    total: usize,
    batch: usize,
    conns: usize,
) -> anyhow::Result<f64> {
    clear(pool).await?;
    let per_conn = total / conns;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut done = 0;
            while done < per_conn {
                let n = batch.min(per_conn - done);
                let kinds = vec!["bench_noop"; n];
                let queues = vec!["bench"; n];
                let args: Vec<String> = (0..n)
                    .map(|i| format!("{{\"n\":{}}}", c * per_conn + done + i))
                    .collect();
                let priorities = vec![0i16; n];
                let attempts = vec![20i32; n];
                let run_ats: Vec<Option<chrono::DateTime<chrono::Utc>>> = vec![None; n];
                let tags = vec!["[]"; n];
                let _ids: Vec<i64> = sqlx::query_scalar(sql)
                    .bind(&kinds)
                    .bind(&queues)
                    .bind(&args)
                    .bind(&priorities)
                    .bind(&attempts)
                    .bind(&run_ats)
                    .bind(&tags)
                    .fetch_all(&pool)
                    .await?;
                done += n;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok((per_conn * conns) as f64 / started.elapsed().as_secs_f64())
}

/// Inserts with `COPY ... FROM STDIN` (text format). No ids come back.
async fn copy(pool: &PgPool, total: usize, batch: usize) -> anyhow::Result<f64> {
    clear(pool).await?;
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        let mut data = String::with_capacity(n * 48);
        for i in 0..n {
            data.push_str(&format!(
                "bench_noop\tbench\t{{\"n\":{}}}\t0\t20\tavailable\t[]\n",
                done + i
            ));
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY offload_jobs (kind, queue, args, priority, max_attempts, state, tags) FROM STDIN",
            )
            .await?;
        copy.send(data.as_bytes()).await?;
        copy.finish().await?;
        done += n;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Inserts `total` jobs, then claims `batch` at a time and completes each
/// claimed batch in one statement, on `conns` loops at once. Returns
/// claimed+completed jobs/s.
async fn drain(
    pool: &PgPool,
    total: usize,
    batch: i64,
    conns: usize,
    delete: bool,
) -> anyhow::Result<f64> {
    let complete = if delete { DELETE_MANY } else { COMPLETE_MANY };
    drain_with(pool, total, batch, conns, CLAIM, complete).await
}

/// [`drain`] with the given claim and completion statements.
async fn drain_with(
    pool: &PgPool,
    total: usize,
    batch: i64,
    conns: usize,
    claim: &'static str,
    complete: &'static str,
) -> anyhow::Result<f64> {
    insert(pool, INSERT_NO_NOTIFY, total, 5_000, 1).await?;
    sqlx::query("VACUUM ANALYZE offload_jobs")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            loop {
                let claimed: Vec<Claimed> = sqlx::query_as(claim)
                    .bind("bench")
                    .bind(batch)
                    .bind("worker-1")
                    .fetch_all(&pool)
                    .await?;
                if claimed.is_empty() {
                    return anyhow::Ok(done);
                }
                let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
                let attempts: Vec<i32> = claimed.iter().map(|c| c.4).collect();
                sqlx::query(complete)
                    .bind(&ids)
                    .bind(&attempts)
                    .execute(&pool)
                    .await?;
                done += ids.len() as u64;
            }
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined??;
    }
    anyhow::ensure!(done == total as u64, "drained {done} of {total}");
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    Ok(done as f64 / elapsed.as_secs_f64())
}

/// CPU time of server process `pid` (user + system), from /proc.
fn server_cpu(pid: i32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// What one drain or insert cost the server.
struct Cost {
    rate: f64,
    cpu_us_per_job: f64,
    wal_bytes_per_job: f64,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} jobs/s wall, {:>6.1} µs server CPU/job, {:>6.0} WAL bytes/job",
            self.rate, self.cpu_us_per_job, self.wal_bytes_per_job
        )
    }
}

async fn wal_lsn(conn: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
            .fetch_one(conn)
            .await?,
    )
}

/// Claims and completes `total` jobs on one connection; measures that
/// connection's server process.
async fn drain_cost(
    pool: &PgPool,
    total: usize,
    batch: i64,
    claim: &'static str,
    complete: &'static str,
) -> anyhow::Result<Cost> {
    insert(pool, INSERT_NO_NOTIFY, total, 5_000, 1).await?;
    sqlx::query("VACUUM ANALYZE offload_jobs")
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    let (cpu0, wal0, started) = (server_cpu(pid)?, wal_lsn(&mut conn).await?, Instant::now());
    let mut done = 0;
    loop {
        let claimed: Vec<Claimed> = sqlx::query_as(claim)
            .bind("bench")
            .bind(batch)
            .bind("worker-1")
            .fetch_all(&mut *conn)
            .await?;
        if claimed.is_empty() {
            break;
        }
        let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
        let attempts: Vec<i32> = claimed.iter().map(|c| c.4).collect();
        sqlx::query(complete)
            .bind(&ids)
            .bind(&attempts)
            .execute(&mut *conn)
            .await?;
        done += ids.len();
    }
    let elapsed = started.elapsed();
    let (cpu1, wal1) = (server_cpu(pid)?, wal_lsn(&mut conn).await?);
    anyhow::ensure!(done == total, "drained {done} of {total}");
    Ok(Cost {
        rate: done as f64 / elapsed.as_secs_f64(),
        cpu_us_per_job: (cpu1 - cpu0).as_micros() as f64 / done as f64,
        wal_bytes_per_job: (wal1 - wal0) as f64 / done as f64,
    })
}

/// Inserts `total` rows on one connection; measures its server process.
async fn insert_cost(
    pool: &PgPool,
    sql: &'static str,
    total: usize,
    batch: usize,
) -> anyhow::Result<Cost> {
    clear(pool).await?;
    let mut conn = pool.acquire().await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    let (cpu0, wal0, started) = (server_cpu(pid)?, wal_lsn(&mut conn).await?, Instant::now());
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        let args: Vec<String> = (0..n).map(|i| format!("{{\"n\":{}}}", done + i)).collect();
        let run_ats: Vec<Option<chrono::DateTime<chrono::Utc>>> = vec![None; n];
        let _ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(vec!["bench_noop"; n])
            .bind(vec!["bench"; n])
            .bind(&args)
            .bind(vec![0i16; n])
            .bind(vec![20i32; n])
            .bind(&run_ats)
            .bind(vec!["[]"; n])
            .fetch_all(&mut *conn)
            .await?;
        done += n;
    }
    let elapsed = started.elapsed();
    let (cpu1, wal1) = (server_cpu(pid)?, wal_lsn(&mut conn).await?);
    Ok(Cost {
        rate: done as f64 / elapsed.as_secs_f64(),
        cpu_us_per_job: (cpu1 - cpu0).as_micros() as f64 / done as f64,
        wal_bytes_per_job: (wal1 - wal0) as f64 / done as f64,
    })
}
