//! PostgreSQL connections terminated (issue 13): the LISTEN connection, a
//! leader's connections, a database refusing connections for a while.
//! Wake-ups must recover by reconnecting (polling is 30 s in most of these,
//! so a lost wake-up fails them), leadership must move or return, and every
//! acknowledged job completes once, with one effect row. Backends are only
//! ever terminated in the test's own database.

mod support;

use std::time::{Duration, Instant};

use offload::{JobState, QueueConfig, Worker};
use sqlx::postgres::PgPoolOptions;
use sqlx::Postgres;
use support::jobs::{registry, ApplyEffect, SlowEffect};
use support::postgres::{
    admin, assert_each_completed_once, database_name, enqueue_from_elsewhere, latency, named_pool,
    terminate, RecordQuickly,
};
use support::{eventually, fast_config, wait_for_state, TestDatabase};

/// A worker on `queue` that polls every 30 s: only its listener can wake it
/// within a test's bounds.
async fn start_unpolled(db: &TestDatabase<Postgres>, queue: &str) -> offload::WorkerHandle {
    let config = fast_config()
        .poll_interval(Some(Duration::from_secs(30)))
        .queue_config(QueueConfig::new(queue, 4));
    let registry = offload::Registry::<Postgres>::new().register::<RecordQuickly>();
    Worker::new(db.pool.clone(), registry, config)
        .start()
        .await
        .unwrap()
}

/// The LISTEN connection is terminated three times, each while the queue
/// is idle, and a job is enqueued from another process 30 ms later (while
/// nothing listens). Polling is 30 s, so only the listener's recovery can
/// wake the worker: each job must complete within 2 s of its insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listen_connection_recovers_its_wake_ups() {
    let db = TestDatabase::<Postgres>::create().await;
    let queue = "after_listen_kill";
    let worker = start_unpolled(&db, queue).await;
    let admin = admin().await;
    let database = database_name(&db.pool).await;
    let listening =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'";
    let mut ids = Vec::new();
    let mut figures = Vec::new();
    for round in 0..3 {
        eventually(Duration::from_secs(10), "a LISTEN connection", || async {
            let n: i64 = sqlx::query_scalar(listening)
                .bind(&database)
                .fetch_one(&admin)
                .await
                .unwrap();
            n == 1
        })
        .await;
        // A wake-up through LISTEN first: the baseline.
        let id = enqueue_from_elsewhere(&db.pool, queue).await;
        wait_for_state(&db.client, id, JobState::Completed).await;
        let baseline = latency(&db.pool, id).await;
        ids.push(id);

        let killed = terminate(&admin, &database, "query LIKE $2", "LISTEN%").await;
        assert_eq!(killed, 1, "round {round}: the listener only");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let id = enqueue_from_elsewhere(&db.pool, queue).await;
        let started = Instant::now();
        eventually(
            Duration::from_secs(10),
            "the job after the kill",
            || async { db.client.job(id).await.unwrap().unwrap().state == JobState::Completed },
        )
        .await;
        let after = latency(&db.pool, id).await;
        println!("round {round}: wake-up {baseline:?} before the kill, {after:?} after");
        assert!(
            after < Duration::from_secs(2),
            "round {round}: woken {after:?} after its insert ({:?} seen)",
            started.elapsed()
        );
        figures.push(after);
        ids.push(id);
    }
    worker.shutdown().await;
    assert_each_completed_once(&db, &ids).await;
    admin.close().await;
    db.drop_database().await;
}

/// Every connection of the worker is terminated while the database refuses
/// new ones for 400 ms, and a job is enqueued elsewhere meanwhile: its
/// `NOTIFY` reaches no one, yet the worker picks it up once the database
/// is back, well before the 30 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_kept_from_reconnecting_catches_up_when_back() {
    let db = TestDatabase::<Postgres>::create().await;
    let queue = "after_listen_outage";
    let worker = start_unpolled(&db, queue).await;
    let admin = admin().await;
    let database = database_name(&db.pool).await;
    // Opened before the outage: another process's connection.
    let elsewhere = PgPoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let first = enqueue_from_elsewhere(&elsewhere, queue).await;
    wait_for_state(&db.client, first, JobState::Completed).await;
    let allow = |on: bool| format!("ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS {on}");
    let spared: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&elsewhere)
        .await
        .unwrap();
    sqlx::query(&allow(false)).execute(&admin).await.unwrap();
    // The pool's idle connections too, or the listener reconnects on one.
    let killed = terminate(&admin, &database, "pid::text <> $2", &spared.to_string()).await;
    assert!(killed >= 2, "the listener and the pool: {killed}");
    // Long enough for a few failed reconnects.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let id = enqueue_from_elsewhere(&elsewhere, queue).await;
    sqlx::query(&allow(true)).execute(&admin).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the job enqueued meanwhile",
        || async { db.client.job(id).await.unwrap().unwrap().state == JobState::Completed },
    )
    .await;
    let after = latency(&db.pool, id).await;
    println!("woken {after:?} after its insert");
    assert!(
        after < Duration::from_secs(3),
        "woken {after:?} after its insert"
    );
    worker.shutdown().await;
    assert_each_completed_once(&db, &[first, id]).await;
    elsewhere.close().await;
    admin.close().await;
    db.drop_database().await;
}

/// Two workers; every connection of the leader (LISTEN, the leader's, the
/// pool's) is terminated while it runs jobs. Leadership moves or returns
/// within 5 s, the new leader's rescuer returns a job orphaned by a dead
/// worker and its pruner still prunes, and no job is lost, run twice or
/// left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connections_are_terminated_hands_over_or_returns() {
    let db = TestDatabase::<Postgres>::create().await;
    let config = || {
        fast_config()
            .retention(
                offload::Retention::default()
                    .completed(Duration::MAX)
                    .cancelled(Duration::from_millis(100)),
            )
            .prune_interval(Duration::from_millis(100))
    };
    let registry = || registry::<Postgres>().register::<RecordQuickly>();
    let pool_a = named_pool(&db, "offload-a").await;
    let a = Worker::new(pool_a.clone(), registry(), config())
        .start()
        .await
        .unwrap();
    a.wait_for_leadership().await;
    let b = Worker::new(named_pool(&db, "offload-b").await, registry(), config())
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..16 {
        let job = db.client.enqueue(SlowEffect { millis: 300 }).await.unwrap();
        ids.push(job.id);
    }
    eventually(Duration::from_secs(10), "a runs jobs", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM offload_jobs WHERE state = 'running' AND worker_id = $1",
        )
        .bind(a.id())
        .fetch_one(&db.pool)
        .await
        .unwrap();
        n > 0
    })
    .await;
    assert!(a.is_leader(), "a still leads");

    let admin = admin().await;
    let database = database_name(&db.pool).await;
    let killed = terminate(&admin, &database, "application_name = $2", "offload-a").await;
    let killed_at = Instant::now();
    assert!(killed >= 2, "a's listener and pool: {killed}");
    // A job a dead worker left running: only a leader's rescuer frees it.
    let orphan: i64 = sqlx::query_scalar(
        "INSERT INTO offload_jobs (kind, queue, args, state, max_attempts, attempt, \
         attempted_at, worker_id) VALUES ('record_quickly', 'default', 'null', 'running', 3, 1, \
         now(), 'dead-host-1-worker') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let cancelled = db
        .client
        .enqueue(support::jobs::CancelsItself)
        .await
        .unwrap()
        .id;
    for _ in 0..8 {
        ids.push(db.client.enqueue(ApplyEffect).await.unwrap().id);
    }

    eventually(
        Duration::from_secs(5),
        "a leader after the kill",
        || async { a.is_leader() || b.is_leader() },
    )
    .await;
    let leader = db.client.leader().await.unwrap().expect("a leader row");
    let moved = if leader.leader_id == b.id() {
        "moved to b"
    } else {
        "returned to a"
    };
    println!(
        "leadership {moved} {:?} after the kill",
        killed_at.elapsed()
    );
    wait_for_state(&db.client, orphan, JobState::Completed).await;
    let orphan_job = db.client.job(orphan).await.unwrap().unwrap();
    assert!(
        orphan_job.errors[0]
            .error
            .starts_with("rescued: worker dead-host-1-worker"),
        "{:?}",
        orphan_job.errors
    );
    eventually(
        Duration::from_secs(10),
        "the cancelled job pruned",
        || async { db.client.job(cancelled).await.unwrap().is_none() },
    )
    .await;
    for id in &ids {
        wait_for_state(&db.client, *id, JobState::Completed).await;
    }
    println!("all done {:?} after the kill", killed_at.elapsed());
    ids.push(orphan);
    assert_each_completed_once(&db, &ids).await;
    a.shutdown().await;
    b.shutdown().await;
    pool_a.close().await;
    admin.close().await;
    db.drop_database().await;
}

/// A job another process enqueues as a worker starts, before its LISTEN is
/// in place: its `NOTIFY` reaches no one, so the worker must look once it
/// listens, not wait for the 30 s poll. 60 starts, inserting 0 to 9 ms
/// after each, and each job completes within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_elsewhere_as_the_worker_starts_is_not_left_for_the_poll() {
    let db = TestDatabase::<Postgres>::create().await;
    let queue = "as_the_worker_starts";
    let mut ids = Vec::new();
    for start in 0..60 {
        let config = fast_config()
            .poll_interval(Some(Duration::from_secs(30)))
            .queue_config(QueueConfig::new(queue, 4));
        let registry = offload::Registry::<Postgres>::new().register::<RecordQuickly>();
        let worker = Worker::new(db.pool.clone(), registry, config)
            .start()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_micros(150 * start)).await;
        let id = enqueue_from_elsewhere(&db.pool, queue).await;
        eventually(
            Duration::from_secs(2),
            "picked up without the poll",
            || async { db.client.job(id).await.unwrap().unwrap().state == JobState::Completed },
        )
        .await;
        worker.shutdown().await;
        ids.push(id);
    }
    assert_each_completed_once(&db, &ids).await;
    db.drop_database().await;
}
