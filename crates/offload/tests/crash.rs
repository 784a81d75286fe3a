//! A worker process killed with SIGKILL mid-job: another worker rescues its
//! jobs, and each job's effect commits exactly once.

#[macro_use]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offload::{JobState, Worker};
use sqlx::{Postgres, Sqlite};
use support::jobs::{registry, SlowEffect};
use support::{count_in, eventually, fast_config, TestDatabase, TestDb};

const JOBS: usize = 200;

/// Not a test on its own: the worker process the crash tests spawn and kill.
#[test]
#[ignore = "run by the crash tests as a child process"]
fn child_worker_process() {
    let (Ok(url), Ok(backend)) = (
        std::env::var("OFFLOAD_CHILD_URL"),
        std::env::var("OFFLOAD_CHILD_BACKEND"),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        match backend.as_str() {
            "postgres" => serve::<Postgres>(&url).await,
            _ => serve::<Sqlite>(&url).await,
        }
    });
}

async fn serve<DB: TestDb>(url: &str) {
    let pool = DB::connect(url, 16).await.expect("child connects");
    let config = fast_config().queue("default", 8);
    let _worker = Worker::new(pool, registry::<DB>(), config)
        .start()
        .await
        .expect("child starts");
    // Runs until killed.
    std::future::pending::<()>().await;
}

fn spawn_child(url: &str, backend: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_worker_process",
            "--ignored",
            "--nocapture",
        ])
        .env("OFFLOAD_CHILD_URL", url)
        .env("OFFLOAD_CHILD_BACKEND", backend)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

async fn killed_worker_jobs_are_rescued_and_complete_once<DB: TestDb>(
    db: &TestDatabase<DB>,
    backend: &str,
) {
    db.client
        .enqueue_many((0..JOBS).map(|_| SlowEffect { millis: 60 }))
        .await
        .unwrap();
    let mut child = spawn_child(&db.url, backend);

    eventually(
        Duration::from_secs(60),
        "the child to complete some jobs",
        || async {
            DB::effects(&db.pool).await.0 >= 40 && count_in(&db.client, JobState::Running).await > 0
        },
    )
    .await;
    child.kill().expect("SIGKILL the worker process");
    child.wait().expect("reap it");
    let orphaned = count_in(&db.client, JobState::Running).await;
    assert!(orphaned > 0, "the child died holding running jobs");

    let killed_at = Instant::now();
    let worker = Worker::new(
        db.pool.clone(),
        registry::<DB>(),
        fast_config().queue("default", 8),
    )
    .start()
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "orphaned jobs rescued", || async {
        count_in(&db.client, JobState::Running).await == 0
            || DB::effects(&db.pool).await.0 >= JOBS as i64
    })
    .await;
    let rescued_in = killed_at.elapsed();
    eventually(Duration::from_secs(60), "every job completed", || async {
        count_in(&db.client, JobState::Completed).await == JOBS as i64
    })
    .await;
    worker.shutdown().await;

    assert_eq!(
        DB::effects(&db.pool).await,
        (JOBS as i64, JOBS as i64),
        "each effect exactly once"
    );
    assert_eq!(DB::counter(&db.pool).await, JOBS as i64);
    eprintln!("{backend}: {orphaned} jobs orphaned by SIGKILL, rescued within {rescued_in:?}");
    assert!(
        rescued_in < Duration::from_secs(15),
        "rescued within seconds, took {rescued_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_jobs_are_rescued_and_complete_once_postgres() {
    let db = TestDatabase::<Postgres>::create().await;
    killed_worker_jobs_are_rescued_and_complete_once(&db, "postgres").await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_jobs_are_rescued_and_complete_once_sqlite() {
    let db = TestDatabase::<Sqlite>::create().await;
    killed_worker_jobs_are_rescued_and_complete_once(&db, "sqlite").await;
    db.drop_database().await;
}
