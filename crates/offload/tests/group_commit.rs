//! Group commit: a worker's writes share one transaction, each job in its
//! own savepoint. Each job's effects still commit exactly once, with its
//! completion; a failed, panicking, timed-out or aborted job rolls back only
//! its own work. Forced on for both backends (the default only on SQLite).

#[macro_use]
mod support;

use std::time::Duration;

use offload::{Client, Job, JobContext, JobError, JobState, Worker};
use serde::{Deserialize, Serialize};
use support::jobs::{ApplyEffect, FailTimes, Panics, RecordEffect};
use support::{count_in, eventually, fast_config, TestDatabase, TestDb};

on_both_backends!(
    grouped_jobs_apply_each_effect_once_with_their_completion,
    a_failing_job_rolls_back_only_its_own_work,
    a_job_aborted_at_shutdown_inside_its_transaction_leaves_the_group_clean,
    group_commit_off_commits_each_job_alone,
);

async fn grouped_jobs_apply_each_effect_once_with_their_completion<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let client = Client::new(db.pool.clone());
    let jobs = 600;
    client
        .enqueue_many((0..jobs).map(|_| RecordEffect))
        .await
        .unwrap();
    let worker = Worker::new(
        db.pool.clone(),
        support::jobs::registry::<DB>(),
        fast_config().group_commit(true).queue("default", 32),
    )
    .start()
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "every job completed", || async {
        count_in(&client, JobState::Completed).await == jobs
    })
    .await;
    worker.shutdown().await;
    assert_eq!(
        DB::effects(&db.pool).await,
        (jobs, jobs),
        "one effect per job"
    );
}

async fn a_failing_job_rolls_back_only_its_own_work<DB: TestDb>(db: &TestDatabase<DB>) {
    let client = Client::new(db.pool.clone());
    // Interleaved: jobs that fail once (their first effect rolls back),
    // panic (every effect rolls back), and succeed.
    for _ in 0..40 {
        client.enqueue(FailTimes { failures: 1 }).await.unwrap();
        client.enqueue(Panics).await.unwrap();
        client.enqueue(ApplyEffect).await.unwrap();
    }
    let worker = Worker::new(
        db.pool.clone(),
        support::jobs::registry::<DB>(),
        fast_config().group_commit(true).queue("default", 16),
    )
    .start()
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "every job finished", || async {
        count_in(&client, JobState::Completed).await == 80
            && count_in(&client, JobState::Discarded).await == 40
    })
    .await;
    worker.shutdown().await;
    // One effect per completed job: the failed attempts' are gone.
    assert_eq!(DB::counter(&db.pool).await, 80);
    assert_eq!(DB::effects(&db.pool).await, (80, 80));
}

/// Writes, then waits forever inside its transaction, deaf to cancellation.
#[derive(Serialize, Deserialize)]
struct HoldsTransaction;

impl<DB: TestDb> Job<DB> for HoldsTransaction {
    const KIND: &'static str = "holds_transaction";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        std::future::pending::<()>().await;
        Ok(())
    }
}

async fn a_job_aborted_at_shutdown_inside_its_transaction_leaves_the_group_clean<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let client = Client::new(db.pool.clone());
    let config = fast_config()
        .group_commit(true)
        .shutdown_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(100))
        .queue("default", 4);
    let registry = support::jobs::registry::<DB>().register::<HoldsTransaction>();
    let worker = Worker::new(db.pool.clone(), registry, config)
        .start()
        .await
        .unwrap();
    let done = client.enqueue(ApplyEffect).await.unwrap().id;
    support::wait_for_state(&client, done, JobState::Completed).await;
    let held = client.enqueue(HoldsTransaction).await.unwrap().id;
    support::wait_for_state(&client, held, JobState::Running).await;
    // Aborted at shutdown while inside its savepoint.
    worker.shutdown().await;

    assert_eq!(DB::effects(&db.pool).await, (1, 1), "its write was undone");
    let record = client.job(held).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        JobState::Available,
        "handed back, not left running: {:?}",
        record.errors
    );
    // No transaction was left open: the database takes writes.
    let mut tx = DB::begin_write(&db.pool)
        .await
        .expect("the database takes writes");
    DB::apply_effect(&mut tx, 0).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(DB::counter(&db.pool).await, 2);
}

async fn group_commit_off_commits_each_job_alone<DB: TestDb>(db: &TestDatabase<DB>) {
    let client = Client::new(db.pool.clone());
    client
        .enqueue_many((0..50).map(|_| ApplyEffect))
        .await
        .unwrap();
    let worker = Worker::new(
        db.pool.clone(),
        support::jobs::registry::<DB>(),
        fast_config().group_commit(false).queue("default", 4),
    )
    .start()
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "every job completed", || async {
        count_in(&client, JobState::Completed).await == 50
    })
    .await;
    worker.shutdown().await;
    assert_eq!(DB::counter(&db.pool).await, 50);
}
