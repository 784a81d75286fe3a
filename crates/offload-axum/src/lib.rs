//! axum integration for [offload]: each request gets its own
//! database transaction ([`Tx`]), committed when the handler succeeds and
//! rolled back when it fails or panics, so jobs enqueued in it with
//! [`Client::enqueue_tx`](offload::Client::enqueue_tx) exist if and only if
//! the request's writes do.
//!
//! Errors are RFC 9457 problem details ([`Problem`]); every way an
//! extractor of this crate can fail is its own type in [`rejection`], and
//! an [`offload::Error`] converts with `?` (503 while the database is
//! unavailable, 500 otherwise).
//!
//! [`serve::serve`] runs a router on a TCP listener with header, body and
//! idle timeouts and a connection cap, which `axum::serve` lacks.
//!
//! ```
//! use axum::{routing::get, Router};
//! use offload_axum::{Problem, Tx, TxLayer};
//! use sqlx::Sqlite;
//!
//! async fn count(mut tx: Tx<Sqlite>) -> Result<String, Problem> {
//!     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM offload_jobs")
//!         .fetch_one(&mut *tx)
//!         .await
//!         .map_err(|error| {
//!             tracing::error!(%error, "count failed");
//!             Problem::internal()
//!         })?;
//!     Ok(n.to_string())
//! }
//!
//! fn app(pool: sqlx::SqlitePool) -> Router {
//!     Router::new().route("/jobs/count", get(count)).layer(TxLayer::new(pool))
//! }
//! ```
#![warn(missing_docs)]

mod body_limit;
mod extract;
mod problem;
pub mod rejection;
pub mod serve;
mod tx;

pub use body_limit::limit_body;
pub use extract::{Json, Path, Query};
pub use problem::{Problem, PROBLEM_JSON};
pub use tx::{BeginTx, Tx, TxLayer, TxService};
