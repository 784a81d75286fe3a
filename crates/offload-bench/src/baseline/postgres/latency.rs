//! The PostgreSQL baseline's latency measure: one insert per job, then a
//! `pg_notify` on its own, and a worker woken by a `PgListener`.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{claim, complete_batches, PgBaseline, INSERT_ONE, NOTIFY};
use crate::baseline::Batches;
use crate::jobs::{self, LatencyJob, QUEUE};
use crate::phase::bar;
use crate::phase::latency::{
    enqueue_steadily, latency_jobs, start_collecting, summarize, wait_for_starts,
};
use crate::report::Latency;

/// Enqueues at `rate` jobs/s for `duration` while the worker runs them.
pub(super) async fn measure(
    baseline: &PgBaseline,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let total = latency_jobs(rate, duration)?;
    baseline.clear().await?;
    start_collecting();
    let mut listener = PgListener::connect_with(&baseline.pool).await?;
    listener.listen("baseline_jobs").await?;
    let (stop, stopped) = oneshot::channel();
    let worker = tokio::spawn(latency_worker(
        baseline.pool.clone(),
        listener,
        baseline.batches,
        stopped,
    ));
    let bar = bar(&format!("baseline latency at {rate:.0}/s"), total);
    let pool = baseline.pool.clone();
    let outcome = enqueue_steadily(rate, total, &bar, move || {
        let pool = pool.clone();
        async move {
            let job = LatencyJob {
                enqueued_at_us: jobs::now_micros(),
            };
            let id: i64 = sqlx::query_scalar(INSERT_ONE)
                .bind(QUEUE)
                .bind(serde_json::to_value(job)?)
                .fetch_one(&pool)
                .await?;
            sqlx::query(NOTIFY).execute(&pool).await?;
            Ok(id)
        }
    })
    .await;
    let waited = wait_for_starts(total, &bar).await;
    let _ = stop.send(());
    worker.await??;
    let (achieved, committed) = outcome?;
    waited?;
    let completed = baseline.count("completed").await?;
    ensure!(
        completed == total,
        "baseline latency: {completed} of {total} jobs completed"
    );
    summarize(rate, achieved, &committed, bar)
}

/// Claims until the queue is empty, then sleeps until a notification, until
/// `stop`; then waits for its completions.
async fn latency_worker(
    pool: PgPool,
    mut listener: PgListener,
    batches: Batches,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let (finished, to_complete) = mpsc::channel(batches.in_flight);
    let completer = tokio::spawn(complete_batches(
        pool.clone(),
        to_complete,
        batches.complete,
        false,
    ));
    loop {
        loop {
            let rows = claim(&pool, batches.fetch.min(batches.in_flight)).await?;
            if rows.is_empty() {
                break;
            }
            for (id, args, _attempt) in rows {
                let job: LatencyJob = serde_json::from_value(args)?;
                jobs::record_latency_start(id, job.enqueued_at_us);
                finished.send(id).await?;
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            woken = listener.recv() => {
                woken.context("listening for baseline_jobs")?;
                // One claim serves every insert that notified meanwhile.
                while listener.next_buffered().is_some() {}
            }
        }
    }
    drop(finished);
    completer.await?
}
