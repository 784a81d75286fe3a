#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// The layers, bottom up; each imports only those above it in this list.
// Vocabulary:
pub mod backoff;
mod defaults;
mod error;
mod partition;
mod queue_name;
mod rate_limit;
mod state;
mod unique;
// Storage (the only SQL):
#[doc(hidden)]
pub mod storage;
// The job contract:
mod context;
mod hooks;
mod job;
mod options;
mod periodic;
mod quiet_panic;
mod registry;
mod schedule;
// The runtime:
mod worker;
// The application's API:
mod client;
// The operator's API:
pub mod admin;
// Helpers for the application's tests:
#[cfg(feature = "testing")]
pub mod testing;

/// Time zones for cron schedules ([`PeriodicJob::cron`]).
pub use chrono_tz;
pub use client::Client;
pub use context::JobContext;
pub use defaults::{
    database_url_from_env, DEFAULT_DATABASE_URL, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, MAX_ERROR_LEN,
};
pub use error::{Error, Result, Transient};
pub use hooks::{AttemptOutcome, JobEvent, JobHook, JobInfo};
pub use job::{Job, JobError};
pub use options::EnqueueOptions;
pub use partition::{InvalidPartition, Partition, MAX_PARTITION_KEY_LEN};
pub use periodic::PeriodicJob;
pub use queue_name::{check_queue_name, InvalidQueueName, MAX_QUEUE_NAME_LEN};
pub use rate_limit::{InvalidRateLimit, RateLimit, MAX_RATE_PERIOD};
pub use registry::Registry;
pub use schedule::{Periodic, Schedule};
pub use state::{JobState, UnknownState};
pub use storage::migrate;
pub use storage::{
    clean_error, AttemptError, Backend, BackendKind, BackendTx, Enqueued, JobRecord, Leader,
    NewJob, PoolSettings, PortableRow, Sql, SqlTarget, SqlValue, DEFAULT_ACQUIRE_TIMEOUT,
    INTERACTIVE_ACQUIRE_TIMEOUT,
};
pub use unique::{UniqueKey, UniqueOptions, DEFAULT_UNIQUE_STATES};
pub use worker::metrics;
pub use worker::{shutdown_signal, QueueConfig, Retention, Worker, WorkerConfig, WorkerHandle};
