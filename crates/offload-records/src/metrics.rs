//! Prometheus metrics at `/metrics`: offload's own (jobs by outcome, wait
//! and run time, worker load, queue depth by state) and this service's HTTP
//! requests by route and status.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use offload::{AdminBackend, JobState};
use offload_axum::Problem;
use sqlx::Pool;

use crate::api::database_problem;

/// Counter of HTTP requests, labelled `method`, `route`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "offload_records_http_requests_total";
/// Histogram of HTTP request time in seconds, labelled `method`, `route`,
/// `status`.
pub const HTTP_REQUEST_SECONDS: &str = "offload_records_http_request_duration_seconds";

/// Why the Prometheus recorder is unavailable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not install the Prometheus recorder: {0}")]
pub struct RecorderError(String);

/// The process's Prometheus recorder, installed on first call. Only one
/// global recorder may exist per process, so every router shares it.
///
/// ```
/// let first = offload_records::metrics::prometheus().unwrap();
/// let again = offload_records::metrics::prometheus().unwrap();
/// metrics::counter!("example_total").increment(1);
/// assert!(again.render().contains("example_total"));
/// # drop(first);
/// ```
pub fn prometheus() -> Result<PrometheusHandle, RecorderError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, RecorderError>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(offload::metrics::SECONDS_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| RecorderError(error.to_string()))
        })
        .clone()
}

/// What the `/metrics` handler needs.
pub struct MetricsState<DB: AdminBackend> {
    pool: Pool<DB>,
    handle: PrometheusHandle,
    /// Queues seen so far: a queue whose jobs are all gone is reported as
    /// zeros rather than keeping its last counts.
    queues: Arc<Mutex<BTreeSet<String>>>,
}

impl<DB: AdminBackend> Clone for MetricsState<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            handle: self.handle.clone(),
            queues: self.queues.clone(),
        }
    }
}

impl<DB: AdminBackend> MetricsState<DB> {
    /// State for the jobs in `pool`, rendered through `handle`.
    pub fn new(pool: Pool<DB>, handle: PrometheusHandle) -> Self {
        Self {
            pool,
            handle,
            queues: Arc::default(),
        }
    }
}

/// `GET /metrics`: refreshes queue depth by state, then renders every
/// metric in the Prometheus text format.
pub async fn render<DB: AdminBackend>(State(state): State<MetricsState<DB>>) -> Response {
    match refresh_queue_depth(&state).await {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.handle.render(),
        )
            .into_response(),
        Err(problem) => problem.into_response(),
    }
}

async fn refresh_queue_depth<DB: AdminBackend>(state: &MetricsState<DB>) -> Result<(), Problem> {
    let rows = DB::queue_state_counts(&state.pool)
        .await
        .map_err(database_problem)?;
    let queues: Vec<String> = {
        let mut seen = state
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.extend(rows.iter().map(|row| row.queue.clone()));
        seen.iter().cloned().collect()
    };
    // Every state of every known queue, so a state that emptied reads 0.
    let depth = queues.iter().flat_map(|queue| {
        let rows = &rows;
        JobState::ALL.into_iter().map(move |state| {
            let count = rows
                .iter()
                .filter(|row| row.queue == *queue && row.state == state)
                .map(|row| row.count)
                .sum();
            (queue.as_str(), state, count)
        })
    });
    offload::metrics::record_queue_depth(depth);
    Ok(())
}

/// Middleware counting and timing every request by method, matched route
/// (not the raw path, which would give one series per record id) and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
}
