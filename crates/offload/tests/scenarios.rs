//! Core behaviour, one named scenario per behaviour, each run against real
//! PostgreSQL and real SQLite.

#[macro_use]
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload::{EnqueueOptions, JobState, NewJob, Retention, UniqueOptions, Worker, WorkerConfig};
use support::jobs::{
    registry, ApplyEffect, CancelsItself, FailTimes, Hangs, Noop, Panics, SlowEffect,
    SnoozeNowOnce, SnoozeOnce,
};
use support::{count_in, eventually, fast_config, state_of, wait_for_state, TestDatabase, TestDb};

on_both_backends!(
    four_workers_apply_ten_thousand_effects_exactly_once,
    enqueue_tx_rolled_back_leaves_no_job,
    enqueue_tx_committed_job_runs,
    failed_attempt_rolls_back_and_retries_until_success,
    job_failing_every_attempt_is_discarded_with_each_error,
    panicking_job_is_rolled_back_recorded_and_worker_keeps_running,
    job_past_its_timeout_is_cancelled_and_rolled_back,
    undecodable_args_discard_the_job,
    snoozed_job_runs_again_without_using_an_attempt,
    job_can_cancel_itself,
    scheduled_job_waits_for_its_run_at,
    graceful_shutdown_lets_running_jobs_finish,
    shutdown_hands_back_jobs_that_overrun_the_deadline,
    rescuer_recovers_jobs_of_a_worker_that_stopped_heartbeating,
    zero_retention_deletes_jobs_on_completion,
    pruner_deletes_finished_jobs_past_retention,
    bulk_enqueue_inserts_thousands_in_one_call,
    queue_concurrency_limit_is_respected,
    snooze_zero_runs_again_without_waiting_for_the_promoter,
    unique_period_holds_through_completion_in_the_scheduled_period,
    replace_pending_debounces_a_job_until_it_starts,
);

async fn start<DB: TestDb>(db: &TestDatabase<DB>, config: WorkerConfig) -> offload::WorkerHandle {
    Worker::new(db.pool.clone(), registry::<DB>(), config)
        .start()
        .await
        .expect("worker starts")
}

async fn four_workers_apply_ten_thousand_effects_exactly_once<DB: TestDb>(db: &TestDatabase<DB>) {
    const JOBS: usize = 10_000;
    let ids = db
        .client
        .enqueue_many((0..JOBS).map(|_| ApplyEffect))
        .await
        .unwrap();
    assert_eq!(ids.len(), JOBS);

    let mut workers = Vec::new();
    for _ in 0..4 {
        let pool = db.another_pool().await;
        let config = fast_config().fetch_batch(100).queue("default", 8);
        workers.push(
            Worker::new(pool, registry::<DB>(), config)
                .start()
                .await
                .unwrap(),
        );
    }
    eventually(Duration::from_secs(120), "all jobs completed", || async {
        count_in(&db.client, JobState::Completed).await == JOBS as i64
    })
    .await;
    for worker in workers {
        worker.shutdown().await;
    }
    assert_eq!(DB::counter(&db.pool).await, JOBS as i64);
    assert_eq!(DB::effects(&db.pool).await, (JOBS as i64, JOBS as i64));
}

async fn enqueue_tx_rolled_back_leaves_no_job<DB: TestDb>(db: &TestDatabase<DB>) {
    let mut tx = db.pool.begin().await.unwrap();
    let id = db.client.enqueue_tx(&mut tx, ApplyEffect).await.unwrap().id;
    tx.rollback().await.unwrap();

    assert!(db.client.job(id).await.unwrap().is_none());
    let worker = start(db, fast_config()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown().await;
    assert_eq!(DB::counter(&db.pool).await, 0);
}

async fn enqueue_tx_committed_job_runs<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let mut tx = db.pool.begin().await.unwrap();
    let id = db.client.enqueue_tx(&mut tx, ApplyEffect).await.unwrap().id;
    tx.commit().await.unwrap();

    wait_for_state(&db.client, id, JobState::Completed).await;
    worker.shutdown().await;
    assert_eq!(DB::counter(&db.pool).await, 1);
}

async fn failed_attempt_rolls_back_and_retries_until_success<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let id = db
        .client
        .enqueue(FailTimes { failures: 2 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Completed).await;
    worker.shutdown().await;

    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3);
    let errors: Vec<_> = job
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str()))
        .collect();
    assert_eq!(errors, [(1, "planned failure 1"), (2, "planned failure 2")]);
    // Only the successful attempt's effect committed.
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
}

async fn job_failing_every_attempt_is_discarded_with_each_error<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let id = db
        .client
        .enqueue(FailTimes { failures: 99 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    worker.shutdown().await;

    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!((job.attempt, job.max_attempts), (3, 3));
    assert_eq!(job.errors.len(), 3);
    assert!(job.finalized_at.is_some());
    // Back-off: each retry waited at least the minimum delay.
    for pair in job.errors.windows(2) {
        assert!(pair[1].at - pair[0].at >= chrono::Duration::milliseconds(20));
    }
    assert_eq!(DB::counter(&db.pool).await, 0);
}

async fn panicking_job_is_rolled_back_recorded_and_worker_keeps_running<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let worker = start(db, fast_config()).await;
    let panicking = db.client.enqueue(Panics).await.unwrap().id;
    wait_for_state(&db.client, panicking, JobState::Discarded).await;
    let job = db.client.job(panicking).await.unwrap().unwrap();
    assert_eq!(job.errors.len(), 2);
    assert!(
        job.errors[0].error.contains("panicked: boom in job"),
        "{:?}",
        job.errors
    );
    assert_eq!(DB::counter(&db.pool).await, 0);

    let after = db.client.enqueue(ApplyEffect).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    worker.shutdown().await;
    assert_eq!(DB::counter(&db.pool).await, 1);
}

async fn job_past_its_timeout_is_cancelled_and_rolled_back<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let id = db.client.enqueue(Hangs).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(
        job.errors[0].error.contains("timed out after 300ms"),
        "{:?}",
        job.errors
    );
    // Its write was rolled back and its connection returned: others still run.
    let after = db.client.enqueue(ApplyEffect).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    worker.shutdown().await;
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
}

async fn undecodable_args_discard_the_job<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let bad = NewJob::new("slow_effect", r#"{"millis": "soon"}"#);
    let id = db.client.insert(&[bad]).await.unwrap()[0].id;
    wait_for_state(&db.client, id, JobState::Discarded).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 1, "an undecodable job is not retried");
    assert!(
        job.errors[0]
            .error
            .contains("args do not decode as job kind `slow_effect`"),
        "{:?}",
        job.errors
    );
    let after = db.client.enqueue(ApplyEffect).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    worker.shutdown().await;
}

async fn snoozed_job_runs_again_without_using_an_attempt<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let id = db.client.enqueue(SnoozeOnce).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Completed).await;
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    // MAX_ATTEMPTS is 1, yet the second attempt ran: the snooze used none.
    assert_eq!((job.attempt, job.max_attempts), (2, 2));
    assert!(job.errors.is_empty());
}

async fn job_can_cancel_itself<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let id = db.client.enqueue(CancelsItself).await.unwrap().id;
    wait_for_state(&db.client, id, JobState::Cancelled).await;
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.errors[0].error, "nothing left to do");
}

async fn scheduled_job_waits_for_its_run_at<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let options = EnqueueOptions::new().delay(Duration::from_millis(700));
    let id = db
        .client
        .enqueue_with(ApplyEffect, options)
        .await
        .unwrap()
        .id;
    assert_eq!(state_of(&db.client, id).await, JobState::Scheduled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&db.client, id).await, JobState::Scheduled);
    wait_for_state(&db.client, id, JobState::Completed).await;
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(job.attempted_at.unwrap() >= job.run_at);
}

async fn graceful_shutdown_lets_running_jobs_finish<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config()).await;
    let ids = db
        .client
        .enqueue_many((0..5).map(|_| SlowEffect { millis: 400 }))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "jobs running", || async {
        count_in(&db.client, JobState::Running).await == 5
    })
    .await;
    worker.shutdown().await;
    for id in ids.iter().map(|job| job.id) {
        assert_eq!(state_of(&db.client, id).await, JobState::Completed);
    }
    assert_eq!(DB::effects(&db.pool).await, (5, 5));
}

async fn shutdown_hands_back_jobs_that_overrun_the_deadline<DB: TestDb>(db: &TestDatabase<DB>) {
    let config = fast_config().shutdown_timeout(Duration::from_millis(200));
    let worker = start(db, config).await;
    let id = db
        .client
        .enqueue(SlowEffect { millis: 60_000 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Running).await;
    worker.shutdown().await;

    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Available, "handed back to the queue");
    assert_eq!(
        job.max_attempts,
        offload::DEFAULT_MAX_ATTEMPTS + 1,
        "the attempt is not used up"
    );
    assert!(
        job.errors[0].error.contains("interrupted by shutdown"),
        "{:?}",
        job.errors
    );
    assert_eq!(DB::counter(&db.pool).await, 0);
}

async fn rescuer_recovers_jobs_of_a_worker_that_stopped_heartbeating<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let id = db.client.enqueue(ApplyEffect).await.unwrap().id;
    // A worker that claimed the job and then died without a trace.
    let claimed = DB::job_claim(&db.pool, "default", 10, "dead-worker")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(state_of(&db.client, id).await, JobState::Running);

    let started = std::time::Instant::now();
    let worker = start(db, fast_config()).await;
    wait_for_state(&db.client, id, JobState::Completed).await;
    let took = started.elapsed();
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 2);
    assert!(
        job.errors[0]
            .error
            .contains("dead-worker stopped heartbeating"),
        "{:?}",
        job.errors
    );
    assert_eq!(DB::effects(&db.pool).await, (1, 1));
    assert!(took < Duration::from_secs(10), "rescued in {took:?}");
}

async fn zero_retention_deletes_jobs_on_completion<DB: TestDb>(db: &TestDatabase<DB>) {
    let config = fast_config().retention(Retention::default().completed(Duration::ZERO));
    let worker = start(db, config).await;
    let in_tx = db.client.enqueue(ApplyEffect).await.unwrap().id;
    let batched = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    eventually(Duration::from_secs(20), "both jobs deleted", || async {
        db.client.job(in_tx).await.unwrap().is_none()
            && db.client.job(batched).await.unwrap().is_none()
    })
    .await;
    worker.shutdown().await;
    assert_eq!(DB::counter(&db.pool).await, 1);
}

async fn pruner_deletes_finished_jobs_past_retention<DB: TestDb>(db: &TestDatabase<DB>) {
    let config = fast_config()
        .retention(
            Retention::default()
                .completed(Duration::from_millis(300))
                .discarded(Duration::from_secs(3600))
                .cancelled(Duration::from_millis(300)),
        )
        .prune_interval(Duration::from_millis(100));
    let worker = start(db, config).await;
    let done = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    let cancelled = db.client.enqueue(CancelsItself).await.unwrap().id;
    // An unknown kind on its only attempt is discarded.
    let discarded = db
        .client
        .insert(&[NewJob {
            max_attempts: 1,
            ..NewJob::new("no_such_kind", "{}")
        }])
        .await
        .unwrap()[0]
        .id;
    eventually(
        Duration::from_secs(20),
        "completed and cancelled pruned",
        || async {
            db.client.job(done).await.unwrap().is_none()
                && db.client.job(cancelled).await.unwrap().is_none()
        },
    )
    .await;
    worker.shutdown().await;
    assert_eq!(
        state_of(&db.client, discarded).await,
        JobState::Discarded,
        "kept for its retention"
    );
}

async fn bulk_enqueue_inserts_thousands_in_one_call<DB: TestDb>(db: &TestDatabase<DB>) {
    let ids = db
        .client
        .enqueue_many((0..5_000).map(|n| Noop { n }))
        .await
        .unwrap();
    assert_eq!(ids.len(), 5_000);
    assert!(
        ids.windows(2).all(|w| w[0].id < w[1].id && !w[1].duplicate),
        "ids come back in input order"
    );
    let last = db.client.job(ids[4_999].id).await.unwrap().unwrap();
    assert_eq!(last.args, serde_json::json!({ "n": 4_999 }));
    assert_eq!(count_in(&db.client, JobState::Available).await, 5_000);
}

async fn queue_concurrency_limit_is_respected<DB: TestDb>(db: &TestDatabase<DB>) {
    let worker = start(db, fast_config().queue("default", 3)).await;
    db.client
        .enqueue_many((0..12).map(|_| SlowEffect { millis: 150 }))
        .await
        .unwrap();
    let mut most = 0;
    for _ in 0..60 {
        most = most.max(count_in(&db.client, JobState::Running).await);
        if count_in(&db.client, JobState::Completed).await == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    assert_eq!(count_in(&db.client, JobState::Completed).await, 12);
    assert!(
        (1..=3).contains(&most),
        "at most 3 running at once, saw {most}"
    );
}

async fn snooze_zero_runs_again_without_waiting_for_the_promoter<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    // The promoter would take half a minute; PostgreSQL does not poll in
    // that time either, so only the outcome's own wake-up can start the job
    // again (SQLite wakes by its poll).
    let poll = if DB::CROSS_PROCESS_WAKE {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(50)
    };
    let config = fast_config()
        .promote_interval(Duration::from_secs(30))
        .poll_interval(Some(poll));
    let worker = start(db, config).await;
    let started = std::time::Instant::now();
    let id = db.client.enqueue(SnoozeNowOnce).await.unwrap().id;
    eventually(
        Duration::from_secs(10),
        "the snoozed job completed",
        || async { state_of(&db.client, id).await == JobState::Completed },
    )
    .await;
    let took = started.elapsed();
    worker.shutdown().await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!((job.attempt, job.max_attempts), (2, 2));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// The start of the hour `at` falls in.
fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp() - at.timestamp().rem_euclid(3600), 0).unwrap()
}

async fn unique_period_holds_through_completion_in_the_scheduled_period<DB: TestDb>(
    db: &TestDatabase<DB>,
) {
    let worker = start(db, fast_config()).await;
    let hourly = || UniqueOptions::by_args().period(Duration::from_secs(3600));
    // Every enqueue names its time, so the test never straddles an hour.
    let this_hour = hour_of(Utc::now());
    let at = |run_at| EnqueueOptions::new().run_at(run_at);
    let enqueue = |job: Noop, run_at: DateTime<Utc>| {
        let client = db.client.clone();
        async move {
            let mut conn = client.pool().acquire().await.unwrap();
            client
                .enqueue_tx_with(&mut conn, job, at(run_at).unique(hourly()))
                .await
                .unwrap()
        }
    };
    let first = enqueue(Noop { n: 1 }, this_hour).await;
    assert!(!first.duplicate);
    wait_for_state(&db.client, first.id, JobState::Completed).await;
    // A fast job must not run again within its period: the completed job
    // still holds the key.
    for _ in 0..3 {
        let again = enqueue(Noop { n: 1 }, this_hour + chrono::Duration::minutes(30)).await;
        assert_eq!((again.id, again.duplicate), (first.id, true));
    }
    // Scheduled into the next period, it is a new job (its bucket is its
    // run time, not the enqueue's).
    let next_hour = this_hour + chrono::Duration::minutes(61);
    let next = enqueue(Noop { n: 1 }, next_hour).await;
    assert!(!next.duplicate);
    assert_eq!(state_of(&db.client, next.id).await, JobState::Scheduled);
    assert_eq!(enqueue(Noop { n: 1 }, next_hour).await.id, next.id);
    // Other args, another key.
    assert!(!enqueue(Noop { n: 2 }, this_hour).await.duplicate);

    // A discarded job does not hold the key: it can be enqueued again.
    let failing = |run_at| {
        let client = db.client.clone();
        async move {
            let mut conn = client.pool().acquire().await.unwrap();
            client
                .enqueue_tx_with(
                    &mut conn,
                    FailTimes { failures: 99 },
                    at(run_at).unique(hourly()),
                )
                .await
                .unwrap()
        }
    };
    let failed = failing(this_hour).await;
    wait_for_state(&db.client, failed.id, JobState::Discarded).await;
    let retried = failing(this_hour).await;
    assert!(!retried.duplicate && retried.id != failed.id);
    worker.shutdown().await;
}

async fn replace_pending_debounces_a_job_until_it_starts<DB: TestDb>(db: &TestDatabase<DB>) {
    let debounce = || UniqueOptions::by_key("reindex:shop:7").replace_pending();
    let mut tx = DB::begin_write(&db.pool).await.unwrap();
    let first = db
        .client
        .enqueue_tx_with(
            &mut tx,
            SlowEffect { millis: 1 },
            EnqueueOptions::new()
                .delay(Duration::from_secs(3600))
                .unique(debounce()),
        )
        .await
        .unwrap();
    let later = db
        .client
        .enqueue_tx_with(
            &mut tx,
            SlowEffect { millis: 2 },
            EnqueueOptions::new()
                .delay(Duration::from_secs(7200))
                .unique(debounce()),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!first.duplicate && !first.replaced);
    assert_eq!(
        (later.id, later.duplicate, later.replaced),
        (first.id, true, true)
    );
    let job = db.client.job(first.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!(job.args, serde_json::json!({"millis": 2}));
    assert!(job.run_at > Utc::now() + chrono::Duration::minutes(110));

    // Enqueued with no delay, it is due now.
    let now = db
        .client
        .enqueue_with(
            SlowEffect { millis: 3 },
            EnqueueOptions::new().unique(debounce()),
        )
        .await
        .unwrap();
    assert!(now.replaced);
    assert_eq!(state_of(&db.client, first.id).await, JobState::Available);

    let worker = start(db, fast_config()).await;
    wait_for_state(&db.client, first.id, JobState::Completed).await;
    let job = db.client.job(first.id).await.unwrap().unwrap();
    assert_eq!(
        job.args,
        serde_json::json!({"millis": 3}),
        "ran the latest args"
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(DB::effects(&db.pool).await, (1, 1), "ran once");
    // Finished, it no longer holds the key: the next enqueue is a new job.
    let next = db
        .client
        .enqueue_with(
            SlowEffect { millis: 4 },
            EnqueueOptions::new().unique(debounce()),
        )
        .await
        .unwrap();
    assert!(!next.duplicate && !next.replaced);
    wait_for_state(&db.client, next.id, JobState::Completed).await;
    worker.shutdown().await;
}

#[test]
fn backend_is_chosen_by_url_scheme() {
    use offload::BackendKind;
    assert_eq!(
        BackendKind::from_url("postgresql://x/y").unwrap(),
        BackendKind::Postgres
    );
    assert_eq!(
        BackendKind::from_url("sqlite::memory:").unwrap(),
        BackendKind::Sqlite
    );
    let error = BackendKind::from_url("redis://:hunter2@host")
        .unwrap_err()
        .to_string();
    assert!(!error.contains("hunter2"), "no password in errors: {error}");
}
