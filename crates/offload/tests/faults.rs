//! Faults and edge cases (issue 13): each scenario once failed, and runs on
//! real PostgreSQL and SQLite.

#[macro_use]
mod support;

use std::time::Duration;

use offload::{Job, JobContext, JobError, JobState, NewJob, Registry, Retention, Worker};
use serde::{Deserialize, Serialize};
use support::jobs::{registry, CancelsItself, Noop};
use support::{eventually, fast_config, state_of, wait_for_state, TestDatabase, TestDb};

on_both_backends!(
    a_retention_of_forever_still_prunes_the_other_states,
    a_snooze_or_backoff_of_duration_max_is_recorded,
    a_worker_stopped_right_after_it_starts_leaves_no_leader_row,
    poisoned_rows_are_discarded_with_a_reason_and_the_worker_goes_on,
    nul_bytes_in_args_and_errors_lose_nothing,
);

async fn a_retention_of_forever_still_prunes_the_other_states<DB: TestDb>(db: &TestDatabase<DB>) {
    let config = fast_config()
        .retention(
            Retention::default()
                .completed(Duration::MAX)
                .cancelled(Duration::from_millis(100)),
        )
        .prune_interval(Duration::from_millis(100));
    let worker = Worker::new(db.pool.clone(), registry::<DB>(), config)
        .start()
        .await
        .unwrap();
    let kept = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    let pruned = db.client.enqueue(CancelsItself).await.unwrap().id;
    wait_for_state(&db.client, kept, JobState::Completed).await;
    eventually(
        Duration::from_secs(10),
        "the cancelled job pruned",
        || async { db.client.job(pruned).await.unwrap().is_none() },
    )
    .await;
    worker.shutdown().await;
    assert_eq!(state_of(&db.client, kept).await, JobState::Completed);
}

/// Asks for the longest delay there is, by snoozing or by failing.
#[derive(Serialize, Deserialize)]
struct WaitsForever {
    snooze: bool,
}

impl<DB: TestDb> Job<DB> for WaitsForever {
    const KIND: &'static str = "waits_forever";

    fn backoff(_: i32) -> Duration {
        Duration::MAX
    }

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        if self.snooze {
            Err(JobError::snooze(Duration::MAX))
        } else {
            Err(JobError::failed("later, much later"))
        }
    }
}

async fn a_snooze_or_backoff_of_duration_max_is_recorded<DB: TestDb>(db: &TestDatabase<DB>) {
    let registry = Registry::<DB>::new()
        .register::<WaitsForever>()
        .register::<Noop>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let snoozed = db
        .client
        .enqueue(WaitsForever { snooze: true })
        .await
        .unwrap()
        .id;
    let failed = db
        .client
        .enqueue(WaitsForever { snooze: false })
        .await
        .unwrap()
        .id;
    // Before the fix the executor panicked and both stayed `running`.
    wait_for_state(&db.client, snoozed, JobState::Scheduled).await;
    wait_for_state(&db.client, failed, JobState::Retryable).await;
    for id in [snoozed, failed] {
        let job = db.client.job(id).await.unwrap().unwrap();
        assert!(
            job.run_at > chrono::Utc::now() + chrono::Duration::days(365 * 100),
            "{id} runs again in the far future, not {}",
            job.run_at
        );
    }
    // The worker still runs jobs.
    let after = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    worker.shutdown().await;
}

async fn a_worker_stopped_right_after_it_starts_leaves_no_leader_row<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    // A long TTL: a row left behind would block the next leader for a minute.
    let config = || fast_config().leader_ttl(Duration::from_secs(60));
    let mut kept = 0;
    for cycle in 0..20 {
        let worker = Worker::new(db.pool.clone(), registry::<DB>(), config())
            .start()
            .await
            .unwrap();
        // Stop at a different moment of the first election each time.
        tokio::time::sleep(Duration::from_micros(200 * cycle)).await;
        let id = worker.id().to_owned();
        worker.shutdown().await;
        if let Some(leader) = db.client.leader().await.unwrap() {
            assert_eq!(leader.leader_id, id, "only this worker ran");
            kept += 1;
        }
    }
    assert_eq!(kept, 0, "stopped workers that kept their leader row");
    // And the next worker leads at once.
    let worker = Worker::new(db.pool.clone(), registry::<DB>(), config())
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), worker.wait_for_leadership())
        .await
        .expect("leads within 5 s, not after the 60 s TTL");
    worker.shutdown().await;
}

async fn poisoned_rows_are_discarded_with_a_reason_and_the_worker_goes_on<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let worker = Worker::new(db.pool.clone(), registry::<DB>(), fast_config())
        .start()
        .await
        .unwrap();
    // Rows written by hand or by another program: args that are not the
    // kind's (an array, a string, null, an object missing a field).
    let mut ids = Vec::new();
    for args in ["[1, 2, 3]", "\"text\"", "null", "{}"] {
        let row = NewJob::new("noop", args);
        ids.push((args, db.client.insert(&[row]).await.unwrap()[0].id));
    }
    for (args, id) in &ids {
        wait_for_state(&db.client, *id, JobState::Discarded).await;
        let job = db.client.job(*id).await.unwrap().unwrap();
        assert!(
            job.errors[0]
                .error
                .contains("args do not decode as job kind `noop`"),
            "{args}: {:?}",
            job.errors
        );
        assert_eq!(job.attempt, 1, "{args}: discarded at once, not retried");
    }
    let after = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    worker.shutdown().await;
}

/// Carries text with a NUL byte in its args, and fails with one.
#[derive(Serialize, Deserialize)]
struct HasNul {
    note: String,
}

impl<DB: TestDb> Job<DB> for HasNul {
    const KIND: &'static str = "has_nul";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, _: &mut JobContext<DB>) -> Result<(), JobError> {
        Err(JobError::failed(format!("bad\0byte after {:?}", self.note)))
    }
}

async fn nul_bytes_in_args_and_errors_lose_nothing<DB: TestDb>(db: &TestDatabase<DB>) {
    let registry = Registry::<DB>::new().register::<HasNul>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    // Refused on both backends with a clear reason (PostgreSQL's jsonb
    // cannot hold it: a job fine on SQLite would fail in production).
    let refused = db
        .client
        .enqueue(HasNul {
            note: "a\0b".into(),
        })
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("args of job kind `has_nul` contain a NUL character"),
        "{refused}"
    );
    let raw = db
        .client
        .insert(&[NewJob::new("has_nul", r#"{"note":"\u0000"}"#)])
        .await
        .unwrap_err();
    assert!(
        matches!(raw, offload::Error::ContainsNul { field: "args", .. }),
        "{raw}"
    );
    let counts = db.client.count_by_state(None).await.unwrap();
    assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");

    // A NUL in a job's error is recorded, replaced, and the job ends.
    let id = db
        .client
        .enqueue(HasNul { note: "ok".into() })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    let row = db.client.job(id).await.unwrap().unwrap();
    assert!(
        row.errors[0].error.starts_with("bad\u{FFFD}byte"),
        "{:?}",
        row.errors
    );
    worker.shutdown().await;
}
