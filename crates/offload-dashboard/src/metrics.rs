//! Prometheus metrics at `/metrics`: offload's own (jobs by outcome, wait
//! and run time, worker load) and the jobs table's depth by queue and state,
//! read fresh on every scrape. Used by `offload dashboard` and the reference
//! service.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use offload::admin::{Admin, AdminError};
use offload::{Backend, JobState};
use sqlx::Pool;

use crate::security::too_many_guesses;
use crate::throttle::{client_key, LoginThrottle};

/// Why the Prometheus recorder is unavailable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not install the Prometheus recorder: {0}")]
pub struct RecorderError(String);

/// The process's Prometheus recorder, installed on first call. Only one
/// global recorder may exist per process, so every router shares it.
///
/// ```
/// let first = offload_dashboard::metrics::prometheus().unwrap();
/// let again = offload_dashboard::metrics::prometheus().unwrap();
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
pub struct MetricsState<DB: Backend> {
    pool: Pool<DB>,
    handle: PrometheusHandle,
    /// Queues seen so far: a queue whose jobs are all gone is reported as
    /// zeros rather than keeping its last counts.
    queues: Arc<Mutex<BTreeSet<String>>>,
    /// Bearer token a scrape must send, if any.
    token: Option<Arc<str>>,
    /// Wrong scrape tokens per client.
    throttle: Arc<LoginThrottle>,
}

impl<DB: Backend> Clone for MetricsState<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            handle: self.handle.clone(),
            queues: self.queues.clone(),
            token: self.token.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

impl<DB: Backend> MetricsState<DB> {
    /// State for the jobs in `pool`, rendered through `handle`.
    pub fn new(pool: Pool<DB>, handle: PrometheusHandle) -> Self {
        Self {
            pool,
            handle,
            queues: Arc::default(),
            token: None,
            throttle: Arc::new(LoginThrottle::new()),
        }
    }

    /// Refuses scrapes that do not send `Authorization: Bearer <token>`
    /// (Prometheus: `authorization: { credentials: <token> }`).
    ///
    /// ```
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let handle = offload_dashboard::metrics::prometheus()?;
    /// let state = offload_dashboard::metrics::MetricsState::new(pool, handle)
    ///     .token("a-long-scrape-token");
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/metrics", axum::routing::get(offload_dashboard::metrics::render))
    ///     .with_state(state);
    /// # drop(app);
    /// # Ok(())
    /// # }
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Arc::from(token.into()));
        self
    }
}

/// `GET /metrics`: refreshes queue depth by state, then renders every
/// metric in the Prometheus text format.
pub async fn render<DB: Backend>(
    State(state): State<MetricsState<DB>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = &state.token {
        let client = client_key(peer.map(|Extension(ConnectInfo(addr))| addr));
        if let Err(wait) = state.throttle.check(client, Instant::now()) {
            return too_many_guesses(wait);
        }
        if !crate::security::bearer_matches(&headers, token) {
            state.throttle.failed(client, Instant::now());
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"offload\"")],
                "send `Authorization: Bearer <token>`\n",
            )
                .into_response();
        }
    }
    match refresh_queue_depth(&state).await {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.handle.render(),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "could not read queue depth for /metrics");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn refresh_queue_depth<DB: Backend>(state: &MetricsState<DB>) -> Result<(), AdminError> {
    let rows = Admin::new(state.pool.clone()).queue_depths().await?;
    let queues: Vec<String> = {
        let mut seen = state
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.extend(rows.iter().map(|row| row.0.clone()));
        seen.iter().cloned().collect()
    };
    // Every state of every known queue, so a state that emptied reads 0.
    let depth = queues.iter().flat_map(|queue| {
        let rows = &rows;
        JobState::ALL.into_iter().map(move |state| {
            let count = rows
                .iter()
                .filter(|row| row.0 == *queue && row.1 == state)
                .map(|row| row.2)
                .sum();
            (queue.as_str(), state, count)
        })
    });
    offload::metrics::record_queue_depth(depth);
    Ok(())
}
