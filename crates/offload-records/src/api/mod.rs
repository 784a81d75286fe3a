//! The HTTP API: routes, shared state and the error responses every route
//! shares.

pub mod records;
pub mod stats;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use offload::Client;
use offload_axum::{Problem, TxLayer};
use offload_dashboard::DashboardConfig;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::intake::Intake;
use crate::metrics::{self, MetricsState};
use crate::openapi::ApiDoc;
use crate::store::RecordStore;

/// Default largest request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How new records' jobs are tuned.
#[derive(Debug, Clone, Copy)]
pub struct JobSettings {
    /// SHA-256 rounds over the payload.
    pub hash_rounds: u32,
    /// Simulated mail or webhook call, in milliseconds.
    pub delay_ms: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            hash_rounds: 1000,
            delay_ms: 20,
        }
    }
}

/// What every handler shares.
pub struct AppState<DB: RecordStore> {
    /// Enqueues jobs and reads queue counts.
    pub client: Client<DB>,
    /// Tuning of the jobs new records get.
    pub jobs: JobSettings,
    /// Group commit of new records; `None` writes each in its request's
    /// own transaction.
    pub intake: Option<Intake>,
}

impl<DB: RecordStore> Clone for AppState<DB> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            jobs: self.jobs,
            intake: self.intake.clone(),
        }
    }
}

impl<DB: RecordStore> AppState<DB> {
    /// State for `client`. With `group_writers > 0`, new records are group
    /// committed by that many [`Intake`] writer tasks (so call it inside a
    /// Tokio runtime); with 0, each request writes in its own transaction.
    pub fn new(client: Client<DB>, jobs: JobSettings, group_writers: usize) -> Self {
        let intake =
            (group_writers > 0).then(|| Intake::start(client.clone(), jobs, group_writers));
        Self {
            client,
            jobs,
            intake,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        self.client.pool()
    }
}

/// The service's whole router: the API, `/openapi.json`, the docs page at
/// `/docs` (assets served from the binary, no CDN), Prometheus metrics at
/// `/metrics`, the jobs dashboard at `/dashboard` (without a token: check
/// it with [`DashboardConfig::for_listener`] before serving beyond
/// loopback, as [`router_with_dashboard`] callers do) and problem-details
/// fallbacks.
pub fn router<DB: RecordStore>(state: AppState<DB>, body_limit: usize) -> Router {
    router_with_dashboard(state, body_limit, DashboardConfig::new())
}

/// [`router`] with the dashboard configured by `dashboard` (title, token).
pub fn router_with_dashboard<DB: RecordStore>(
    state: AppState<DB>,
    body_limit: usize,
    dashboard: DashboardConfig,
) -> Router {
    let pool = state.pool().clone();
    let api = Router::new()
        .route(
            "/records",
            get(records::list_records::<DB>).post(records::create_record::<DB>),
        )
        .route("/records/{id}", get(records::get_record::<DB>))
        .route("/stats", get(stats::stats::<DB>))
        .with_state(state);
    let mut app = Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .nest(
            "/dashboard",
            offload_dashboard::router(pool.clone(), dashboard),
        )
        // A nested `/` only answers `/dashboard`; old links and typed
        // URLs may end in a slash.
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        );
    match metrics::prometheus() {
        Ok(handle) => {
            app = app.route(
                "/metrics",
                get(metrics::render::<DB>).with_state(MetricsState::new(pool.clone(), handle)),
            );
        }
        Err(error) => tracing::error!(%error, "serving without /metrics"),
    }
    let app = app
        // Routes only: the matched route is the label, and unknown paths
        // would add a series each.
        .route_layer(axum::middleware::from_fn(metrics::track_http))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside TxLayer: a panic becomes a 500 response, which rolls the
        // request's transaction back.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TxLayer::new(pool));
    // Outermost: an oversized request starts no transaction.
    offload_axum::limit_body(app, body_limit)
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED)
        .with_detail("this route does not accept that method")
}

fn panic_response(_panic: Box<dyn std::any::Any + Send>) -> Response {
    tracing::error!("handler panicked; request rolled back");
    Problem::internal().into_response()
}

/// A database error as the client sees it: 503 when the database is
/// unavailable, 500 otherwise, never the error's text (it is logged).
pub(crate) fn database_problem(error: impl Into<DatabaseError>) -> Problem {
    match error.into() {
        DatabaseError::Offload(error) => Problem::from(error),
        error => {
            tracing::error!(%error, "database error");
            Problem::internal()
        }
    }
}

/// What can go wrong writing records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatabaseError {
    /// offload or the database failed.
    #[error(transparent)]
    Offload(#[from] offload::Error),
    /// A batch insert returned another number of rows than it was given.
    #[error("inserted {inserted} records for {requested} requests")]
    RecordCountMismatch {
        /// Rows the insert returned.
        inserted: usize,
        /// Records it was given.
        requested: usize,
    },
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        Self::Offload(offload::Error::Database(error))
    }
}
