//! The SQLite baseline's latency measure: an inserting thread, one insert
//! per job, that wakes a worker thread over a channel.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use anyhow::ensure;
use rusqlite::TransactionBehavior;
use tokio::sync::{mpsc, oneshot};

use super::{claim, clear, insert_one, on_thread, open, SqliteBaseline, COMPLETE};
use crate::baseline::Batches;
use crate::jobs::{self, LatencyJob};
use crate::phase::bar;
use crate::phase::latency::{
    enqueue_steadily, latency_jobs, start_collecting, summarize, wait_for_starts,
};
use crate::report::Latency;

/// Enqueues at `rate` jobs/s for `duration` while the worker runs them.
pub(super) async fn measure(
    baseline: &SqliteBaseline,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let total = latency_jobs(rate, duration)?;
    let path = baseline.path.clone();
    on_thread(move || clear(&open(&path)?).map_err(Into::into)).await?;
    start_collecting();
    // The inserting thread wakes the worker thread; a full wake-up
    // channel means a wake-up is already pending.
    let (wake, woken) = std_mpsc::sync_channel::<()>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (path, batches, stop) = (baseline.path.clone(), baseline.batches, stop.clone());
        tokio::task::spawn_blocking(move || latency_worker(&path, batches, &woken, &stop))
    };
    let (requests, mut incoming) =
        mpsc::unbounded_channel::<(LatencyJob, oneshot::Sender<anyhow::Result<i64>>)>();
    let path = baseline.path.clone();
    let inserter = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = open(&path)?;
        while let Some((job, reply)) = incoming.blocking_recv() {
            let inserted = insert_one(&conn, &job);
            let _ = wake.try_send(());
            let _ = reply.send(inserted);
        }
        Ok(())
    });
    let bar = bar(&format!("baseline latency at {rate:.0}/s"), total);
    let outcome = enqueue_steadily(rate, total, &bar, move || {
        let requests = requests.clone();
        async move {
            let job = LatencyJob {
                enqueued_at_us: jobs::now_micros(),
            };
            let (reply, id) = oneshot::channel();
            requests
                .send((job, reply))
                .map_err(|_| anyhow::anyhow!("the inserting thread ended"))?;
            id.await?
        }
    })
    .await;
    let waited = wait_for_starts(total, &bar).await;
    stop.store(true, Ordering::Relaxed);
    inserter.await??;
    let completed = worker.await??;
    let (achieved, committed) = outcome?;
    waited?;
    ensure!(
        completed == total,
        "baseline latency: {completed} of {total} jobs completed"
    );
    summarize(rate, achieved, &committed, bar)
}

/// Claims and completes until the queue is empty, then waits for a wake-up,
/// until `stop`; returns the jobs completed.
fn latency_worker(
    path: &Path,
    batches: Batches,
    woken: &std_mpsc::Receiver<()>,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut conn = open(path)?;
    let mut completed = 0;
    loop {
        let rows = claim(&mut conn, batches.fetch)?;
        if rows.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return Ok(completed);
            }
            // The timeout only bounds how long a stop request waits.
            let _ = woken.recv_timeout(Duration::from_millis(50));
            continue;
        }
        for (id, args, _) in &rows {
            let job: LatencyJob = serde_json::from_str(args)?;
            jobs::record_latency_start(*id, job.enqueued_at_us);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut statement = tx.prepare_cached(COMPLETE)?;
            for (id, _, _) in &rows {
                completed += statement.execute([id])? as u64;
            }
        }
        tx.commit()?;
    }
}
