//! Shared test helpers: real databases, a real worker, and requests sent
//! straight into the router.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use offload::{
    Backend, Client, Job, JobContext, JobError, JobState, NewJob, Registry, Worker, WorkerConfig,
    WorkerHandle,
};
use offload_test_fixture::{FreshBackend, FreshDatabase};
use serde::{Deserialize, Serialize};
use sqlx::{Pool, Sqlite};

/// Runs one generic scenario on a fresh PostgreSQL database (a pool of 5)
/// and on a fresh SQLite file (a pool of 8).
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn postgres() {
                    $crate::support::on_fresh::<sqlx::Postgres, _>(5, super::$scenario).await;
                }

                #[tokio::test]
                async fn sqlite() {
                    $crate::support::on_fresh::<sqlx::Sqlite, _>(8, super::$scenario).await;
                }
            }
        )*
    };
}

/// Runs `scenario` on a fresh, migrated database of `DB`'s kind, with a
/// pool of `connections`; the database goes afterwards.
pub async fn on_fresh<DB: Backend + FreshBackend, F: Future<Output = ()>>(
    connections: u32,
    scenario: fn(Pool<DB>) -> F,
) {
    let connect = |url: String| async move { migrated_pool(&url, connections).await };
    FreshDatabase::with_pool(connect, scenario).await;
}

/// A fresh, migrated database of `DB`'s kind and a pool of `connections`
/// on it (the database goes with the guard).
pub async fn fresh_pool<DB: Backend + FreshBackend>(connections: u32) -> (FreshDatabase, Pool<DB>) {
    let db = FreshDatabase::create::<DB>().await;
    let pool = migrated_pool(db.url(), connections).await;
    (db, pool)
}

/// A migrated SQLite database in a temp directory (kept while the guard lives).
pub async fn sqlite_pool() -> (FreshDatabase, Pool<Sqlite>) {
    fresh_pool(8).await
}

async fn migrated_pool<DB: Backend>(url: &str, connections: u32) -> Pool<DB> {
    let pool = DB::connect(url, connections).await.expect("connect");
    Client::new(pool.clone()).migrate().await.expect("migrate");
    pool
}

/// Fails when `fail` is set; one attempt only, so it ends discarded.
#[derive(Debug, Serialize, Deserialize)]
pub struct Flaky {
    pub fail: bool,
    #[serde(default)]
    pub note: String,
}

impl<DB: Backend> Job<DB> for Flaky {
    const KIND: &'static str = "flaky";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if self.fail {
            Err(JobError::failed(format!("boom: {}", self.note)))
        } else {
            Ok(())
        }
    }
}

/// Runs until cancelled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleeper;

impl<DB: Backend> Job<DB> for Sleeper {
    const KIND: &'static str = "sleeper";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        ctx.cancelled().await;
        Err(JobError::cancel("stopped by signal"))
    }
}

pub async fn start_worker<DB: Backend>(pool: &Pool<DB>, queues: &[&str]) -> WorkerHandle {
    let registry = Registry::new().register::<Flaky>().register::<Sleeper>();
    let mut config = WorkerConfig::default().poll_interval(Some(Duration::from_millis(50)));
    for queue in queues {
        config = config.queue(*queue, 4);
    }
    Worker::new(pool.clone(), registry, config)
        .start()
        .await
        .expect("worker starts")
}

/// Waits until no job is available, scheduled-due, retryable or running.
pub async fn wait_idle<DB: Backend>(pool: &Pool<DB>) {
    let client = Client::new(pool.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = client.count_by_state(None).await.expect("counts");
        let busy: i64 = counts
            .iter()
            .filter(|(state, _)| {
                matches!(
                    state,
                    JobState::Available | JobState::Running | JobState::Retryable
                )
            })
            .map(|(_, n)| n)
            .sum();
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "jobs still busy: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until job `id` is in `state`.
pub async fn wait_for_state<DB: Backend>(pool: &Pool<DB>, id: i64, state: JobState) {
    let client = Client::new(pool.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = client.job(id).await.expect("fetch").expect("job exists");
        if job.state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stayed {} (wanted {state})",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts jobs of kind `flaky` with the given queue, failure flag and tags.
pub async fn insert<DB: Backend>(pool: &Pool<DB>, jobs: &[(&str, bool, &[&str])]) -> Vec<i64> {
    let rows: Vec<NewJob> = jobs
        .iter()
        .map(|(queue, fail, tags)| {
            let mut job = NewJob::new(
                "flaky",
                serde_json::json!({ "fail": fail, "note": format!("in {queue}") }).to_string(),
            );
            job.queue = (*queue).to_owned();
            job.max_attempts = 1;
            job.tags = tags.iter().map(|t| (*t).to_owned()).collect();
            job
        })
        .collect();
    let enqueued = Client::new(pool.clone()).insert(&rows).await;
    enqueued.expect("insert").iter().map(|job| job.id).collect()
}
