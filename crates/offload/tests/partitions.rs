//! Partitioned queues under a backlog, against real PostgreSQL and real
//! SQLite: a key that enqueues after another key's 100,000 jobs starts its
//! jobs within a second, where a plain queue makes it wait its turn.

#[macro_use]
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload::{Partition, QueueConfig, Worker, WorkerConfig};
use support::jobs::{registry, Keyed, KEYED_QUEUE};
use support::{eventually, fast_config, TestDatabase, TestDb};

on_both_backends!(a_key_behind_a_backlog_of_another_starts_within_a_second);

const BACKLOG: usize = 100_000;
const LATE_JOBS: usize = 100;
const CONCURRENCY: usize = 16;
const JOB_MS: u64 = 5;

fn keyed(key: &str, n: usize) -> Vec<Keyed> {
    (0..n)
        .map(|_| Keyed {
            key: key.to_owned(),
            ms: JOB_MS,
        })
        .collect()
}

async fn start<DB: TestDb>(db: &TestDatabase<DB>, config: WorkerConfig) -> offload::WorkerHandle {
    Worker::new(db.pool.clone(), registry::<DB>(), config)
        .start()
        .await
        .expect("worker starts")
}

/// How long after its enqueue each job started, for those that did.
async fn start_delays<DB: TestDb>(
    db: &TestDatabase<DB>,
    jobs: &[offload::Enqueued],
) -> Vec<Duration> {
    let mut delays = Vec::new();
    for enqueued in jobs {
        let job = db.client.job(enqueued.id).await.unwrap().expect("job");
        let started: Option<DateTime<Utc>> = job.attempted_at;
        if let Some(started) = started {
            delays.push((started - job.created_at).to_std().unwrap_or_default());
        }
    }
    delays.sort();
    delays
}

async fn completed<DB: TestDb>(db: &TestDatabase<DB>) -> i64 {
    support::count_in(&db.client, offload::JobState::Completed).await
}

async fn a_key_behind_a_backlog_of_another_starts_within_a_second<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let label = <DB as sqlx::Database>::NAME;
    db.client.enqueue_many(keyed("a", BACKLOG)).await.unwrap();

    // A plain queue: the late key's jobs wait behind the backlog.
    let plain = start(db, fast_config().queue(KEYED_QUEUE, CONCURRENCY)).await;
    eventually(
        Duration::from_secs(30),
        "the backlog is draining",
        || async { completed(db).await >= 200 },
    )
    .await;
    let waiting = db.client.enqueue_many(keyed("b", LATE_JOBS)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = start_delays(db, &waiting).await.len();
    plain.shutdown().await;
    assert_eq!(started, 0, "{label}: a plain queue runs the backlog first");

    // Partitioned: keys take turns.
    let turns = QueueConfig::new(KEYED_QUEUE, CONCURRENCY).partition(Partition::new());
    let partitioned = start(db, fast_config().queue_config(turns)).await;
    let done_before = completed(db).await;
    eventually(Duration::from_secs(30), "the worker is busy", || async {
        completed(db).await >= done_before + 200
    })
    .await;
    let late = db.client.enqueue_many(keyed("c", LATE_JOBS)).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "every late job started",
        || async { start_delays(db, &late).await.len() == LATE_JOBS },
    )
    .await;
    partitioned.shutdown().await;
    let delays = start_delays(db, &late).await;
    let p50 = delays[LATE_JOBS / 2 - 1];
    let p99 = delays[LATE_JOBS * 99 / 100 - 1];
    let backlog_left = db
        .client
        .count_by_state(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|(state, _)| *state == offload::JobState::Available)
        .map(|(_, n)| n)
        .sum::<i64>();
    eprintln!(
        "{label}: {LATE_JOBS} jobs of key c behind {backlog_left} available jobs, concurrency \
         {CONCURRENCY}, {JOB_MS} ms jobs: start delay p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays[LATE_JOBS - 1]
    );
    assert!(
        backlog_left > 10_000,
        "{label}: the backlog must still be there"
    );
    assert!(p99 < Duration::from_secs(1), "{label}: p99 {p99:?}");
}
