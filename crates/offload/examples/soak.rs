//! Soak run: a steady enqueue rate with mixed success and failure for a
//! fixed time, printing the process's RSS and the jobs table's dead rows
//! along the way. Memory should stay flat and dead rows bounded by what
//! autovacuum clears.
//!
//! ```sh
//! cargo run --release -p offload --example soak -- postgres://postgres@127.0.0.1:5432/test 600 200
//! ```
//! Where the server runs with autovacuum off, the soak runs `VACUUM` on the
//! jobs table each minute instead, and prints dead rows before and after.
//!
//! Arguments: database URL (a scratch database `offload_soak` is created
//! beside it on PostgreSQL), seconds (default 600), jobs per second
//! (default 200).

use std::time::{Duration, Instant};

use offload::{
    Backend, Client, Job, JobContext, JobError, JobState, Registry, Retention, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use sqlx::Postgres;

/// Succeeds, or fails on its first attempt when `fail` is set.
#[derive(Serialize, Deserialize)]
struct Mixed {
    fail: bool,
    payload: String,
}

impl Job<Postgres> for Mixed {
    const KIND: &'static str = "soak_mixed";
    const MAX_ATTEMPTS: i32 = 3;

    fn backoff(_attempt: i32) -> Duration {
        Duration::from_millis(200)
    }

    async fn run(self, ctx: &mut JobContext<Postgres>) -> Result<(), JobError> {
        if self.fail && ctx.attempt() == 1 {
            return Err(JobError::failed("planned first-attempt failure"));
        }
        Ok(())
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn dead_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'offload_jobs'",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let admin_url = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let seconds: u64 = args.next().map_or(Ok(600), |s| s.parse())?;
    let rate: u64 = args.next().map_or(Ok(200), |s| s.parse())?;

    let admin = sqlx::PgPool::connect(&admin_url).await?;
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&admin)
        .await?;
    let vacuum = autovacuum != "on";
    println!("server autovacuum={autovacuum}; the soak vacuums each minute: {vacuum}");
    sqlx::query("DROP DATABASE IF EXISTS offload_soak WITH (FORCE)")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE offload_soak")
        .execute(&admin)
        .await?;
    let url = format!(
        "{}/offload_soak",
        admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b)
    );
    let pool = Postgres::connect(&url, 20).await?;
    let client = Client::new(pool.clone());
    client.migrate().await?;

    let config = WorkerConfig::default()
        .retention(
            Retention::default()
                .completed(Duration::from_secs(30))
                .discarded(Duration::from_secs(30))
                .cancelled(Duration::from_secs(30)),
        )
        .prune_interval(Duration::from_secs(5))
        .promote_interval(Duration::from_millis(200))
        .queue("default", 32);
    let worker = Worker::new(pool.clone(), Registry::new().register::<Mixed>(), config)
        .start()
        .await?;

    let start = Instant::now();
    let rss_start = rss_kib();
    println!(
        "t=0s rss={rss_start} KiB dead_rows={}",
        dead_rows(&pool).await
    );
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let per_tick = rate.div_ceil(10);
    let mut enqueued = 0u64;
    let mut next_report = Duration::from_secs(60);
    while start.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let jobs = (0..per_tick).map(|n| Mixed {
            fail: (enqueued + n) % 5 == 0,
            payload: "x".repeat(64),
        });
        match client.enqueue_many(jobs).await {
            Ok(ids) => enqueued += ids.len() as u64,
            Err(error) => eprintln!("enqueue failed (database restarting?): {error}"),
        }
        if start.elapsed() >= next_report {
            next_report += Duration::from_secs(60);
            let before = dead_rows(&pool).await;
            // Stands in for autovacuum where the server runs without it:
            // no transaction of offload's may hold dead rows back from it.
            if vacuum {
                if let Err(error) = sqlx::query("VACUUM offload_jobs").execute(&pool).await {
                    eprintln!("vacuum failed: {error}");
                }
            }
            println!(
                "t={:>4}s rss={} KiB dead_rows={before} after_vacuum={} enqueued={enqueued}",
                start.elapsed().as_secs(),
                rss_kib(),
                dead_rows(&pool).await
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.shutdown().await;
    let counts = client.count_by_state(None).await?;
    let failed_forever: i64 = counts
        .iter()
        .filter(|(s, _)| *s == JobState::Discarded)
        .map(|(_, n)| n)
        .sum();
    println!(
        "end: {seconds}s at {rate} jobs/s, enqueued={enqueued}, rss start={rss_start} KiB end={} KiB, \
         dead_rows={}, discarded={failed_forever}, states={counts:?}",
        rss_kib(),
        dead_rows(&pool).await
    );
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS offload_soak WITH (FORCE)")
        .execute(&admin)
        .await?;
    Ok(())
}
