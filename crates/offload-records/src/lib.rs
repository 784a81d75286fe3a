//! offload-records: the reference service. A records API whose writes
//! enqueue their processing job in the request's transaction, with the
//! worker in the same process, on SQLite or PostgreSQL.
//!
//! See the crate's README for how to run it and what it serves.
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod intake;
pub mod job;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod store;

pub use config::{Config, LogFormat};
