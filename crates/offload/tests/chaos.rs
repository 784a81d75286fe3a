//! Chaos suite: worker processes killed over and over during a large drain,
//! and PostgreSQL restarted mid-drain. These disturb everything else on the
//! database server, so they are `#[ignore]`d here and run one at a time by
//! `scripts/chaos.sh` (which `scripts/test.sh` calls after the other tests).

#[macro_use]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offload::{Client, JobState, Worker, WorkerConfig};
use sqlx::Postgres;
use support::jobs::{registry, Hangs, Panics, RecordEffect};
use support::{fast_config, TestDatabase, TestDb};

fn drain_jobs() -> usize {
    std::env::var("OFFLOAD_CHAOS_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Pool size of each chaos worker process. Three of them, the test's own
/// pool and a killed process's closing connections must stay under the
/// server's `max_connections` (100): past it, the rescuer itself waits for
/// a connection.
const WORKER_CONNECTIONS: u32 = 20;

fn chaos_config() -> WorkerConfig {
    fast_config().fetch_batch(200).queue("default", 16)
}

/// Not a test on its own: a worker process the chaos tests kill.
#[test]
#[ignore = "run by the chaos tests as a child process"]
fn chaos_worker_process() {
    let Ok(url) = std::env::var("OFFLOAD_CHAOS_URL") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let pool = Postgres::connect(&url, WORKER_CONNECTIONS)
            .await
            .expect("child connects");
        let _worker = Worker::new(pool, registry::<Postgres>(), chaos_config())
            .start()
            .await
            .expect("starts");
        std::future::pending::<()>().await;
    });
}

use offload::Backend as _;

/// Worker processes, killed when the test ends, failed or not.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            worker.kill().ok();
            worker.wait().ok();
        }
    }
}

fn spawn_worker(url: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "chaos_worker_process",
            "--ignored",
            "--nocapture",
        ])
        .env("OFFLOAD_CHAOS_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker process")
}

/// Count in `state`, or `None` while the database is unreachable.
async fn try_count(client: &Client<Postgres>, state: JobState) -> Option<i64> {
    let counts = client.count_by_state(None).await.ok()?;
    Some(
        counts
            .into_iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| n),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos: run by scripts/chaos.sh"]
async fn repeated_sigkill_during_a_large_drain_loses_nothing() {
    let jobs = drain_jobs();
    let db = TestDatabase::<Postgres>::create().await;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(10_000) {
        db.client
            .enqueue_many(chunk.iter().map(|_| RecordEffect))
            .await
            .unwrap();
    }
    // Bad jobs among the good: they must end discarded, not stall anything.
    db.client
        .enqueue_many((0..50).map(|_| Panics))
        .await
        .unwrap();
    db.client
        .enqueue_many((0..10).map(|_| Hangs))
        .await
        .unwrap();

    let started = Instant::now();
    let mut workers = Workers((0..3).map(|_| spawn_worker(&db.url)).collect());
    let mut kills = 0;
    let mut rescue_times = Vec::new();
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    loop {
        let done = try_count(&db.client, JobState::Completed)
            .await
            .unwrap_or(0);
        if done == jobs as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "drain stalled at {done}/{jobs}"
        );
        if Instant::now() >= next_kill && done < jobs as i64 * 9 / 10 {
            let victim = kills % workers.0.len();
            let pid = workers.0[victim].id();
            workers.0[victim].kill().expect("SIGKILL");
            workers.0[victim].wait().expect("reap");
            let killed_at = Instant::now();
            kills += 1;
            workers.0[victim] = spawn_worker(&db.url);
            // Time until none of the dead process's jobs is still running.
            while Postgres::running_of_pid(&db.pool, pid).await.unwrap_or(1) > 0 {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(30),
                    "jobs of {pid} never rescued"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rescue_times.push(killed_at.elapsed());
            next_kill = Instant::now() + Duration::from_millis(1500);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    support::eventually(Duration::from_secs(30), "bad jobs discarded", || async {
        try_count(&db.client, JobState::Discarded).await == Some(60)
    })
    .await;
    for worker in &mut workers.0 {
        assert!(
            worker.try_wait().expect("poll child").is_none(),
            "workers still running at the end"
        );
        worker.kill().ok();
        worker.wait().ok();
    }

    assert_eq!(
        Postgres::effects(&db.pool).await,
        (jobs as i64, jobs as i64),
        "each effect once"
    );
    rescue_times.sort();
    let at = |q: f64| {
        let index = ((rescue_times.len() as f64 - 1.0) * q).round() as usize;
        rescue_times.get(index).copied().unwrap_or_default()
    };
    eprintln!(
        "chaos sigkill: {jobs} jobs drained in {elapsed:.1?} ({:.0} jobs/s) by 3 processes, \
         {kills} SIGKILLs, rescue after a kill: median {:.2?}, p90 {:.2?}, max {:.2?}; \
         0 lost, 0 duplicated",
        jobs as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(1.0),
    );
    assert!(
        kills >= 3,
        "the drain lasted long enough for several kills ({kills})"
    );
    db.drop_database().await;
}

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a cluster version");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster restart failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos: restarts PostgreSQL; run by scripts/chaos.sh"]
async fn workers_reconnect_after_postgres_restarts_mid_drain() {
    let jobs = drain_jobs() / 5;
    let db = TestDatabase::<Postgres>::create().await;
    db.client
        .enqueue_many((0..jobs).map(|_| RecordEffect))
        .await
        .unwrap();
    let worker_pool = Postgres::connect(&db.url, WORKER_CONNECTIONS)
        .await
        .unwrap();
    let worker = Worker::new(worker_pool, registry::<Postgres>(), chaos_config())
        .start()
        .await
        .unwrap();

    support::eventually(Duration::from_secs(60), "drain under way", || async {
        try_count(&db.client, JobState::Completed)
            .await
            .unwrap_or(0)
            >= (jobs / 5) as i64
    })
    .await;
    let before = try_count(&db.client, JobState::Completed)
        .await
        .unwrap_or(0);
    let restarted_at = Instant::now();
    restart_postgres();
    let restart_took = restarted_at.elapsed();
    // Recovery: completions move again.
    support::eventually(Duration::from_secs(60), "drain resumes", || async {
        try_count(&db.client, JobState::Completed)
            .await
            .unwrap_or(0)
            > before
    })
    .await;
    let recovered_in = restarted_at.elapsed();
    support::eventually(Duration::from_secs(120), "drain finishes", || async {
        try_count(&db.client, JobState::Completed).await == Some(jobs as i64)
    })
    .await;
    // The worker is still alive: a new job runs.
    let extra = db.client.enqueue(RecordEffect).await.unwrap().id;
    support::wait_for_state(&db.client, extra, JobState::Completed).await;
    worker.shutdown().await;

    let total = jobs as i64 + 1;
    assert_eq!(
        Postgres::effects(&db.pool).await,
        (total, total),
        "each effect once"
    );
    eprintln!(
        "chaos restart: {jobs} jobs, PostgreSQL restart took {restart_took:.2?}, \
         completions resumed {recovered_in:.2?} after it began, 0 lost, 0 duplicated"
    );
    db.drop_database().await;
}
