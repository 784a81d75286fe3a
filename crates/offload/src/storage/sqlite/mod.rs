//! SQLite: the embedded default, one host, WAL mode, one writer at a time.
//! Times are stored as microseconds since the Unix epoch and computed in
//! Rust, not in SQL; wake-ups stay in the process.

mod admin;
mod cluster;
mod jobs;
mod limits;
mod partitions;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::schema::Migration;
use super::{
    Attempt, Backend, Claimed, ClaimedJob, Driver, GroupStep, JobFilter, JobRecord, JobSummary,
    Leader, LimitChange, NewJob, Outcome, Page, PoolSettings, QueueLimits, QueueSettings, Signals,
    WorkerInfo,
};
use crate::state::JobState;
use crate::Result;

/// Whether result `code` (an extended code; its low byte is the primary
/// one) means "try again later": SQLITE_BUSY (5) or SQLITE_LOCKED (6), or
/// SQLITE_FULL (13), a full disk or `max_page_count` reached.
pub(super) fn transient_code(code: i32) -> Option<crate::error::Transient> {
    match code & 0xff {
        5 | 6 => Some(crate::error::Transient::Unavailable),
        13 => Some(crate::error::Transient::StorageFull),
        _ => None,
    }
}

const MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "jobs",
        include_str!("../../../migrations/sqlite/0001_jobs.sql"),
    ),
    Migration::new(
        2,
        "queues",
        include_str!("../../../migrations/sqlite/0002_queues.sql"),
    ),
    Migration::new(
        3,
        "admin",
        include_str!("../../../migrations/sqlite/0003_admin.sql"),
    ),
    Migration::new(
        4,
        "cluster",
        include_str!("../../../migrations/sqlite/0004_cluster.sql"),
    ),
    Migration::new(
        5,
        "claim by run_at",
        include_str!("../../../migrations/sqlite/0005_claim_by_run_at.sql"),
    ),
    Migration::new(
        6,
        "lean indexes",
        include_str!("../../../migrations/sqlite/0006_lean_indexes.sql"),
    ),
    Migration::new(
        7,
        "rate limits",
        include_str!("../../../migrations/sqlite/0007_rate_limits.sql"),
    ),
    Migration::new(
        8,
        "partitions",
        include_str!("../../../migrations/sqlite/0008_partitions.sql"),
    ),
    Migration::new(
        9,
        "rate limits per key",
        include_str!("../../../migrations/sqlite/0009_key_rates.sql"),
    ),
];

impl super::driver::sealed::Sealed for Sqlite {}

impl Backend for Sqlite {
    // A file always answers; its busy timeout bounds lock waits.
    const DEFAULT_DATABASE_TIMEOUT: Option<Duration> = None;
}

impl Driver for Sqlite {
    const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
    const CROSS_PROCESS_WAKE: bool = false;
    // One writer at a time.
    const COMPLETION_WRITERS: usize = 1;
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    // One writer, and a commit costs more than a small job's statements.
    const GROUP_COMMIT: bool = true;

    async fn pool_connect(url: &str, settings: PoolSettings) -> Result<SqlitePool> {
        cluster::connect(url, settings).await
    }

    fn pool_identity(pool: &SqlitePool) -> String {
        format!(
            "sqlite://{}",
            pool.connect_options().get_filename().display()
        )
    }

    async fn tx_begin_write(
        pool: &SqlitePool,
    ) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        cluster::begin_write(pool).await
    }

    async fn tx_group_step(
        conn: &mut SqliteConnection,
        step: GroupStep,
    ) -> Result<(), sqlx::Error> {
        cluster::group_step(conn, step).await
    }

    async fn migration_begin(
        pool: &SqlitePool,
        table: &'static str,
    ) -> Result<Transaction<'static, Sqlite>> {
        cluster::migration_begin(pool, table).await
    }

    async fn migration_applied(
        conn: &mut SqliteConnection,
        table: &'static str,
    ) -> Result<Vec<i64>> {
        cluster::migration_applied(conn, table).await
    }

    async fn migration_apply(
        conn: &mut SqliteConnection,
        table: &'static str,
        migration: &Migration,
    ) -> Result<()> {
        cluster::migration_apply(conn, table, migration).await
    }

    async fn job_insert_many(
        conn: &mut SqliteConnection,
        jobs: &[NewJob],
        _notify: bool,
    ) -> Result<Vec<i64>> {
        // One host: enqueues in this process wake workers directly.
        jobs::insert_many(conn, jobs).await
    }

    async fn job_insert_unique(conn: &mut SqliteConnection, job: &NewJob) -> Result<Option<i64>> {
        jobs::insert_unique(conn, job).await
    }

    async fn job_unique_replace(conn: &mut SqliteConnection, job: &NewJob) -> Result<Option<i64>> {
        jobs::unique_replace(conn, job).await
    }

    async fn job_unique_holder(conn: &mut SqliteConnection, key: &str) -> Result<Option<i64>> {
        jobs::unique_holder(conn, key).await
    }

    async fn job_claim_on(
        conn: &mut SqliteConnection,
        queue: &str,
        limit: usize,
        worker_id: &str,
        limited: bool,
    ) -> Result<Claimed> {
        if limited {
            limits::claim_limited(conn, queue, limit, worker_id).await
        } else {
            Ok(jobs::claim(conn, queue, limit, worker_id).await?.into())
        }
    }

    async fn job_complete_many_on(
        conn: &mut SqliteConnection,
        done: &[Attempt],
        delete: bool,
    ) -> Result<u64> {
        jobs::complete_many(conn, done, delete).await
    }

    async fn job_complete_in_tx(
        conn: &mut SqliteConnection,
        done: Attempt,
        delete: bool,
    ) -> Result<bool> {
        jobs::complete_in_tx(conn, done, delete).await
    }

    async fn job_complete_in_savepoint(
        conn: &mut SqliteConnection,
        done: Attempt,
        delete: bool,
    ) -> Result<bool> {
        jobs::complete_in_savepoint(conn, done, delete).await
    }

    async fn job_record_outcome_on(
        conn: &mut SqliteConnection,
        attempt: Attempt,
        outcome: &Outcome,
    ) -> Result<bool> {
        jobs::record_outcome(conn, attempt, outcome).await
    }

    async fn job_rescue(pool: &SqlitePool, lease: Duration) -> Result<Vec<String>> {
        jobs::rescue(pool, lease).await
    }

    async fn job_promote(pool: &SqlitePool, limit: usize) -> Result<Vec<String>> {
        jobs::promote(pool, limit).await
    }

    async fn job_prune(
        pool: &SqlitePool,
        state: JobState,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64> {
        jobs::prune(pool, state, older_than, limit).await
    }

    async fn job_get(pool: &SqlitePool, id: i64) -> Result<Option<JobRecord>> {
        jobs::get(pool, id).await
    }

    async fn job_count_by_state(
        pool: &SqlitePool,
        queue: Option<&str>,
    ) -> Result<Vec<(JobState, i64)>> {
        jobs::count_by_state(pool, queue).await
    }

    async fn job_list(
        pool: &SqlitePool,
        filter: &JobFilter,
        page: &Page,
    ) -> Result<Vec<JobSummary>> {
        admin::list(pool, filter, page).await
    }

    async fn job_list_ids(
        pool: &SqlitePool,
        filter: &JobFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<i64>> {
        admin::list_ids(pool, filter, before, limit).await
    }

    async fn job_count(pool: &SqlitePool, filter: &JobFilter) -> Result<i64> {
        admin::count(pool, filter).await
    }

    async fn job_finished_per_minute(
        pool: &SqlitePool,
        since: DateTime<Utc>,
        queue: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, JobState, i64)>> {
        admin::finished_per_minute(pool, since, queue).await
    }

    async fn job_state(conn: &mut SqliteConnection, id: i64) -> Result<Option<JobState>> {
        jobs::state(conn, id).await
    }

    async fn job_retry_many(
        conn: &mut SqliteConnection,
        ids: &[i64],
    ) -> Result<Vec<(i64, String)>> {
        admin::retry_many(conn, ids).await
    }

    async fn job_cancel_many(conn: &mut SqliteConnection, ids: &[i64]) -> Result<Vec<(i64, bool)>> {
        admin::cancel_many(conn, ids).await
    }

    async fn job_delete_many(conn: &mut SqliteConnection, ids: &[i64]) -> Result<Vec<i64>> {
        admin::delete_many(conn, ids).await
    }

    async fn queue_notify(_pool: &SqlitePool, _queues: &[String]) -> Result<()> {
        Ok(())
    }

    async fn queue_state_counts(pool: &SqlitePool) -> Result<Vec<(String, JobState, i64)>> {
        admin::queue_state_counts(pool).await
    }

    async fn queue_oldest_available(pool: &SqlitePool) -> Result<Vec<(String, DateTime<Utc>)>> {
        admin::oldest_available(pool).await
    }

    async fn queue_completed_since(
        pool: &SqlitePool,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        admin::completed_since(pool, since).await
    }

    async fn queue_settings(pool: &SqlitePool) -> Result<Vec<QueueSettings>> {
        admin::settings(pool).await
    }

    async fn queue_set_paused(pool: &SqlitePool, queue: &str, paused: bool) -> Result<()> {
        admin::set_paused(pool, queue, paused).await
    }

    async fn queue_limits(pool: &SqlitePool, queue: &str) -> Result<QueueLimits> {
        limits::limits(pool, queue).await
    }

    async fn queue_set_limit(pool: &SqlitePool, queue: &str, change: LimitChange) -> Result<()> {
        limits::set_limit(pool, queue, change).await
    }

    async fn notification_listen(_pool: &SqlitePool, _signals: Signals) -> Result<()> {
        // One host: enqueues and cancels in this process signal directly.
        Ok(())
    }

    async fn worker_heartbeat(pool: &SqlitePool, worker: &WorkerInfo) -> Result<()> {
        cluster::heartbeat(pool, worker).await
    }

    async fn worker_deregister(pool: &SqlitePool, worker_id: &str) -> Result<()> {
        cluster::deregister(pool, worker_id).await
    }

    async fn worker_delete_expired(pool: &SqlitePool, lease: Duration) -> Result<u64> {
        cluster::delete_expired_workers(pool, lease).await
    }

    async fn leader_attempt_elect(
        pool: &SqlitePool,
        name: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<bool> {
        cluster::try_lead(pool, name, candidate, ttl).await
    }

    async fn leader_resign(pool: &SqlitePool, name: &str, leader: &str) -> Result<()> {
        cluster::resign(pool, name, leader).await
    }

    async fn leader_get(pool: &SqlitePool, name: &str) -> Result<Option<Leader>> {
        cluster::leader(pool, name).await
    }

    async fn periodic_last_tick(pool: &SqlitePool, name: &str) -> Result<Option<DateTime<Utc>>> {
        cluster::last_tick(pool, name).await
    }

    async fn periodic_advance_tick(
        conn: &mut SqliteConnection,
        name: &str,
        tick: DateTime<Utc>,
    ) -> Result<bool> {
        cluster::advance_tick(conn, name, tick).await
    }

    async fn job_claim_one(
        pool: &SqlitePool,
        id: i64,
        worker_id: &str,
    ) -> Result<Option<ClaimedJob>> {
        jobs::claim_one(pool, id, worker_id).await
    }

    async fn job_promote_queue(pool: &SqlitePool, queue: &str) -> Result<u64> {
        jobs::promote_queue(pool, queue).await
    }

    async fn job_list_of_kind(
        conn: &mut SqliteConnection,
        kind: &str,
    ) -> Result<Vec<(JobRecord, Option<String>)>> {
        jobs::list_of_kind(conn, kind).await
    }
}
