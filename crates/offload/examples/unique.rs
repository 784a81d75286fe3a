//! Unique jobs: one pending job per key, one job per period, and a
//! debounce that keeps only the latest args.
//!
//! ```sh
//! cargo run -p offload --example unique
//! ```

use std::time::Duration;

use offload::{Backend, Client, EnqueueOptions, Job, JobContext, JobError, UniqueOptions};
use serde::{Deserialize, Serialize};
use sqlx::Sqlite;

/// Rebuilds one shop's search index: running it twice at once is waste.
#[derive(Debug, Serialize, Deserialize)]
struct RebuildIndex {
    shop_id: i64,
    reason: String,
}

impl Job<Sqlite> for RebuildIndex {
    const KIND: &'static str = "rebuild_index";

    async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pool = Sqlite::connect("sqlite::memory:", 1).await?;
    Sqlite::migrate(&pool).await?;
    let client = Client::new(pool);
    let job = |reason: &str| RebuildIndex {
        shop_id: 7,
        reason: reason.into(),
    };

    // 1. One pending job per shop, whatever the args: by key.
    let per_shop = || EnqueueOptions::new().unique(UniqueOptions::by_key("shop:7"));
    let first = client
        .enqueue_with(job("product added"), per_shop())
        .await?;
    let again = client
        .enqueue_with(job("price changed"), per_shop())
        .await?;
    println!("by key:    first {first:?}\n           again {again:?}");
    assert!(again.duplicate && again.id == first.id);

    // 2. A debounce: the pending job takes the latest args and run time,
    //    so a burst of edits runs one rebuild, 30 s after the last.
    let debounced = || {
        EnqueueOptions::new()
            .delay(Duration::from_secs(30))
            .unique(UniqueOptions::by_key("debounce:shop:7").replace_pending())
    };
    let a = client.enqueue_with(job("edit 1"), debounced()).await?;
    let b = client.enqueue_with(job("edit 2"), debounced()).await?;
    let row = client.job(b.id).await?.expect("the job");
    println!("debounce:  {a:?}\n           {b:?}; args now {}", row.args);
    assert!(b.replaced && row.args["reason"] == "edit 2");

    // 3. At most one per hour, counted by the job's scheduled time: a job
    //    that completed this hour still keeps the next one out.
    let hourly =
        || EnqueueOptions::new().unique(UniqueOptions::by_args().period(Duration::from_secs(3600)));
    let report = client.enqueue_with(job("hourly"), hourly()).await?;
    let twice = client.enqueue_with(job("hourly"), hourly()).await?;
    println!("per hour:  {report:?}\n           {twice:?}");
    assert!(twice.duplicate);
    Ok(())
}
