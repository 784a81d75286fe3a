//! Enqueue-to-start latency while jobs arrive at a steady rate, one
//! `enqueue` each, as a web service would enqueue them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use offload::{Retention, Worker};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::{bar, finish, Bench};
use crate::jobs::{self, LatencyJob};
use crate::report::Latency;
use crate::store::BenchStore;

/// Enqueues allowed in flight at once, so that a slow database shows up as
/// a lower achieved rate rather than unbounded tasks.
const MAX_IN_FLIGHT: usize = 256;

impl<DB: BenchStore> Bench<DB> {
    /// Enqueues at `rate` jobs/s for `duration` while a worker runs them, and
    /// returns the distribution of enqueue-to-start delays.
    pub async fn latency(&self, rate: f64, duration: Duration) -> anyhow::Result<Latency> {
        let total = latency_jobs(rate, duration)?;
        DB::clear_jobs(self.pool()).await?;
        start_collecting();
        let config = self.worker_config(self.settings.concurrency, Retention::default());
        let worker = Worker::new(self.pool().clone(), jobs::registry::<DB>(), config)
            .start()
            .await?;
        let bar = bar(&format!("latency at {rate:.0}/s"), total);
        let client = self.client.clone();
        let outcome = enqueue_steadily(rate, total, &bar, move || {
            let client = client.clone();
            async move {
                let job = LatencyJob {
                    enqueued_at_us: jobs::now_micros(),
                };
                Ok(client.enqueue(job).await?.id)
            }
        })
        .await;
        let waited = wait_for_starts(total, &bar).await;
        worker.shutdown().await;
        let (achieved, committed) = outcome?;
        waited?;
        summarize(rate, achieved, &committed, bar)
    }
}

/// How many jobs a latency measure enqueues at `rate` for `duration`.
pub(crate) fn latency_jobs(rate: f64, duration: Duration) -> anyhow::Result<u64> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--latency-rate must be a positive number of jobs per second");
    }
    Ok((rate * duration.as_secs_f64()).round().max(1.0) as u64)
}

/// Resets the start counter and the latency histogram before a measure.
pub(crate) fn start_collecting() {
    jobs::reset_started();
    jobs::reset_latencies();
}

/// Calls `enqueue` `total` times at `rate`; returns the rate achieved and,
/// per job id, when its enqueue call returned (µs since the epoch). Each
/// call's future stamps its job with [`jobs::now_micros`] when it starts.
pub(crate) async fn enqueue_steadily<F, Fut>(
    rate: f64,
    total: u64,
    bar: &indicatif::ProgressBar,
    enqueue: F,
) -> anyhow::Result<(f64, HashMap<i64, i64>)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>> + Send + 'static,
{
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Catch up after a late tick, so the average rate holds.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut enqueues = JoinSet::new();
    let mut committed = HashMap::with_capacity(total as usize);
    let started = Instant::now();
    for _ in 0..total {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let enqueued = enqueue();
        enqueues.spawn(async move {
            let enqueued = enqueued.await;
            drop(permit);
            enqueued.map(|id| (id, jobs::now_micros()))
        });
        while let Some(joined) = enqueues.try_join_next() {
            let (id, at) = joined??;
            committed.insert(id, at);
        }
        bar.set_position(jobs::started());
    }
    while let Some(joined) = enqueues.join_next().await {
        let (id, at) = joined??;
        committed.insert(id, at);
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), committed))
}

/// Waits until `total` jobs have started, or fails after a minute.
pub(crate) async fn wait_for_starts(
    total: u64,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = jobs::started();
        bar.set_position(started);
        if started >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {started} of {total} latency jobs started within a minute");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The figures of a latency measure, from what the jobs recorded since
/// [`start_collecting`]; ends `bar` with a summary.
pub(crate) fn summarize(
    rate: f64,
    achieved: f64,
    committed: &HashMap<i64, i64>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Latency> {
    let histogram = jobs::take_latencies().context("latency histogram missing")?;
    let pickup = pickup_histogram(committed, jobs::take_latency_starts())?;
    let ms = |us: u64| us as f64 / 1000.0;
    let result = Latency {
        target_rate: rate,
        achieved_rate: achieved,
        samples: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        pickup_p50_ms: ms(pickup.value_at_quantile(0.50)),
        pickup_p99_ms: ms(pickup.value_at_quantile(0.99)),
    };
    finish(
        bar,
        &format!("p50 {:.2} ms, p99 {:.2} ms", result.p50_ms, result.p99_ms),
    );
    Ok(result)
}

/// Delays from the return of each job's enqueue call (its commit) to its
/// start: the queue's own pick-up time, without the insert's.
fn pickup_histogram(
    committed: &HashMap<i64, i64>,
    starts: Vec<(i64, i64)>,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::new_with_bounds(1, jobs::MAX_LATENCY_US, 3)?;
    for (id, started) in starts {
        if let Some(returned) = committed.get(&id) {
            // A job can start before its enqueue call has returned; count
            // that as the shortest delay.
            let delay = u64::try_from(started - returned).unwrap_or(0);
            histogram.saturating_record(delay.clamp(1, jobs::MAX_LATENCY_US));
        }
    }
    Ok(histogram)
}
