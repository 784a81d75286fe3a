//! Backend conformance, as River's `riverdrivertest`: every method of the
//! storage [`Driver`] (plus `ops::insert_unique`, `ops::enqueue_tick` and
//! `migrate::run`), one named scenario per method or small group, each run
//! against real PostgreSQL and real SQLite. Scenarios assert the documented
//! contract: return values, the rows afterwards (read back with `job_get`
//! and `job_count_by_state`), the guards, and on PostgreSQL the `NOTIFY`s
//! each method documents. Where backends legitimately differ, each is held
//! to its own documented behaviour.
//!
//! The last test reads `src/storage/driver.rs` and fails naming any trait
//! method or constant that no scenario here calls, so a new driver method
//! cannot land without a conformance scenario.

#[macro_use]
mod support;

use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use offload::migrate::Migration;
use offload::storage::{
    migrate, ops, Attempt, ClaimedJob, Driver, GroupStep, JobFilter, LimitChange, NewJob, Outcome,
    Page, Signals, Throttle, WorkerInfo, ARGS_PREVIEW_LEN,
};
use offload::{
    clean_error, Error, JobRecord, JobState, Partition, RateLimit, UniqueKey, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_UNIQUE_STATES,
};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, Pool, Postgres, Sqlite, SqlitePool};
use support::{eventually, TestDatabase, TestDb};

on_both_backends!(
    pool_connect_and_pool_identity,
    tx_begin_write_commits_rolls_back_and_serializes_writers,
    migrations_apply_once_in_order_and_all_or_nothing,
    job_insert_many_returns_ids_in_input_order_and_wakes_available_queues,
    job_insert_unique_collides_only_in_its_states,
    job_unique_replace_updates_a_holder_that_has_not_started,
    job_claim_takes_available_jobs_by_priority_unless_paused,
    job_claim_orders_by_priority_then_run_at_then_id,
    job_claim_limited_caps_running_jobs_at_the_global_limit,
    job_claim_limited_holds_starts_to_the_rate_limit_in_every_window,
    job_claim_limited_takes_keys_in_turn_within_the_per_key_cap,
    job_claim_limited_keeps_each_key_to_its_rate,
    job_complete_many_is_guarded_by_state_and_attempt,
    job_complete_in_tx_commits_with_the_job_transaction,
    write_group_steps_and_the_hot_path_on_one_connection,
    job_record_outcome_writes_each_outcome_once,
    job_rescue_returns_jobs_of_workers_that_stopped_heartbeating,
    job_promote_makes_due_jobs_available,
    job_prune_respects_state_age_and_limit,
    job_list_pages_newest_first_and_filters,
    job_finished_per_minute_and_queue_statistics,
    job_retry_many_makes_every_job_but_a_running_one_available,
    job_retry_many_leaves_a_job_whose_unique_key_is_taken,
    job_cancel_many_applies_to_unfinished_jobs_and_signals_running_ones,
    job_cancel_many_in_a_transaction_takes_effect_on_commit,
    job_delete_many_spares_running_jobs,
    queue_notify_and_backend_constants,
    queue_set_paused_pauses_and_resumes,
    notification_listen_delivers_to_signals,
    worker_heartbeat_deregister_and_expiry,
    leader_election_is_exclusive_until_expiry,
    periodic_ticks_are_enqueued_once,
);

// --- what differs per backend: raw reads and clock shifts, and NOTIFY ---

/// A worker row: id, host, pid, queues, last heartbeat.
type WorkerRow = (String, String, i32, String, DateTime<Utc>);

/// The per-backend half of the conformance test: reads and writes no driver
/// method offers (worker rows, moving a row's clock back), and a recorder
/// of what the backend sends to other processes.
trait Conformance: TestDb {
    const POSTGRES: bool;

    /// Starts recording the database's notifications.
    fn notices(db: &TestDatabase<Self>) -> impl Future<Output = Notices> + Send;

    /// Checks what a pool from `pool_connect(url)` and its identity promise.
    fn check_pool(url: &str, pool: &Pool<Self>) -> impl Future<Output = ()> + Send;

    /// Every worker row, by id.
    fn workers(pool: &Pool<Self>) -> impl Future<Output = Vec<WorkerRow>> + Send;

    /// Moves worker `id`'s last heartbeat `by` into the past.
    fn age_worker(pool: &Pool<Self>, id: &str, by: Duration) -> impl Future<Output = ()> + Send;

    /// Moves leadership `name`'s election and expiry `by` into the past.
    fn age_leader(pool: &Pool<Self>, name: &str, by: Duration) -> impl Future<Output = ()> + Send;

    /// Moves job `id`'s `finalized_at` `by` into the past.
    fn age_finalized(pool: &Pool<Self>, id: i64, by: Duration) -> impl Future<Output = ()> + Send;

    /// Moves job `id`'s `run_at` `by` into the past.
    fn age_run_at(pool: &Pool<Self>, id: i64, by: Duration) -> impl Future<Output = ()> + Send;

    /// The plan of the claim's job lookup (the inner `SELECT` of
    /// `job_claim`, as written in the backend's `jobs.rs`) for queue
    /// `plan`, one line per step.
    fn claim_plan(pool: &Pool<Self>) -> impl Future<Output = String> + Send;
}

impl Conformance for Postgres {
    const POSTGRES: bool = true;

    async fn notices(db: &TestDatabase<Self>) -> Notices {
        let mut listener = PgListener::connect(&db.url).await.expect("listener");
        listener
            .listen_all([JOBS_CHANNEL, CANCEL_CHANNEL])
            .await
            .expect("LISTEN");
        Notices {
            pg: Some((listener, db.pool.clone())),
            marks: 0,
        }
    }

    async fn check_pool(url: &str, pool: &PgPool) {
        let options = PgConnectOptions::from_str(url).expect("url");
        let identity = Postgres::pool_identity(pool);
        assert_eq!(
            identity,
            format!(
                "postgres://{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().expect("database name")
            )
        );
        // Never the password; another database is another identity.
        let with_password =
            PgPoolOptions::new().connect_lazy_with(options.clone().password("hunter2"));
        let with_password = Postgres::pool_identity(&with_password);
        assert_eq!(with_password, identity);
        assert!(!with_password.contains("hunter2"), "{with_password}");
        let other = PgPoolOptions::new().connect_lazy_with(options.database("another_db"));
        assert_ne!(Postgres::pool_identity(&other), identity);
    }

    async fn workers(pool: &PgPool) -> Vec<WorkerRow> {
        sqlx::query_as(
            "SELECT id, host, pid, queues, heartbeat_at FROM offload_workers ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .expect("workers")
    }

    async fn age_worker(pool: &PgPool, id: &str, by: Duration) {
        sqlx::query(
            "UPDATE offload_workers SET heartbeat_at = heartbeat_at - make_interval(secs => $2) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(pool)
        .await
        .expect("age worker");
    }

    async fn age_leader(pool: &PgPool, name: &str, by: Duration) {
        sqlx::query(
            "UPDATE offload_leader SET elected_at = elected_at - make_interval(secs => $2), \
             expires_at = expires_at - make_interval(secs => $2) WHERE name = $1",
        )
        .bind(name)
        .bind(by.as_secs_f64())
        .execute(pool)
        .await
        .expect("age leader");
    }

    async fn age_finalized(pool: &PgPool, id: i64, by: Duration) {
        sqlx::query(
            "UPDATE offload_jobs SET finalized_at = finalized_at - make_interval(secs => $2) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(pool)
        .await
        .expect("age job");
    }

    async fn age_run_at(pool: &PgPool, id: i64, by: Duration) {
        sqlx::query(
            "UPDATE offload_jobs SET run_at = run_at - make_interval(secs => $2) WHERE id = $1",
        )
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(pool)
        .await
        .expect("age run_at");
    }

    async fn claim_plan(pool: &PgPool) -> String {
        // The claim's own lookup, planned as a prepared statement is after
        // five runs (generic), on fresh statistics.
        sqlx::query("ANALYZE offload_jobs")
            .execute(pool)
            .await
            .expect("analyze");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
            .execute(&mut *tx)
            .await
            .expect("generic plans");
        sqlx::query(
            "PREPARE claim_lookup(text, int8) AS SELECT id FROM offload_jobs \
             WHERE state = 'available' AND queue = $1 \
             ORDER BY priority, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .execute(&mut *tx)
        .await
        .expect("prepare");
        let lines: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE claim_lookup('plan', 10)")
            .fetch_all(&mut *tx)
            .await
            .expect("explain");
        tx.rollback().await.expect("rollback");
        lines.join("\n")
    }
}

fn us(by: Duration) -> i64 {
    i64::try_from(by.as_micros()).expect("duration in range")
}

impl Conformance for Sqlite {
    const POSTGRES: bool = false;

    async fn notices(_db: &TestDatabase<Self>) -> Notices {
        // No NOTIFY: wake-ups stay in the process (CROSS_PROCESS_WAKE is
        // false), so there is nothing another process could observe.
        Notices { pg: None, marks: 0 }
    }

    async fn check_pool(url: &str, pool: &SqlitePool) {
        let options = SqliteConnectOptions::from_str(url).expect("url");
        let identity = Sqlite::pool_identity(pool);
        assert_eq!(
            identity,
            format!("sqlite://{}", options.get_filename().display())
        );
        let other = SqlitePoolOptions::new()
            .connect_lazy_with(SqliteConnectOptions::new().filename("/nonexistent/other.db"));
        assert_ne!(Sqlite::pool_identity(&other), identity);
        // The settings `Backend::connect` documents: WAL and a busy timeout.
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .expect("journal mode");
        assert_eq!(mode.to_lowercase(), "wal");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .expect("busy timeout");
        assert!(busy > 0, "busy timeout {busy}");
    }

    async fn workers(pool: &SqlitePool) -> Vec<WorkerRow> {
        let rows: Vec<(String, String, i32, String, i64)> = sqlx::query_as(
            "SELECT id, host, pid, queues, heartbeat_at FROM offload_workers ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .expect("workers");
        rows.into_iter()
            .map(|(id, host, pid, queues, at)| {
                let at = DateTime::from_timestamp_micros(at).expect("time");
                (id, host, pid, queues, at)
            })
            .collect()
    }

    async fn age_worker(pool: &SqlitePool, id: &str, by: Duration) {
        sqlx::query("UPDATE offload_workers SET heartbeat_at = heartbeat_at - ?2 WHERE id = ?1")
            .bind(id)
            .bind(us(by))
            .execute(pool)
            .await
            .expect("age worker");
    }

    async fn age_leader(pool: &SqlitePool, name: &str, by: Duration) {
        sqlx::query(
            "UPDATE offload_leader SET elected_at = elected_at - ?2, expires_at = expires_at - ?2 \
             WHERE name = ?1",
        )
        .bind(name)
        .bind(us(by))
        .execute(pool)
        .await
        .expect("age leader");
    }

    async fn age_finalized(pool: &SqlitePool, id: i64, by: Duration) {
        sqlx::query("UPDATE offload_jobs SET finalized_at = finalized_at - ?2 WHERE id = ?1")
            .bind(id)
            .bind(us(by))
            .execute(pool)
            .await
            .expect("age job");
    }

    async fn age_run_at(pool: &SqlitePool, id: i64, by: Duration) {
        sqlx::query("UPDATE offload_jobs SET run_at = run_at - ?2 WHERE id = ?1")
            .bind(id)
            .bind(us(by))
            .execute(pool)
            .await
            .expect("age run_at");
    }

    async fn claim_plan(pool: &SqlitePool) -> String {
        sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT id FROM offload_jobs \
             WHERE state = 'available' AND queue = ?1 \
             AND NOT EXISTS (SELECT 1 FROM offload_queues q WHERE q.name = ?1 AND q.paused) \
             ORDER BY priority, run_at, id LIMIT ?2",
        )
        .bind("plan")
        .bind(10_i64)
        .fetch_all(pool)
        .await
        .expect("explain");
        rows.into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

const JOBS_CHANNEL: &str = "offload_jobs";
const CANCEL_CHANNEL: &str = "offload_cancel";

/// What a backend sent to other processes: on PostgreSQL the notifications
/// on `offload_jobs` and `offload_cancel`, heard by a `PgListener`; on
/// SQLite nothing can be heard (`pg` is `None`).
struct Notices {
    pg: Option<(PgListener, PgPool)>,
    marks: u32,
}

impl Notices {
    /// Everything sent since the last call, sorted; `None` on a backend
    /// without notifications. Exact, not timed: a marker notification sent
    /// after the action arrives after everything the action sent.
    async fn take(&mut self) -> Option<Vec<(String, String)>> {
        let (listener, pool) = self.pg.as_mut()?;
        self.marks += 1;
        let mark = format!("conformance-mark-{}", self.marks);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOBS_CHANNEL)
            .bind(&mark)
            .execute(&*pool)
            .await
            .expect("mark");
        let mut heard = Vec::new();
        loop {
            let notification = tokio::time::timeout(Duration::from_secs(20), listener.recv())
                .await
                .expect("the marker notification arrives")
                .expect("listener");
            if notification.channel() == JOBS_CHANNEL && notification.payload() == mark {
                break;
            }
            heard.push((
                notification.channel().to_owned(),
                notification.payload().to_owned(),
            ));
        }
        heard.sort();
        Some(heard)
    }

    /// Sends one notification (PostgreSQL only), as another process would.
    async fn send(&self, channel: &str, payload: &str) {
        if let Some((_, pool)) = &self.pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await
                .expect("pg_notify");
        }
    }

    /// Asserts that exactly `expected` was sent since the last call (on
    /// PostgreSQL; SQLite sends nothing to hear).
    async fn expect(&mut self, what: &str, expected: &[(&str, &str)]) {
        if let Some(heard) = self.take().await {
            let mut expected: Vec<(String, String)> = expected
                .iter()
                .map(|(c, p)| ((*c).to_owned(), (*p).to_owned()))
                .collect();
            expected.sort();
            assert_eq!(heard, expected, "notifications of {what}");
        }
    }
}

// --- helpers ---

const WORKER: &str = "conformance-worker";

fn job(kind: &str, queue: &str) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        ..NewJob::new(kind, r#"{"n":1}"#)
    }
}

/// Now, at the microsecond precision both backends store.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now")
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// Asserts `at` is within a few seconds of `expected` (the database's clock
/// and this process's are the same host's, but statements take time).
fn assert_near(at: DateTime<Utc>, expected: DateTime<Utc>, what: &str) {
    let off = (at - expected).num_milliseconds().abs();
    assert!(off < 10_000, "{what}: {at} is {off} ms from {expected}");
}

async fn insert<DB: Driver>(pool: &Pool<DB>, jobs: &[NewJob]) -> Vec<i64> {
    let mut conn = pool.acquire().await.expect("connection");
    DB::job_insert_many(&mut *conn, jobs, true)
        .await
        .expect("insert")
}

async fn insert_one<DB: Driver>(pool: &Pool<DB>, job: NewJob) -> i64 {
    insert(pool, &[job]).await[0]
}

async fn get<DB: Driver>(pool: &Pool<DB>, id: i64) -> JobRecord {
    DB::job_get(pool, id)
        .await
        .expect("job_get")
        .unwrap_or_else(|| panic!("job {id} exists"))
}

async fn exists<DB: Driver>(pool: &Pool<DB>, id: i64) -> bool {
    DB::job_get(pool, id).await.expect("job_get").is_some()
}

async fn state<DB: Driver>(pool: &Pool<DB>, id: i64) -> JobState {
    get(pool, id).await.state
}

/// Non-zero counts per state, as `job_count_by_state` returns them.
async fn counts<DB: Driver>(pool: &Pool<DB>, queue: Option<&str>) -> Vec<(&'static str, i64)> {
    let mut counts: Vec<_> = DB::job_count_by_state(pool, queue)
        .await
        .expect("job_count_by_state")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| (state.as_str(), n))
        .collect();
    counts.sort();
    counts
}

fn expected_counts(expected: &[(JobState, i64)]) -> Vec<(&'static str, i64)> {
    let mut expected: Vec<_> = expected.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    expected.sort();
    expected
}

/// A claim within the queue's limits, on a connection of its own.
async fn claim_limited<DB: Driver>(
    pool: &Pool<DB>,
    queue: &str,
    limit: usize,
    worker_id: &str,
) -> offload::Result<Vec<ClaimedJob>> {
    let mut conn = pool.acquire().await?;
    Ok(DB::job_claim_on(&mut conn, queue, limit, worker_id, true)
        .await?
        .jobs)
}

async fn claim<DB: Driver>(pool: &Pool<DB>, queue: &str, limit: usize) -> Vec<ClaimedJob> {
    DB::job_claim(pool, queue, limit, WORKER)
        .await
        .expect("job_claim")
}

fn ids_of(jobs: &[ClaimedJob]) -> Vec<i64> {
    let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    ids
}

/// Puts a new job of `queue` into `state` through the driver, and returns
/// its id. Staged available jobs have priority 0, so that a later staging
/// claim (priority `i16::MIN`) never takes them.
async fn job_in_state<DB: Driver>(pool: &Pool<DB>, queue: &str, state: JobState) -> i64 {
    match state {
        JobState::Scheduled => {
            let later = NewJob {
                run_at: Some(now() + hours(1)),
                ..job("staged", queue)
            };
            return insert_one(pool, later).await;
        }
        JobState::Available => return insert_one(pool, job("staged", queue)).await,
        _ => {}
    }
    // The lowest priority value: claimed before any other available job.
    let id = insert_one(
        pool,
        NewJob {
            priority: i16::MIN,
            ..job("staged", queue)
        },
    )
    .await;
    let claimed = claim(pool, queue, 1).await;
    assert_eq!(ids_of(&claimed), [id], "claims the staged job");
    let attempt = claimed[0].attempt_key();
    let outcome = match state {
        JobState::Running => return id,
        JobState::Completed => {
            assert_eq!(
                DB::job_complete_many(pool, &[attempt], false)
                    .await
                    .unwrap(),
                1
            );
            return id;
        }
        JobState::Retryable => Outcome::Retry {
            error: "staged failure".into(),
            at: now() + hours(1),
        },
        JobState::Discarded => Outcome::Discard {
            error: "staged discard".into(),
        },
        JobState::Cancelled => Outcome::Cancel {
            reason: "staged cancel".into(),
        },
        JobState::Scheduled | JobState::Available => unreachable!(),
    };
    assert!(DB::job_record_outcome(pool, attempt, &outcome)
        .await
        .unwrap());
    assert_eq!(self::state(pool, id).await, state);
    id
}

// --- pool and transactions ---

async fn pool_connect_and_pool_identity<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = DB::pool_connect(&db.url, offload::PoolSettings::new(3))
        .await
        .expect("pool_connect");
    assert_eq!(pool.options().get_max_connections(), 3);
    // The same database: a job written through one pool reads back on the other.
    let id = insert_one(&db.pool, job("k", "default")).await;
    assert_eq!(get(&pool, id).await.kind, "k");
    assert_eq!(DB::pool_identity(&pool), DB::pool_identity(&db.pool));
    DB::check_pool(&db.url, &pool).await;
    pool.close().await;
}

async fn tx_begin_write_commits_rolls_back_and_serializes_writers<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let mut tx = DB::tx_begin_write(&db.pool).await.expect("begin");
    let id = DB::job_insert_many(&mut *tx, &[job("k", "default")], true)
        .await
        .unwrap()[0];
    tx.rollback().await.unwrap();
    assert!(
        !exists(&db.pool, id).await,
        "rolled back insert leaves no job"
    );

    let mut tx = DB::tx_begin_write(&db.pool).await.expect("begin");
    let id = DB::job_insert_many(&mut *tx, &[job("k", "default")], true)
        .await
        .unwrap()[0];
    tx.commit().await.unwrap();
    assert!(exists(&db.pool, id).await, "committed insert stays");

    // SQLite takes the write lock at BEGIN, so a second writer waits for
    // the first; PostgreSQL begins both at once.
    let first = DB::tx_begin_write(&db.pool).await.expect("begin");
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let tx = DB::tx_begin_write(&pool).await.expect("second begin");
        tx.rollback().await.expect("rollback");
    });
    if DB::POSTGRES {
        tokio::time::timeout(Duration::from_secs(20), second)
            .await
            .expect("PostgreSQL begins a second write transaction at once")
            .unwrap();
        first.rollback().await.unwrap();
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "SQLite's second writer waits for the first (BEGIN IMMEDIATE)"
        );
        first.rollback().await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), second)
            .await
            .expect("the second writer begins once the first ends")
            .unwrap();
    }
}

// --- migrations ---

const TABLE: &str = "conformance_migrations";
const V1: Migration = Migration::new(1, "notes", "CREATE TABLE conformance_notes (body TEXT)");
const V2: Migration = Migration::new(
    2,
    "labels",
    "CREATE TABLE conformance_labels (name TEXT); CREATE TABLE conformance_labels2 (name TEXT)",
);
const V3: Migration = Migration::new(3, "more", "CREATE TABLE conformance_more (x TEXT)");
const BROKEN: Migration = Migration::new(
    4,
    "broken",
    "CREATE TABLE conformance_broken (x TEXT); SELECT no_such_column FROM conformance_broken",
);

async fn applied<DB: Driver>(pool: &Pool<DB>, table: &'static str) -> Vec<i64> {
    let mut tx = DB::migration_begin(pool, table)
        .await
        .expect("migration_begin");
    let mut versions = DB::migration_applied(&mut *tx, table)
        .await
        .expect("migration_applied");
    tx.rollback().await.unwrap();
    versions.sort_unstable();
    versions
}

async fn migrations_apply_once_in_order_and_all_or_nothing<DB: Conformance>(db: &TestDatabase<DB>) {
    // offload's own schema: every version recorded, and running again is a no-op.
    let versions: Vec<i64> = DB::MIGRATIONS.iter().map(|m| m.version).collect();
    assert!(!versions.is_empty());
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(applied(&db.pool, migrate::OFFLOAD_TABLE).await, versions);
    migrate::run(&db.pool, migrate::OFFLOAD_TABLE, DB::MIGRATIONS)
        .await
        .expect("migrating a migrated database is a no-op");

    // A new version table is created on first use.
    assert_eq!(applied(&db.pool, TABLE).await, Vec::<i64>::new());
    migrate::run(&db.pool, TABLE, &[V1, V2]).await.expect("run");
    assert_eq!(applied(&db.pool, TABLE).await, [1, 2]);
    // Each once: running V1 again would fail on CREATE TABLE.
    migrate::run(&db.pool, TABLE, &[V1, V2])
        .await
        .expect("applied versions are skipped");

    // All or nothing: V3 ran before BROKEN failed, and is rolled back.
    let error = migrate::run(&db.pool, TABLE, &[V1, V2, V3, BROKEN])
        .await
        .expect_err("a broken migration fails the run");
    assert!(
        matches!(
            error,
            Error::Migration {
                version: 4,
                name: "broken",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(applied(&db.pool, TABLE).await, [1, 2]);
    migrate::run(&db.pool, TABLE, &[V1, V2, V3])
        .await
        .expect("V3's table was rolled back, so it applies again");
    assert_eq!(applied(&db.pool, TABLE).await, [1, 2, 3]);

    // The primitives: apply records the version inside the transaction.
    let direct = Migration::new(9, "direct", "CREATE TABLE conformance_direct (x TEXT)");
    let mut tx = DB::migration_begin(&db.pool, TABLE).await.unwrap();
    DB::migration_apply(&mut *tx, TABLE, &direct).await.unwrap();
    let mut seen = DB::migration_applied(&mut *tx, TABLE).await.unwrap();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 9]);
    tx.rollback().await.unwrap();
    assert_eq!(applied(&db.pool, TABLE).await, [1, 2, 3]);
    let error = {
        let mut tx = DB::migration_begin(&db.pool, TABLE).await.unwrap();
        DB::migration_apply(&mut *tx, TABLE, &BROKEN)
            .await
            .expect_err("broken SQL fails")
    };
    assert!(
        matches!(error, Error::Migration { version: 4, .. }),
        "{error:?}"
    );

    // Only lower-case identifiers name a version table.
    let error = migrate::run(&db.pool, "Bad-Name", &[V1])
        .await
        .expect_err("bad table name");
    assert!(matches!(error, Error::Config(_)), "{error:?}");

    // Concurrent migrators of one table serialize: each version runs once.
    const RACE: &str = "conformance_race_migrations";
    const RACED: &[Migration] = &[Migration::new(
        1,
        "raced",
        "CREATE TABLE conformance_raced (x TEXT)",
    )];
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = db.pool.clone();
        runs.spawn(async move { migrate::run(&pool, RACE, RACED).await });
    }
    while let Some(run) = runs.join_next().await {
        run.unwrap().expect("concurrent migrator");
    }
    assert_eq!(applied(&db.pool, RACE).await, [1]);
}

// --- jobs: inserts ---

async fn job_insert_many_returns_ids_in_input_order_and_wakes_available_queues<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let mut notices = DB::notices(db).await;
    let before = now();
    let later = now() + hours(1);
    let past = now() - chrono::Duration::minutes(10);
    let jobs = vec![
        NewJob {
            priority: 3,
            max_attempts: 7,
            tags: vec!["a".into(), "b".into()],
            args: r#"{"to": "a@example.com", "n": [1, 2]}"#.into(),
            ..job("first", "mail")
        },
        NewJob {
            run_at: Some(later),
            ..job("second", "mail")
        },
        NewJob {
            run_at: Some(past),
            ..job("third", "sms")
        },
        job("fourth", "mail"),
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    let ids = DB::job_insert_many(&mut *conn, &jobs, true).await.unwrap();
    drop(conn);
    assert_eq!(ids.len(), jobs.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    notices
        .expect(
            "an insert waking each queue with available jobs",
            &[(JOBS_CHANNEL, "mail"), (JOBS_CHANNEL, "sms")],
        )
        .await;

    for (id, new) in ids.iter().zip(&jobs) {
        let record = get(&db.pool, *id).await;
        assert_eq!(record.id, *id);
        assert_eq!(record.kind, new.kind, "ids come back in input order");
        assert_eq!(record.queue, new.queue);
        assert_eq!(
            record.args,
            serde_json::from_str::<serde_json::Value>(&new.args).unwrap()
        );
        assert_eq!(record.priority, new.priority);
        assert_eq!(record.max_attempts, new.max_attempts);
        assert_eq!(record.tags, new.tags);
        assert_eq!(record.attempt, 0);
        assert!(record.errors.is_empty());
        assert_eq!(record.attempted_at, None);
        assert_eq!(record.finalized_at, None);
        assert_eq!(record.worker_id, None);
        assert_near(record.created_at, before, "created_at");
    }
    let first = get(&db.pool, ids[0]).await;
    assert_eq!(first.state, JobState::Available);
    assert_near(first.run_at, before, "run_at defaults to now");
    let second = get(&db.pool, ids[1]).await;
    assert_eq!(second.state, JobState::Scheduled, "run_at in the future");
    assert_eq!(second.run_at, later);
    let third = get(&db.pool, ids[2]).await;
    assert_eq!(third.state, JobState::Available, "run_at in the past");
    assert_eq!(third.run_at, past);

    assert_eq!(
        counts(&db.pool, None).await,
        expected_counts(&[(JobState::Available, 3), (JobState::Scheduled, 1)])
    );
    assert_eq!(
        counts(&db.pool, Some("sms")).await,
        expected_counts(&[(JobState::Available, 1)])
    );
    assert!(counts(&db.pool, Some("nowhere")).await.is_empty());
    assert!(DB::job_get(&db.pool, i64::MAX).await.unwrap().is_none());

    // Many rows: still input order.
    let many: Vec<NewJob> = (0..200)
        .map(|i| job(&format!("k{i}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let ids = insert(&db.pool, &many).await;
    assert_eq!(ids.len(), 200);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(get(&db.pool, *id).await.kind, format!("k{i}"));
    }
    notices
        .expect(
            "a batch over two queues",
            &[(JOBS_CHANNEL, "even"), (JOBS_CHANNEL, "odd")],
        )
        .await;

    // Without `notify`, and for scheduled jobs only, nothing is sent.
    let mut conn = db.pool.acquire().await.unwrap();
    DB::job_insert_many(&mut *conn, &[job("quiet", "quiet")], false)
        .await
        .unwrap();
    let scheduled = NewJob {
        run_at: Some(later),
        ..job("later", "later")
    };
    DB::job_insert_many(&mut *conn, &[scheduled], true)
        .await
        .unwrap();
    assert_eq!(
        DB::job_insert_many(&mut *conn, &[], true).await.unwrap(),
        Vec::<i64>::new()
    );
    drop(conn);
    notices
        .expect("inserts without notify or available jobs", &[])
        .await;

    // Inside the caller's transaction: rolled back, no job and no wake-up.
    let mut tx = DB::tx_begin_write(&db.pool).await.unwrap();
    let id = DB::job_insert_many(&mut *tx, &[job("k", "rolled")], true)
        .await
        .unwrap()[0];
    tx.rollback().await.unwrap();
    assert!(!exists(&db.pool, id).await);
    notices.expect("a rolled-back insert", &[]).await;
}

fn unique_job(key: &UniqueKey) -> NewJob {
    NewJob {
        unique: Some(key.clone()),
        ..job("report", "reports")
    }
}

async fn job_insert_unique_collides_only_in_its_states<DB: Conformance>(db: &TestDatabase<DB>) {
    let mut notices = DB::notices(db).await;
    let pool = &db.pool;
    let key = UniqueKey::new("report:1", &DEFAULT_UNIQUE_STATES).unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &key.key).await.unwrap(),
        None
    );

    let first = DB::job_insert_unique(&mut *conn, &unique_job(&key))
        .await
        .unwrap()
        .expect("the first insert of a key wins");
    notices
        .expect("a unique insert", &[(JOBS_CHANNEL, "reports")])
        .await;
    assert_eq!(state(pool, first).await, JobState::Available);
    assert_eq!(
        DB::job_insert_unique(&mut *conn, &unique_job(&key))
            .await
            .unwrap(),
        None,
        "held while available"
    );
    notices.expect("a unique insert that collided", &[]).await;
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &key.key).await.unwrap(),
        Some(first)
    );
    let found = ops::insert_unique::<DB>(&mut *conn, &unique_job(&key))
        .await
        .unwrap();
    assert_eq!((found.id, found.duplicate), (first, true));

    // Held while running and retryable; freed when completed (not one of
    // the default states).
    let claimed = claim(pool, "reports", 1).await;
    assert_eq!(ids_of(&claimed), [first]);
    assert_eq!(
        DB::job_insert_unique(&mut *conn, &unique_job(&key))
            .await
            .unwrap(),
        None,
        "held while running"
    );
    let retry = Outcome::Retry {
        error: "once more".into(),
        at: now() + hours(1),
    };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &retry)
            .await
            .unwrap()
    );
    assert_eq!(
        DB::job_insert_unique(&mut *conn, &unique_job(&key))
            .await
            .unwrap(),
        None,
        "held while retryable"
    );
    DB::age_run_at(pool, first, Duration::from_secs(7200)).await;
    assert_eq!(DB::job_promote(pool, 10).await.unwrap(), ["reports"]);
    let claimed = claim(pool, "reports", 1).await;
    assert_eq!(
        DB::job_complete_many(pool, &[claimed[0].attempt_key()], false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &key.key).await.unwrap(),
        None
    );
    let second = DB::job_insert_unique(&mut *conn, &unique_job(&key))
        .await
        .unwrap()
        .expect("a completed job does not hold a default key");
    assert_ne!(second, first);
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &key.key).await.unwrap(),
        Some(second)
    );

    // A key also held in `completed` collides with its completed job, but
    // not with a discarded one.
    let mut states = DEFAULT_UNIQUE_STATES.to_vec();
    states.push(JobState::Completed);
    let kept = UniqueKey::new("report:kept", &states).unwrap();
    let held = DB::job_insert_unique(&mut *conn, &unique_job(&kept))
        .await
        .unwrap()
        .unwrap();
    let claimed = claim(pool, "reports", 10).await;
    let attempts: Vec<Attempt> = claimed.iter().map(ClaimedJob::attempt_key).collect();
    assert_eq!(ids_of(&claimed), [second, held]);
    assert_eq!(
        DB::job_complete_many(pool, &attempts, false).await.unwrap(),
        2
    );
    assert_eq!(
        DB::job_insert_unique(&mut *conn, &unique_job(&kept))
            .await
            .unwrap(),
        None,
        "held while completed, as asked"
    );
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &kept.key).await.unwrap(),
        Some(held)
    );
    let discarded = DB::job_insert_unique(&mut *conn, &unique_job(&key))
        .await
        .unwrap()
        .unwrap();
    let claimed = claim(pool, "reports", 10).await;
    assert_eq!(ids_of(&claimed), [discarded]);
    let discard = Outcome::Discard { error: "no".into() };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &discard)
            .await
            .unwrap()
    );
    let fresh = ops::insert_unique::<DB>(&mut *conn, &unique_job(&key))
        .await
        .unwrap();
    assert!(
        !fresh.duplicate,
        "a discarded job does not hold a default key"
    );
    assert!(fresh.id > discarded);

    // A scheduled unique job holds its key and wakes nobody.
    notices.take().await;
    let scheduled_key = UniqueKey::new("report:later", &DEFAULT_UNIQUE_STATES).unwrap();
    let later = NewJob {
        run_at: Some(now() + hours(1)),
        ..unique_job(&scheduled_key)
    };
    let scheduled = DB::job_insert_unique(&mut *conn, &later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(pool, scheduled).await, JobState::Scheduled);
    assert_eq!(
        DB::job_insert_unique(&mut *conn, &later).await.unwrap(),
        None
    );
    notices.expect("a scheduled unique insert", &[]).await;

    // Without a key, `ops::insert_unique` inserts every time.
    let a = ops::insert_unique::<DB>(&mut *conn, &job("plain", "reports"))
        .await
        .unwrap();
    let b = ops::insert_unique::<DB>(&mut *conn, &job("plain", "reports"))
        .await
        .unwrap();
    assert!(!a.duplicate && !b.duplicate && a.id != b.id);

    // Args must be JSON, on every insert path.
    let bad = NewJob {
        args: "{not json".into(),
        ..job("bad", "bad")
    };
    assert!(
        DB::job_insert_many(&mut *conn, std::slice::from_ref(&bad), true)
            .await
            .is_err()
    );
    let bad_key = UniqueKey::new("bad", &DEFAULT_UNIQUE_STATES).unwrap();
    let bad_unique = NewJob {
        unique: Some(bad_key),
        ..bad
    };
    assert!(
        DB::job_insert_unique(&mut *conn, &bad_unique)
            .await
            .is_err(),
        "a unique insert rejects args that are not JSON"
    );
    drop(conn);
    assert!(counts(pool, Some("bad")).await.is_empty());

    // Concurrent inserts of one key: exactly one wins, all agree on it.
    let race = UniqueKey::new("report:race", &DEFAULT_UNIQUE_STATES).unwrap();
    let mut inserts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let pool = pool.clone();
        let job = unique_job(&race);
        inserts.spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            ops::insert_unique::<DB>(&mut *conn, &job).await.unwrap()
        });
    }
    let mut results = Vec::new();
    while let Some(result) = inserts.join_next().await {
        results.push(result.unwrap());
    }
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(results.iter().all(|r| r.id == results[0].id), "{results:?}");
}

async fn job_unique_replace_updates_a_holder_that_has_not_started<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let mut conn = pool.acquire().await.unwrap();
    let mut key = UniqueKey::new("debounce:1", &DEFAULT_UNIQUE_STATES).unwrap();
    key.replace_pending = true;
    let later = now() + hours(1);
    let with = |args: &str, priority: i16, run_at: Option<DateTime<Utc>>| NewJob {
        args: args.to_owned(),
        priority,
        run_at,
        ..unique_job(&key)
    };

    // No holder: nothing to replace.
    assert_eq!(
        DB::job_unique_replace(&mut *conn, &with(r#"{"n":0}"#, 0, None))
            .await
            .unwrap(),
        None
    );
    let first = ops::insert_unique::<DB>(&mut *conn, &with(r#"{"n":1}"#, 0, Some(later)))
        .await
        .unwrap();
    assert!(!first.duplicate && !first.replaced);
    assert_eq!(state(pool, first.id).await, JobState::Scheduled);
    notices.take().await;

    // A scheduled holder takes the new args, priority and time; still
    // scheduled when the new time is later, and nobody is woken.
    let even_later = later + hours(1);
    let replaced = ops::insert_unique::<DB>(&mut *conn, &with(r#"{"n":2}"#, 3, Some(even_later)))
        .await
        .unwrap();
    assert_eq!(
        (replaced.id, replaced.duplicate, replaced.replaced),
        (first.id, true, true)
    );
    let record = get(pool, first.id).await;
    assert_eq!(record.args, serde_json::json!({"n": 2}));
    assert_eq!((record.priority, record.run_at), (3, even_later));
    assert_eq!(record.state, JobState::Scheduled);
    assert_eq!(
        (record.kind.as_str(), record.queue.as_str()),
        ("report", "reports")
    );
    notices.expect("a replace that stays scheduled", &[]).await;

    // Without a time: due now, so available, and its queue is woken.
    let id = DB::job_unique_replace(&mut *conn, &with(r#"{"n":3}"#, 0, None))
        .await
        .unwrap();
    assert_eq!(id, Some(first.id));
    let record = get(pool, first.id).await;
    assert_eq!(record.state, JobState::Available);
    assert_near(record.run_at, now(), "run_at is now");
    assert_eq!(record.args, serde_json::json!({"n": 3}));
    notices
        .expect("a replace due now", &[(JOBS_CHANNEL, "reports")])
        .await;
    // An available holder is replaced too.
    let again = ops::insert_unique::<DB>(&mut *conn, &with(r#"{"n":4}"#, 0, None))
        .await
        .unwrap();
    assert!(again.replaced);
    assert_eq!(get(pool, first.id).await.args, serde_json::json!({"n": 4}));

    // Args must be JSON.
    assert!(
        DB::job_unique_replace(&mut *conn, &with("{not json", 0, None))
            .await
            .is_err()
    );

    // Once claimed, the holder is left alone: a duplicate, not replaced.
    let claimed = claim(pool, "reports", 1).await;
    assert_eq!(ids_of(&claimed), [first.id]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&claimed[0].args).unwrap(),
        serde_json::json!({"n": 4}),
        "the claim sees the replaced args"
    );
    assert_eq!(
        DB::job_unique_replace(&mut *conn, &with(r#"{"n":5}"#, 0, None))
            .await
            .unwrap(),
        None,
        "a running holder is not replaced"
    );
    let held = ops::insert_unique::<DB>(&mut *conn, &with(r#"{"n":5}"#, 0, None))
        .await
        .unwrap();
    assert_eq!(
        (held.id, held.duplicate, held.replaced),
        (first.id, true, false)
    );
    assert_eq!(get(pool, first.id).await.args, serde_json::json!({"n": 4}));
    // Nor while it waits for a retry.
    let retry = Outcome::Retry {
        error: "e".into(),
        at: later,
    };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &retry)
            .await
            .unwrap()
    );
    let held = ops::insert_unique::<DB>(&mut *conn, &with(r#"{"n":6}"#, 0, None))
        .await
        .unwrap();
    assert_eq!((held.duplicate, held.replaced), (true, false));
    assert_eq!(get(pool, first.id).await.args, serde_json::json!({"n": 4}));
    // A key without the option is never replaced.
    let plain = UniqueKey::new("debounce:plain", &DEFAULT_UNIQUE_STATES).unwrap();
    let kept = ops::insert_unique::<DB>(&mut *conn, &unique_job(&plain))
        .await
        .unwrap();
    let other = NewJob {
        args: r#"{"n":9}"#.into(),
        ..unique_job(&plain)
    };
    let dup = ops::insert_unique::<DB>(&mut *conn, &other).await.unwrap();
    assert_eq!(
        (dup.id, dup.duplicate, dup.replaced),
        (kept.id, true, false)
    );
    assert_eq!(get(pool, kept.id).await.args, serde_json::json!({"n": 1}));
    drop(conn);

    // Replaces racing a claim: each enqueue either replaced the waiting job
    // or found it running, and the job ends with the args of one that says
    // it replaced them.
    let mut race = UniqueKey::new("debounce:race", &DEFAULT_UNIQUE_STATES).unwrap();
    race.replace_pending = true;
    let raced = NewJob {
        queue: "race".into(),
        ..unique_job(&race)
    };
    let mut conn = pool.acquire().await.unwrap();
    let holder = ops::insert_unique::<DB>(&mut *conn, &raced)
        .await
        .unwrap()
        .id;
    drop(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 10..16 {
        let pool = pool.clone();
        let job = NewJob {
            args: format!(r#"{{"n":{n}}}"#),
            ..raced.clone()
        };
        tasks.spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            ops::insert_unique::<DB>(&mut *conn, &job).await.unwrap()
        });
    }
    let claimed = claim(pool, "race", 1).await;
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.unwrap());
    }
    assert!(
        results.iter().all(|r| r.id == holder && r.duplicate),
        "{results:?}"
    );
    if claimed.is_empty() {
        // The claim skipped the row while a replace held it: claim it now.
        assert_eq!(ids_of(&claim(pool, "race", 1).await), [holder]);
    } else {
        assert_eq!(ids_of(&claimed), [holder]);
    }
    let record = get(pool, holder).await;
    assert_eq!(record.state, JobState::Running);
    let replaced = results.iter().filter(|r| r.replaced).count();
    let n = record.args["n"].as_i64().expect("args n");
    if replaced == 0 {
        assert_eq!(n, 1, "no replace reported, none applied");
    } else {
        assert!((10..16).contains(&n), "args of a replace: {n}");
    }
}

// --- jobs: claims ---

async fn job_claim_takes_available_jobs_by_priority_unless_paused<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let jobs = [
        NewJob {
            priority: 5,
            ..job("low", "q")
        },
        NewJob {
            max_attempts: 4,
            ..job("high1", "q")
        },
        job("high2", "q"),
        NewJob {
            priority: 1,
            ..job("mid", "q")
        },
        NewJob {
            run_at: Some(now() + hours(1)),
            priority: -5,
            ..job("scheduled", "q")
        },
        job("elsewhere", "other"),
    ];
    let ids = insert(pool, &jobs).await;
    let (low, high1, high2, mid, scheduled, elsewhere) =
        (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    notices.take().await;

    let before = now();
    let claimed = DB::job_claim(pool, "q", 2, "worker-a").await.unwrap();
    assert_eq!(
        ids_of(&claimed),
        [high1, high2],
        "lowest priority value first"
    );
    for claimed in &claimed {
        let record = get(pool, claimed.id).await;
        assert_eq!(claimed.attempt, 1);
        assert_eq!(claimed.kind, record.kind);
        assert_eq!(claimed.queue, "q");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&claimed.args).unwrap(),
            record.args
        );
        assert_eq!(claimed.max_attempts, record.max_attempts);
        assert_eq!(claimed.run_at, record.run_at);
        assert_eq!(
            claimed.attempt_key(),
            Attempt {
                id: claimed.id,
                attempt: 1
            }
        );
        assert_eq!(record.state, JobState::Running);
        assert_eq!(record.attempt, 1);
        assert_eq!(record.worker_id.as_deref(), Some("worker-a"));
        assert_near(
            record.attempted_at.expect("attempted_at"),
            before,
            "attempted_at",
        );
    }
    assert_eq!(
        claimed.iter().find(|c| c.id == high1).unwrap().max_attempts,
        4
    );

    let rest = claim(pool, "q", 10).await;
    assert_eq!(ids_of(&rest), [low, mid]);
    assert_eq!(claim(pool, "q", 10).await.len(), 0, "scheduled jobs wait");
    assert_eq!(state(pool, scheduled).await, JobState::Scheduled);
    assert_eq!(
        state(pool, elsewhere).await,
        JobState::Available,
        "other queues untouched"
    );
    assert_eq!(
        claim(pool, "other", 0).await.len(),
        0,
        "limit 0 claims nothing"
    );
    assert_eq!(state(pool, elsewhere).await, JobState::Available);
    assert_eq!(
        counts(pool, Some("q")).await,
        expected_counts(&[(JobState::Running, 4), (JobState::Scheduled, 1)])
    );
    notices.expect("claims", &[]).await;

    // A paused queue claims nothing; resumed, it does.
    let paused = insert(pool, &[job("p", "paused"), job("p", "paused")]).await;
    DB::queue_set_paused(pool, "paused", true).await.unwrap();
    assert_eq!(claim(pool, "paused", 10).await.len(), 0);
    assert_eq!(
        counts(pool, Some("paused")).await,
        expected_counts(&[(JobState::Available, 2)])
    );
    DB::queue_set_paused(pool, "paused", false).await.unwrap();
    assert_eq!(ids_of(&claim(pool, "paused", 10).await), paused);

    // Concurrent claimers never take the same job.
    let many = insert(
        pool,
        &(0..60).map(|_| job("c", "crowd")).collect::<Vec<_>>(),
    )
    .await;
    let mut claimers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let pool = pool.clone();
        claimers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = DB::job_claim(&pool, "crowd", 5, &format!("w{w}"))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = claimers.join_next().await {
        all.extend(mine.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, many, "each job claimed exactly once");
}

async fn job_claim_orders_by_priority_then_run_at_then_id<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    // `newer` is enqueued first (lower id) but `older` has been due longer.
    let newer = insert_one(pool, job("newer", "order")).await;
    let older = insert_one(pool, job("older", "order")).await;
    DB::age_run_at(pool, older, Duration::from_secs(600)).await;
    assert!(older > newer && get(pool, older).await.run_at < get(pool, newer).await.run_at);
    // Jobs due at the same time go by id; a lower priority value beats any
    // due time.
    let tied = insert(pool, &[job("tied", "order"), job("tied", "order")]).await;
    assert_eq!(
        get(pool, tied[0]).await.run_at,
        get(pool, tied[1]).await.run_at
    );
    let urgent = insert_one(
        pool,
        NewJob {
            priority: -1,
            ..job("urgent", "order")
        },
    )
    .await;
    let mut order = Vec::new();
    for limited in [false, true, false, false, true] {
        let claimed = if limited {
            claim_limited::<DB>(pool, "order", 1, WORKER).await.unwrap()
        } else {
            claim(pool, "order", 1).await
        };
        order.extend(ids_of(&claimed));
    }
    assert_eq!(order, [urgent, older, newer, tied[0], tied[1]]);

    // A retried job is due from its retry, behind jobs due before it.
    let retried = insert_one(pool, job("retried", "order2")).await;
    let claimed = claim(pool, "order2", 1).await;
    let discard = Outcome::Discard { error: "no".into() };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &discard)
            .await
            .unwrap()
    );
    let waiting = insert_one(pool, job("waiting", "order2")).await;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        DB::job_retry_many(&mut *conn, &[retried])
            .await
            .unwrap()
            .len(),
        1
    );
    drop(conn);
    assert_eq!(ids_of(&claim(pool, "order2", 1).await), [waiting]);
    assert_eq!(ids_of(&claim(pool, "order2", 1).await), [retried]);

    // The order comes from the claim index: no sort, whatever the backlog.
    let backlog: Vec<NewJob> = (0..2000)
        .map(|i| NewJob {
            priority: (i % 4) as i16,
            ..job("backlog", if i % 2 == 0 { "plan" } else { "other" })
        })
        .collect();
    insert(pool, &backlog).await;
    let plan = DB::claim_plan(pool).await;
    assert!(plan.contains("offload_jobs_claim"), "{plan}");
    assert!(!plan.to_lowercase().contains("sort"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

fn keyed(queue: &str, key: &str) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        partition_key: key.to_owned(),
        ..NewJob::new("k", serde_json::json!({ "key": key }).to_string())
    }
}

/// The partition keys of claimed jobs, in claim order, sorted within it.
fn keys_of(jobs: &[ClaimedJob]) -> Vec<String> {
    let mut keys: Vec<String> = jobs
        .iter()
        .map(|job| {
            let args: serde_json::Value = serde_json::from_str(&job.args).expect("args");
            args["key"].as_str().expect("key").to_owned()
        })
        .collect();
    keys.sort();
    keys
}

async fn job_claim_limited_takes_keys_in_turn_within_the_per_key_cap<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut jobs: Vec<NewJob> = (0..6).map(|_| keyed("part", "a")).collect();
    jobs.extend([keyed("part", "b"), keyed("part", "b"), keyed("part", "")]);
    insert(pool, &jobs).await;
    let two_per_key = Partition::new().concurrency(2).unwrap();
    DB::queue_set_limit(pool, "part", LimitChange::Partition(Some(two_per_key)))
        .await
        .unwrap();
    assert_eq!(
        DB::queue_limits(pool, "part").await.unwrap().partition,
        Some(two_per_key)
    );

    // Every key is served, none past its cap: a's backlog holds no one up.
    let first = claim_limited::<DB>(pool, "part", 10, "w1").await.unwrap();
    assert_eq!(keys_of(&first), ["", "a", "a", "b", "b"]);
    assert!(claim_limited::<DB>(pool, "part", 10, "w2")
        .await
        .unwrap()
        .is_empty());
    let a_done = first
        .iter()
        .find(|job| job.args.contains(r#""a""#))
        .expect("an a job");
    DB::job_complete_many(pool, &[a_done.attempt_key()], false)
        .await
        .unwrap();
    let freed = claim_limited::<DB>(pool, "part", 10, "w2").await.unwrap();
    assert_eq!(keys_of(&freed), ["a"], "one a finished, one more a may run");

    // Without a cap, keys take turns one claim at a time.
    let turns: Vec<NewJob> = ["c", "d", "e"]
        .iter()
        .flat_map(|key| (0..3).map(|_| keyed("turns", key)))
        .collect();
    insert(pool, &turns).await;
    DB::queue_set_limit(
        pool,
        "turns",
        LimitChange::Partition(Some(Partition::new())),
    )
    .await
    .unwrap();
    let mut order = Vec::new();
    for _ in 0..7 {
        let one = claim_limited::<DB>(pool, "turns", 1, "w3").await.unwrap();
        order.extend(keys_of(&one));
    }
    assert_eq!(order, ["c", "d", "e", "c", "d", "e", "c"]);
    let rest = claim_limited::<DB>(pool, "turns", 4, "w3").await.unwrap();
    assert_eq!(keys_of(&rest), ["d", "e"]);

    // Lifted: a plain queue again, claimed in its usual order.
    DB::queue_set_limit(pool, "part", LimitChange::Partition(None))
        .await
        .unwrap();
    assert_eq!(
        DB::queue_limits(pool, "part").await.unwrap().partition,
        None
    );
    let plain = claim_limited::<DB>(pool, "part", 10, "w4").await.unwrap();
    assert_eq!(keys_of(&plain), ["a", "a", "a"]);
}

async fn job_claim_limited_keeps_each_key_to_its_rate<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let jobs: Vec<NewJob> = ["a", "b"]
        .iter()
        .flat_map(|key| (0..5).map(|_| keyed("key_rate", key)))
        .collect();
    insert(pool, &jobs).await;
    // 2 starts per key per 400 ms, and no cap on running jobs.
    let rate = RateLimit::new(2, Duration::from_millis(400)).unwrap();
    let partition = Partition::new().rate(rate);
    DB::queue_set_limit(pool, "key_rate", LimitChange::Partition(Some(partition)))
        .await
        .unwrap();
    assert_eq!(
        DB::queue_limits(pool, "key_rate").await.unwrap().partition,
        Some(partition)
    );
    let first = claim_limited::<DB>(pool, "key_rate", 10, "w1")
        .await
        .unwrap();
    assert_eq!(keys_of(&first), ["a", "a", "b", "b"]);
    // Finished jobs free no starts: the window still holds them.
    let done: Vec<_> = first.iter().map(|job| job.attempt_key()).collect();
    DB::job_complete_many(pool, &done, false).await.unwrap();
    assert!(claim_limited::<DB>(pool, "key_rate", 10, "w2")
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let next = claim_limited::<DB>(pool, "key_rate", 10, "w2")
        .await
        .unwrap();
    assert_eq!(keys_of(&next), ["a", "a", "b", "b"], "a new window");
    // With a cap of 1, the tighter of the two holds.
    let both = Partition::new().concurrency(1).unwrap().rate(rate);
    DB::queue_set_limit(pool, "key_rate", LimitChange::Partition(Some(both)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let done: Vec<_> = next.iter().map(|job| job.attempt_key()).collect();
    DB::job_complete_many(pool, &done, false).await.unwrap();
    let last = claim_limited::<DB>(pool, "key_rate", 10, "w3")
        .await
        .unwrap();
    assert_eq!(keys_of(&last), ["a", "b"]);
}

async fn job_claim_limited_caps_running_jobs_at_the_global_limit<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    assert_eq!(DB::queue_limits(pool, "lim").await.unwrap().global, None);
    insert(pool, &(0..10).map(|_| job("l", "lim")).collect::<Vec<_>>()).await;

    // Without a limit it claims like job_claim.
    let first = claim_limited::<DB>(pool, "lim", 2, "w1").await.unwrap();
    assert_eq!(first.len(), 2);

    DB::queue_set_limit(pool, "lim", LimitChange::Global(Some(3)))
        .await
        .unwrap();
    assert_eq!(DB::queue_limits(pool, "lim").await.unwrap().global, Some(3));
    notices.take().await;
    let more = claim_limited::<DB>(pool, "lim", 10, "w2").await.unwrap();
    assert_eq!(more.len(), 1, "3 may run, 2 do");
    assert!(claim_limited::<DB>(pool, "lim", 10, "w3")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        counts(pool, Some("lim")).await,
        expected_counts(&[(JobState::Running, 3), (JobState::Available, 7)])
    );
    notices
        .expect("setting a global limit and claiming", &[])
        .await;

    // A finished job frees its slot.
    assert_eq!(
        DB::job_complete_many(pool, &[first[0].attempt_key()], false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        claim_limited::<DB>(pool, "lim", 10, "w1")
            .await
            .unwrap()
            .len(),
        1
    );

    // Raised: the `limit` argument still caps one claim.
    DB::queue_set_limit(pool, "lim", LimitChange::Global(Some(6)))
        .await
        .unwrap();
    assert_eq!(
        claim_limited::<DB>(pool, "lim", 1, "w1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        claim_limited::<DB>(pool, "lim", 10, "w1")
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(claim_limited::<DB>(pool, "lim", 10, "w1")
        .await
        .unwrap()
        .is_empty());

    // A paused queue claims nothing even with free slots; pausing keeps
    // the limit and setting the limit keeps the pause.
    DB::queue_set_limit(pool, "lim", LimitChange::Global(Some(9)))
        .await
        .unwrap();
    DB::queue_set_paused(pool, "lim", true).await.unwrap();
    assert!(claim_limited::<DB>(pool, "lim", 10, "w1")
        .await
        .unwrap()
        .is_empty());
    DB::queue_set_limit(pool, "lim", LimitChange::Global(Some(8)))
        .await
        .unwrap();
    assert!(DB::queue_settings(pool)
        .await
        .unwrap()
        .iter()
        .any(|queue| queue.name == "lim" && queue.paused));
    DB::queue_set_paused(pool, "lim", false).await.unwrap();
    assert_eq!(DB::queue_limits(pool, "lim").await.unwrap().global, Some(8));
    assert_eq!(
        claim_limited::<DB>(pool, "lim", 10, "w1")
            .await
            .unwrap()
            .len(),
        2
    );

    // Removed: no cap.
    DB::queue_set_limit(pool, "lim", LimitChange::Global(None))
        .await
        .unwrap();
    assert_eq!(DB::queue_limits(pool, "lim").await.unwrap().global, None);
    assert_eq!(
        claim_limited::<DB>(pool, "lim", 10, "w1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        counts(pool, Some("lim")).await,
        expected_counts(&[(JobState::Running, 9), (JobState::Completed, 1)])
    );

    // Concurrent claimers together never exceed the limit.
    DB::queue_set_limit(pool, "race", LimitChange::Global(Some(3)))
        .await
        .unwrap();
    insert(pool, &(0..30).map(|_| job("r", "race")).collect::<Vec<_>>()).await;
    for round in 0..3 {
        let mut claimers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let pool = pool.clone();
            claimers.spawn(async move {
                claim_limited::<DB>(&pool, "race", 3, &format!("w{w}"))
                    .await
                    .unwrap()
            });
        }
        let mut claimed = Vec::new();
        while let Some(jobs) = claimers.join_next().await {
            claimed.extend(jobs.unwrap());
        }
        assert_eq!(claimed.len(), 3, "round {round}: exactly the limit runs");
        let done: Vec<Attempt> = claimed.iter().map(ClaimedJob::attempt_key).collect();
        assert_eq!(DB::job_complete_many(pool, &done, false).await.unwrap(), 3);
    }
}

async fn job_claim_limited_holds_starts_to_the_rate_limit_in_every_window<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let rate = RateLimit::new(5, Duration::from_millis(400)).unwrap();
    DB::queue_set_limit(pool, "rate", LimitChange::Rate(Some(rate)))
        .await
        .unwrap();
    let limits = DB::queue_limits(pool, "rate").await.unwrap();
    assert_eq!((limits.global, limits.rate), (None, Some(rate)));
    insert(
        pool,
        &(0..200).map(|_| job("r", "rate")).collect::<Vec<_>>(),
    )
    .await;

    // A full window: the claim says so, and when the window frees a start.
    let mut conn = pool.acquire().await.unwrap();
    let first = DB::job_claim_on(&mut conn, "rate", 8, "w0", true)
        .await
        .unwrap();
    assert_eq!(first.jobs.len(), 5);
    let Some(Throttle::Rate { free_in }) = first.throttled else {
        panic!(
            "a claim cut short by the rate says so: {:?}",
            first.throttled
        );
    };
    assert!(free_in <= rate.period(), "{free_in:?}");
    let again = DB::job_claim_on(&mut conn, "rate", 8, "w0", true)
        .await
        .unwrap();
    assert!(again.jobs.is_empty());
    assert!(matches!(again.throttled, Some(Throttle::Rate { .. })));
    drop(conn);

    // Four claimers racing for 1.5 s: no window of 400 ms ever holds more
    // than 5 starts, and the limit is reached (the claims are not merely
    // slow). Starts are the claims' `attempted_at`.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
    let mut claimers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let pool = pool.clone();
        claimers.spawn(async move {
            let mut ids = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let jobs = claim_limited::<DB>(&pool, "rate", 3, &format!("w{w}"))
                    .await
                    .unwrap();
                ids.extend(jobs.iter().map(|job| job.id));
                tokio::time::sleep(Duration::from_millis(3 + w)).await;
            }
            ids
        });
    }
    let mut starts = Vec::new();
    for id in first.jobs.iter().map(|job| job.id) {
        starts.push(id);
    }
    while let Some(ids) = claimers.join_next().await {
        starts.extend(ids.unwrap());
    }
    let mut times = Vec::new();
    for id in &starts {
        let record = DB::job_get(pool, *id).await.unwrap().unwrap();
        times.push(record.attempted_at.unwrap());
    }
    times.sort();
    let period = chrono::Duration::from_std(rate.period()).unwrap();
    for (i, at) in times.iter().enumerate() {
        let in_window = times[..=i].iter().filter(|t| **t > *at - period).count();
        assert!(
            in_window <= 5,
            "{in_window} starts in the 400 ms before {at}"
        );
    }
    assert!(
        starts.len() >= 15,
        "{} starts in ~1.5 s at 5 per 400 ms",
        starts.len()
    );

    // Removed, the limit no longer holds claims back.
    DB::queue_set_limit(pool, "rate", LimitChange::Rate(None))
        .await
        .unwrap();
    assert_eq!(DB::queue_limits(pool, "rate").await.unwrap().rate, None);
    let free = claim_limited::<DB>(pool, "rate", 50, "w9").await.unwrap();
    assert_eq!(free.len(), 50);
}

// --- jobs: ending attempts ---

async fn job_complete_many_is_guarded_by_state_and_attempt<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    insert(pool, &(0..4).map(|_| job("c", "done")).collect::<Vec<_>>()).await;
    let claimed = claim(pool, "done", 4).await;
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| claimed[i].attempt_key());
    let waiting = insert_one(pool, job("c", "done")).await;
    notices.take().await;

    let stale = Attempt {
        id: c.id,
        attempt: c.attempt + 1,
    };
    let not_running = Attempt {
        id: waiting,
        attempt: 0,
    };
    let before = now();
    let changed = DB::job_complete_many(pool, &[a, b, stale, not_running], false)
        .await
        .unwrap();
    assert_eq!(changed, 2, "only the current attempts of running jobs");
    for id in [a.id, b.id] {
        let record = get(pool, id).await;
        assert_eq!(record.state, JobState::Completed);
        assert_near(
            record.finalized_at.expect("finalized_at"),
            before,
            "finalized_at",
        );
        assert_eq!(record.worker_id, None);
        assert_eq!(record.attempt, 1);
    }
    assert_eq!(
        state(pool, c.id).await,
        JobState::Running,
        "stale attempt changes nothing"
    );
    assert_eq!(state(pool, waiting).await, JobState::Available);
    assert_eq!(
        DB::job_complete_many(pool, &[a], false).await.unwrap(),
        0,
        "a completed job is not completed again"
    );
    assert_eq!(DB::job_complete_many(pool, &[], false).await.unwrap(), 0);
    assert_eq!(
        DB::job_complete_many(pool, &[c, c], false).await.unwrap(),
        1,
        "an attempt given twice changes its row once"
    );
    assert_eq!(state(pool, c.id).await, JobState::Completed);
    // With `delete`, the rows go; the same guard holds.
    assert_eq!(
        DB::job_complete_many(pool, &[c, d, stale], true)
            .await
            .unwrap(),
        1,
        "only d is still running"
    );
    assert!(!exists(pool, d.id).await);
    assert_eq!(
        state(pool, c.id).await,
        JobState::Completed,
        "not deleted once completed"
    );
    assert_eq!(
        DB::job_complete_many(pool, &[not_running, a], true)
            .await
            .unwrap(),
        0,
        "delete is guarded the same way"
    );
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Completed, 3), (JobState::Available, 1)])
    );
    notices.expect("completions", &[]).await;
}

async fn job_complete_in_tx_commits_with_the_job_transaction<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    insert(pool, &(0..3).map(|_| job("t", "tx")).collect::<Vec<_>>()).await;
    let claimed = claim(pool, "tx", 3).await;
    let [a, b, c] = [0, 1, 2].map(|i| claimed[i].attempt_key());

    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert!(DB::job_complete_in_tx(&mut *tx, a, false).await.unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(
        state(pool, a.id).await,
        JobState::Running,
        "rolled back with the job"
    );

    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert!(DB::job_complete_in_tx(&mut *tx, a, false).await.unwrap());
    tx.commit().await.unwrap();
    let record = get(pool, a.id).await;
    assert_eq!(record.state, JobState::Completed);
    assert!(record.finalized_at.is_some());
    assert_eq!(record.worker_id, None);

    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert!(
        !DB::job_complete_in_tx(&mut *tx, a, false).await.unwrap(),
        "no longer running"
    );
    let stale = Attempt {
        id: b.id,
        attempt: b.attempt + 1,
    };
    assert!(!DB::job_complete_in_tx(&mut *tx, stale, false)
        .await
        .unwrap());
    assert!(!DB::job_complete_in_tx(&mut *tx, stale, true).await.unwrap());
    assert!(DB::job_complete_in_tx(&mut *tx, c, true).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        state(pool, b.id).await,
        JobState::Running,
        "stale attempt changes nothing"
    );
    assert!(!exists(pool, c.id).await, "deleted");
}

/// A write group's transaction on one connection: members in savepoints,
/// the claim, completions and outcomes on that connection, one commit.
async fn write_group_steps_and_the_hot_path_on_one_connection<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    assert_eq!(
        DB::GROUP_COMMIT,
        !DB::POSTGRES,
        "groups where one writer is all there is"
    );
    insert(pool, &(0..5).map(|_| job("g", "group")).collect::<Vec<_>>()).await;
    let mut conn = pool.acquire().await.unwrap();
    DB::tx_group_step(&mut conn, GroupStep::Begin)
        .await
        .unwrap();
    let claimed = DB::job_claim_on(&mut conn, "group", 2, WORKER, false)
        .await
        .unwrap()
        .jobs;
    let limited = DB::job_claim_on(&mut conn, "group", 2, WORKER, true)
        .await
        .unwrap()
        .jobs;
    assert_eq!((claimed.len(), limited.len()), (2, 2));
    let [a, b] = [0, 1].map(|i| claimed[i].attempt_key());
    let [c, d] = [0, 1].map(|i| limited[i].attempt_key());

    // A member that fails is undone to its savepoint; the group stands.
    assert!(DB::job_complete_in_savepoint(&mut conn, a, false)
        .await
        .unwrap());
    DB::tx_group_step(&mut conn, GroupStep::RollbackToSavepoint)
        .await
        .unwrap();
    DB::tx_group_step(&mut conn, GroupStep::Release)
        .await
        .unwrap();
    // A member that succeeds is kept.
    assert!(DB::job_complete_in_savepoint(&mut conn, b, false)
        .await
        .unwrap());
    DB::tx_group_step(&mut conn, GroupStep::Release)
        .await
        .unwrap();
    let stale = Attempt {
        id: b.id,
        attempt: b.attempt + 1,
    };
    assert!(!DB::job_complete_in_savepoint(&mut conn, stale, false)
        .await
        .unwrap());
    DB::tx_group_step(&mut conn, GroupStep::Release)
        .await
        .unwrap();
    assert_eq!(
        DB::job_complete_many_on(&mut conn, &[c], true)
            .await
            .unwrap(),
        1
    );
    let discard = Outcome::Discard { error: "no".into() };
    assert!(DB::job_record_outcome_on(&mut conn, d, &discard)
        .await
        .unwrap());
    assert_eq!(
        state(pool, b.id).await,
        JobState::Available,
        "nothing is seen before the commit, not even the claim"
    );
    DB::tx_group_step(&mut conn, GroupStep::Savepoint)
        .await
        .unwrap();
    DB::tx_group_step(&mut conn, GroupStep::Release)
        .await
        .unwrap();
    DB::tx_group_step(&mut conn, GroupStep::Commit)
        .await
        .unwrap();

    assert_eq!(
        state(pool, a.id).await,
        JobState::Running,
        "its member was undone"
    );
    assert_eq!(state(pool, b.id).await, JobState::Completed);
    assert!(!exists(pool, c.id).await, "deleted on completion");
    assert_eq!(state(pool, d.id).await, JobState::Discarded);

    // A rolled-back group leaves nothing behind, not even its claim.
    DB::tx_group_step(&mut conn, GroupStep::Begin)
        .await
        .unwrap();
    let last = DB::job_claim_on(&mut conn, "group", 5, WORKER, false)
        .await
        .unwrap()
        .jobs;
    assert_eq!(last.len(), 1);
    DB::tx_group_step(&mut conn, GroupStep::Rollback)
        .await
        .unwrap();
    assert_eq!(state(pool, last[0].id).await, JobState::Available);
    DB::tx_group_step(&mut conn, GroupStep::Begin)
        .await
        .unwrap();
    DB::tx_group_step(&mut conn, GroupStep::Commit)
        .await
        .unwrap();
}

async fn job_record_outcome_writes_each_outcome_once<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let later = now() + hours(1);

    async fn running<DB: Driver>(pool: &Pool<DB>) -> Attempt {
        insert_one(
            pool,
            NewJob {
                max_attempts: 5,
                ..job("o", "outcomes")
            },
        )
        .await;
        let claimed = claim(pool, "outcomes", 1).await;
        assert_eq!(claimed.len(), 1);
        claimed[0].attempt_key()
    }

    // Retry: retryable at `at`, the error recorded (cleaned of NUL bytes).
    let retry = running(pool).await;
    notices.take().await;
    let before = now();
    let outcome = Outcome::Retry {
        error: "boom\0bad".into(),
        at: later,
    };
    assert!(DB::job_record_outcome(pool, retry, &outcome).await.unwrap());
    let record = get(pool, retry.id).await;
    assert_eq!(record.state, JobState::Retryable);
    assert_eq!(record.run_at, later);
    assert_eq!((record.attempt, record.max_attempts), (1, 5));
    assert_eq!(record.finalized_at, None);
    assert_eq!(record.worker_id, None);
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].attempt, 1);
    assert_eq!(record.errors[0].error, "boom\u{FFFD}bad");
    assert_near(record.errors[0].at, before, "error time");
    notices.expect("recording an outcome", &[]).await;

    // The guard: a stale attempt, or a job no longer running, changes nothing.
    let stale = Attempt {
        id: retry.id,
        attempt: 2,
    };
    let discard = Outcome::Discard {
        error: "fatal".into(),
    };
    assert!(!DB::job_record_outcome(pool, stale, &discard).await.unwrap());
    assert!(!DB::job_record_outcome(pool, retry, &discard).await.unwrap());
    let unchanged = get(pool, retry.id).await;
    assert_eq!(unchanged.state, JobState::Retryable);
    assert_eq!(unchanged.errors.len(), 1);

    // Discard: final, with its error; long errors are truncated.
    let discarded = running(pool).await;
    let long = "x".repeat(100_000);
    let outcome = Outcome::Discard {
        error: long.clone(),
    };
    assert!(DB::job_record_outcome(pool, discarded, &outcome)
        .await
        .unwrap());
    let record = get(pool, discarded.id).await;
    assert_eq!(record.state, JobState::Discarded);
    assert!(record.finalized_at.is_some());
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].error, clean_error(&long));
    assert!(record.errors[0].error.len() < long.len());

    // Cancel: final, with its reason.
    let cancelled = running(pool).await;
    let outcome = Outcome::Cancel {
        reason: "stop".into(),
    };
    assert!(DB::job_record_outcome(pool, cancelled, &outcome)
        .await
        .unwrap());
    let record = get(pool, cancelled.id).await;
    assert_eq!(record.state, JobState::Cancelled);
    assert!(record.finalized_at.is_some());
    assert_eq!(record.errors[0].error, "stop");

    // Snooze: scheduled at `at`, one more attempt granted, no error.
    let snoozed = running(pool).await;
    assert!(
        DB::job_record_outcome(pool, snoozed, &Outcome::Snooze { at: later })
            .await
            .unwrap()
    );
    let record = get(pool, snoozed.id).await;
    assert_eq!(record.state, JobState::Scheduled);
    assert_eq!(record.run_at, later);
    assert_eq!((record.attempt, record.max_attempts), (1, 6));
    assert!(record.errors.is_empty());
    assert_eq!(record.finalized_at, None);
    assert_eq!(record.worker_id, None);

    // A snooze or retry that is already due makes the job available at
    // once, without waiting for the promoter, and wakes its queue.
    let snooze_now = running(pool).await;
    let retry_now = running(pool).await;
    notices.take().await;
    let due = now();
    assert!(
        DB::job_record_outcome(pool, snooze_now, &Outcome::Snooze { at: due })
            .await
            .unwrap()
    );
    let record = get(pool, snooze_now.id).await;
    assert_eq!(record.state, JobState::Available, "snooze(0)");
    assert_eq!(record.run_at, due);
    assert_eq!((record.attempt, record.max_attempts), (1, 6));
    assert!(record.errors.is_empty());
    let overdue = Outcome::Retry {
        error: "again".into(),
        at: due - chrono::Duration::seconds(5),
    };
    assert!(DB::job_record_outcome(pool, retry_now, &overdue)
        .await
        .unwrap());
    let record = get(pool, retry_now.id).await;
    assert_eq!(record.state, JobState::Available, "a retry already due");
    assert_eq!(record.run_at, due - chrono::Duration::seconds(5));
    assert_eq!((record.attempt, record.max_attempts), (1, 5));
    assert_eq!(record.errors[0].error, "again");
    notices
        .expect(
            "a snooze and a retry due now",
            &[(JOBS_CHANNEL, "outcomes"), (JOBS_CHANNEL, "outcomes")],
        )
        .await;
    let again = claim(pool, "outcomes", 10).await;
    assert_eq!(ids_of(&again), [snooze_now.id, retry_now.id]);
    assert!(again.iter().all(|job| job.attempt == 2));
    let done: Vec<Attempt> = again.iter().map(ClaimedJob::attempt_key).collect();
    assert_eq!(DB::job_complete_many(pool, &done, false).await.unwrap(), 2);

    // Requeue: available at once, one more attempt granted, reason kept,
    // queue woken; the next claim is attempt 2.
    let requeued = running(pool).await;
    notices.take().await;
    let outcome = Outcome::Requeue {
        reason: "shutdown".into(),
    };
    assert!(DB::job_record_outcome(pool, requeued, &outcome)
        .await
        .unwrap());
    notices
        .expect("a requeue", &[(JOBS_CHANNEL, "outcomes")])
        .await;
    let record = get(pool, requeued.id).await;
    assert_eq!(record.state, JobState::Available);
    assert_eq!((record.attempt, record.max_attempts), (1, 6));
    assert_eq!(record.errors[0].error, "shutdown");
    let again = claim(pool, "outcomes", 1).await;
    assert_eq!(ids_of(&again), [requeued.id]);
    assert_eq!(again[0].attempt, 2);
    // ... and the first attempt's key no longer ends it.
    assert!(!DB::job_record_outcome(pool, requeued, &discard)
        .await
        .unwrap());
    assert!(
        DB::job_record_outcome(pool, again[0].attempt_key(), &discard)
            .await
            .unwrap()
    );
    let record = get(pool, requeued.id).await;
    assert_eq!(record.state, JobState::Discarded);
    let attempts: Vec<i32> = record.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2], "errors accumulate, oldest first");

    assert_eq!(
        counts(pool, Some("outcomes")).await,
        expected_counts(&[
            (JobState::Retryable, 1),
            (JobState::Discarded, 2),
            (JobState::Cancelled, 1),
            (JobState::Scheduled, 1),
            (JobState::Completed, 2),
        ])
    );
}

// --- jobs: maintenance ---

async fn job_rescue_returns_jobs_of_workers_that_stopped_heartbeating<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let alive = WorkerInfo {
        id: "alive".into(),
        host: "h".into(),
        pid: 1,
        queues: "r1".into(),
    };
    DB::worker_heartbeat(pool, &alive).await.unwrap();
    let lease = Duration::from_secs(60);

    let [kept, lost, last] =
        [("r1", 3), ("r2", 3), ("r3", 1)].map(|(queue, max_attempts)| NewJob {
            max_attempts,
            ..job("rescued", queue)
        });
    let kept = insert_one(pool, kept).await;
    let lost = insert_one(pool, lost).await;
    let last = insert_one(pool, last).await;
    let waiting = insert_one(pool, job("waiting", "r2")).await;
    assert_eq!(
        DB::job_claim(pool, "r1", 1, "alive").await.unwrap().len(),
        1
    );
    assert_eq!(DB::job_claim(pool, "r2", 1, "gone").await.unwrap().len(), 1);
    assert_eq!(DB::job_claim(pool, "r3", 1, "gone").await.unwrap().len(), 1);
    notices.take().await;

    let mut queues = DB::job_rescue(pool, lease).await.unwrap();
    queues.sort();
    assert_eq!(queues, ["r2", "r3"], "jobs of workers without a live row");
    notices
        .expect("a rescue", &[(JOBS_CHANNEL, "r2"), (JOBS_CHANNEL, "r3")])
        .await;
    let record = get(pool, lost).await;
    assert_eq!(
        record.state,
        JobState::Available,
        "attempts left: back to the queue"
    );
    assert_eq!(record.attempt, 1);
    assert_eq!(record.worker_id, None);
    assert_eq!(record.finalized_at, None);
    assert_eq!(
        record.errors.last().map(|e| e.error.as_str()),
        Some("rescued: worker gone stopped heartbeating")
    );
    let record = get(pool, last).await;
    assert_eq!(
        record.state,
        JobState::Discarded,
        "out of attempts: discarded"
    );
    assert!(record.finalized_at.is_some());
    assert_eq!(record.errors.len(), 1);
    assert_eq!(
        state(pool, kept).await,
        JobState::Running,
        "live worker keeps its job"
    );
    assert_eq!(state(pool, waiting).await, JobState::Available);

    assert!(DB::job_rescue(pool, lease).await.unwrap().is_empty());
    notices.expect("a rescue that found nothing", &[]).await;

    // A lease longer than any timestamp rescues nothing, and is no error.
    assert!(DB::job_rescue(pool, Duration::MAX)
        .await
        .expect("job_rescue with a very long lease")
        .is_empty());
    // Once its heartbeat is older than the lease, the live worker's job goes too.
    DB::age_worker(pool, "alive", lease * 2).await;
    assert_eq!(DB::job_rescue(pool, lease).await.unwrap(), ["r1"]);
    assert_eq!(state(pool, kept).await, JobState::Available);
}

async fn job_promote_makes_due_jobs_available<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let ago = |s: i64| now() - chrono::Duration::seconds(s);
    let ids = insert(pool, &[job("p", "p1"), job("p", "p1"), job("p", "p2")]).await;
    let mut claimed = claim(pool, "p1", 2).await;
    claimed.sort_by_key(|c| c.id);
    claimed.extend(claim(pool, "p2", 1).await);
    // Recorded due later (a due retry or snooze skips the promoter), then
    // made 30, 20 and 10 seconds overdue.
    let later = now() + hours(1);
    let outcomes = [
        Outcome::Retry {
            error: "e".into(),
            at: later,
        },
        Outcome::Snooze { at: later },
        Outcome::Retry {
            error: "e".into(),
            at: later,
        },
    ];
    for ((claimed, outcome), overdue) in claimed.iter().zip(&outcomes).zip([30, 20, 10]) {
        assert!(DB::job_record_outcome(pool, claimed.attempt_key(), outcome)
            .await
            .unwrap());
        DB::age_run_at(pool, claimed.id, Duration::from_secs(3600 + overdue)).await;
        assert!(get(pool, claimed.id).await.run_at < ago(overdue as i64 - 1));
    }
    let not_due = insert_one(
        pool,
        NewJob {
            run_at: Some(now() + hours(1)),
            ..job("p", "p1")
        },
    )
    .await;
    notices.take().await;
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Retryable, 2), (JobState::Scheduled, 2)])
    );

    assert_eq!(
        DB::job_promote(pool, 2).await.unwrap(),
        ["p1", "p1"],
        "the two most overdue, one queue each"
    );
    assert_eq!(state(pool, ids[0]).await, JobState::Available);
    assert_eq!(state(pool, ids[1]).await, JobState::Available);
    assert_eq!(state(pool, ids[2]).await, JobState::Retryable);
    notices.expect("a promotion", &[(JOBS_CHANNEL, "p1")]).await;

    assert_eq!(DB::job_promote(pool, 10).await.unwrap(), ["p2"]);
    notices.expect("a promotion", &[(JOBS_CHANNEL, "p2")]).await;
    assert!(DB::job_promote(pool, 10).await.unwrap().is_empty());
    notices.expect("a promotion of nothing", &[]).await;
    assert_eq!(
        state(pool, not_due).await,
        JobState::Scheduled,
        "not due yet"
    );
    let record = get(pool, ids[0]).await;
    assert_eq!(
        (record.attempt, record.errors.len()),
        (1, 1),
        "promotion keeps the history"
    );
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Available, 3), (JobState::Scheduled, 1)])
    );
}

async fn job_prune_respects_state_age_and_limit<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let day = Duration::from_secs(24 * 3600);
    let mut old = Vec::new();
    for _ in 0..3 {
        let id = job_in_state(pool, "prune", JobState::Completed).await;
        DB::age_finalized(pool, id, day * 2).await;
        old.push(id);
    }
    let young = job_in_state(pool, "prune", JobState::Completed).await;
    let discarded = job_in_state(pool, "prune", JobState::Discarded).await;
    DB::age_finalized(pool, discarded, day * 2).await;
    let running = job_in_state(pool, "prune", JobState::Running).await;
    let available = job_in_state(pool, "prune", JobState::Available).await;

    assert_eq!(
        DB::job_prune(pool, JobState::Completed, day * 3, 100)
            .await
            .unwrap(),
        0,
        "none finalized more than three days ago"
    );
    assert_eq!(
        DB::job_prune(pool, JobState::Completed, day, 2)
            .await
            .unwrap(),
        2,
        "limit"
    );
    assert_eq!(
        DB::job_prune(pool, JobState::Completed, day, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        DB::job_prune(pool, JobState::Completed, day, 100)
            .await
            .unwrap(),
        0
    );
    for id in old {
        assert!(!exists(pool, id).await);
    }
    assert!(exists(pool, young).await, "younger than older_than");
    assert!(exists(pool, discarded).await, "another state");
    assert_eq!(
        DB::job_prune(pool, JobState::Discarded, day, 100)
            .await
            .unwrap(),
        1
    );
    assert!(!exists(pool, discarded).await);
    for state in [JobState::Running, JobState::Available] {
        assert_eq!(
            DB::job_prune(pool, state, Duration::ZERO, 100)
                .await
                .unwrap(),
            0
        );
    }
    assert!(exists(pool, running).await);
    assert!(exists(pool, available).await);
    // A span longer than any timestamp (a "keep forever" retention) deletes
    // nothing, and is no error.
    for forever in [Duration::MAX, day * 365 * 10_000] {
        assert_eq!(
            DB::job_prune(pool, JobState::Completed, forever, 100)
                .await
                .expect("job_prune with a very long older_than"),
            0
        );
    }
    assert!(exists(pool, young).await);
    // Zero age: everything finalized before now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        DB::job_prune(pool, JobState::Completed, Duration::ZERO, 100)
            .await
            .unwrap(),
        1
    );
    assert!(!exists(pool, young).await);
}

// --- jobs: reads and operator actions ---

fn filter() -> JobFilter {
    JobFilter::default()
}

async fn job_list_pages_newest_first_and_filters<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut ids = Vec::new();
    let specs = [
        ("email", "mail", vec!["vip"], r#"{"to":"Ann@example.com"}"#),
        ("email", "mail", vec![], r#"{"to":"bob@example.com"}"#),
        ("sms", "text", vec!["vip", "eu"], r#"{"number":"50%_off"}"#),
        ("report", "default", vec![], r#"{"n":1}"#),
        ("email", "mail", vec![], r#"{"to":"cy@example.com"}"#),
        ("sms", "text", vec![], r#"{"number":"123"}"#),
    ];
    for (i, (kind, queue, tags, args)) in specs.iter().enumerate() {
        let new = NewJob {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            args: (*args).to_owned(),
            run_at: (i == 4).then(|| now() + hours(1)),
            priority: if i == 5 { -1 } else { 0 },
            ..job(kind, queue)
        };
        ids.push(insert_one(pool, new).await);
        // Distinct creation times, for the since/until filters.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let [j1, j2, j3, j4, j5, j6] = [ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]];
    // j4 discarded with an error, j6 running, j5 scheduled.
    let claimed = claim(pool, "default", 1).await;
    let discard = Outcome::Discard {
        error: "Disk FULL".into(),
    };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &discard)
            .await
            .unwrap()
    );
    assert_eq!(ids_of(&claim(pool, "text", 1).await), [j6]);

    let page = |before, limit| Page { before, limit };
    let all = DB::job_list(pool, &filter(), &Page::default())
        .await
        .unwrap();
    let listed: Vec<i64> = all.iter().map(|s| s.id).collect();
    assert_eq!(listed, [j6, j5, j4, j3, j2, j1], "newest first");
    for summary in &all {
        let record = get(pool, summary.id).await;
        assert_eq!(summary.kind, record.kind);
        assert_eq!(summary.queue, record.queue);
        assert_eq!(summary.state, record.state);
        assert_eq!(summary.priority, record.priority);
        assert_eq!(summary.attempt, record.attempt);
        assert_eq!(summary.max_attempts, record.max_attempts);
        assert_eq!(summary.tags, record.tags);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&summary.args_preview).unwrap(),
            record.args,
            "short args are previewed whole"
        );
        assert_eq!(
            summary.last_error,
            record.errors.last().map(|e| e.error.clone())
        );
        assert_eq!(summary.created_at, record.created_at);
        assert_eq!(summary.run_at, record.run_at);
        assert_eq!(summary.attempted_at, record.attempted_at);
        assert_eq!(summary.finalized_at, record.finalized_at);
    }
    assert_eq!(all[2].last_error.as_deref(), Some("Disk FULL"));
    assert_eq!(all[2].state, JobState::Discarded);
    assert_eq!(all[0].state, JobState::Running);
    assert_eq!(all[1].state, JobState::Scheduled);

    // Keyset pages: ids below `before`, `limit` at a time.
    let ids_on = |summaries: Vec<offload::storage::JobSummary>| {
        summaries.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids_on(DB::job_list(pool, &filter(), &page(None, 2)).await.unwrap()),
        [j6, j5]
    );
    assert_eq!(
        ids_on(
            DB::job_list(pool, &filter(), &page(Some(j5), 2))
                .await
                .unwrap()
        ),
        [j4, j3]
    );
    assert_eq!(
        ids_on(
            DB::job_list(pool, &filter(), &page(Some(j3), 2))
                .await
                .unwrap()
        ),
        [j2, j1]
    );
    assert!(DB::job_list(pool, &filter(), &page(Some(j1), 2))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        DB::job_list_ids(pool, &filter(), Some(j5), 2)
            .await
            .unwrap(),
        [j4, j3]
    );
    assert_eq!(
        DB::job_list_ids(pool, &filter(), None, 1).await.unwrap(),
        [j6]
    );

    let created = |id: i64| async move { get(pool, id).await.created_at };
    let j4_created = created(j4).await;
    let cases: Vec<(&str, JobFilter, Vec<i64>)> = vec![
        ("everything", filter(), vec![j6, j5, j4, j3, j2, j1]),
        (
            "available",
            JobFilter {
                states: vec![JobState::Available],
                ..filter()
            },
            vec![j3, j2, j1],
        ),
        (
            "two states",
            JobFilter {
                states: vec![JobState::Scheduled, JobState::Discarded],
                ..filter()
            },
            vec![j5, j4],
        ),
        (
            "a state given twice",
            JobFilter {
                states: vec![JobState::Available, JobState::Available],
                ..filter()
            },
            vec![j3, j2, j1],
        ),
        (
            "states given twice",
            JobFilter {
                states: vec![JobState::Running, JobState::Discarded, JobState::Running],
                ..filter()
            },
            vec![j6, j4],
        ),
        (
            "running",
            JobFilter {
                states: vec![JobState::Running],
                ..filter()
            },
            vec![j6],
        ),
        (
            "a queue",
            JobFilter {
                queue: Some("mail".into()),
                ..filter()
            },
            vec![j5, j2, j1],
        ),
        (
            "a queue and a state",
            JobFilter {
                queue: Some("mail".into()),
                states: vec![JobState::Available],
                ..filter()
            },
            vec![j2, j1],
        ),
        (
            "a queue and two states",
            JobFilter {
                queue: Some("text".into()),
                states: vec![JobState::Available, JobState::Running],
                ..filter()
            },
            vec![j6, j3],
        ),
        (
            "a kind",
            JobFilter {
                kind: Some("sms".into()),
                ..filter()
            },
            vec![j6, j3],
        ),
        (
            "a tag",
            JobFilter {
                tag: Some("vip".into()),
                ..filter()
            },
            vec![j3, j1],
        ),
        (
            "another tag",
            JobFilter {
                tag: Some("eu".into()),
                ..filter()
            },
            vec![j3],
        ),
        (
            "part of a tag is no tag",
            JobFilter {
                tag: Some("vi".into()),
                ..filter()
            },
            vec![],
        ),
        (
            "text in args, any case",
            JobFilter {
                text: Some("ANN@".into()),
                ..filter()
            },
            vec![j1],
        ),
        (
            "text in errors, any case",
            JobFilter {
                text: Some("disk full".into()),
                ..filter()
            },
            vec![j4],
        ),
        (
            "wildcards are literal",
            JobFilter {
                text: Some("50%_".into()),
                ..filter()
            },
            vec![j3],
        ),
        (
            "a lone percent sign",
            JobFilter {
                text: Some("%".into()),
                ..filter()
            },
            vec![j3],
        ),
        (
            "since",
            JobFilter {
                since: Some(j4_created),
                ..filter()
            },
            vec![j6, j5, j4],
        ),
        (
            "until",
            JobFilter {
                until: Some(j4_created),
                ..filter()
            },
            vec![j3, j2, j1],
        ),
        (
            "kind and tag",
            JobFilter {
                kind: Some("email".into()),
                tag: Some("vip".into()),
                ..filter()
            },
            vec![j1],
        ),
        (
            "nothing",
            JobFilter {
                queue: Some("nowhere".into()),
                ..filter()
            },
            vec![],
        ),
    ];
    for (what, filter, expected) in cases {
        let listed = ids_on(DB::job_list(pool, &filter, &Page::default()).await.unwrap());
        assert_eq!(listed, expected, "job_list: {what}");
        let ids = DB::job_list_ids(pool, &filter, None, 100).await.unwrap();
        assert_eq!(ids, expected, "job_list_ids: {what}");
        let count = DB::job_count(pool, &filter).await.unwrap();
        assert_eq!(count, expected.len() as i64, "job_count: {what}");
        if expected.len() > 1 {
            // The second page of one: the cursor and the filter together.
            let second = page(Some(expected[0]), 1);
            assert_eq!(
                ids_on(DB::job_list(pool, &filter, &second).await.unwrap()),
                [expected[1]],
                "job_list page 2: {what}"
            );
            assert_eq!(
                DB::job_list_ids(pool, &filter, Some(expected[0]), 1)
                    .await
                    .unwrap(),
                [expected[1]],
                "job_list_ids page 2: {what}"
            );
        }
    }

    // Long args are cut to the preview length.
    let long = format!(r#"{{"text":"{}"}}"#, "y".repeat(500));
    let id = insert_one(
        pool,
        NewJob {
            args: long,
            ..job("long", "long")
        },
    )
    .await;
    let listed = DB::job_list(pool, &filter(), &page(None, 1)).await.unwrap();
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].args_preview.chars().count(), ARGS_PREVIEW_LEN);
    assert!(listed[0].args_preview.starts_with(r#"{"text""#));
}

async fn job_finished_per_minute_and_queue_statistics<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let before = now() - chrono::Duration::seconds(5);
    for (queue, state) in [
        ("a", JobState::Completed),
        ("a", JobState::Completed),
        ("a", JobState::Discarded),
        ("b", JobState::Completed),
        ("c", JobState::Cancelled),
        ("c", JobState::Running),
    ] {
        job_in_state(pool, queue, state).await;
    }
    let overdue = now() - chrono::Duration::minutes(10);
    insert(
        pool,
        &[
            NewJob {
                run_at: Some(overdue),
                ..job("x", "b")
            },
            job("x", "b"),
        ],
    )
    .await;
    let after = now() + chrono::Duration::seconds(5);

    // Per minute: completed and discarded only, in whole minutes.
    let totals = |rows: Vec<(DateTime<Utc>, JobState, i64)>| {
        let mut totals = Vec::<(&'static str, i64)>::new();
        for (minute, state, n) in rows {
            assert_eq!(minute.timestamp() % 60, 0, "{minute} starts a minute");
            assert_eq!(
                minute.timestamp_subsec_micros(),
                0,
                "{minute} starts a minute"
            );
            assert!(minute > before - chrono::Duration::minutes(1) && minute <= after);
            match totals.iter_mut().find(|(s, _)| *s == state.as_str()) {
                Some((_, total)) => *total += n,
                None => totals.push((state.as_str(), n)),
            }
        }
        totals.sort();
        totals
    };
    let since = before - chrono::Duration::minutes(1);
    assert_eq!(
        totals(
            DB::job_finished_per_minute(pool, since, None)
                .await
                .unwrap()
        ),
        expected_counts(&[(JobState::Completed, 3), (JobState::Discarded, 1)])
    );
    assert_eq!(
        totals(
            DB::job_finished_per_minute(pool, since, Some("a"))
                .await
                .unwrap()
        ),
        expected_counts(&[(JobState::Completed, 2), (JobState::Discarded, 1)])
    );
    assert!(DB::job_finished_per_minute(pool, since, Some("c"))
        .await
        .unwrap()
        .is_empty());
    assert!(DB::job_finished_per_minute(pool, after, None)
        .await
        .unwrap()
        .is_empty());

    let mut by_queue: Vec<(String, &'static str, i64)> = DB::queue_state_counts(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(q, s, n)| (q, s.as_str(), n))
        .collect();
    by_queue.sort();
    let expected: Vec<(String, &str, i64)> = vec![
        ("a".into(), "completed", 2),
        ("a".into(), "discarded", 1),
        ("b".into(), "available", 2),
        ("b".into(), "completed", 1),
        ("c".into(), "cancelled", 1),
        ("c".into(), "running", 1),
    ];
    assert_eq!(by_queue, expected);

    assert_eq!(
        DB::queue_oldest_available(pool).await.unwrap(),
        [("b".to_owned(), overdue)],
        "only queues with available jobs, their earliest run_at"
    );

    let mut completed = DB::queue_completed_since(pool, before).await.unwrap();
    completed.sort();
    assert_eq!(completed, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    assert!(DB::queue_completed_since(pool, after)
        .await
        .unwrap()
        .is_empty());
}

async fn job_retry_many_makes_every_job_but_a_running_one_available<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    // Discarded with no attempts left.
    insert_one(
        pool,
        NewJob {
            max_attempts: 1,
            priority: i16::MIN,
            ..job("r", "rq")
        },
    )
    .await;
    let claimed = claim(pool, "rq", 1).await;
    let out_of_attempts = claimed[0].id;
    let discard = Outcome::Discard { error: "no".into() };
    assert!(
        DB::job_record_outcome(pool, claimed[0].attempt_key(), &discard)
            .await
            .unwrap()
    );
    let mut by_state = Vec::new();
    for state in JobState::ALL {
        by_state.push((job_in_state(pool, "rq2", state).await, state));
    }
    let id_of = |state: JobState| by_state.iter().find(|(_, s)| *s == state).unwrap().0;
    let running = id_of(JobState::Running);
    let available = get(pool, id_of(JobState::Available)).await;
    notices.take().await;

    let mut ids = vec![out_of_attempts, i64::MAX];
    ids.extend(by_state.iter().map(|(id, _)| *id));
    let before = now();
    let mut conn = pool.acquire().await.unwrap();
    let mut retried = DB::job_retry_many(&mut *conn, &ids).await.unwrap();
    retried.sort();
    let mut expected: Vec<(i64, String)> = by_state
        .iter()
        .filter(|(_, state)| *state != JobState::Running)
        .map(|(id, _)| (*id, "rq2".to_owned()))
        .collect();
    expected.push((out_of_attempts, "rq".to_owned()));
    expected.sort();
    assert_eq!(retried, expected);
    notices
        .expect("a retry", &[(JOBS_CHANNEL, "rq"), (JOBS_CHANNEL, "rq2")])
        .await;
    for (id, _) in &expected {
        let record = get(pool, *id).await;
        assert_eq!(record.state, JobState::Available, "job {id}");
        assert_eq!(record.finalized_at, None);
        assert_eq!(record.worker_id, None);
    }
    for state in [
        JobState::Scheduled,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ] {
        let record = get(pool, id_of(state)).await;
        assert_near(record.run_at, before, "run_at is now");
        let attempts = if state == JobState::Scheduled { 0 } else { 1 };
        assert_eq!(record.attempt, attempts, "a {state} job keeps its attempts");
    }
    assert_eq!(
        get(pool, id_of(JobState::Available)).await.run_at,
        available.run_at,
        "an available job keeps its place"
    );
    assert_eq!(
        get(pool, id_of(JobState::Discarded)).await.errors.len(),
        1,
        "history kept"
    );
    assert_eq!(
        get(pool, out_of_attempts).await.max_attempts,
        2,
        "one more attempt granted"
    );
    assert_eq!(
        get(pool, id_of(JobState::Completed)).await.max_attempts,
        DEFAULT_MAX_ATTEMPTS,
        "attempts left: unchanged"
    );
    assert_eq!(
        state(pool, running).await,
        JobState::Running,
        "a running job is not retried"
    );
    assert!(DB::job_retry_many(&mut *conn, &[])
        .await
        .unwrap()
        .is_empty());
    drop(conn);
    let claimed = claim(pool, "rq", 10).await;
    assert_eq!(ids_of(&claimed), [out_of_attempts]);
    assert_eq!(claimed[0].attempt, 2, "a retried job runs its next attempt");

    // In the caller's transaction: nothing changes, and nobody hears of it,
    // unless it commits.
    let done = job_in_state(pool, "rq3", JobState::Completed).await;
    notices.take().await;
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert_eq!(
        DB::job_retry_many(&mut *tx, &[done]).await.unwrap(),
        [(done, "rq3".to_owned())]
    );
    tx.rollback().await.unwrap();
    assert_eq!(state(pool, done).await, JobState::Completed);
    notices.expect("a rolled-back retry", &[]).await;
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    DB::job_retry_many(&mut *tx, &[done]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(state(pool, done).await, JobState::Available);
    notices
        .expect("a committed retry", &[(JOBS_CHANNEL, "rq3")])
        .await;
}

async fn job_retry_many_leaves_a_job_whose_unique_key_is_taken<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let key = UniqueKey::new("retry:1", &DEFAULT_UNIQUE_STATES).unwrap();
    let unique = || NewJob {
        queue: "uq".into(),
        ..unique_job(&key)
    };
    let mut conn = pool.acquire().await.unwrap();
    // Two discarded jobs of one key, then a third holding it.
    let mut discarded = Vec::new();
    for _ in 0..2 {
        let id = DB::job_insert_unique(&mut *conn, &unique())
            .await
            .unwrap()
            .unwrap();
        let claimed = claim(pool, "uq", 1).await;
        let discard = Outcome::Discard { error: "no".into() };
        assert!(
            DB::job_record_outcome(pool, claimed[0].attempt_key(), &discard)
                .await
                .unwrap()
        );
        discarded.push(id);
    }
    let holder = DB::job_insert_unique(&mut *conn, &unique())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        DB::job_retry_many(&mut *conn, &discarded).await.unwrap(),
        [],
        "another job holds the key"
    );
    for id in &discarded {
        assert_eq!(state(pool, *id).await, JobState::Discarded);
    }
    // The holder itself can be retried (it keeps its key), in the same
    // batch as the others.
    let mut ids = discarded.clone();
    ids.push(holder);
    assert_eq!(
        DB::job_retry_many(&mut *conn, &ids).await.unwrap(),
        [(holder, "uq".to_owned())]
    );
    // With the holder gone, one of the two takes the key: the newest.
    assert_eq!(
        DB::job_delete_many(&mut *conn, &[holder]).await.unwrap(),
        [holder]
    );
    assert_eq!(
        DB::job_retry_many(&mut *conn, &discarded).await.unwrap(),
        [(discarded[1], "uq".to_owned())]
    );
    assert_eq!(state(pool, discarded[0]).await, JobState::Discarded);
    assert_eq!(
        DB::job_unique_holder(&mut *conn, &key.key).await.unwrap(),
        Some(discarded[1])
    );
}

async fn job_cancel_many_applies_to_unfinished_jobs_and_signals_running_ones<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let mut by_state = Vec::new();
    for state in JobState::ALL {
        by_state.push((job_in_state(pool, "cq", state).await, state));
    }
    let id_of = |state: JobState| by_state.iter().find(|(_, s)| *s == state).unwrap().0;
    let running = id_of(JobState::Running);
    let running_attempt = Attempt {
        id: running,
        attempt: 1,
    };
    let mut finished_before = Vec::new();
    for state in [
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ] {
        finished_before.push(get(pool, id_of(state)).await);
    }
    notices.take().await;

    let mut ids: Vec<i64> = by_state.iter().map(|(id, _)| *id).collect();
    ids.push(i64::MAX);
    let before = now();
    let mut conn = pool.acquire().await.unwrap();
    let mut changed = DB::job_cancel_many(&mut *conn, &ids).await.unwrap();
    changed.sort();
    let mut expected = vec![
        (id_of(JobState::Scheduled), false),
        (id_of(JobState::Available), false),
        (id_of(JobState::Retryable), false),
        (running, true),
    ];
    expected.sort();
    assert_eq!(changed, expected);
    let running_payload = running.to_string();
    notices
        .expect("a cancel", &[(CANCEL_CHANNEL, running_payload.as_str())])
        .await;
    for (id, _) in &expected {
        let record = get(pool, *id).await;
        assert_eq!(record.state, JobState::Cancelled);
        assert_near(
            record.finalized_at.expect("finalized_at"),
            before,
            "finalized_at",
        );
        assert_eq!(record.worker_id, None);
        assert_eq!(
            record.errors.last().map(|e| e.error.as_str()),
            Some("cancelled by an operator")
        );
    }
    for record in finished_before {
        let now = get(pool, record.id).await;
        assert_eq!(now.state, record.state, "a finished job is not cancelled");
        assert_eq!(now.finalized_at, record.finalized_at);
        assert_eq!(now.errors, record.errors);
    }
    // The running attempt can no longer complete.
    assert_eq!(
        DB::job_complete_many(pool, &[running_attempt], false)
            .await
            .unwrap(),
        0
    );
    assert!(DB::job_cancel_many(&mut *conn, &ids)
        .await
        .unwrap()
        .is_empty());
    assert!(DB::job_cancel_many(&mut *conn, &[])
        .await
        .unwrap()
        .is_empty());
    notices.expect("a cancel of nothing", &[]).await;
    assert_eq!(
        counts(pool, Some("cq")).await,
        expected_counts(&[
            (JobState::Cancelled, 5),
            (JobState::Completed, 1),
            (JobState::Discarded, 1)
        ])
    );
}

async fn job_cancel_many_in_a_transaction_takes_effect_on_commit<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let running = job_in_state(pool, "ctx", JobState::Running).await;
    let waiting = job_in_state(pool, "ctx", JobState::Available).await;
    notices.take().await;

    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    let mut changed = DB::job_cancel_many(&mut *tx, &[running, waiting])
        .await
        .unwrap();
    changed.sort();
    let mut expected = vec![(running, true), (waiting, false)];
    expected.sort();
    assert_eq!(changed, expected);
    tx.rollback().await.unwrap();
    notices.expect("a rolled-back cancel", &[]).await;
    assert_eq!(state(pool, running).await, JobState::Running);
    assert_eq!(state(pool, waiting).await, JobState::Available);

    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    DB::job_cancel_many(&mut *tx, &[running, waiting])
        .await
        .unwrap();
    // Inside the transaction it sees its own change.
    assert_eq!(
        DB::job_state(&mut *tx, running).await.unwrap(),
        Some(JobState::Cancelled)
    );
    tx.commit().await.unwrap();
    let running_payload = running.to_string();
    notices
        .expect(
            "a committed cancel",
            &[(CANCEL_CHANNEL, running_payload.as_str())],
        )
        .await;
    assert_eq!(state(pool, running).await, JobState::Cancelled);
    assert_eq!(state(pool, waiting).await, JobState::Cancelled);
}

async fn job_delete_many_spares_running_jobs<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut by_state = Vec::new();
    for state in JobState::ALL {
        by_state.push((job_in_state(pool, "dq", state).await, state));
    }
    let mut ids: Vec<i64> = by_state.iter().map(|(id, _)| *id).collect();
    ids.push(i64::MAX);
    let mut conn = pool.acquire().await.unwrap();
    for (id, state) in &by_state {
        assert_eq!(DB::job_state(&mut *conn, *id).await.unwrap(), Some(*state));
    }
    assert_eq!(DB::job_state(&mut *conn, i64::MAX).await.unwrap(), None);
    // Rolled back, nothing is deleted.
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert_eq!(DB::job_delete_many(&mut *tx, &ids).await.unwrap().len(), 6);
    assert_eq!(DB::job_state(&mut *tx, by_state[0].0).await.unwrap(), None);
    tx.rollback().await.unwrap();
    assert!(exists(pool, by_state[0].0).await);
    let mut deleted = DB::job_delete_many(&mut *conn, &ids).await.unwrap();
    deleted.sort_unstable();
    let mut expected: Vec<i64> = by_state
        .iter()
        .filter(|(_, s)| *s != JobState::Running)
        .map(|(id, _)| *id)
        .collect();
    expected.sort_unstable();
    assert_eq!(deleted, expected);
    for (id, state) in &by_state {
        assert_eq!(
            exists(pool, *id).await,
            *state == JobState::Running,
            "{state} job"
        );
    }
    assert!(DB::job_delete_many(&mut *conn, &ids)
        .await
        .unwrap()
        .is_empty());
    assert!(DB::job_delete_many(&mut *conn, &[])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        DB::job_state(&mut *conn, by_state[0].0).await.unwrap(),
        None
    );
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Running, 1)])
    );
}

// --- queues ---

async fn queue_notify_and_backend_constants<DB: Conformance>(db: &TestDatabase<DB>) {
    let mut notices = DB::notices(db).await;
    DB::queue_notify(&db.pool, &["n1".into(), "n2".into(), "n1".into()])
        .await
        .expect("queue_notify");
    notices
        .expect(
            "queue_notify: one per queue",
            &[(JOBS_CHANNEL, "n1"), (JOBS_CHANNEL, "n2")],
        )
        .await;
    DB::queue_notify(&db.pool, &[]).await.expect("queue_notify");
    notices.expect("queue_notify of no queue", &[]).await;

    // PostgreSQL wakes other processes; SQLite (one host) does not, and its
    // queue_notify is the no-op above.
    assert_eq!(DB::CROSS_PROCESS_WAKE, DB::POSTGRES);
    assert!(DB::DEFAULT_POLL_INTERVAL > Duration::ZERO);
    assert!(DB::DEFAULT_POLL_INTERVAL <= Duration::from_secs(5));
    if DB::POSTGRES {
        assert!(DB::COMPLETION_WRITERS >= 1);
    } else {
        assert_eq!(DB::COMPLETION_WRITERS, 1, "one writer at a time");
    }
}

async fn queue_set_paused_pauses_and_resumes<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let flags = |pool: Pool<DB>| async move {
        let settings = DB::queue_settings(&pool).await.unwrap();
        let mut flags: Vec<(String, bool)> =
            settings.into_iter().map(|q| (q.name, q.paused)).collect();
        flags.sort();
        flags
    };
    assert!(flags(pool.clone()).await.is_empty(), "no settings rows yet");
    let id = insert_one(pool, job("p", "pq")).await;
    notices.take().await;

    DB::queue_set_paused(pool, "pq", true).await.unwrap();
    DB::queue_set_paused(pool, "pq", true).await.unwrap();
    assert_eq!(flags(pool.clone()).await, [("pq".to_owned(), true)]);
    notices.expect("a pause", &[]).await;
    assert!(claim(pool, "pq", 10).await.is_empty());
    assert!(claim_limited::<DB>(pool, "pq", 10, WORKER)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(state(pool, id).await, JobState::Available);

    DB::queue_set_paused(pool, "pq", false).await.unwrap();
    assert_eq!(
        flags(pool.clone()).await,
        [("pq".to_owned(), false)],
        "the row stays"
    );
    notices.expect("a resume", &[(JOBS_CHANNEL, "pq")]).await;
    assert_eq!(ids_of(&claim(pool, "pq", 10).await), [id]);

    // Any settings row is listed, paused or not; pausing one queue leaves
    // the others alone.
    DB::queue_set_limit(pool, "gq", LimitChange::Global(Some(2)))
        .await
        .unwrap();
    DB::queue_set_paused(pool, "other", true).await.unwrap();
    assert_eq!(
        flags(pool.clone()).await,
        [
            ("gq".to_owned(), false),
            ("other".to_owned(), true),
            ("pq".to_owned(), false)
        ]
    );
}

static WOKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CANCELLED: Mutex<Vec<(String, Vec<i64>)>> = Mutex::new(Vec::new());

fn record_wake(queue: &str) {
    WOKEN.lock().unwrap().push(queue.to_owned());
}

fn record_cancel(identity: &str, ids: &[i64]) {
    CANCELLED
        .lock()
        .unwrap()
        .push((identity.to_owned(), ids.to_vec()));
}

fn woken(queue: &str) -> bool {
    WOKEN.lock().unwrap().iter().any(|q| q == queue)
}

async fn notification_listen_delivers_to_signals<DB: Conformance>(db: &TestDatabase<DB>) {
    let signals = Signals {
        wake: record_wake,
        cancel: record_cancel,
        listening: || {},
    };
    let pool = db.pool.clone();
    let mut listen = tokio::spawn(async move { DB::notification_listen(&pool, signals).await });
    if !DB::POSTGRES {
        // No notifications: returns Ok at once, and never calls back.
        let result = tokio::time::timeout(Duration::from_secs(10), &mut listen)
            .await
            .expect("SQLite's notification_listen returns at once");
        result.unwrap().expect("Ok");
        return;
    }
    // Listening starts inside the task: probe until a wake-up gets through.
    let probe = format!("listen-probe-{}", std::process::id());
    eventually(
        Duration::from_secs(20),
        "the listener hears a probe",
        || async {
            DB::queue_notify(&db.pool, std::slice::from_ref(&probe))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            woken(&probe)
        },
    )
    .await;

    // An enqueue wakes its queue.
    let id = insert_one(&db.pool, job("l", "listen-q")).await;
    eventually(Duration::from_secs(20), "the enqueue's wake-up", || async {
        woken("listen-q")
    })
    .await;

    // A cancel payload that is not an id is ignored, and listening goes on.
    let notices = DB::notices(db).await;
    notices.send(CANCEL_CHANNEL, "not-an-id").await;
    notices.send(JOBS_CHANNEL, "listen-after-noise").await;
    eventually(Duration::from_secs(20), "a wake-up after noise", || async {
        woken("listen-after-noise")
    })
    .await;
    let mut conn = db.pool.acquire().await.unwrap();
    DB::job_insert_many(&mut *conn, &[job("l", "listen-after")], false)
        .await
        .unwrap();
    drop(conn);

    // Cancelling a running job signals its id, with the database's identity.
    let claimed = claim(&db.pool, "listen-q", 1).await;
    assert_eq!(ids_of(&claimed), [id]);
    let identity = DB::pool_identity(&db.pool);
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        DB::job_cancel_many(&mut *conn, &[id]).await.unwrap(),
        [(id, true)]
    );
    drop(conn);
    eventually(Duration::from_secs(20), "the cancel signal", || async {
        CANCELLED
            .lock()
            .unwrap()
            .iter()
            .any(|(who, ids)| *who == identity && ids == &[id])
    })
    .await;
    assert_eq!(
        *CANCELLED.lock().unwrap(),
        [(identity, vec![id])],
        "one signal: the noise was ignored"
    );
    assert!(
        !woken("listen-after"),
        "an insert without notify wakes nobody"
    );
    assert!(!listen.is_finished(), "listens until an error");
    listen.abort();
}

// --- workers ---

async fn worker_heartbeat_deregister_and_expiry<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let info = |id: &str, pid| WorkerInfo {
        id: id.into(),
        host: "host-a".into(),
        pid,
        queues: "default,mail".into(),
    };
    let lease = Duration::from_secs(60);
    assert!(DB::workers(pool).await.is_empty());

    let before = now();
    DB::worker_heartbeat(pool, &info("w1", 11)).await.unwrap();
    let rows = DB::workers(pool).await;
    assert_eq!(rows.len(), 1);
    let (id, host, pid, queues, first_beat) = rows[0].clone();
    assert_eq!(
        (id.as_str(), host.as_str(), pid, queues.as_str()),
        ("w1", "host-a", 11, "default,mail")
    );
    assert_near(first_beat, before, "heartbeat_at");

    // Renewing keeps one row and moves its heartbeat.
    DB::age_worker(pool, "w1", Duration::from_secs(30)).await;
    DB::worker_heartbeat(pool, &info("w1", 11)).await.unwrap();
    let rows = DB::workers(pool).await;
    assert_eq!(rows.len(), 1);
    assert_near(rows[0].4, now(), "renewed heartbeat_at");
    assert!(rows[0].4 >= first_beat);

    DB::worker_heartbeat(pool, &info("w2", 12)).await.unwrap();
    DB::worker_heartbeat(pool, &info("w3", 13)).await.unwrap();
    assert_eq!(DB::worker_delete_expired(pool, lease).await.unwrap(), 0);
    DB::age_worker(pool, "w1", lease * 2).await;
    assert_eq!(
        DB::worker_delete_expired(pool, Duration::MAX)
            .await
            .expect("worker_delete_expired with a very long lease"),
        0
    );
    DB::age_worker(pool, "w3", lease * 2).await;
    assert_eq!(DB::worker_delete_expired(pool, lease).await.unwrap(), 2);
    let ids: Vec<String> = DB::workers(pool).await.into_iter().map(|w| w.0).collect();
    assert_eq!(ids, ["w2"]);

    DB::worker_deregister(pool, "w2").await.unwrap();
    DB::worker_deregister(pool, "never-registered")
        .await
        .unwrap();
    assert!(DB::workers(pool).await.is_empty());
}

// --- leadership ---

async fn leader_election_is_exclusive_until_expiry<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let ttl = Duration::from_secs(60);
    assert_eq!(DB::leader_get(pool, "maint").await.unwrap(), None);

    let before = now();
    assert!(DB::leader_attempt_elect(pool, "maint", "a", ttl)
        .await
        .unwrap());
    let leader = DB::leader_get(pool, "maint")
        .await
        .unwrap()
        .expect("a leads");
    assert_eq!(leader.leader_id, "a");
    assert_near(leader.elected_at, before, "elected_at");
    assert_near(
        leader.expires_at,
        before + chrono::Duration::seconds(60),
        "expires_at",
    );

    assert!(!DB::leader_attempt_elect(pool, "maint", "b", ttl)
        .await
        .unwrap());
    assert_eq!(
        DB::leader_get(pool, "maint")
            .await
            .unwrap()
            .unwrap()
            .leader_id,
        "a"
    );

    // Renewal keeps the election time and moves the expiry.
    DB::age_leader(pool, "maint", Duration::from_secs(30)).await;
    let aged = DB::leader_get(pool, "maint").await.unwrap().unwrap();
    assert!(DB::leader_attempt_elect(pool, "maint", "a", ttl)
        .await
        .unwrap());
    let renewed = DB::leader_get(pool, "maint").await.unwrap().unwrap();
    assert_eq!(renewed.elected_at, aged.elected_at);
    assert!(renewed.expires_at > aged.expires_at);

    // Another name is another leadership.
    assert!(DB::leader_attempt_elect(pool, "other", "b", ttl)
        .await
        .unwrap());

    // Only the holder resigns.
    DB::leader_resign(pool, "maint", "b").await.unwrap();
    assert_eq!(
        DB::leader_get(pool, "maint")
            .await
            .unwrap()
            .unwrap()
            .leader_id,
        "a"
    );
    DB::leader_resign(pool, "maint", "a").await.unwrap();
    assert_eq!(DB::leader_get(pool, "maint").await.unwrap(), None);
    assert!(DB::leader_attempt_elect(pool, "maint", "b", ttl)
        .await
        .unwrap());
    assert_eq!(
        DB::leader_get(pool, "maint")
            .await
            .unwrap()
            .unwrap()
            .leader_id,
        "b"
    );

    // Expired: nobody leads, and anyone may take over.
    DB::age_leader(pool, "maint", ttl * 2).await;
    assert_eq!(DB::leader_get(pool, "maint").await.unwrap(), None);
    let before = now();
    assert!(DB::leader_attempt_elect(pool, "maint", "a", ttl)
        .await
        .unwrap());
    let leader = DB::leader_get(pool, "maint").await.unwrap().unwrap();
    assert_eq!(leader.leader_id, "a");
    assert_near(leader.elected_at, before, "a new election");
    assert!(!DB::leader_attempt_elect(pool, "maint", "b", ttl)
        .await
        .unwrap());
    assert_eq!(
        DB::leader_get(pool, "other")
            .await
            .unwrap()
            .unwrap()
            .leader_id,
        "b"
    );

    // A TTL longer than any timestamp leads for good (not an error, and
    // not an expiry in the past).
    let before = now();
    assert!(
        DB::leader_attempt_elect(pool, "forever", "a", Duration::MAX)
            .await
            .expect("leader_attempt_elect with a very long ttl")
    );
    let leader = DB::leader_get(pool, "forever")
        .await
        .expect("leader_get of a very long ttl")
        .expect("a leads");
    assert_eq!(leader.leader_id, "a");
    assert!(leader.expires_at > before + chrono::Duration::days(365 * 100));
    assert!(!DB::leader_attempt_elect(pool, "forever", "b", ttl)
        .await
        .unwrap());

    // Concurrent candidates: exactly one wins.
    let mut candidates = tokio::task::JoinSet::new();
    for c in 0..6 {
        let pool = pool.clone();
        candidates.spawn(async move {
            DB::leader_attempt_elect(&pool, "race", &format!("c{c}"), ttl)
                .await
                .unwrap()
        });
    }
    let mut won = 0;
    while let Some(result) = candidates.join_next().await {
        won += usize::from(result.unwrap());
    }
    assert_eq!(won, 1);
}

// --- periodic jobs ---

async fn periodic_ticks_are_enqueued_once<DB: Conformance>(db: &TestDatabase<DB>) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let tick = |minute| Utc.with_ymd_and_hms(2024, 5, 1, 12, minute, 0).unwrap();
    let name = "every_minute";
    assert_eq!(DB::periodic_last_tick(pool, name).await.unwrap(), None);

    let first = ops::enqueue_tick(pool, name, tick(1), &job("tick", "ticks"))
        .await
        .unwrap()
        .expect("a new tick is enqueued");
    assert_eq!(get(pool, first).await.kind, "tick");
    assert_eq!(
        DB::periodic_last_tick(pool, name).await.unwrap(),
        Some(tick(1))
    );
    notices
        .expect("an enqueued tick", &[(JOBS_CHANNEL, "ticks")])
        .await;

    assert_eq!(
        ops::enqueue_tick(pool, name, tick(1), &job("tick", "ticks"))
            .await
            .unwrap(),
        None,
        "the same tick again"
    );
    assert_eq!(
        ops::enqueue_tick(pool, name, tick(0), &job("tick", "ticks"))
            .await
            .unwrap(),
        None,
        "an earlier tick"
    );
    notices.expect("ticks already enqueued", &[]).await;
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Available, 1)])
    );
    let second = ops::enqueue_tick(pool, name, tick(2), &job("tick", "ticks"))
        .await
        .unwrap()
        .expect("a later tick");
    assert_ne!(second, first);
    assert_eq!(
        DB::periodic_last_tick(pool, name).await.unwrap(),
        Some(tick(2))
    );
    assert_eq!(DB::periodic_last_tick(pool, "another").await.unwrap(), None);

    // The primitive: moves forward only, inside the caller's transaction.
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert!(!DB::periodic_advance_tick(&mut *tx, name, tick(2))
        .await
        .unwrap());
    assert!(!DB::periodic_advance_tick(&mut *tx, name, tick(1))
        .await
        .unwrap());
    assert!(DB::periodic_advance_tick(&mut *tx, name, tick(3))
        .await
        .unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(
        DB::periodic_last_tick(pool, name).await.unwrap(),
        Some(tick(2)),
        "rolled back"
    );

    // The row stays locked until the transaction ends: a second leader
    // advancing to the same tick waits, then finds it taken.
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    assert!(DB::periodic_advance_tick(&mut *tx, name, tick(3))
        .await
        .unwrap());
    let other = pool.clone();
    let second_leader = tokio::spawn(async move {
        let mut tx = DB::tx_begin_write(&other).await.unwrap();
        let advanced = DB::periodic_advance_tick(&mut *tx, name, tick(3))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        advanced
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second_leader.is_finished(),
        "waits for the first transaction"
    );
    tx.commit().await.unwrap();
    let advanced = tokio::time::timeout(Duration::from_secs(20), second_leader)
        .await
        .expect("the second leader goes on once the first commits")
        .unwrap();
    assert!(!advanced, "the tick was taken");
    assert_eq!(
        DB::periodic_last_tick(pool, name).await.unwrap(),
        Some(tick(3))
    );

    // Concurrent leaders enqueue a new schedule's first tick once.
    let mut leaders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        leaders.spawn(async move {
            ops::enqueue_tick(&pool, "race", tick(5), &job("race", "ticks"))
                .await
                .unwrap()
        });
    }
    let mut enqueued = 0;
    while let Some(result) = leaders.join_next().await {
        enqueued += usize::from(result.unwrap().is_some());
    }
    assert_eq!(enqueued, 1);
    assert_eq!(
        counts(pool, None).await,
        expected_counts(&[(JobState::Available, 3)])
    );
}

// --- coverage ---

/// Every method and constant of the `Driver` trait, and the generic
/// operations, must be called by some scenario above.
#[test]
fn every_driver_method_has_a_conformance_scenario() {
    let driver = include_str!("../src/storage/driver.rs");
    let this = include_str!("driver_conformance.rs");
    let start = driver
        .find("pub trait Driver")
        .expect("driver.rs declares `pub trait Driver`");
    let body = &driver[start..];
    let body = &body[..body.find("\n}").expect("the trait's closing brace")];

    let ident = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut methods = Vec::new();
    let mut constants = Vec::new();
    for line in body.lines().map(str::trim_start) {
        if let Some(rest) = line.strip_prefix("fn ") {
            methods.push(ident(rest));
        } else if let Some(rest) = line.strip_prefix("const ") {
            constants.push(ident(rest));
        }
    }
    assert!(methods.len() >= 40, "found only {methods:?} in driver.rs");
    assert!(
        constants.len() >= 4,
        "found only {constants:?} in driver.rs"
    );

    let mut missing: Vec<String> = methods
        .iter()
        .filter(|m| !this.contains(&format!("DB::{m}(")))
        .map(|m| format!("Driver::{m}"))
        .collect();
    missing.extend(
        constants
            .iter()
            .filter(|c| !this.contains(&format!("DB::{c}")))
            .map(|c| format!("Driver::{c}")),
    );
    for call in [
        "ops::insert_unique::<DB>(",
        "ops::enqueue_tick(",
        "migrate::run(",
    ] {
        if !this.contains(call) {
            missing.push(call.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "no conformance scenario calls: {}",
        missing.join(", ")
    );
}

// --- jobs: for the testing kit ---

on_both_backends!(
    job_claim_one_claims_a_waiting_job_by_id_whatever_its_run_at,
    job_promote_queue_makes_every_waiting_job_of_a_queue_available,
    job_list_of_kind_reads_every_job_of_a_kind_with_its_unique_key,
);

async fn job_claim_one_claims_a_waiting_job_by_id_whatever_its_run_at<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let available = insert_one(pool, job("one", "q")).await;
    let first = insert_one(pool, job("first", "q")).await;
    let scheduled = job_in_state(pool, "q", JobState::Scheduled).await;
    let retryable = job_in_state(pool, "q", JobState::Retryable).await;
    let mut finished = Vec::new();
    for state in [
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ] {
        finished.push((job_in_state(pool, "done", state).await, state));
    }
    notices.take().await;

    // Not the first in claim order: exactly the job asked for.
    let before = now();
    let claimed = DB::job_claim_one(pool, available, "kit")
        .await
        .unwrap()
        .expect("an available job is claimed");
    assert_eq!(claimed.id, available);
    assert_eq!(
        (claimed.kind.as_str(), claimed.queue.as_str()),
        ("one", "q")
    );
    assert_eq!(claimed.attempt, 1);
    let record = get(pool, available).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.attempt, 1);
    assert_eq!(record.worker_id.as_deref(), Some("kit"));
    assert_eq!(claimed.run_at, record.run_at);
    assert_eq!(claimed.max_attempts, record.max_attempts);
    assert_near(
        record.attempted_at.expect("attempted_at"),
        before,
        "attempted_at",
    );
    assert_eq!(state(pool, first).await, JobState::Available);
    assert!(
        DB::job_claim_one(pool, available, "kit")
            .await
            .unwrap()
            .is_none(),
        "a running job is not claimed again"
    );

    // Scheduled for later and retryable jobs are claimed now, keeping run_at.
    let later = get(pool, scheduled).await.run_at;
    let claimed = DB::job_claim_one(pool, scheduled, "kit").await.unwrap();
    assert_eq!(claimed.map(|c| (c.attempt, c.run_at)), Some((1, later)));
    let claimed = DB::job_claim_one(pool, retryable, "kit").await.unwrap();
    assert_eq!(claimed.map(|c| c.attempt), Some(2), "the second attempt");
    assert_eq!(state(pool, retryable).await, JobState::Running);

    // Pause does not stop it; finished and missing jobs are not claimed.
    DB::queue_set_paused(pool, "q", true).await.unwrap();
    notices.take().await;
    assert_eq!(
        DB::job_claim_one(pool, first, "kit")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(first)
    );
    for (id, finished) in finished {
        assert!(
            DB::job_claim_one(pool, id, "kit").await.unwrap().is_none(),
            "a {finished} job is not claimed"
        );
        assert_eq!(state(pool, id).await, finished);
    }
    assert!(DB::job_claim_one(pool, i64::MAX, "kit")
        .await
        .unwrap()
        .is_none());
    notices.expect("claims by id", &[]).await;
}

async fn job_promote_queue_makes_every_waiting_job_of_a_queue_available<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut notices = DB::notices(db).await;
    let scheduled = job_in_state(pool, "q", JobState::Scheduled).await;
    let retryable = job_in_state(pool, "q", JobState::Retryable).await;
    let running = job_in_state(pool, "q", JobState::Running).await;
    let completed = job_in_state(pool, "q", JobState::Completed).await;
    let elsewhere = job_in_state(pool, "other", JobState::Scheduled).await;
    let scheduled_at = get(pool, scheduled).await.run_at;
    let retry_at = get(pool, retryable).await.run_at;
    assert!(scheduled_at > now() && retry_at > now(), "neither is due");
    notices.take().await;

    assert_eq!(DB::job_promote_queue(pool, "q").await.unwrap(), 2);
    let promoted = get(pool, scheduled).await;
    assert_eq!(
        (promoted.state, promoted.run_at),
        (JobState::Available, scheduled_at)
    );
    let promoted = get(pool, retryable).await;
    assert_eq!(
        (promoted.state, promoted.run_at, promoted.attempt),
        (JobState::Available, retry_at, 1),
        "keeps run_at and history"
    );
    assert_eq!(promoted.errors.len(), 1);
    assert_eq!(state(pool, running).await, JobState::Running);
    assert_eq!(state(pool, completed).await, JobState::Completed);
    assert_eq!(state(pool, elsewhere).await, JobState::Scheduled);
    notices.expect("a promotion of a queue", &[]).await;

    assert_eq!(ids_of(&claim(pool, "q", 10).await), [scheduled, retryable]);
    assert_eq!(DB::job_promote_queue(pool, "q").await.unwrap(), 0);
    assert_eq!(DB::job_promote_queue(pool, "none").await.unwrap(), 0);
}

async fn job_list_of_kind_reads_every_job_of_a_kind_with_its_unique_key<DB: Conformance>(
    db: &TestDatabase<DB>,
) {
    let pool = &db.pool;
    let mut conn = pool.acquire().await.unwrap();
    assert!(DB::job_list_of_kind(&mut *conn, "listed")
        .await
        .unwrap()
        .is_empty());
    let plain = insert_one(
        pool,
        NewJob {
            tags: vec!["t".into()],
            priority: 3,
            ..job("listed", "q")
        },
    )
    .await;
    let key = UniqueKey::new("listed:1", &DEFAULT_UNIQUE_STATES).unwrap();
    let unique = ops::insert_unique::<DB>(
        &mut *conn,
        &NewJob {
            unique: Some(key.clone()),
            ..job("listed", "q")
        },
    )
    .await
    .unwrap()
    .id;
    insert_one(pool, job("other", "q")).await;

    let listed = DB::job_list_of_kind(&mut *conn, "listed").await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|(job, _)| job.id).collect();
    assert_eq!(ids, [plain, unique], "oldest first, only the kind");
    let (record, no_key) = &listed[0];
    assert_eq!(no_key, &None);
    let whole = get(pool, plain).await;
    assert_eq!(
        (
            &record.kind,
            &record.queue,
            record.state,
            &record.args,
            record.priority,
            &record.tags,
            record.run_at
        ),
        (
            &whole.kind,
            &whole.queue,
            whole.state,
            &whole.args,
            whole.priority,
            &whole.tags,
            whole.run_at
        ),
        "the same row as job_get"
    );
    assert_eq!(listed[1].1.as_ref(), Some(&key.key));
    drop(conn);

    // Any state; inside a transaction, its own uncommitted inserts too.
    let finished = job_in_state(pool, "q", JobState::Discarded).await;
    let mut tx = DB::tx_begin_write(pool).await.unwrap();
    let uncommitted = DB::job_insert_many(&mut *tx, &[job("staged", "q")], false)
        .await
        .unwrap();
    let staged: Vec<(i64, JobState)> = DB::job_list_of_kind(&mut *tx, "staged")
        .await
        .unwrap()
        .into_iter()
        .map(|(job, _)| (job.id, job.state))
        .collect();
    assert_eq!(
        staged,
        [
            (finished, JobState::Discarded),
            (uncommitted[0], JobState::Available)
        ]
    );
    tx.rollback().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        DB::job_list_of_kind(&mut *conn, "staged")
            .await
            .unwrap()
            .len(),
        1
    );
}
