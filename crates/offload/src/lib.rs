#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod backend;
pub mod backoff;
mod client;
mod context;
mod error;
mod job;
mod leader;
mod maintenance;
pub mod metrics;
mod notifier;
mod periodic;
mod registry;
mod state;
mod unique;
mod wake;
mod worker;

pub use backend::admin::{
    ActionOutcome, Admin, AdminBackend, AdminError, FilterError, FilterParams, JobAction,
    JobFilter, JobPage, JobSummary, Overview, Page, QueueSummary, StateCounts, ThroughputPoint,
};
pub use backend::{AttemptError, Backend, JobRecord, Leader, NewJob};
/// Time zones for cron schedules ([`PeriodicJob::cron`]).
pub use chrono_tz;
pub use client::{Client, EnqueueOptions};
pub use context::JobContext;
pub use error::{Error, Result};
pub use job::{Job, JobError, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};
pub use periodic::{Periodic, PeriodicJob, Schedule};
pub use registry::Registry;
pub use state::{JobState, UnknownState};
pub use unique::{EnqueueResult, UniqueKey, UniqueOptions, DEFAULT_UNIQUE_STATES};
pub use worker::{shutdown_signal, QueueConfig, Retention, Worker, WorkerConfig, WorkerHandle};

/// The SQLite file used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://offload.db";

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`] when it is unset or empty.
///
/// ```
/// let url = offload::database_url_from_env();
/// assert!(!url.is_empty());
/// ```
pub fn database_url_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Which backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl BackendKind {
    /// Reads the scheme of `url`. The error names only the scheme, never
    /// the rest of the URL (which may hold a password).
    ///
    /// ```
    /// use offload::BackendKind;
    /// assert_eq!(BackendKind::from_url("postgres://u:secret@db/app").unwrap(), BackendKind::Postgres);
    /// assert_eq!(BackendKind::from_url("sqlite://jobs.db").unwrap(), BackendKind::Sqlite);
    /// assert!(BackendKind::from_url("mysql://u:secret@db").unwrap_err().to_string().contains("mysql"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(BackendKind::Postgres),
            "sqlite" => Ok(BackendKind::Sqlite),
            _ => Err(Error::UnsupportedUrl(scheme)),
        }
    }
}
