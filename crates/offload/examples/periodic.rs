//! Periodic jobs: one every 2 seconds, one on a cron schedule. However many
//! workers share the database, each tick is enqueued once (by the leader).
//!
//! ```sh
//! cargo run -p offload --example periodic            # runs for 7 s
//! cargo run -p offload --example periodic -- 30      # runs for 30 s
//! ```

use std::time::Duration;

use offload::{Backend, Job, JobContext, JobError, PeriodicJob, Registry, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use sqlx::Sqlite;

/// Writes a heartbeat row: what a cleanup, a report or a sync would do.
#[derive(Serialize, Deserialize)]
struct Heartbeat {
    source: String,
}

impl Job<Sqlite> for Heartbeat {
    const KIND: &'static str = "heartbeat";

    async fn run(self, ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
        sqlx::query("INSERT INTO heartbeats (source, at) VALUES (?1, ?2)")
            .bind(&self.source)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(ctx.tx().await?)
            .await?;
        println!("heartbeat from {} (job {})", self.source, ctx.id());
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(7);
    let pool = Sqlite::connect("sqlite::memory:", 1).await?;
    Sqlite::migrate(&pool).await?;
    sqlx::query("CREATE TABLE heartbeats (source TEXT NOT NULL, at TEXT NOT NULL)")
        .execute(&pool)
        .await?;

    let registry = Registry::<Sqlite>::new()
        .register::<Heartbeat>()
        // Every 2 s, on multiples of 2 s since the epoch: every worker
        // agrees on the ticks.
        .periodic(PeriodicJob::every(
            "every_2s",
            Duration::from_secs(2),
            || Heartbeat {
                source: "interval".into(),
            },
        )?)
        // Cron with seconds (6 fields): at second 0, 5, 10, … of each minute.
        .periodic(PeriodicJob::cron(
            "every_5s",
            "*/5 * * * * *",
            offload::chrono_tz::UTC,
            || Heartbeat {
                source: "cron".into(),
            },
        )?);
    let worker = Worker::new(pool.clone(), registry, WorkerConfig::default())
        .start()
        .await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    worker.shutdown().await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM heartbeats")
        .fetch_one(&pool)
        .await?;
    println!("{count} heartbeats in {seconds} s");
    Ok(())
}
