//! The job kinds the bench runs, and the process-wide tallies they report to
//! (a job receives only its context, so shared state has to be static).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use offload::{Job, JobContext, JobError};
use serde::{Deserialize, Serialize};

use crate::store::BenchStore;

/// The queue every bench job runs on.
pub const QUEUE: &str = "bench";

/// Jobs that have started running since the last [`reset_started`].
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Enqueue-to-start delays of [`LatencyJob`]s, in microseconds.
static LATENCIES: Mutex<Option<Histogram<u64>>> = Mutex::new(None);

/// (job id, start time in µs) of every [`LatencyJob`] that ran.
static LATENCY_STARTS: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

/// Longest delay the histogram holds: one minute, in microseconds.
pub(crate) const MAX_LATENCY_US: u64 = 60_000_000;

pub(crate) fn started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

pub(crate) fn reset_started() {
    STARTED.store(0, Ordering::Relaxed);
}

/// Counts one job start; the baseline's no-op jobs count here too.
pub(crate) fn count_start() {
    STARTED.fetch_add(1, Ordering::Relaxed);
}

/// Starts collecting latencies into a fresh histogram.
pub(crate) fn reset_latencies() {
    let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant histogram bounds are valid");
    *lock_latencies() = Some(histogram);
    take_latency_starts();
}

/// The start times collected since [`reset_latencies`].
pub(crate) fn take_latency_starts() -> Vec<(i64, i64)> {
    std::mem::take(
        &mut *LATENCY_STARTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// The latencies collected since [`reset_latencies`].
pub(crate) fn take_latencies() -> Option<Histogram<u64>> {
    lock_latencies().take()
}

fn lock_latencies() -> std::sync::MutexGuard<'static, Option<Histogram<u64>>> {
    LATENCIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Microseconds since the Unix epoch, the clock [`LatencyJob`] is stamped with.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Does nothing: measures the queue's own overhead.
#[derive(Debug, Serialize, Deserialize)]
pub struct NoopJob {
    /// Sequence number, so that args are not all identical.
    pub n: u64,
}

impl<DB: BenchStore> Job<DB> for NoopJob {
    const KIND: &'static str = "bench_noop";
    const QUEUE: &'static str = QUEUE;

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        count_start();
        Ok(())
    }
}

/// Adds one to a `bench_counters` row in its own transaction, which commits
/// together with the job's completion.
#[derive(Debug, Serialize, Deserialize)]
pub struct CounterJob {
    /// The counter row to bump.
    pub counter: i64,
}

impl<DB: BenchStore> Job<DB> for CounterJob {
    const KIND: &'static str = "bench_counter";
    const QUEUE: &'static str = QUEUE;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        count_start();
        DB::bump_counter(ctx.tx().await?, self.counter).await?;
        Ok(())
    }
}

/// Records how long it waited between its enqueue and its start.
#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyJob {
    /// When the enqueue call began, in microseconds since the Unix epoch.
    pub enqueued_at_us: i64,
}

impl<DB: BenchStore> Job<DB> for LatencyJob {
    const KIND: &'static str = "bench_latency";
    const QUEUE: &'static str = QUEUE;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        record_latency_start(ctx.id(), self.enqueued_at_us);
        Ok(())
    }
}

/// Records that job `id`, whose enqueue call began at `enqueued_at_us`,
/// starts now. The baseline's latency worker reports here too, so both
/// sides are measured by the same code.
pub(crate) fn record_latency_start(id: i64, enqueued_at_us: i64) {
    let now = now_micros();
    let waited = u64::try_from(now - enqueued_at_us).unwrap_or(0);
    LATENCY_STARTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((id, now));
    if let Some(histogram) = lock_latencies().as_mut() {
        histogram.saturating_record(waited.clamp(1, MAX_LATENCY_US));
    }
    count_start();
}

/// A registry with every bench job kind.
pub(crate) fn registry<DB: BenchStore>() -> offload::Registry<DB> {
    offload::Registry::new()
        .register::<NoopJob>()
        .register::<CounterJob>()
        .register::<LatencyJob>()
}
