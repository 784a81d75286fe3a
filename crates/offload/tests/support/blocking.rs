//! Jobs that block their thread (`std::thread::sleep` in async code), and a
//! test harness in which they can: the worker runs on a two-thread runtime
//! of its own, and the test watches the database from another runtime, on
//! the test's thread, with its own pool (a connection is driven by the
//! runtime that opened it, so the worker's pool is stalled with it).

use std::time::Duration;

use offload::{Backend, Job, JobContext, JobError, Worker, WorkerConfig, WorkerHandle};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use super::{TestDatabase, TestDb};

/// Blocks its thread for `millis` on its first attempt, then succeeds.
#[derive(Serialize, Deserialize)]
pub struct BlockThread {
    pub millis: u64,
}

impl<DB: Backend> Job<DB> for BlockThread {
    const KIND: &'static str = "block_thread";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            std::thread::sleep(Duration::from_millis(self.millis));
        }
        Ok(())
    }
}

/// Like [`BlockThread`], with a timeout of half a second.
#[derive(Serialize, Deserialize)]
pub struct BlockPastTimeout {
    pub millis: u64,
}

impl<DB: Backend> Job<DB> for BlockPastTimeout {
    const KIND: &'static str = "block_past_timeout";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(500));

    fn backoff(_attempt: i32) -> Duration {
        Duration::from_millis(50)
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            std::thread::sleep(Duration::from_millis(self.millis));
        }
        Ok(())
    }
}

/// A worker's runtime (two threads, as on a two-core host) beside the
/// test's own, each with its own pool on the same fresh database.
pub struct Blocking<DB: TestDb> {
    /// The test's runtime, on the test's thread.
    pub test: Runtime,
    /// The worker's.
    pub worker_runtime: Runtime,
    /// Opened on the test's runtime.
    pub db: TestDatabase<DB>,
}

impl<DB: TestDb> Blocking<DB> {
    pub fn new() -> Self {
        let test = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        let worker_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("worker runtime");
        let db = test.block_on(TestDatabase::<DB>::create());
        Self {
            test,
            worker_runtime,
            db,
        }
    }

    /// Starts a worker serving `default` (two at a time) on the worker's
    /// runtime, with a pool of its own.
    pub fn start(&self, config: WorkerConfig) -> WorkerHandle {
        self.worker_runtime.block_on(async {
            let pool = DB::connect(&self.db.url, 8).await.expect("connect");
            let registry = offload::Registry::new()
                .register::<BlockThread>()
                .register::<BlockPastTimeout>();
            Worker::new(pool, registry, config.queue("default", 2))
                .start()
                .await
                .expect("start")
        })
    }

    /// Stops the worker's runtime, waiting for its blocked threads.
    pub fn finish(self) {
        self.worker_runtime
            .shutdown_timeout(Duration::from_secs(20));
        self.test.block_on(self.db.drop_database());
    }
}
