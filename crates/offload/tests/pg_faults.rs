//! PostgreSQL faults (issue 13): serialization failures and foreign row
//! locks. Each scenario checks the invariants: every acknowledged job
//! completes once, with exactly one effect row, and none stays `running`.

mod support;

use std::time::{Duration, Instant};

use offload::{JobState, Registry, Worker};
use sqlx::Postgres;
use support::jobs::{registry, ApplyEffect, Noop};
use support::postgres::{assert_each_completed_once, RecordQuickly, SlowRecord};
use support::{eventually, fast_config, wait_for_state, TestDatabase, TestDb};

/// Serialization failures (40001) on the first 21 completions: a
/// failed attempt rolls back (its effect too) and a retry completes it,
/// so each effect is applied exactly once; batched completions retry.
#[tokio::test]
async fn a_serialization_failure_on_completion_is_retried_without_double_effects() {
    let db = TestDatabase::<Postgres>::create().await;
    sqlx::raw_sql(
        // A sequence is not rolled back with the failed statement, so
        // it counts failures: the first 21 completions fail.
        "CREATE SEQUENCE injected_failures;
         CREATE FUNCTION fail_first_completions() RETURNS trigger AS $$
         BEGIN
           IF NEW.state = 'completed' AND OLD.state = 'running'
              AND nextval('injected_failures') <= 21 THEN
             RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER fail_first_completions BEFORE UPDATE ON offload_jobs
           FOR EACH ROW EXECUTE FUNCTION fail_first_completions();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let worker = Worker::new(db.pool.clone(), registry::<Postgres>(), fast_config())
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(db.client.enqueue(ApplyEffect).await.unwrap().id);
    }
    let batched = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    for id in ids.iter().chain([&batched]) {
        eventually(
            Duration::from_secs(30),
            "completed after the injected failure",
            || async { db.client.job(*id).await.unwrap().unwrap().state == JobState::Completed },
        )
        .await;
    }
    worker.shutdown().await;
    // Every effect once, though each completion failed once.
    assert_eq!(Postgres::effects(&db.pool).await, (20, 20));
    assert_eq!(Postgres::counter(&db.pool).await, 20);
    let tried: i64 = sqlx::query_scalar("SELECT last_value FROM injected_failures")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(tried > 21, "21 completions failed first: {tried}");
    db.drop_database().await;
}

/// 40001 inside the job's own transaction (its effect insert) for the
/// first 10 effects: those attempts fail and are re-attempted, and each
/// job ends completed with exactly one effect; the failures are recorded.
#[tokio::test]
async fn a_serialization_failure_in_the_jobs_transaction_is_re_attempted() {
    let db = TestDatabase::<Postgres>::create().await;
    sqlx::raw_sql(
        "CREATE SEQUENCE injected_failures;
         CREATE FUNCTION fail_first_effects() RETURNS trigger AS $$
         BEGIN
           IF nextval('injected_failures') <= 10 THEN
             RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER fail_first_effects BEFORE INSERT ON effects
           FOR EACH ROW EXECUTE FUNCTION fail_first_effects();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let registry = offload::Registry::<Postgres>::new().register::<RecordQuickly>();
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(db.client.enqueue(RecordQuickly).await.unwrap().id);
    }
    for id in &ids {
        wait_for_state(&db.client, *id, JobState::Completed).await;
    }
    worker.shutdown().await;
    assert_each_completed_once(&db, &ids).await;
    // The 10 failures are on record as failed attempts, none lost.
    let mut recorded = 0;
    for id in &ids {
        let job = db.client.job(*id).await.unwrap().unwrap();
        assert_eq!(job.attempt as usize, job.errors.len() + 1, "{id}: {job:?}");
        recorded += job.errors.len();
    }
    assert_eq!(recorded, 10, "one recorded failure per injected 40001");
    db.drop_database().await;
}

/// Another session holds job rows' locks, one available and one running
/// past its completion, for 3 s: the claim skips the available one, other
/// jobs keep completing meanwhile, and both locked jobs run once after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_locked_by_another_transaction_delay_only_those_jobs() {
    let db = TestDatabase::<Postgres>::create().await;
    let held = db.client.enqueue(RecordQuickly).await.unwrap().id;
    let mut locker = db.pool.begin().await.unwrap();
    let lock = "SELECT id FROM offload_jobs WHERE id = $1 FOR UPDATE";
    sqlx::query(lock)
        .bind(held)
        .execute(&mut *locker)
        .await
        .unwrap();
    let registry = Registry::<Postgres>::new()
        .register::<RecordQuickly>()
        .register::<SlowRecord>();
    // Jobs that write only their own effect row: a shared row would make
    // them wait for the locked job's transaction, not for offload.
    let worker = Worker::new(db.pool.clone(), registry, fast_config())
        .start()
        .await
        .unwrap();
    let running = db
        .client
        .enqueue(SlowRecord { millis: 300 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, running, JobState::Running).await;
    sqlx::query(lock)
        .bind(running)
        .execute(&mut *locker)
        .await
        .unwrap();
    let locked_at = Instant::now();
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(db.client.enqueue(RecordQuickly).await.unwrap().id);
    }
    for id in &others {
        wait_for_state(&db.client, *id, JobState::Completed).await;
    }
    let flowed = locked_at.elapsed();
    assert!(
        flowed < Duration::from_secs(3),
        "others completed while the locks were held: {flowed:?}"
    );
    for id in [held, running] {
        let state = db.client.job(id).await.unwrap().unwrap().state;
        assert_ne!(state, JobState::Completed, "{id} is locked");
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(flowed)).await;
    locker.rollback().await.unwrap();
    for id in [held, running] {
        wait_for_state(&db.client, id, JobState::Completed).await;
    }
    worker.shutdown().await;
    let all: Vec<i64> = others.iter().copied().chain([held, running]).collect();
    assert_each_completed_once(&db, &all).await;
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempt FROM offload_jobs WHERE id = ANY($1)")
            .bind([held, running])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, [1, 1], "neither ran twice");
    db.drop_database().await;
}

/// A state offload does not know, written by hand: the schema's CHECK
/// refuses it. Should one get in anyway (the check dropped, a newer
/// version's state read by an older one), the worker leaves the row alone
/// and goes on, and reads of it fail with an error naming the state
/// instead of guessing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_state_written_by_hand_is_refused_or_left_alone() {
    let db = TestDatabase::<Postgres>::create().await;
    let id = db.client.enqueue(Noop { n: 1 }).await.unwrap().id;
    let set_unknown = "UPDATE offload_jobs SET state = 'paused', worker_id = 'w' WHERE id = $1";
    let refused = sqlx::query(set_unknown)
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap_err();
    let code = refused.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23514"), "check_violation: {refused}");

    sqlx::raw_sql("ALTER TABLE offload_jobs DROP CONSTRAINT offload_jobs_state_check")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(set_unknown)
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let worker = Worker::new(db.pool.clone(), registry::<Postgres>(), fast_config())
        .start()
        .await
        .unwrap();
    let after = db.client.enqueue(ApplyEffect).await.unwrap().id;
    wait_for_state(&db.client, after, JobState::Completed).await;
    // Several rescue, promote and prune rounds: none touches the row.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raw: (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM offload_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(raw, ("paused".to_owned(), 0), "left as written");
    let read = db.client.job(id).await.unwrap_err();
    assert!(
        matches!(&read, offload::Error::CorruptRow { table: "offload_jobs", detail }
            if detail.contains("unknown job state `paused`")),
        "{read}"
    );
    let counted = db.client.count_by_state(None).await.unwrap_err();
    assert!(counted.to_string().contains("`paused`"), "{counted}");
    worker.shutdown().await;
    sqlx::query("DELETE FROM offload_jobs WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_each_completed_once(&db, &[after]).await;
    db.drop_database().await;
}
