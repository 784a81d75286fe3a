//! The storage driver: every statement offload runs, one method each,
//! implemented once per backend. Sealed, and not a stable API: the rest of
//! the crate calls it, applications call [`Backend`](super::Backend),
//! [`Client`](crate::Client) and [`Admin`](crate::admin::Admin).
//!
//! Methods are grouped by the noun they act on (`job_*`, `queue_*`,
//! `worker_*`, `leader_*`, `periodic_*`, `migration_*`). Each names its
//! wake-up side effect: on PostgreSQL some statements `NOTIFY` workers in
//! other processes (delivered when the transaction commits); in-process
//! wake-ups are the caller's job (see `worker::wake`).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Pool, Transaction};

use super::group_step::GroupStep;
use super::limits::{Claimed, LimitChange, QueueLimits, QueueSettings};
use super::query::{JobFilter, Page};
use super::rows::{
    Attempt, ClaimedJob, JobRecord, JobSummary, Leader, NewJob, Outcome, WorkerInfo,
};
use super::schema::Migration;
use crate::state::JobState;
use crate::Result;

pub(crate) mod sealed {
    /// Only offload's backends implement [`Driver`](super::Driver).
    pub trait Sealed {}
}

/// Where [`Driver::notification_listen`] delivers what it hears.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    /// New jobs on a queue.
    pub wake: fn(&str),
    /// Running jobs were cancelled: the database's identity and the ids.
    pub cancel: fn(&str, &[i64]),
    /// (Re)subscribed: what was sent before reached no one; look for jobs.
    pub listening: fn(),
}

/// Every statement offload runs on a backend. Not a stable API.
pub trait Driver: sqlx::Database + Sized + sealed::Sealed {
    /// How often an idle producer polls when no wake-up arrives.
    const DEFAULT_POLL_INTERVAL: Duration;
    /// Whether other processes' workers can be woken ([`Self::queue_notify`]).
    const CROSS_PROCESS_WAKE: bool;
    /// Completion batches written at once: the database works on one
    /// while the next forms. One where the database admits one writer.
    const COMPLETION_WRITERS: usize;
    /// offload's own schema versions on this backend.
    const MIGRATIONS: &'static [Migration];
    /// Whether a worker's writes share one transaction by default (see
    /// `storage::group`): where one writer is all the database admits.
    const GROUP_COMMIT: bool;

    // --- pool ---

    /// Opens a pool with the settings offload relies on.
    fn pool_connect(
        url: &str,
        settings: super::PoolSettings,
    ) -> impl Future<Output = Result<Pool<Self>>> + Send;

    /// Names the database `pool` talks to (host, port and name, or file),
    /// so that in-process signals meant for one database never reach jobs
    /// of another. Never includes credentials.
    fn pool_identity(pool: &Pool<Self>) -> String;

    /// Begins a transaction that will write: on SQLite it takes the write
    /// lock first (`BEGIN IMMEDIATE`), so it waits instead of failing.
    fn tx_begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Runs one step of a write group's transaction on `conn`.
    fn tx_group_step(
        conn: &mut Self::Connection,
        step: GroupStep,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    // --- migrations ---

    /// Begins the migration transaction for version table `table`: takes a
    /// lock that serializes migrators and creates the table if missing.
    fn migration_begin(
        pool: &Pool<Self>,
        table: &'static str,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Versions recorded in `table`.
    fn migration_applied(
        conn: &mut Self::Connection,
        table: &'static str,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Runs `migration` and records it in `table`.
    fn migration_apply(
        conn: &mut Self::Connection,
        table: &'static str,
        migration: &Migration,
    ) -> impl Future<Output = Result<()>> + Send;

    // --- jobs: the hot path ---

    /// Inserts jobs on `conn` (inside the caller's transaction if it has
    /// one). Returns their ids in input order. Wakes: with `notify`, one
    /// `NOTIFY` per queue with available jobs (PostgreSQL).
    fn job_insert_many(
        conn: &mut Self::Connection,
        jobs: &[NewJob],
        notify: bool,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Inserts one job carrying a [`NewJob::unique`] key, unless a job
    /// holding the same key exists (then `None`). The unique index decides,
    /// so concurrent inserts cannot both win. Wakes: `NOTIFY` when the new
    /// job is available (PostgreSQL).
    fn job_insert_unique(
        conn: &mut Self::Connection,
        job: &NewJob,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Updates the job holding `job`'s unique key with `job`'s args,
    /// priority and `run_at` (now when `None`, and `scheduled` or
    /// `available` to match), if that job has not started (`scheduled` or
    /// `available`). Returns its id; `None` when no job holds the key or
    /// its holder is running, retrying or finished. One guarded statement,
    /// so a concurrent claim either sees the new values or keeps the job
    /// from changing. Wakes: `NOTIFY` when the job is now available
    /// (PostgreSQL).
    fn job_unique_replace(
        conn: &mut Self::Connection,
        job: &NewJob,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The job currently holding unique `key`, if any.
    fn job_unique_holder(
        conn: &mut Self::Connection,
        key: &str,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Claims up to `limit` available jobs of `queue` for `worker_id`,
    /// unless the queue is paused: by priority (lowest first), then by
    /// `run_at` (longest due first), then by id. Wakes nothing.
    fn job_claim(
        pool: &Pool<Self>,
        queue: &str,
        limit: usize,
        worker_id: &str,
    ) -> impl Future<Output = Result<Vec<ClaimedJob>>> + Send {
        async move {
            let mut conn = pool.acquire().await?;
            Ok(
                Self::job_claim_on(&mut conn, queue, limit, worker_id, false)
                    .await?
                    .jobs,
            )
        }
    }

    /// Claims on `conn` (inside a write group's transaction, or alone):
    /// [`job_claim`](Self::job_claim), or with `limited` never past the
    /// queue's global limit or rate limit over all workers.
    fn job_claim_on(
        conn: &mut Self::Connection,
        queue: &str,
        limit: usize,
        worker_id: &str,
        limited: bool,
    ) -> impl Future<Output = Result<Claimed>> + Send;

    /// Marks finished attempts completed (or deletes their jobs when
    /// `delete`), guarded by state and attempt. Returns the rows changed.
    fn job_complete_many(
        pool: &Pool<Self>,
        done: &[Attempt],
        delete: bool,
    ) -> impl Future<Output = Result<u64>> + Send {
        async move {
            let mut conn = pool.acquire().await?;
            Self::job_complete_many_on(&mut conn, done, delete).await
        }
    }

    /// [`job_complete_many`](Self::job_complete_many) on `conn`.
    fn job_complete_many_on(
        conn: &mut Self::Connection,
        done: &[Attempt],
        delete: bool,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Marks one attempt completed inside the job's own transaction.
    /// Returns `false` when the job is no longer this attempt's to finish.
    fn job_complete_in_tx(
        conn: &mut Self::Connection,
        done: Attempt,
        delete: bool,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Opens a write group member's savepoint and completes the attempt in
    /// it (one round trip where the backend allows); the job's statements
    /// follow. `false` when the job is no longer this attempt's.
    fn job_complete_in_savepoint(
        conn: &mut Self::Connection,
        done: Attempt,
        delete: bool,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Records the end of an attempt that did not complete, guarded by
    /// state and attempt. A retry or snooze whose time is not in the future
    /// makes the job `available` at once rather than waiting for the
    /// promoter. Wakes: `NOTIFY` when the job is available again
    /// (PostgreSQL).
    fn job_record_outcome(
        pool: &Pool<Self>,
        attempt: Attempt,
        outcome: &Outcome,
    ) -> impl Future<Output = Result<bool>> + Send {
        async move {
            let mut conn = pool.acquire().await?;
            Self::job_record_outcome_on(&mut conn, attempt, outcome).await
        }
    }

    /// [`job_record_outcome`](Self::job_record_outcome) on `conn`.
    fn job_record_outcome_on(
        conn: &mut Self::Connection,
        attempt: Attempt,
        outcome: &Outcome,
    ) -> impl Future<Output = Result<bool>> + Send;

    // --- jobs: maintenance ---

    /// Returns running jobs whose worker has not heartbeated for `lease` to
    /// the queue (or discards them when out of attempts). Returns the queue
    /// of each job changed. Wakes: `NOTIFY` for those queues (PostgreSQL).
    fn job_rescue(
        pool: &Pool<Self>,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Makes up to `limit` due `scheduled` and `retryable` jobs available.
    /// Returns the queue of each. Wakes: `NOTIFY` for them (PostgreSQL).
    fn job_promote(
        pool: &Pool<Self>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Deletes (and counts) up to `limit` jobs in `state` finalized over `older_than` ago.
    fn job_prune(
        pool: &Pool<Self>,
        state: JobState,
        older_than: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<u64>> + Send;

    // --- jobs: reads and operator actions ---

    /// One job, whole.
    fn job_get(
        pool: &Pool<Self>,
        id: i64,
    ) -> impl Future<Output = Result<Option<JobRecord>>> + Send;

    /// Jobs in each state, optionally of one queue.
    fn job_count_by_state(
        pool: &Pool<Self>,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(JobState, i64)>>> + Send;

    /// One page of jobs matching `filter`, newest first, ids below
    /// `page.before`.
    fn job_list(
        pool: &Pool<Self>,
        filter: &JobFilter,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<JobSummary>>> + Send;

    /// Ids of up to `limit` jobs matching `filter` below `before`, newest
    /// first.
    fn job_list_ids(
        pool: &Pool<Self>,
        filter: &JobFilter,
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// How many jobs match `filter`.
    fn job_count(pool: &Pool<Self>, filter: &JobFilter)
        -> impl Future<Output = Result<i64>> + Send;

    /// Completed and discarded jobs per minute since `since`, optionally of
    /// one queue: `(minute start, state, count)`.
    fn job_finished_per_minute(
        pool: &Pool<Self>,
        since: DateTime<Utc>,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(DateTime<Utc>, JobState, i64)>>> + Send;

    /// The state of job `id` as `conn` sees it (inside the caller's
    /// transaction, if it has one), or `None` if there is no such job.
    fn job_state(
        conn: &mut Self::Connection,
        id: i64,
    ) -> impl Future<Output = Result<Option<JobState>>> + Send;

    /// Makes every job of `ids` that is not running available now (an
    /// available one keeps its place), keeping its attempt count and
    /// granting one more attempt if it had none left; on `conn`, inside the
    /// caller's transaction if it has one. A finished job whose unique key
    /// another job holds now is left alone (of several such jobs of one key,
    /// the newest is retried). Returns `(id, queue)` of the jobs made
    /// available. Wakes: `NOTIFY` for their queues (PostgreSQL, on commit).
    fn job_retry_many(
        conn: &mut Self::Connection,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, String)>>> + Send;

    /// Cancels the scheduled, available, retryable and running jobs of
    /// `ids`, on `conn` (inside the caller's transaction if it has one; on
    /// SQLite that must be a write transaction, and without one the method
    /// takes the write lock itself). Returns `(id, was_running)` of the jobs
    /// changed. Signals: `NOTIFY offload_cancel` for each running one
    /// (PostgreSQL, on commit).
    fn job_cancel_many(
        conn: &mut Self::Connection,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, bool)>>> + Send;

    /// Deletes the jobs of `ids` that are not running, on `conn`. Returns
    /// their ids.
    fn job_delete_many(
        conn: &mut Self::Connection,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    // --- queues ---

    /// Wakes workers of `queues` in every process, outside any transaction
    /// (a no-op where [`CROSS_PROCESS_WAKE`](Self::CROSS_PROCESS_WAKE) is
    /// false).
    fn queue_notify(
        pool: &Pool<Self>,
        queues: &[String],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Jobs per queue and state.
    fn queue_state_counts(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Vec<(String, JobState, i64)>>> + Send;

    /// Per queue with available jobs: the earliest `run_at` among them.
    fn queue_oldest_available(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Vec<(String, DateTime<Utc>)>>> + Send;

    /// Per queue: jobs completed since `since`.
    fn queue_completed_since(
        pool: &Pool<Self>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;

    /// Every queue with a settings row: paused or not, and its limits.
    fn queue_settings(pool: &Pool<Self>)
        -> impl Future<Output = Result<Vec<QueueSettings>>> + Send;

    /// Pauses or resumes `queue` for every worker on the database. Wakes:
    /// `NOTIFY` for the queue on resume (PostgreSQL).
    fn queue_set_paused(
        pool: &Pool<Self>,
        queue: &str,
        paused: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The queue's global and rate limits.
    fn queue_limits(
        pool: &Pool<Self>,
        queue: &str,
    ) -> impl Future<Output = Result<QueueLimits>> + Send;

    /// Sets (or with `None` lifts) one of the queue's limits. Wakes nothing.
    fn queue_set_limit(
        pool: &Pool<Self>,
        queue: &str,
        change: LimitChange,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Waits for other processes' new jobs ([`Signals::wake`] with the
    /// queue) and cancelled running jobs ([`Signals::cancel`] with the ids),
    /// calling [`Signals::listening`] on each (re)subscribe. Returns only
    /// on an error; backends without notifications return `Ok` at once.
    fn notification_listen(
        pool: &Pool<Self>,
        signals: Signals,
    ) -> impl Future<Output = Result<()>> + Send;

    // --- workers ---

    /// Registers a worker or renews its heartbeat.
    fn worker_heartbeat(
        pool: &Pool<Self>,
        worker: &WorkerInfo,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes a worker's row on clean shutdown.
    fn worker_deregister(
        pool: &Pool<Self>,
        worker_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes rows of workers that have not heartbeated for `lease`.
    fn worker_delete_expired(
        pool: &Pool<Self>,
        lease: Duration,
    ) -> impl Future<Output = Result<u64>> + Send;

    // --- leadership ---

    /// Becomes or stays the leader of `name` for `ttl`, unless another
    /// candidate holds it and has not expired. Returns whether `candidate`
    /// leads now.
    fn leader_attempt_elect(
        pool: &Pool<Self>,
        name: &str,
        candidate: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Gives up leadership of `name` if `leader` holds it.
    fn leader_resign(
        pool: &Pool<Self>,
        name: &str,
        leader: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Who leads `name`, if anyone does and has not expired.
    fn leader_get(
        pool: &Pool<Self>,
        name: &str,
    ) -> impl Future<Output = Result<Option<Leader>>> + Send;

    // --- periodic jobs ---

    /// The latest enqueued tick of periodic job `name`.
    fn periodic_last_tick(
        pool: &Pool<Self>,
        name: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    /// Moves periodic job `name`'s last tick forward to `tick`, locking its
    /// row until `conn`'s transaction ends. Returns `false` when `tick` or
    /// a later one is already there.
    fn periodic_advance_tick(
        conn: &mut Self::Connection,
        name: &str,
        tick: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    // --- jobs: for the testing kit (`offload::testing`) ---

    /// Claims job `id` for `worker_id` if it is waiting (scheduled,
    /// available or retryable), whatever its `run_at`, its queue's pause or
    /// global limit: the row changes of [`job_claim`](Self::job_claim), for
    /// one job a test names. Wakes nothing.
    fn job_claim_one(
        pool: &Pool<Self>,
        id: i64,
        worker_id: &str,
    ) -> impl Future<Output = Result<Option<ClaimedJob>>> + Send;

    /// Makes every scheduled and retryable job of `queue` available, due or
    /// not, keeping its `run_at` (a test's "time passes"). Returns how
    /// many. Wakes nothing.
    fn job_promote_queue(
        pool: &Pool<Self>,
        queue: &str,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Every job of `kind`, oldest first, in any state, each with the
    /// unique key it carries (if any), read on `conn` (inside the caller's
    /// transaction if it has one). Scans the table: for tests.
    fn job_list_of_kind(
        conn: &mut Self::Connection,
        kind: &str,
    ) -> impl Future<Output = Result<Vec<(JobRecord, Option<String>)>>> + Send;
}
