//! Database backends. All SQL lives in this module's children; the rest of the
//! crate talks to the database only through [`Backend`].

pub mod admin;
mod migrate;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Pool, Transaction};

use crate::state::JobState;
use crate::Result;

/// A database that can hold offload's jobs: implemented for
/// [`sqlx::Postgres`] and [`sqlx::Sqlite`].
///
/// Application code names the backend as a type parameter
/// (`Client<Postgres>`, `JobContext<Sqlite>`) and never calls these methods
/// itself; they are public so that the worker, the CLI and the dashboard
/// share one implementation.
pub trait Backend: sqlx::Database + Sized {
    /// How often an idle producer polls when no wake-up arrives.
    const DEFAULT_POLL_INTERVAL: Duration;

    /// Opens a pool with the settings offload relies on. On SQLite: WAL, a
    /// busy timeout, and a release hook that rolls back a transaction left
    /// open by a cancelled `BEGIN` (an sqlx 0.8 gap), which would otherwise
    /// make every later `BEGIN IMMEDIATE` on that connection fail.
    fn connect(url: &str, max_connections: u32) -> impl Future<Output = Result<Pool<Self>>> + Send;

    /// Applies offload's migrations that have not run yet.
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<()>> + Send;

    /// Names the database `pool` talks to (host, port and name, or file), so
    /// that in-process signals meant for one database never reach jobs of
    /// another. Never includes credentials.
    fn identity(pool: &Pool<Self>) -> String;

    /// Begins the transaction a job writes in.
    fn begin_job_tx(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Inserts jobs on `conn` (inside the caller's transaction if it has one).
    /// Returns their ids in input order. With `notify`, workers in other
    /// processes are woken when the insert commits.
    fn insert_jobs(
        conn: &mut Self::Connection,
        jobs: &[NewJob],
        notify: bool,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Whether workers in other processes can be woken ([`Backend::notify`]).
    const CROSS_PROCESS_WAKE: bool;

    /// Completion batches written at once: the database works on one
    /// while the next forms. One where the database admits one writer.
    const COMPLETION_WRITERS: usize;

    /// Wakes workers of `queues` in every process, outside any transaction.
    fn notify(pool: &Pool<Self>, queues: &[String]) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` available jobs of `queue` for `worker_id`.
    fn claim(
        pool: &Pool<Self>,
        queue: &str,
        limit: usize,
        worker_id: &str,
    ) -> impl Future<Output = Result<Vec<ClaimedJob>>> + Send;

    /// Marks finished jobs completed (or deletes them when `delete` is set),
    /// guarded by state and attempt.
    fn complete_many(
        pool: &Pool<Self>,
        done: &[Attempt],
        delete: bool,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Marks one job completed inside the job's own transaction. Returns
    /// `false` when the job is no longer this attempt's to finish.
    fn complete_in_tx(
        conn: &mut Self::Connection,
        done: Attempt,
        delete: bool,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Records the end of an attempt that did not succeed.
    fn record_outcome(
        pool: &Pool<Self>,
        attempt: Attempt,
        outcome: &Outcome,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Registers a worker or renews its heartbeat.
    fn heartbeat(pool: &Pool<Self>, worker: &WorkerInfo)
        -> impl Future<Output = Result<()>> + Send;

    /// Removes a worker's row on clean shutdown.
    fn deregister(pool: &Pool<Self>, worker_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Returns running jobs whose worker stopped heartbeating for `lease` to
    /// the queue (or discards them when out of attempts). Returns the queues
    /// that got jobs back.
    fn rescue(
        pool: &Pool<Self>,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Makes due `scheduled` and `retryable` jobs `available`. Returns the
    /// queues that got jobs.
    fn promote(pool: &Pool<Self>, limit: usize)
        -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Deletes up to `limit` jobs in `state` finalized more than `older_than` ago.
    fn prune(
        pool: &Pool<Self>,
        state: JobState,
        older_than: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Waits for notifications from other processes: new jobs (calls
    /// [`Signals::wake`] with the queue) and cancelled running jobs (calls
    /// [`Signals::cancel`] with the ids). Returns only on an error; backends
    /// without notifications return `Ok` at once.
    fn listen(pool: &Pool<Self>, signals: Signals) -> impl Future<Output = Result<()>> + Send;

    /// One job, whole.
    fn fetch_job(
        pool: &Pool<Self>,
        id: i64,
    ) -> impl Future<Output = Result<Option<JobRecord>>> + Send;

    /// Number of jobs in each state, optionally for one queue.
    fn count_by_state(
        pool: &Pool<Self>,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(JobState, i64)>>> + Send;

    /// Inserts one job that carries a [`NewJob::unique`] key, unless a job
    /// holding the same key exists (then returns `None`). The database's
    /// unique index decides, so concurrent inserts cannot both win.
    fn insert_unique(
        conn: &mut Self::Connection,
        job: &NewJob,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The job currently holding unique `key`, if any.
    fn find_unique(
        conn: &mut Self::Connection,
        key: &str,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Claims like [`claim`](Self::claim), but never lets more jobs of
    /// `queue` run over all workers than its global limit (stored in
    /// `offload_queues`).
    fn claim_limited(
        pool: &Pool<Self>,
        queue: &str,
        limit: usize,
        worker_id: &str,
    ) -> impl Future<Output = Result<Vec<ClaimedJob>>> + Send;

    /// The queue's global limit, if it has one.
    fn global_limit(
        pool: &Pool<Self>,
        queue: &str,
    ) -> impl Future<Output = Result<Option<usize>>> + Send;

    /// Sets (or with `None` removes) the queue's global limit.
    fn set_global_limit(
        pool: &Pool<Self>,
        queue: &str,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Becomes or stays the leader of `name` for `ttl`, unless another
    /// candidate holds it and has not expired. Returns whether `candidate`
    /// leads now.
    fn try_lead(
        pool: &Pool<Self>,
        name: &str,
        candidate: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Gives up leadership of `name` if `leader` holds it, so that another
    /// candidate takes over at its next attempt.
    fn resign(
        pool: &Pool<Self>,
        name: &str,
        leader: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Who leads `name`, if anyone has and has not expired.
    fn leader(pool: &Pool<Self>, name: &str)
        -> impl Future<Output = Result<Option<Leader>>> + Send;

    /// The latest enqueued tick of periodic job `name`.
    fn last_tick(
        pool: &Pool<Self>,
        name: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    /// Enqueues `job` for tick `tick` of periodic job `name`, in one
    /// transaction that also advances the job's last tick. Returns `None`
    /// when this tick (or a later one) was already enqueued.
    fn enqueue_tick(
        pool: &Pool<Self>,
        name: &str,
        tick: DateTime<Utc>,
        job: &NewJob,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;
}

/// The current holder of a leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    /// The leading worker's id.
    pub leader_id: String,
    /// When it took over.
    pub elected_at: DateTime<Utc>,
    /// When it loses leadership unless it renews.
    pub expires_at: DateTime<Utc>,
}

/// Where [`Backend::listen`] delivers what it hears.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    /// New jobs on a queue.
    pub wake: fn(&str),
    /// Running jobs were cancelled: the database's identity and the ids.
    pub cancel: fn(&str, &[i64]),
}

/// A job ready to insert. Build one with [`Client::new_job`](crate::Client::new_job)
/// or [`NewJob::new`] for kinds this process does not link.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job kind.
    pub kind: String,
    /// The queue it runs on.
    pub queue: String,
    /// JSON-encoded args.
    pub args: String,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Earliest start; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// Set for unique jobs: the key and the states it holds in.
    pub unique: Option<crate::unique::UniqueKey>,
}

impl NewJob {
    /// A job of `kind` with JSON `args` on the default queue.
    ///
    /// ```
    /// let job = offload::NewJob::new("send_email", r#"{"to":"a@example.com"}"#);
    /// assert_eq!(job.queue, "default");
    /// ```
    pub fn new(kind: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            queue: crate::DEFAULT_QUEUE.to_owned(),
            args: args.into(),
            priority: 0,
            max_attempts: crate::job::DEFAULT_MAX_ATTEMPTS,
            run_at: None,
            tags: Vec::new(),
            unique: None,
        }
    }
}

/// A job a worker has claimed: `state = running`, attempt already counted.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// JSON-encoded args.
    pub args: String,
    /// This attempt's number, starting at 1.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// When it became due.
    pub run_at: DateTime<Utc>,
}

impl ClaimedJob {
    /// The (id, attempt) pair that guards this attempt's writes.
    pub fn attempt_key(&self) -> Attempt {
        Attempt {
            id: self.id,
            attempt: self.attempt,
        }
    }
}

/// One attempt of one job: the guard on every write that ends an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// Job id.
    pub id: i64,
    /// Attempt number.
    pub attempt: i32,
}

/// How an attempt that did not complete ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Failed; runs again at `at`.
    Retry {
        /// The error to record.
        error: String,
        /// When to run again.
        at: DateTime<Utc>,
    },
    /// Failed for the last time, or cannot run at all.
    Discard {
        /// The error to record.
        error: String,
    },
    /// The job asked to stop for good.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Run again at `at`; not a failure, and does not use up an attempt.
    Snooze {
        /// When to run again.
        at: DateTime<Utc>,
    },
    /// Interrupted by shutdown; back to the queue without using up an attempt.
    Requeue {
        /// Why.
        reason: String,
    },
}

/// A worker process's identity, written with each heartbeat.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Unique id: host, pid and a random suffix.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i32,
    /// Queues it serves, comma-separated.
    pub queues: String,
}

/// One recorded failure of a job.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AttemptError {
    /// Which attempt failed.
    pub attempt: i32,
    /// When.
    pub at: DateTime<Utc>,
    /// The error message.
    pub error: String,
}

/// A job row, whole.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// Its args.
    pub args: serde_json::Value,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts made so far.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
    /// Labels.
    pub tags: Vec<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finalized_at: Option<DateTime<Utc>>,
    /// The worker running it, while running.
    pub worker_id: Option<String>,
}

pub(crate) fn decode_errors(raw: &str) -> Vec<AttemptError> {
    serde_json::from_str(raw).unwrap_or_default()
}

pub(crate) fn decode_tags(raw: &str) -> Vec<String> {
    serde_json::from_str(raw).unwrap_or_default()
}

/// What [`Outcome`] writes to the job row.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The new state.
    pub state: JobState,
    /// The new `run_at`, when it changes.
    pub run_at: Option<DateTime<Utc>>,
    /// Added to `max_attempts`, so that an attempt that was not a failure
    /// does not use one up.
    pub extra_attempts: i32,
    /// The error to append to the job's errors.
    pub error: Option<String>,
}

/// Longest error message kept on a job row, in bytes.
pub const MAX_ERROR_LEN: usize = 8 * 1024;

impl Outcome {
    /// The row change this outcome makes.
    pub fn change(&self) -> StateChange {
        let (state, run_at, extra_attempts, error) = match self {
            Outcome::Retry { error, at } => (JobState::Retryable, Some(*at), 0, Some(error)),
            Outcome::Discard { error } => (JobState::Discarded, None, 0, Some(error)),
            Outcome::Cancel { reason } => (JobState::Cancelled, None, 0, Some(reason)),
            Outcome::Snooze { at } => (JobState::Scheduled, Some(*at), 1, None),
            Outcome::Requeue { reason } => (JobState::Available, None, 1, Some(reason)),
        };
        StateChange {
            state,
            run_at,
            extra_attempts,
            error: error.map(|e| clean_error(e)),
        }
    }
}

/// Makes an error message storable: no NUL bytes (PostgreSQL rejects them in
/// text) and at most [`MAX_ERROR_LEN`] bytes.
pub fn clean_error(message: &str) -> String {
    let mut cleaned = message.replace('\0', "\u{FFFD}");
    if cleaned.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
        cleaned.push_str("… (truncated)");
    }
    cleaned
}

fn encode_tags(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_state(raw: &str) -> Result<JobState> {
    raw.parse()
        .map_err(|e: crate::state::UnknownState| sqlx::Error::Decode(Box::new(e)).into())
}

fn parse_counts(rows: Vec<(String, i64)>) -> Vec<(JobState, i64)> {
    rows.into_iter()
        .filter_map(|(state, n)| state.parse().ok().map(|s| (s, n)))
        .collect()
}
