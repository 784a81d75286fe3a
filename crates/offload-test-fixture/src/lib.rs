//! Test scaffolding shared by offload's crates.
//!
//! - [`FreshDatabase`]: a uniquely named PostgreSQL database, or an SQLite
//!   file in its own temp dir, for one test; removed afterwards.
//! - [`send`] with [`get`], [`post`] and [`post_json`]: requests sent
//!   straight into an axum [`Router`](axum::Router), answered as a [`Reply`].
//! - [`PrivatePostgres`]: a PostgreSQL server of the test's own, for tests
//!   that stop or restart one.
//! - [`FaultProxy`]: a loopback TCP proxy that resets, refuses, stalls or
//!   half-opens the connections through it.
//! - [`TinyDisk`]: a tmpfs of a few MiB, for tests of a full disk.
//! - [`eventually`]: polls a condition until it holds or a time limit passes.
//! - [`on_both_backends!`]: a PostgreSQL and an SQLite test for each
//!   scenario generic over the backend.
//!
//! It knows nothing of offload itself (it does not depend on the `offload`
//! crate, so offload's own tests can use it): migrations, pools with
//! offload's settings and app tables stay with the tests.
//!
//! ```
//! use axum::routing::get;
//! use axum::Router;
//! use offload_test_fixture::{send, FreshDatabase};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let db = FreshDatabase::sqlite();
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let reply = send(&app, offload_test_fixture::get("/")).await;
//! assert_eq!(reply.text(), "hello");
//! assert!(db.url().starts_with("sqlite://"));
//! db.cleanup().await;
//! # }
//! ```

mod database;
mod fault_proxy;
mod http;
mod macros;
mod poll;
mod server;
mod tiny_disk;

pub use database::{admin_url, FreshBackend, FreshDatabase, DEFAULT_ADMIN_URL};
pub use fault_proxy::{Cut, FaultProxy};
pub use http::{get, post, post_json, send, Reply};
pub use poll::eventually;
pub use server::{free_port, PrivatePostgres};
pub use tiny_disk::TinyDisk;
