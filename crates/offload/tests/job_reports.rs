//! What a worker says about its jobs, and how much: a runtime stalled by a
//! blocking job is logged and counted, a huge error is logged cut like its
//! stored copy, and a caught job panic prints nothing through the panic
//! hook. The log and the metrics are captured process-wide, since the
//! watchdog and the executors log from their own threads.

#[macro_use]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use offload::{Backend, Job, JobContext, JobError, JobState, Registry, Worker};
use serde::{Deserialize, Serialize};
use sqlx::Sqlite;
use support::blocking::{BlockThread, Blocking};
use support::{fast_config, wait_for_state, TestDatabase};

/// Everything logged in this process, and its metrics.
struct Captured {
    log: Arc<Mutex<Vec<u8>>>,
    metrics: Snapshotter,
}

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = LogBuffer(log.clone());
        tracing_subscriber::fmt()
            .with_env_filter("offload=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        let recorder = DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder in this binary");
        Captured { log, metrics }
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured().log.lock().unwrap()).into_owned()
}

/// The counters named `names`, summed over their labels, from one
/// snapshot (a snapshot drains the debugging recorder's counters).
fn counters<const N: usize>(names: [&str; N]) -> [u64; N] {
    let mut sums = [0; N];
    for (key, .., value) in captured().metrics.snapshot().into_vec() {
        if let (Some(i), DebugValue::Counter(n)) = (
            names.iter().position(|name| *name == key.key().name()),
            value,
        ) {
            sums[i] += n;
        }
    }
    sums
}

#[test]
fn stalled_runtime_is_logged_and_counted() {
    captured();
    let t = Blocking::<Sqlite>::new();
    let worker = t.start(fast_config());
    t.test.block_on(async {
        let a = t.db.client.enqueue(BlockThread { millis: 2_500 }).await;
        let b = t.db.client.enqueue(BlockThread { millis: 2_500 }).await;
        for id in [a.unwrap().id, b.unwrap().id] {
            wait_for_state(&t.db.client, id, JobState::Completed).await;
        }
    });
    t.worker_runtime.block_on(worker.shutdown());
    t.finish();
    let log = log_text();
    assert!(
        log.contains("the worker's runtime has run no task for"),
        "no stall in the log:\n{log}"
    );
    assert!(log.contains("a job has been inside one poll for"));
    let [stalls, blocking] = counters([
        "offload_runtime_stalls_total",
        "offload_blocking_polls_total",
    ]);
    assert!(
        stalls >= 1 && blocking >= 2,
        "{stalls} stalls, {blocking} blocking polls:\n{log}"
    );
}

/// Fails on its only attempt with a 10 MiB message holding a NUL byte.
#[derive(Serialize, Deserialize)]
struct HugeError;

impl<DB: Backend> Job<DB> for HugeError {
    const KIND: &'static str = "huge_error";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        Err(JobError::failed(format!(
            "huge-error-start{}\0huge-error-end",
            "x".repeat(10 << 20)
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_job_error_is_logged_cut_like_its_stored_copy() {
    captured();
    let db = TestDatabase::<Sqlite>::create().await;
    let registry = Registry::new().register::<HugeError>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let id = db.client.enqueue(HugeError).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    worker.shutdown().await;
    let stored = db.client.job(id).await.unwrap().unwrap().errors[0]
        .error
        .clone();
    db.drop_database().await;

    let log = captured().log.lock().unwrap().clone();
    assert!(!log.contains(&0), "a raw NUL byte reached the log");
    let log = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("huge-error-start"))
        .collect();
    assert!(!lines.is_empty(), "the error was not logged");
    for line in lines {
        assert!(
            line.len() < stored.len() + 1024,
            "a {} byte log line for a {} byte stored error",
            line.len(),
            stored.len()
        );
        assert!(line.contains("(truncated)"));
    }
}

/// Panics with a message only this test uses.
#[derive(Serialize, Deserialize)]
struct Panics;

const PANIC_MESSAGE: &str = "job-panic-7f3c";
const OTHER_PANIC: &str = "outside-any-job-91d2";
const BLOCKING_PANIC: &str = "blocking-work-panic-5e1a";

impl<DB: Backend> Job<DB> for Panics {
    const KIND: &'static str = "panics";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        panic!("{PANIC_MESSAGE}");
    }
}

/// Its `ctx.blocking` work panics: caught and recorded like a job's own.
#[derive(Serialize, Deserialize)]
struct PanicsInBlockingWork;

impl<DB: Backend> Job<DB> for PanicsInBlockingWork {
    const KIND: &'static str = "panics_in_blocking_work";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        ctx.blocking(|| panic!("{BLOCKING_PANIC}")).await
    }
}

/// The child half of the next test: a worker runs a panicking job, then a
/// panic outside any job is caught; the parent reads this process's stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_job_child() {
    if std::env::var_os("OFFLOAD_PANIC_CHILD").is_none() {
        return;
    }
    let db = TestDatabase::<Sqlite>::create().await;
    let worker = Worker::new(
        db.pool.clone(),
        Registry::new()
            .register::<Panics>()
            .register::<PanicsInBlockingWork>(),
        fast_config(),
    )
    .start()
    .await
    .unwrap();
    let id = db.client.enqueue(Panics).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(job.errors[0].error.contains(PANIC_MESSAGE));
    let id = db.client.enqueue(PanicsInBlockingWork).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(
        job.errors[0].error.contains(BLOCKING_PANIC),
        "{:?}",
        job.errors
    );
    worker.shutdown().await;
    db.drop_database().await;
    // Other panics still reach the hook installed before the worker's.
    let _ = std::panic::catch_unwind(|| panic!("{OTHER_PANIC}"));
}

#[test]
fn caught_job_panic_prints_nothing_through_the_panic_hook() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "panicking_job_child", "--nocapture"])
        .env("OFFLOAD_PANIC_CHILD", "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "the child failed:\n{stderr}");
    assert!(
        !stderr.contains(PANIC_MESSAGE),
        "the job's panic was printed:\n{stderr}"
    );
    assert!(
        !stderr.contains(BLOCKING_PANIC),
        "the job's blocking work's panic was printed:\n{stderr}"
    );
    assert!(
        stderr.contains(OTHER_PANIC),
        "other panics went silent:\n{stderr}"
    );
}

/// The watchdog opens its own pool from the worker pool's options: on an
/// in-memory SQLite database (shared cache, named by sqlx) it must reach
/// the same database, or the heartbeat fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sqlite_worker_heartbeats_from_its_watchdog() {
    captured();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    offload::Client::new(pool.clone()).migrate().await.unwrap();
    let worker = Worker::new(pool.clone(), Registry::new(), fast_config())
        .start()
        .await
        .unwrap();
    let heartbeat = || async {
        sqlx::query_scalar::<_, i64>("SELECT heartbeat_at FROM offload_workers WHERE id = ?1")
            .bind(worker.id())
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first = heartbeat().await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        heartbeat().await > first,
        "the watchdog's heartbeat missed the database"
    );
    worker.shutdown().await;
    assert!(!log_text().contains("heartbeat failed"), "{}", log_text());
}
