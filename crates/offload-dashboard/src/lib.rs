//! A web dashboard and admin JSON API for [offload]'s jobs, as an
//! axum [`Router`] any app can mount, or the `offload dashboard` command
//! serves standalone.
//!
//! - `/` overview: counts per state and per queue, throughput chart, pause
//!   and resume;
//! - `/jobs` job list with filters and bulk actions, `/jobs/{id}` a job's
//!   args, attempts and errors, with retry, cancel and delete;
//! - `/api/...` the same as JSON, described at `/api/openapi.json`.
//!
//! Pages refresh themselves every few seconds. Actions are `POST`s
//! protected against cross-site requests; everything shown is escaped.
//! Set a token with [`DashboardConfig::token`] whenever the server is
//! reachable from other hosts. Wrong tokens are throttled per client
//! address (429 with `Retry-After`): serve with
//! `into_make_service_with_connect_info::<SocketAddr>()` so the router
//! sees that address, or all clients share one limit.
//!
//! ```no_run
//! use offload_dashboard::DashboardConfig;
//!
//! # async fn example(pool: sqlx::SqlitePool) -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     // ... the app's own routes ...
//!     .nest("/admin/jobs", offload_dashboard::router(pool, DashboardConfig::new()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await
//! # }
//! ```

mod api;
mod assets;
mod chart;
mod config;
pub mod metrics;
mod pages;
mod security;
mod state;
mod templates;
mod throttle;

use axum::routing::{get, post};
use axum::Router;
use offload::Backend;
use sqlx::Pool;

pub use api::ApiDoc;
pub use config::{redact_url, ConfigError, DashboardConfig, MIN_TOKEN_LEN};

/// Largest request body: logins, action forms and bulk filters are small.
/// A larger declared body is refused with 413 before it is read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The dashboard and admin API for the jobs in `pool`, ready to serve or
/// to [`nest`](Router::nest) under any path.
pub fn router<DB: Backend>(pool: Pool<DB>, config: DashboardConfig) -> Router {
    let state = state::AppState::<DB>::new(pool, config);
    let router = Router::new()
        .route("/", get(pages::overview::<DB>))
        .route("/jobs", get(pages::job_list::<DB>))
        .route("/jobs/bulk", post(pages::bulk_action::<DB>))
        .route("/jobs/{id}", get(pages::job_detail::<DB>))
        .route("/jobs/{id}/{action}", post(pages::job_action::<DB>))
        .route("/queues/{name}/{action}", post(pages::queue_action::<DB>))
        .route("/queues/{name}/limits", post(pages::queue_limits::<DB>))
        .route(
            "/login",
            get(pages::login_form::<DB>).post(pages::login::<DB>),
        )
        .route("/assets/{file}", get(assets::serve))
        .merge(api::routes::<DB>())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard::<DB>,
        ))
        .with_state(state);
    offload_axum::limit_body(router, BODY_LIMIT)
}
