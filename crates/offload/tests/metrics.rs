//! Job outcomes and latencies reach whatever metrics recorder the
//! application installs.

#[macro_use]
mod support;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use offload::{JobState, NewJob, Worker};
use sqlx::Sqlite;
use support::jobs::{registry, ApplyEffect, Noop};
use support::{fast_config, wait_for_state, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_outcomes_and_latencies_are_recorded_as_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");

    let db = TestDatabase::<Sqlite>::create().await;
    let worker = Worker::new(db.pool.clone(), registry::<Sqlite>(), fast_config())
        .start()
        .await
        .unwrap();
    let in_tx = db.client.enqueue(ApplyEffect).await.unwrap().id;
    let batched = db.client.enqueue(Noop { n: 7 }).await.unwrap().id;
    let unknown = db
        .client
        .insert(&[NewJob {
            max_attempts: 1,
            ..NewJob::new("no_such_kind", "{}")
        }])
        .await
        .unwrap()[0]
        .id;
    wait_for_state(&db.client, in_tx, JobState::Completed).await;
    wait_for_state(&db.client, batched, JobState::Completed).await;
    wait_for_state(&db.client, unknown, JobState::Discarded).await;
    worker.shutdown().await;
    db.drop_database().await;

    let mut completed = 0;
    let mut waits = 0;
    let mut capacity = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let has = |k: &str, v: &str| labels.iter().any(|(lk, lv)| lk == k && lv == v);
        match (key.kind(), key.key().name(), value) {
            (MetricKind::Counter, "offload_jobs_total", DebugValue::Counter(n))
                if has("outcome", "completed") =>
            {
                completed += n
            }
            (MetricKind::Histogram, "offload_job_wait_seconds", DebugValue::Histogram(v)) => {
                waits += v.len()
            }
            (MetricKind::Gauge, "offload_worker_capacity", DebugValue::Gauge(v)) => {
                capacity = Some(v.into_inner())
            }
            _ => {}
        }
    }
    assert_eq!(completed, 2, "two jobs completed");
    assert_eq!(waits, 2, "a wait recorded for each job that started");
    assert_eq!(capacity, Some(10.0), "default queue capacity");
}
