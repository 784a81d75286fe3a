//! A PostgreSQL server that stops answering while the connection stays open
//! (issue 13): through a fault proxy, a claim whose answer never arrives and
//! a completion sent into a half-open connection. `database_timeout` bounds
//! each: the jobs go back to the queue and complete once, with one effect
//! row, and none stays `running` on the live worker.

mod support;

use std::time::Duration;

use offload::{Backend as _, Job, JobContext, JobError, JobState, Worker, WorkerConfig};
use offload_test_fixture::{Cut, FaultProxy};
use serde::{Deserialize, Serialize};
use sqlx::Postgres;
use support::jobs::{registry, RecordEffect};
use support::postgres::{assert_each_completed_once, server_address};
use support::{fast_config, wait_for_state, TestDatabase, TestDb};

const DATABASE_TIMEOUT: Duration = Duration::from_secs(1);

fn config() -> WorkerConfig {
    fast_config().database_timeout(DATABASE_TIMEOUT)
}

async fn proxied_pool(db: &TestDatabase<Postgres>) -> (FaultProxy, sqlx::PgPool) {
    let proxy = FaultProxy::start(server_address(&db.url)).await;
    let pool = Postgres::connect(&proxy.route(&db.url), 8)
        .await
        .expect("pool through the proxy");
    (proxy, pool)
}

/// A claim runs on the server (a trigger makes it slow) past
/// `database_timeout`, so the worker gives it up; the claim then commits
/// and takes the jobs for this worker, and its answer goes to no one. The
/// worker finds them running under its id, not running here, and hands
/// them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_lost_claim_took_are_handed_back() {
    let db = TestDatabase::<Postgres>::create().await;
    sqlx::raw_sql(
        "CREATE TABLE slow_claims (on_ boolean);
         INSERT INTO slow_claims VALUES (true);
         CREATE FUNCTION slow_claim() RETURNS trigger AS $$
         BEGIN
           IF NEW.state = 'running' AND EXISTS (SELECT 1 FROM slow_claims) THEN
             PERFORM pg_sleep(0.4);
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER slow_claim BEFORE UPDATE ON offload_jobs
           FOR EACH ROW EXECUTE FUNCTION slow_claim();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let worker = Worker::new(db.pool.clone(), registry::<Postgres>(), config())
        .start()
        .await
        .unwrap();
    // One claim takes all five: 2 s of triggers, past the 1 s limit.
    let jobs = (0..5).map(|_| RecordEffect).collect::<Vec<_>>();
    let ids: Vec<i64> = db
        .client
        .enqueue_many(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    tokio::time::sleep(DATABASE_TIMEOUT + Duration::from_millis(200)).await;
    sqlx::query("DELETE FROM slow_claims")
        .execute(&db.pool)
        .await
        .unwrap();
    for id in &ids {
        wait_for_state(&db.client, *id, JobState::Completed).await;
    }
    assert_each_completed_once(&db, &ids).await;
    let handed_back: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM offload_jobs WHERE id = ANY($1) \
         AND errors::text LIKE '%never reached the worker%'",
    )
    .bind(&ids)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    worker.shutdown().await;
    assert_eq!(
        handed_back, 5,
        "the lost claim took every job, and each came back"
    );
    db.drop_database().await;
}

/// Writes its effect, then holds its transaction open for a while before
/// it returns: long enough to find its connection and cut it.
#[derive(Serialize, Deserialize)]
struct EffectThenWait {
    millis: u64,
}

impl Job<Postgres> for EffectThenWait {
    const KIND: &'static str = "effect_then_wait";

    async fn run(self, ctx: &mut JobContext<Postgres>) -> Result<(), JobError> {
        let id = ctx.id();
        Postgres::record_effect(ctx.tx().await?, id).await?;
        ctx.sleep(Duration::from_millis(self.millis)).await?;
        Ok(())
    }
}

/// The connection of the one open transaction among `ports`, if any.
async fn in_transaction(db: &TestDatabase<Postgres>, ports: Vec<u16>) -> Option<u16> {
    let ports: Vec<i32> = ports.into_iter().map(i32::from).collect();
    let port: Option<i32> = sqlx::query_scalar(
        "SELECT client_port FROM pg_stat_activity \
         WHERE client_port = ANY($1) AND state = 'idle in transaction'",
    )
    .bind(&ports)
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    port.and_then(|port| u16::try_from(port).ok())
}

/// A job's transaction connection goes half-open after its effect is
/// written: its completion and commit wait on it for good. After
/// `database_timeout` the watchdog hands the job back; it runs again on a
/// new connection and completes once (the server rolled the first
/// transaction back when its side closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_sent_into_a_half_open_connection_is_handed_back() {
    let db = TestDatabase::<Postgres>::create().await;
    let (proxy, pool) = proxied_pool(&db).await;
    let jobs = offload::Registry::new().register::<EffectThenWait>();
    let worker = Worker::new(pool.clone(), jobs, config())
        .start()
        .await
        .unwrap();
    let id = db
        .client
        .enqueue(EffectThenWait { millis: 800 })
        .await
        .unwrap()
        .id;
    let mut cut = None;
    for _ in 0..200 {
        cut = in_transaction(&db, proxy.upstream_ports()).await;
        if cut.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let port = cut.expect("the job's transaction opened");
    proxy.cut(port, Cut::HalfOpen);
    wait_for_state(&db.client, id, JobState::Completed).await;
    let job = db.client.job(id).await.unwrap().unwrap();
    assert!(job.attempt >= 2, "ran again after the hand-back: {job:?}");
    assert!(
        job.errors
            .iter()
            .any(|error| error.error.contains("did not answer")),
        "the hand-back is recorded: {:?}",
        job.errors
    );
    assert_each_completed_once(&db, &[id]).await;
    worker.shutdown().await;
    db.drop_database().await;
}
