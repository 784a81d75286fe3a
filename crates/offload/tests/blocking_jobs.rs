//! Jobs that block every thread of the worker's runtime (two jobs in
//! `std::thread::sleep` on two threads) stall neither the worker's
//! heartbeat, nor their own timeouts, nor its shutdown, nor the leader's
//! maintenance: those run on the worker's watchdog thread. Each scenario watches the database from the
//! test's own runtime while the worker's is blocked.

#[macro_use]
mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use offload::{JobState, WorkerHandle};
use sqlx::{Pool, Postgres, Sqlite};
use support::blocking::{BlockPastTimeout, BlockThread, Blocking};
use support::{eventually, fast_config, TestDb};

/// The worker row's last heartbeat, in the backend's own unit.
trait HeartbeatAt: TestDb {
    async fn heartbeat_at(pool: &Pool<Self>, worker: &str) -> f64;
}

impl HeartbeatAt for Postgres {
    async fn heartbeat_at(pool: &Pool<Self>, worker: &str) -> f64 {
        sqlx::query_scalar(
            "SELECT extract(epoch FROM heartbeat_at)::float8 FROM offload_workers WHERE id = $1",
        )
        .bind(worker)
        .fetch_one(pool)
        .await
        .expect("worker row")
    }
}

impl HeartbeatAt for Sqlite {
    async fn heartbeat_at(pool: &Pool<Self>, worker: &str) -> f64 {
        sqlx::query_scalar("SELECT CAST(heartbeat_at AS REAL) FROM offload_workers WHERE id = ?1")
            .bind(worker)
            .fetch_one(pool)
            .await
            .expect("worker row")
    }
}

/// Enqueues two jobs and waits until both run: from then on both of the
/// worker's threads are blocked.
fn two_running<DB: TestDb>(t: &Blocking<DB>, enqueue: impl Future<Output = [i64; 2]>) -> [i64; 2] {
    t.test.block_on(async {
        let ids = enqueue.await;
        eventually(Duration::from_secs(10), "both jobs to run", || async {
            support::count_in(&t.db.client, JobState::Running).await == 2
        })
        .await;
        // Both executors are inside `std::thread::sleep` by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ids
    })
}

fn shutdown(t: &Blocking<impl TestDb>, worker: WorkerHandle) -> Duration {
    let started = Instant::now();
    t.worker_runtime.block_on(worker.shutdown());
    started.elapsed()
}

fn heartbeat_scenario<DB: HeartbeatAt>() {
    let t = Blocking::<DB>::new();
    // Lease 1 s, rescue every 200 ms: a stalled heartbeat would be rescued.
    let worker = t.start(fast_config());
    let ids = two_running(&t, async {
        let block = BlockThread { millis: 4_000 };
        let a = t.db.client.enqueue(block).await.unwrap().id;
        let b =
            t.db.client
                .enqueue(BlockThread { millis: 4_000 })
                .await
                .unwrap()
                .id;
        [a, b]
    });
    t.test.block_on(async {
        let before = DB::heartbeat_at(&t.db.pool, worker.id()).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let after = DB::heartbeat_at(&t.db.pool, worker.id()).await;
        assert!(
            after > before,
            "the heartbeat stood still while the jobs blocked the worker's threads"
        );
        for id in ids {
            support::wait_for_state(&t.db.client, id, JobState::Completed).await;
            let job = t.db.client.job(id).await.unwrap().unwrap();
            assert_eq!(
                (job.attempt, job.errors.len()),
                (1, 0),
                "job {id} was rescued from its own live worker: {:?}",
                job.errors
            );
        }
    });
    shutdown(&t, worker);
    t.finish();
}

fn timeout_scenario<DB: TestDb>() {
    let t = Blocking::<DB>::new();
    let worker = t.start(fast_config());
    let ids = two_running(&t, async {
        let a =
            t.db.client
                .enqueue(BlockPastTimeout { millis: 5_000 })
                .await;
        let b =
            t.db.client
                .enqueue(BlockPastTimeout { millis: 5_000 })
                .await;
        [a.unwrap().id, b.unwrap().id]
    });
    let blocked_since = Instant::now();
    t.test.block_on(async {
        // The timeout is 500 ms; the threads sleep for 5 s.
        for id in ids {
            eventually(
                Duration::from_secs(3),
                "the timeout to be recorded",
                || async {
                    let job = t.db.client.job(id).await.unwrap().unwrap();
                    job.errors.iter().any(|e| e.error.contains("timed out"))
                },
            )
            .await;
        }
        assert!(
            blocked_since.elapsed() < Duration::from_millis(4_000),
            "recorded only when the threads woke"
        );
        // Retried (attempt 2 does not block), and the late return of
        // attempt 1 neither completed the row nor recorded a second error.
        for id in ids {
            support::wait_for_state(&t.db.client, id, JobState::Completed).await;
            let job = t.db.client.job(id).await.unwrap().unwrap();
            assert_eq!((job.attempt, job.errors.len()), (2, 1), "{:?}", job.errors);
        }
    });
    shutdown(&t, worker);
    t.finish();
}

fn shutdown_scenario<DB: TestDb>() {
    let t = Blocking::<DB>::new();
    let config = fast_config()
        .shutdown_timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_millis(500));
    let worker = t.start(config);
    let ids = two_running(&t, async {
        let a = t.db.client.enqueue(BlockThread { millis: 8_000 }).await;
        let b = t.db.client.enqueue(BlockThread { millis: 8_000 }).await;
        [a.unwrap().id, b.unwrap().id]
    });
    // Deadline 1 s + 0.5 s + 1 s, up to 1 s to hand the jobs back, and
    // slack for a loaded host; the jobs block for 8 s.
    let took = shutdown(&t, worker);
    assert!(
        took < Duration::from_millis(5_000),
        "shutdown took {took:?} with its jobs' threads blocked"
    );
    t.test.block_on(async {
        for id in ids {
            let job = t.db.client.job(id).await.unwrap().unwrap();
            assert_eq!(job.state, JobState::Available, "job {id} not handed back");
        }
    });
    // When the threads wake, the jobs' late returns change nothing.
    let Blocking {
        test,
        worker_runtime,
        db,
    } = t;
    worker_runtime.shutdown_timeout(Duration::from_secs(20));
    test.block_on(async {
        for id in ids {
            let job = db.client.job(id).await.unwrap().unwrap();
            assert_eq!((job.state, job.attempt), (JobState::Available, 1));
        }
        db.drop_database().await;
    });
}

mod heartbeat_goes_on_while_jobs_block_every_thread {
    #[test]
    fn postgres() {
        super::heartbeat_scenario::<sqlx::Postgres>();
    }
    #[test]
    fn sqlite() {
        super::heartbeat_scenario::<sqlx::Sqlite>();
    }
}

mod timeout_is_recorded_while_the_thread_still_blocks {
    #[test]
    fn postgres() {
        super::timeout_scenario::<sqlx::Postgres>();
    }
    #[test]
    fn sqlite() {
        super::timeout_scenario::<sqlx::Sqlite>();
    }
}

/// The leader's promoter moves a scheduled job to `available` while the
/// worker's threads are blocked (on a queue nobody serves, so only the
/// promoter can touch it).
fn maintenance_scenario<DB: TestDb>() {
    let t = Blocking::<DB>::new();
    let worker = t.start(fast_config());
    t.test.block_on(async {
        eventually(Duration::from_secs(10), "the worker to lead", || async {
            worker.is_leader()
        })
        .await;
    });
    let ids = two_running(&t, async {
        let a = t.db.client.enqueue(BlockThread { millis: 5_000 });
        let a = a.await.unwrap().id;
        let b = t.db.client.enqueue(BlockThread { millis: 5_000 });
        [a, b.await.unwrap().id]
    });
    t.test.block_on(async {
        let later = offload::EnqueueOptions::new()
            .queue("nobody_serves")
            .delay(Duration::from_millis(300));
        let scheduled = t.db.client.enqueue_with(BlockThread { millis: 0 }, later);
        let scheduled = scheduled.await.unwrap().id;
        eventually(Duration::from_secs(2), "the promoter to run", || async {
            let job = t.db.client.job(scheduled).await.unwrap().unwrap();
            job.state == JobState::Available
        })
        .await;
        let still = support::count_in(&t.db.client, JobState::Running).await;
        assert_eq!(still, 2, "promoted while both jobs still blocked: {ids:?}");
    });
    shutdown(&t, worker);
    t.finish();
}

mod maintenance_goes_on_while_jobs_block {
    #[test]
    fn postgres() {
        super::maintenance_scenario::<sqlx::Postgres>();
    }
    #[test]
    fn sqlite() {
        super::maintenance_scenario::<sqlx::Sqlite>();
    }
}

mod shutdown_returns_within_its_bound_while_jobs_block {
    #[test]
    fn postgres() {
        super::shutdown_scenario::<sqlx::Postgres>();
    }
    #[test]
    fn sqlite() {
        super::shutdown_scenario::<sqlx::Sqlite>();
    }
}
