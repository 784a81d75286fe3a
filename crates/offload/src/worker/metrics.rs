//! Metrics, through the [`metrics`] facade: install any exporter (e.g.
//! `metrics-exporter-prometheus`) in the application and they appear there.
//! Without one, recording costs next to nothing.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `offload_jobs_total` | counter | `kind`, `queue`, `outcome` (completed, failed, discarded, cancelled, snoozed, requeued) |
//! | `offload_job_wait_seconds` | histogram | `queue`: from due (`run_at`) to start |
//! | `offload_job_run_seconds` | histogram | `kind`, `queue`: run time of one attempt |
//! | `offload_worker_busy` | gauge | `queue`: jobs running on this worker |
//! | `offload_worker_capacity` | gauge | `queue`: the queue's concurrency on this worker |
//! | `offload_queue_jobs` | gauge | `queue`, `state`: set by [`record_queue_depth`] |
//! | `offload_runtime_stalls_total` | counter | none: times the worker's runtime ran no task for over a second (a job blocking its thread) |
//! | `offload_runtime_stall_seconds` | gauge | none: how long the current stall has lasted, 0 when none |
//! | `offload_blocking_polls_total` | counter | `kind`: polls of a job's future that held their thread for over a second |
//! | `offload_claims_throttled_total` | counter | `queue`, `limit` (global, rate): claims a queue's limit cut short |

use std::time::Duration;

use crate::storage::Outcome;

/// Counter of finished attempts.
pub const JOBS_TOTAL: &str = "offload_jobs_total";
/// Histogram of enqueue-to-start latency.
pub const JOB_WAIT_SECONDS: &str = "offload_job_wait_seconds";
/// Histogram of attempt run time.
pub const JOB_RUN_SECONDS: &str = "offload_job_run_seconds";
/// Gauge of running jobs.
pub const WORKER_BUSY: &str = "offload_worker_busy";
/// Gauge of concurrency slots.
pub const WORKER_CAPACITY: &str = "offload_worker_capacity";
/// Gauge of jobs per queue and state.
pub const QUEUE_JOBS: &str = "offload_queue_jobs";

/// Counter of runtime stalls.
pub const RUNTIME_STALLS_TOTAL: &str = "offload_runtime_stalls_total";
/// Gauge of the current stall's length.
pub const RUNTIME_STALL_SECONDS: &str = "offload_runtime_stall_seconds";
/// Counter of job polls that blocked their thread.
pub const BLOCKING_POLLS_TOTAL: &str = "offload_blocking_polls_total";

/// Counter of claims a queue's limit cut short.
pub const CLAIMS_THROTTLED_TOTAL: &str = "offload_claims_throttled_total";

/// Bucket bounds, in seconds, that suit both histograms: 1 ms to 5 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub(crate) fn job_started(queue: &str, waited: Duration) {
    metrics::histogram!(JOB_WAIT_SECONDS, "queue" => queue.to_owned()).record(waited.as_secs_f64());
}

pub(crate) fn job_finished(kind: &str, queue: &str, outcome: &'static str, ran: Duration) {
    let (kind, queue) = (kind.to_owned(), queue.to_owned());
    metrics::histogram!(JOB_RUN_SECONDS, "kind" => kind.clone(), "queue" => queue.clone())
        .record(ran.as_secs_f64());
    metrics::counter!(JOBS_TOTAL, "kind" => kind, "queue" => queue, "outcome" => outcome)
        .increment(1);
}

pub(crate) fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Retry { .. } => "failed",
        Outcome::Discard { .. } => "discarded",
        Outcome::Cancel { .. } => "cancelled",
        Outcome::Snooze { .. } => "snoozed",
        Outcome::Requeue { .. } => "requeued",
    }
}

pub(crate) fn claim_throttled(queue: &str, limit: &'static str) {
    metrics::counter!(CLAIMS_THROTTLED_TOTAL, "queue" => queue.to_owned(), "limit" => limit)
        .increment(1);
}

pub(crate) fn worker_load(queue: &str, busy: usize, capacity: usize) {
    metrics::gauge!(WORKER_BUSY, "queue" => queue.to_owned()).set(busy as f64);
    metrics::gauge!(WORKER_CAPACITY, "queue" => queue.to_owned()).set(capacity as f64);
}

pub(crate) fn runtime_stalled() {
    metrics::counter!(RUNTIME_STALLS_TOTAL).increment(1);
}

pub(crate) fn runtime_stall(lasted: Duration) {
    metrics::gauge!(RUNTIME_STALL_SECONDS).set(lasted.as_secs_f64());
}

pub(crate) fn blocking_poll(kind: &str) {
    metrics::counter!(BLOCKING_POLLS_TOTAL, "kind" => kind.to_owned()).increment(1);
}

/// Publishes how many jobs each queue holds in each state, from rows of
/// (queue, state, count). Call it before rendering metrics, e.g. in the
/// `/metrics` handler.
///
/// ```
/// offload::metrics::record_queue_depth([("default", offload::JobState::Available, 3)]);
/// ```
pub fn record_queue_depth<'a>(rows: impl IntoIterator<Item = (&'a str, crate::JobState, i64)>) {
    for (queue, state, count) in rows {
        metrics::gauge!(QUEUE_JOBS, "queue" => queue.to_owned(), "state" => state.as_str())
            .set(count as f64);
    }
}
