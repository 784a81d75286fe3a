//! Acting on enqueued jobs, one named scenario per behaviour on real
//! PostgreSQL and real SQLite: `Client::cancel`, `retry` and `delete` (on
//! their own and inside the caller's transaction), and the operator's
//! `Admin::act` and `Admin::bulk` that share their code.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use offload::admin::{Admin, AdminError, BulkTarget, JobAction, JobFilter};
use offload::{Error, JobState, Worker};
use support::jobs::{registry, FailTimes, Noop, SlowEffect};
use support::{count_in, fast_config, state_of, wait_for_state, TestDatabase, TestDb};

on_both_backends!(
    cancel_stops_a_running_job_at_once_and_rolls_it_back,
    cancel_tx_takes_effect_only_when_the_transaction_commits,
    retry_runs_any_job_but_a_running_one_again,
    retry_tx_and_delete_tx_follow_the_callers_transaction,
    delete_removes_a_job_unless_it_is_running,
    actions_on_an_unknown_id_fail_with_job_not_found,
    bulk_refuses_a_filter_that_selects_every_job_unless_asked,
);

async fn start<DB: TestDb>(db: &TestDatabase<DB>) -> offload::WorkerHandle {
    Worker::new(db.pool.clone(), registry::<DB>(), fast_config())
        .start()
        .await
        .expect("worker starts")
}

async fn cancel_stops_a_running_job_at_once_and_rolls_it_back<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db).await;
    let id = db
        .client
        .enqueue(SlowEffect { millis: 60_000 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Running).await;
    assert!(db.client.cancel(id).await.unwrap());
    assert_eq!(state_of(&db.client, id).await, JobState::Cancelled);
    // Signalled in this process: shutdown does not wait out the sleep (nor
    // its 5 s deadline).
    let stopping = Instant::now();
    worker.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "the job's own end changes nothing"
    );
    assert_eq!(DB::effects(&db.pool).await, (0, 0));
    // Cancelled already: nothing more to do.
    assert!(!db.client.cancel(id).await.unwrap());
}

async fn cancel_tx_takes_effect_only_when_the_transaction_commits<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let worker = start(db).await;
    // On SQLite a running job in this process is not signalled (see
    // `Client::cancel_tx`): it runs to its end, so keep it short there.
    let millis = if DB::CROSS_PROCESS_WAKE {
        60_000
    } else {
        2_000
    };
    let id = db.client.enqueue(SlowEffect { millis }).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Running).await;

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.cancel_tx(&mut tx, id).await.unwrap());
    tx.rollback().await.unwrap();
    // Rolled back: still running, and not told to stop (a premature signal
    // would have ended its sleep as a failure, and made it retryable).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&db.client, id).await, JobState::Running);

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.cancel_tx(&mut tx, id).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(state_of(&db.client, id).await, JobState::Cancelled);
    let stopping = Instant::now();
    worker.shutdown().await;
    if DB::CROSS_PROCESS_WAKE {
        // PostgreSQL delivered `offload_cancel` at the commit.
        assert!(
            stopping.elapsed() < Duration::from_secs(4),
            "{:?}",
            stopping.elapsed()
        );
    }
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.attempt, 1);
    assert_eq!(DB::effects(&db.pool).await, (0, 0), "its write rolled back");
}

async fn retry_runs_any_job_but_a_running_one_again<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db).await;
    let done = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    let failed = db
        .client
        .enqueue(FailTimes { failures: 99 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, done, JobState::Completed).await;
    wait_for_state(&db.client, failed, JobState::Discarded).await;

    // A completed job runs again, as its next attempt.
    assert!(db.client.retry(done).await.unwrap());
    eventually_attempt(db, done, 2, JobState::Completed).await;
    // A discarded job with no attempts left gets one more.
    let admin = Admin::new(db.pool.clone());
    assert!(admin.act_on_job(JobAction::Retry, failed).await.unwrap());
    eventually_attempt(db, failed, 4, JobState::Discarded).await;
    let job = db.client.job(failed).await.unwrap().unwrap();
    assert_eq!((job.max_attempts, job.errors.len()), (4, 4));

    // A running job is left alone.
    let running = db
        .client
        .enqueue(SlowEffect { millis: 60_000 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, running, JobState::Running).await;
    assert!(!db.client.retry(running).await.unwrap());
    assert!(!admin.act_on_job(JobAction::Retry, running).await.unwrap());
    assert!(db.client.cancel(running).await.unwrap());
    worker.shutdown().await;

    // A scheduled job becomes due now.
    let later = db
        .client
        .enqueue_with(
            Noop { n: 2 },
            offload::EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap()
        .id;
    assert!(db.client.retry(later).await.unwrap());
    let job = db.client.job(later).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Available);
    assert!(job.run_at <= chrono::Utc::now());
}

/// Waits until job `id` has made `attempt` attempts and is in `state`.
async fn eventually_attempt<DB: TestDb>(
    db: &TestDatabase<DB>,
    id: i64,
    attempt: i32,
    state: JobState,
) {
    support::eventually(
        Duration::from_secs(20),
        &format!("job {id} {state} after attempt {attempt}"),
        || async {
            let job = db.client.job(id).await.unwrap().unwrap();
            job.attempt == attempt && job.state == state
        },
    )
    .await;
}

async fn retry_tx_and_delete_tx_follow_the_callers_transaction<DB: TestDb>(db: &TestDatabase<DB>) {
    let id = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    let claimed = DB::job_claim(&db.pool, "default", 1, "test").await.unwrap();
    let cancel = offload::storage::Outcome::Cancel {
        reason: "stop".into(),
    };
    assert!(
        DB::job_record_outcome(&db.pool, claimed[0].attempt_key(), &cancel)
            .await
            .unwrap()
    );

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.retry_tx(&mut tx, id).await.unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(state_of(&db.client, id).await, JobState::Cancelled);
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.retry_tx(&mut tx, id).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(state_of(&db.client, id).await, JobState::Available);

    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.delete_tx(&mut tx, id).await.unwrap());
    // Gone inside the transaction: a second delete there finds no job.
    assert!(matches!(
        db.client.delete_tx(&mut tx, id).await,
        Err(Error::JobNotFound(missing)) if missing == id
    ));
    tx.rollback().await.unwrap();
    assert_eq!(state_of(&db.client, id).await, JobState::Available);
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(db.client.delete_tx(&mut tx, id).await.unwrap());
    tx.commit().await.unwrap();
    assert!(db.client.job(id).await.unwrap().is_none());
}

async fn delete_removes_a_job_unless_it_is_running<DB: TestDb>(db: &TestDatabase<DB>) {
    let ids = db
        .client
        .enqueue_many([Noop { n: 1 }, Noop { n: 2 }])
        .await
        .unwrap();
    let ids: Vec<i64> = ids.iter().map(|job| job.id).collect();
    let claimed = DB::job_claim(&db.pool, "default", 1, "test").await.unwrap();
    let running = claimed[0].id;
    let waiting = if running == ids[0] { ids[1] } else { ids[0] };
    assert!(!db.client.delete(running).await.unwrap(), "running: kept");
    assert_eq!(state_of(&db.client, running).await, JobState::Running);
    assert!(db.client.delete(waiting).await.unwrap());
    assert!(db.client.job(waiting).await.unwrap().is_none());
    assert_eq!(count_in(&db.client, JobState::Available).await, 0);
}

async fn actions_on_an_unknown_id_fail_with_job_not_found<DB: TestDb>(db: &TestDatabase<DB>) {
    let missing = 987_654_321;
    let not_found = |result: offload::Result<bool>| matches!(result, Err(Error::JobNotFound(id)) if id == missing);
    assert!(not_found(db.client.cancel(missing).await));
    assert!(not_found(db.client.retry(missing).await));
    assert!(not_found(db.client.delete(missing).await));
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    assert!(not_found(db.client.cancel_tx(&mut tx, missing).await));
    assert!(not_found(db.client.retry_tx(&mut tx, missing).await));
    tx.commit().await.unwrap();
    let admin = Admin::new(db.pool.clone());
    for action in [JobAction::Retry, JobAction::Cancel, JobAction::Delete] {
        assert!(matches!(
            admin.act_on_job(action, missing).await,
            Err(AdminError::JobNotFound(id)) if id == missing
        ));
    }
}

async fn bulk_refuses_a_filter_that_selects_every_job_unless_asked<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    db.client
        .enqueue_many((0..3).map(|n| Noop { n }))
        .await
        .unwrap();
    let admin = Admin::new(db.pool.clone());
    let everything = JobFilter::default();
    let refused = admin
        .bulk(JobAction::Delete, BulkTarget::Matching(&everything), |_| {})
        .await;
    assert!(
        matches!(refused, Err(AdminError::BulkNeedsFilter(JobAction::Delete))),
        "{refused:?}"
    );
    assert_eq!(count_in(&db.client, JobState::Available).await, 3);
    // `BulkTarget::new` picks every job only when the caller asked.
    let refused = admin
        .bulk(
            JobAction::Cancel,
            BulkTarget::new(&everything, false),
            |_| {},
        )
        .await;
    assert!(matches!(refused, Err(AdminError::BulkNeedsFilter(_))));
    let narrow = JobFilter {
        states: vec![JobState::Available],
        ..JobFilter::default()
    };
    let cancelled = admin
        .bulk(JobAction::Cancel, BulkTarget::new(&narrow, false), |_| {})
        .await
        .unwrap();
    assert_eq!((cancelled.matched, cancelled.changed), (3, 3));
    let deleted = admin
        .bulk(
            JobAction::Delete,
            BulkTarget::new(&everything, true),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!((deleted.matched, deleted.changed), (3, 3));
    assert_eq!(count_in(&db.client, JobState::Cancelled).await, 0);
}
