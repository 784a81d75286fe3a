//! Prometheus metrics at `/metrics`: offload's own (jobs by outcome, wait
//! and run time, worker load, queue depth by state) and this service's HTTP
//! requests by route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
pub use offload_dashboard::metrics::{prometheus, render, MetricsState, RecorderError};

/// Counter of HTTP requests, labelled `method`, `route`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "offload_records_http_requests_total";
/// Histogram of HTTP request time in seconds, labelled `method`, `route`,
/// `status`.
pub const HTTP_REQUEST_SECONDS: &str = "offload_records_http_request_duration_seconds";

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
