//! SQLite under faults (issue 13): eight processes on one file, SIGKILL
//! mid-write, a disk that fills up and is freed. Each scenario ends with
//! the same invariants: every acknowledged enqueue completed, every
//! completed job has exactly one effect (committed with its completion),
//! none left running, none failed or discarded, and no recorded error is
//! SQLite's "database is locked".
//!
//! `OFFLOAD_SQLITE_FAULT_JOBS` scales the drains (jobs per enqueuer,
//! default 1,000).

mod support;

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use offload::{Backend as _, Client, Job, JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};
use sqlx::{Sqlite, SqlitePool};
use support::jobs::{registry, RecordEffect};
use support::processes::{busy_lines, Children, ACK, ENQUEUED_ALL, ENQUEUE_ENV, URL_ENV};
use support::{fast_config, TestDatabase, TestDb};

const CHILD: &str = "sqlite_fault_worker_process";
const PROCESSES: usize = 8;
/// Children that enqueue while they work; the parent enqueues too.
const ENQUEUERS: usize = 4;
/// Pool of each child: a few readers beside the group-commit writer.
const CHILD_CONNECTIONS: u32 = 4;

fn jobs_per_enqueuer() -> usize {
    std::env::var("OFFLOAD_SQLITE_FAULT_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Writes one effect row of `bytes` bytes: enough of them fill a disk.
#[derive(Serialize, Deserialize)]
struct BigEffect {
    bytes: i64,
}

impl Job<Sqlite> for BigEffect {
    const KIND: &'static str = "big_effect";
    // It must outlast a full disk, retrying, not be discarded.
    const MAX_ATTEMPTS: i32 = 10_000;

    fn backoff(_attempt: i32) -> Duration {
        Duration::from_millis(100)
    }

    async fn run(self, ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
        let id = ctx.id();
        sqlx::query("INSERT INTO big_effects (job_id, payload) VALUES (?1, zeroblob(?2))")
            .bind(id)
            .bind(self.bytes)
            .execute(ctx.tx().await?)
            .await?;
        Ok(())
    }
}

/// Not a test on its own: a worker process of the scenarios below, which
/// enqueues `ENQUEUE_ENV` jobs one by one while it works.
#[test]
#[ignore = "run by the SQLite fault tests as a child process"]
fn sqlite_fault_worker_process() {
    let Ok(url) = std::env::var(URL_ENV) else {
        return;
    };
    let enqueue: usize = std::env::var(ENQUEUE_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let pool = Sqlite::connect(&url, CHILD_CONNECTIONS)
            .await
            .expect("child connects");
        let jobs = registry::<Sqlite>().register::<BigEffect>();
        let _worker = Worker::new(pool.clone(), jobs, fast_config())
            .start()
            .await
            .expect("worker starts");
        let client = Client::new(pool);
        for _ in 0..enqueue {
            match client.enqueue(RecordEffect).await {
                Ok(job) => println!("{ACK}{}", job.id),
                Err(error) => tracing::error!(%error, "enqueue failed"),
            }
        }
        println!("{ENQUEUED_ALL}");
        std::future::pending::<()>().await;
    });
}

/// Serializes the scenarios: each loads both cores on its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A number in `0..n`, different each call.
fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n
}

/// A random child that holds running jobs, or any child if none does.
async fn mid_write(pool: &SqlitePool, children: &Children) -> usize {
    let mut busy = Vec::new();
    for index in 0..children.len() {
        if Sqlite::running_of_pid(pool, children.pid(index))
            .await
            .unwrap_or(0)
            > 0
        {
            busy.push(index);
        }
    }
    if busy.is_empty() {
        return random_below(children.len() as u64) as usize;
    }
    busy[random_below(busy.len() as u64) as usize]
}

async fn scalar(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Jobs not yet finished, or `None` while the file cannot be read.
async fn unfinished(pool: &SqlitePool) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM offload_jobs WHERE state <> 'completed'")
        .fetch_one(pool)
        .await
        .ok()
}

/// What the invariants found, for the report.
struct Checked {
    jobs: i64,
    /// Jobs with a recorded error (a failed attempt, a full disk).
    with_errors: i64,
    /// Jobs that ran more than once (rescued after a kill, retried).
    reruns: i64,
    /// The latest recorded error of one job, if any.
    sample_error: Option<String>,
}

/// The invariants, once the drain is over: `effects` is the table the
/// jobs wrote, one row per job run that committed.
async fn check_invariants(pool: &SqlitePool, acked: &[i64], effects: &str) -> Checked {
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM offload_jobs GROUP BY state")
            .fetch_all(pool)
            .await
            .expect("states");
    let jobs = states.iter().map(|(_, n)| n).sum::<i64>();
    assert_eq!(
        states,
        vec![("completed".to_owned(), jobs)],
        "every job completed: none running, failed or discarded"
    );
    let completed: Vec<i64> = sqlx::query_scalar("SELECT id FROM offload_jobs")
        .fetch_all(pool)
        .await
        .expect("ids");
    let completed = BTreeSet::from_iter(completed);
    let lost: Vec<_> = acked.iter().filter(|id| !completed.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
    let distinct = BTreeSet::from_iter(acked.iter().copied()).len();
    assert_eq!(distinct, acked.len(), "an id acknowledged twice");

    let rows = scalar(pool, &format!("SELECT count(*) FROM {effects}")).await;
    let once = scalar(
        pool,
        &format!("SELECT count(DISTINCT job_id) FROM {effects}"),
    )
    .await;
    assert_eq!((rows, once), (jobs, jobs), "exactly one effect per job");
    let orphans = format!(
        "SELECT count(*) FROM {effects} e WHERE NOT EXISTS \
         (SELECT 1 FROM offload_jobs j WHERE j.id = e.job_id)"
    );
    assert_eq!(scalar(pool, &orphans).await, 0, "effects of unknown jobs");

    let busy: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, errors FROM offload_jobs WHERE lower(errors) LIKE '%database is locked%' \
         OR lower(errors) LIKE '%sqlite_busy%' OR lower(errors) LIKE '%(code: 5)%'",
    )
    .fetch_all(pool)
    .await
    .expect("errors");
    assert!(busy.is_empty(), "jobs failed on a busy database: {busy:?}");
    let with_errors = scalar(
        pool,
        "SELECT count(*) FROM offload_jobs WHERE errors <> '[]'",
    )
    .await;
    let reruns = scalar(pool, "SELECT count(*) FROM offload_jobs WHERE attempt > 1").await;
    let sample_error = sqlx::query_scalar(
        "SELECT json_extract(errors, '$[#-1].error') FROM offload_jobs WHERE errors <> '[]' LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .expect("an error");
    Checked {
        jobs,
        with_errors,
        reruns,
        sample_error,
    }
}

/// Eight processes work one file while four of them and the parent
/// enqueue; during the drain `kills` of them are SIGKILLed at random moments
/// and restarted (to enqueue what they had not).
async fn eight_processes_drain(kills: usize) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let per = jobs_per_enqueuer();
    let db = TestDatabase::<Sqlite>::create().await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut children = Children::new(CHILD, &db.url, logs.path());
    let started = Instant::now();
    for index in 0..PROCESSES {
        children.spawn(if index < ENQUEUERS { per } else { 0 });
    }
    let client = db.client.clone();
    let parent = tokio::spawn(async move {
        let mut acked = Vec::new();
        for _ in 0..per {
            acked.push(
                client
                    .enqueue(RecordEffect)
                    .await
                    .expect("parent enqueues")
                    .id,
            );
        }
        acked
    });

    let planned = (per * (ENQUEUERS + 1)) as i64;
    let limit = Duration::from_secs(90);
    let mut next_kill = Instant::now() + Duration::from_millis(300);
    loop {
        children.assert_alive();
        // Every acknowledged job is in the file before it is counted.
        let enqueued = parent.is_finished() && children.enqueued_all();
        let total = scalar(&db.pool, "SELECT count(*) FROM offload_jobs").await;
        let left = unfinished(&db.pool).await.unwrap_or(i64::MAX);
        if enqueued && left == 0 {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "drain stalled: {left} of {total} unfinished after {limit:?}"
        );
        if children.kills < kills && Instant::now() >= next_kill {
            let victim = mid_write(&db.pool, &children).await;
            children.kill_and_restart(victim);
            next_kill = Instant::now() + Duration::from_millis(200 + random_below(600));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    children.assert_alive();
    children.stop();
    let mut acked = children.acked();
    acked.extend(parent.await.expect("parent enqueue task"));
    let checked = check_invariants(&db.pool, &acked, "effects").await;
    let child_logs = children.logs();
    let busy = busy_lines(&child_logs);
    let failed_enqueues = child_logs.matches("enqueue failed").count();
    eprintln!(
        "sqlite {PROCESSES} processes, {kills} SIGKILLs: {} jobs ({} acknowledged) drained in \
         {elapsed:.1?} ({:.0} jobs/s, enqueue included); {} ran again, {} with recorded errors; \
         {} busy lines in the children's logs, {failed_enqueues} failed enqueues{}; \
         a recorded error: {:?}",
        checked.jobs,
        acked.len(),
        checked.jobs as f64 / elapsed.as_secs_f64(),
        checked.reruns,
        checked.with_errors,
        busy.len(),
        busy.first()
            .map(|l| format!("; first: {l}"))
            .unwrap_or_default(),
        checked.sample_error,
    );
    assert_eq!(
        children.kills, kills,
        "the drain lasted long enough for the kills"
    );
    if kills > 0 {
        assert!(checked.reruns > 0, "no kill caught a job running");
    }
    assert_eq!(failed_enqueues, 0, "no enqueue failed: {busy:?}");
    // A kill between an enqueue's commit and its ack adds one job.
    assert!(
        (planned..=planned + kills as i64).contains(&checked.jobs),
        "{} jobs, {planned} planned",
        checked.jobs
    );
    assert!(!child_logs.contains("panicked"), "a child panicked");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_on_one_file_lose_and_fail_nothing() {
    eight_processes_drain(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_reruns_rescued_jobs_with_effects_once() {
    eight_processes_drain(6).await;
}

/// Sizes for the full disk: the ballast leaves less room than the jobs'
/// effects need, and freeing it leaves enough for them and the WAL.
const DISK: &str = "16m";
const BALLAST_BYTES: usize = 12 << 20;
const BIG_JOBS: usize = 48;
const EFFECT_BYTES: i64 = 128 << 10;
/// One each 100 ms: the disk stays full past the worker's 1 s lease.
const ENQUEUES_WHILE_FULL: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_jobs_without_losing_them_until_it_is_freed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let disk = offload_test_fixture::TinyDisk::mount(DISK);
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; BALLAST_BYTES]).expect("ballast");
    let url = format!("sqlite://{}/faults.db", disk.path().display());
    let pool = Sqlite::connect(&url, 4).await.expect("connect");
    let client = Client::new(pool.clone());
    client.migrate().await.expect("migrate");
    Sqlite::create_app_tables(&pool).await;
    sqlx::query("CREATE TABLE big_effects (job_id INTEGER NOT NULL, payload BLOB NOT NULL)")
        .execute(&pool)
        .await
        .expect("effects table");
    let mut acked = Vec::new();
    for _ in 0..BIG_JOBS {
        let job = BigEffect {
            bytes: EFFECT_BYTES,
        };
        acked.push(client.enqueue(job).await.expect("enqueue").id);
    }

    let logs = tempfile::tempdir().expect("log dir");
    let mut children = Children::new(CHILD, &url, logs.path());
    children.spawn(0);
    let started = Instant::now();
    let recorded_full = "SELECT count(*) FROM offload_jobs WHERE errors LIKE '%disk is full%'";
    while !children.logs().contains("or disk is full") && scalar(&pool, recorded_full).await == 0 {
        children.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the disk never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let full_at = started.elapsed();
    // Full for a while: the worker lives on and enqueues either go in or
    // fail, never half.
    let mut refused = 0;
    for _ in 0..ENQUEUES_WHILE_FULL {
        match client.enqueue(BigEffect { bytes: 1 }).await {
            Ok(job) => acked.push(job.id),
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        children.assert_alive();
    }
    let stalled = unfinished(&pool).await.expect("reads on a full disk");
    assert!(stalled > 0, "the full disk stopped no job");

    std::fs::remove_file(&ballast).expect("free the disk");
    let freed = Instant::now();
    loop {
        children.assert_alive();
        if unfinished(&pool).await == Some(0) {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(40),
            "jobs never completed after the disk was freed: {:?} left",
            unfinished(&pool).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_in = freed.elapsed();
    children.stop();
    let checked = check_invariants(&pool, &acked, "big_effects").await;
    let child_logs = children.logs();
    let full_lines = child_logs.matches("or disk is full").count();
    eprintln!(
        "sqlite full disk ({DISK}, {} MiB ballast): full after {full_at:.1?}, {stalled} jobs \
         stalled, {refused} of {ENQUEUES_WHILE_FULL} enqueues refused while full, {full_lines} disk-full log lines, \
         {} jobs with recorded errors (e.g. {:?}); all {} completed {drained_in:.1?} after \
         freeing; {} busy lines",
        BALLAST_BYTES >> 20,
        checked.with_errors,
        checked.sample_error,
        checked.jobs,
        busy_lines(&child_logs).len(),
    );
    assert!(full_lines > 0, "the worker logged no disk-full error");
    assert!(!child_logs.contains("panicked"), "the worker panicked");
    pool.close().await;
}
