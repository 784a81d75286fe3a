//! Many workers on one database: leader election, periodic jobs, unique
//! jobs, global concurrency limits, pause and cancel across nodes.
//!
//! On PostgreSQL each node is a real process (this test binary re-run as an
//! ignored child test); on SQLite, which is one host, the nodes are workers
//! in this process with their own pools.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use offload::{
    admin::{Admin, JobAction},
    EnqueueOptions, JobState, UniqueOptions, Worker, WorkerHandle,
};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Sqlite};
use support::cluster::{
    node_config, node_registry, pid_of, ticking_node_registry, ClusterDb, HoldsWrite,
    MeasureConcurrency, MeasureKeyConcurrency, RatedNoop, GLOBAL_LIMIT, LIMITED_QUEUE,
    LOCAL_CONCURRENCY, PARTITIONED_QUEUE, PER_KEY_LIMIT, RATED_QUEUE, RATE_LIMIT, RATE_PERIOD_MS,
};
use support::jobs::Noop;
use support::{eventually, wait_for_state, TestDatabase, TestDb};

const NODES: usize = 3;

/// Not a test on its own: one node of the PostgreSQL cluster tests.
#[test]
#[ignore = "run by the multi-node tests as a child process"]
fn child_node_process() {
    let (Ok(url), Ok(ttl)) = (
        std::env::var("OFFLOAD_NODE_URL"),
        std::env::var("OFFLOAD_NODE_LEADER_TTL_MS"),
    ) else {
        return;
    };
    let ttl = Duration::from_millis(ttl.parse().expect("ttl in ms"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let pool = <Postgres as offload::Backend>::connect(&url, 16)
            .await
            .expect("node connects");
        Worker::new(pool, ticking_node_registry::<Postgres>(), node_config(ttl))
            .run_until(offload::shutdown_signal())
            .await
            .expect("node runs");
    });
}

/// Worker processes on one PostgreSQL database, killed when dropped.
struct Cluster {
    nodes: Vec<Child>,
}

impl Cluster {
    async fn start(db: &TestDatabase<Postgres>, leader_ttl: Duration) -> Self {
        let nodes = (0..NODES)
            .map(|_| {
                Command::new(std::env::current_exe().expect("test binary"))
                    .args(["--exact", "child_node_process", "--ignored", "--nocapture"])
                    .env("OFFLOAD_NODE_URL", &db.url)
                    .env(
                        "OFFLOAD_NODE_LEADER_TTL_MS",
                        leader_ttl.as_millis().to_string(),
                    )
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn node process")
            })
            .collect();
        let cluster = Self { nodes };
        eventually(Duration::from_secs(30), "every node registered", || async {
            Postgres::worker_pids(&db.pool).await.len() == NODES
        })
        .await;
        cluster
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Child::id).collect()
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let pid_i32 = i32::try_from(pid).expect("pid fits");
        kill(Pid::from_raw(pid_i32), signal).expect("signal node");
        if let Some(index) = self.nodes.iter().position(|node| node.id() == pid) {
            let mut node = self.nodes.remove(index);
            node.wait().expect("reap node");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// In-process nodes on one SQLite file, each with its own pool.
async fn start_local_nodes<DB: ClusterDb>(
    db: &TestDatabase<DB>,
    leader_ttl: Duration,
) -> Vec<WorkerHandle> {
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let pool = db.another_pool().await;
        nodes.push(
            Worker::new(pool, ticking_node_registry::<DB>(), node_config(leader_ttl))
                .start()
                .await
                .expect("node starts"),
        );
    }
    nodes
}

async fn stop_all(nodes: Vec<WorkerHandle>) {
    for node in nodes {
        node.shutdown().await;
    }
}

async fn create<DB: ClusterDb>() -> TestDatabase<DB> {
    let db = TestDatabase::<DB>::create().await;
    DB::create_gauge(&db.pool).await;
    db
}

/// Jobs of `queue` in `state` (the tick queue runs beside the others).
async fn count_in<DB: ClusterDb>(db: &TestDatabase<DB>, queue: &str, state: JobState) -> i64 {
    db.client
        .count_by_state(Some(queue))
        .await
        .expect("counts")
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

async fn leader_pid<DB: ClusterDb>(db: &TestDatabase<DB>) -> Option<(String, u32)> {
    let leader = db.client.leader().await.expect("leader lookup")?;
    let pid = pid_of(&leader.leader_id)?;
    Some((leader.leader_id, pid))
}

// ---------------------------------------------------------------- periodic

/// Counts the tick jobs of a 10-second window, once the cluster ticks.
async fn ticks_in_ten_seconds<DB: ClusterDb>(db: &TestDatabase<DB>) -> (usize, Vec<i64>) {
    eventually(Duration::from_secs(20), "the first tick", || async {
        !DB::run_ats(&db.pool, "tick").await.is_empty()
    })
    .await;
    // The window starts at the next whole second and covers 10 ticks.
    let now = Utc::now().timestamp_micros();
    let start = (now / 1_000_000 + 1) * 1_000_000;
    let end = start + 10_000_000;
    let wait = (end - now) as u64 + 700_000;
    tokio::time::sleep(Duration::from_micros(wait)).await;
    let all = DB::run_ats(&db.pool, "tick").await;
    let in_window: Vec<i64> = all
        .iter()
        .copied()
        .filter(|at| (start..end).contains(at))
        .collect();
    (in_window.len(), all)
}

fn assert_one_job_per_tick(label: &str, in_window: usize, all: &[i64]) {
    let distinct: HashSet<i64> = all.iter().copied().collect();
    eprintln!(
        "{label}: {in_window} tick jobs in a 10 s window ({} in all, {} distinct ticks)",
        all.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), all.len(), "no tick enqueued twice: {all:?}");
    assert!(
        all.iter().all(|at| at % 1_000_000 == 0),
        "ticks fall on whole seconds"
    );
    assert!(
        (9..=11).contains(&in_window),
        "10 ticks (±1) in 10 s, got {in_window}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_job_is_enqueued_once_per_tick_by_three_processes_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    let (in_window, all) = ticks_in_ten_seconds(&db).await;
    drop(cluster);
    assert_one_job_per_tick("postgres, 3 processes", in_window, &all);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_job_is_enqueued_once_per_tick_by_three_workers_sqlite() {
    let db = create::<Sqlite>().await;
    let nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    let (in_window, all) = ticks_in_ten_seconds(&db).await;
    stop_all(nodes).await;
    assert_one_job_per_tick("sqlite, 3 workers", in_window, &all);
    db.drop_database().await;
}

async fn two_leaders_enqueuing_the_same_ticks_insert_each_once<DB: ClusterDb>(
    db: &TestDatabase<DB>,
) {
    const TICKS: i64 = 10;
    let base = (Utc::now().timestamp() / 60) * 60;
    let tick_at = move |n: i64| chrono::DateTime::from_timestamp(base + n, 0).unwrap();
    let row = move |n: i64| offload::NewJob {
        unique: Some(
            offload::UniqueKey::new(
                format!("periodic:handover:{}", tick_at(n).timestamp_micros()),
                &JobState::ALL,
            )
            .unwrap(),
        ),
        run_at: Some(tick_at(n)),
        ..offload::NewJob::new("tick", "null")
    };
    // Two "leaders" on their own pools race for every tick, twice over.
    let pools = [db.another_pool().await, db.another_pool().await];
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        let pool = pools[round % 2].clone();
        let rows: Vec<_> = (0..TICKS).map(row).collect();
        tasks.spawn(async move {
            let mut won = 0;
            for (n, job) in (0..TICKS).zip(rows) {
                if offload::storage::ops::enqueue_tick::<DB>(&pool, "handover", tick_at(n), &job)
                    .await
                    .expect("enqueue tick")
                    .is_some()
                {
                    won += 1;
                }
            }
            won
        });
    }
    let won: i64 = tasks.join_all().await.into_iter().sum();
    let ticks = DB::run_ats(&db.pool, "tick").await;
    let distinct: HashSet<i64> = ticks.iter().copied().collect();
    assert_eq!(won, TICKS, "each tick won once");
    assert_eq!(ticks.len() as i64, TICKS);
    assert_eq!(distinct.len() as i64, TICKS);

    // Without the last-tick guard, the unique key alone still refuses a
    // second job for the tick.
    let again = db.client.insert(&[row(3)]).await.unwrap();
    assert_eq!(DB::run_ats(&db.pool, "tick").await.len() as i64, TICKS);
    assert!(again[0].duplicate, "the tick's job is reported as held");
}

async fn a_new_leader_enqueues_only_the_latest_missed_tick<DB: ClusterDb>(db: &TestDatabase<DB>) {
    let minute = |at: chrono::DateTime<Utc>| (at.timestamp() / 60) * 60;
    let now = Utc::now();
    // The last leader enqueued a tick ten minutes ago, then every worker
    // stopped.
    let last = chrono::DateTime::from_timestamp(minute(now) - 600, 0).unwrap();
    let old = offload::NewJob {
        run_at: Some(last),
        ..offload::NewJob::new("tick", "null")
    };
    offload::storage::ops::enqueue_tick::<DB>(&db.pool, "every_minute", last, &old)
        .await
        .unwrap()
        .expect("first tick");

    let every_minute = offload::PeriodicJob::every("every_minute", Duration::from_secs(60), || {
        support::cluster::Tick
    })
    .unwrap();
    let config = offload::WorkerConfig::default().queue("other", 1);
    let registry = node_registry::<DB>().periodic(every_minute);
    let worker = Worker::new(db.pool.clone(), registry, config)
        .start()
        .await
        .unwrap();
    worker.wait_for_leadership().await;
    eventually(Duration::from_secs(10), "the missed tick", || async {
        DB::run_ats(&db.pool, "tick").await.len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.shutdown().await;

    let ticks = DB::run_ats(&db.pool, "tick").await;
    let latest_missed = minute(now) * 1_000_000;
    eprintln!(
        "{}: after 10 missed minutes the new leader enqueued {:?}",
        <DB as sqlx::Database>::NAME,
        &ticks[1..]
    );
    assert_eq!(ticks[0], last.timestamp_micros());
    assert!(
        ticks[1] >= latest_missed,
        "only the latest missed tick, not {} (latest {latest_missed})",
        ticks[1]
    );
    // A minute boundary during the test may add the next regular tick.
    assert!(ticks.len() <= 3, "{ticks:?}");
}

async fn cron_schedule_in_a_time_zone_enqueues_each_tick<DB: ClusterDb>(db: &TestDatabase<DB>) {
    // Every second, read in Tokyo time (seconds fields agree in every zone).
    let every_second = offload::PeriodicJob::cron(
        "cron_every_second",
        "* * * * * *",
        offload::chrono_tz::Asia::Tokyo,
        || support::cluster::Tick,
    )
    .unwrap();
    let config = offload::WorkerConfig::default().queue("ticks", 2);
    let registry = node_registry::<DB>().periodic(every_second);
    let worker = Worker::new(db.pool.clone(), registry, config)
        .start()
        .await
        .unwrap();
    worker.wait_for_leadership().await;
    let started = Utc::now().timestamp_micros();
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    worker.shutdown().await;
    let ticks: Vec<i64> = DB::run_ats(&db.pool, "tick")
        .await
        .into_iter()
        .filter(|at| *at > started)
        .collect();
    assert!((3..=4).contains(&ticks.len()), "{ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1_000_000),
        "one tick per second, none skipped or repeated: {ticks:?}"
    );
}

on_both_backends!(
    cron_schedule_in_a_time_zone_enqueues_each_tick,
    two_leaders_enqueuing_the_same_ticks_insert_each_once,
    a_new_leader_enqueues_only_the_latest_missed_tick,
);

// ------------------------------------------------------------- leadership

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_leadership_to_another_process_postgres() {
    let ttl = Duration::from_secs(2);
    let db = create::<Postgres>().await;
    let mut cluster = Cluster::start(&db, ttl).await;
    let pids = cluster.pids();

    eventually(Duration::from_secs(10), "a leader", || async {
        leader_pid(&db).await.is_some()
    })
    .await;
    let (first_id, first_pid) = leader_pid(&db).await.expect("leader");
    assert!(pids.contains(&first_pid), "the leader is one of the nodes");

    cluster.signal(first_pid, Signal::SIGKILL);
    let killed_at = Instant::now();
    eventually(Duration::from_secs(30), "a new leader", || async {
        leader_pid(&db).await.is_some_and(|(id, _)| id != first_id)
    })
    .await;
    let after_kill = killed_at.elapsed();
    let (second_id, second_pid) = leader_pid(&db).await.expect("leader");
    assert!(cluster.pids().contains(&second_pid));

    // The new leader runs the periodic job.
    let took_over = Utc::now().timestamp_micros();
    eventually(
        Duration::from_secs(5),
        "a tick after the hand-over",
        || async {
            Postgres::run_ats(&db.pool, "tick")
                .await
                .iter()
                .any(|at| *at > took_over)
        },
    )
    .await;

    // A leader that shuts down resigns: the next takes over at once.
    cluster.signal(second_pid, Signal::SIGTERM);
    let stopped_at = Instant::now();
    eventually(Duration::from_secs(30), "a third leader", || async {
        leader_pid(&db)
            .await
            .is_some_and(|(id, _)| id != second_id && id != first_id)
    })
    .await;
    let after_shutdown = stopped_at.elapsed();
    drop(cluster);

    eprintln!(
        "leader TTL {ttl:?}: hand-over after SIGKILL took {after_kill:?}, after SIGTERM {after_shutdown:?}"
    );
    // Expiry (one TTL after the last renewal) plus one renewal period.
    let bound = ttl + ttl / 3 + Duration::from_millis(700);
    assert!(
        after_kill <= bound,
        "hand-over after SIGKILL within {bound:?}, took {after_kill:?}"
    );
    assert!(
        after_shutdown <= ttl,
        "hand-over after graceful shutdown within one TTL, took {after_shutdown:?}"
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_worker_leads_and_a_stopped_leader_hands_over_sqlite() {
    let db = create::<Sqlite>().await;
    let mut nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    eventually(Duration::from_secs(10), "a leader", || async {
        nodes.iter().any(WorkerHandle::is_leader)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leaders: Vec<usize> = (0..NODES).filter(|i| nodes[*i].is_leader()).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let leader = nodes.remove(leaders[0]);
    let leader_id = leader.id().to_owned();
    assert_eq!(
        db.client.leader().await.unwrap().unwrap().leader_id,
        leader_id
    );
    let stopped_at = Instant::now();
    leader.shutdown().await;
    eventually(Duration::from_secs(10), "another leader", || async {
        nodes.iter().any(WorkerHandle::is_leader)
    })
    .await;
    eprintln!(
        "sqlite: hand-over after graceful shutdown took {:?}",
        stopped_at.elapsed()
    );
    assert_ne!(
        db.client.leader().await.unwrap().unwrap().leader_id,
        leader_id
    );
    stop_all(nodes).await;
    db.drop_database().await;
}

// ------------------------------------------------------------------ unique

#[derive(Serialize, Deserialize)]
struct Reindex {
    shop_id: i64,
}

impl<DB: ClusterDb> offload::Job<DB> for Reindex {
    const KIND: &'static str = "reindex";

    async fn run(self, _ctx: &mut offload::JobContext<DB>) -> Result<(), offload::JobError> {
        Ok(())
    }
}

async fn concurrent_enqueues_of_one_unique_job_insert_exactly_one<DB: ClusterDb>(
    db: &TestDatabase<DB>,
) {
    const ENQUEUES: usize = 1_000;
    let mut clients = vec![db.client.clone()];
    for _ in 0..3 {
        clients.push(offload::Client::new(db.another_pool().await));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..ENQUEUES {
        let client = clients[n % clients.len()].clone();
        tasks.spawn(async move {
            client
                .enqueue_with(
                    Reindex { shop_id: 7 },
                    EnqueueOptions::new().unique(UniqueOptions::by_args()),
                )
                .await
        });
    }
    let results: Vec<_> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|result| result.expect("enqueue succeeds"))
        .collect();
    let took = started.elapsed();
    let inserted: Vec<_> = results.iter().filter(|r| !r.duplicate).collect();
    let ids: HashSet<i64> = results.iter().map(|r| r.id).collect();
    eprintln!(
        "{}: {ENQUEUES} concurrent unique enqueues in {took:?}: {} inserted, {} ids",
        <DB as sqlx::Database>::NAME,
        inserted.len(),
        ids.len()
    );
    assert_eq!(inserted.len(), 1, "exactly one enqueue inserted");
    assert_eq!(ids.len(), 1, "every duplicate got the same job's id");
    assert_eq!(DB::run_ats(&db.pool, "reindex").await.len(), 1);

    // Other args are another job; the same args once it finished are too.
    let other = db
        .client
        .enqueue_with(
            Reindex { shop_id: 8 },
            EnqueueOptions::new().unique(UniqueOptions::by_args()),
        )
        .await
        .unwrap();
    assert!(!other.duplicate);
    let worker = Worker::new(
        db.pool.clone(),
        offload::Registry::new().register::<Reindex>(),
        support::fast_config(),
    )
    .start()
    .await
    .unwrap();
    wait_for_state(&db.client, inserted[0].id, JobState::Completed).await;
    worker.shutdown().await;
    let again = db
        .client
        .enqueue_with(
            Reindex { shop_id: 7 },
            EnqueueOptions::new().unique(UniqueOptions::by_args()),
        )
        .await
        .unwrap();
    assert!(!again.duplicate, "a completed job does not hold the key");

    // Kept in `completed` too, and per hour: a duplicate until the hour ends.
    let hourly = || {
        UniqueOptions::by_key("nightly")
            .period(Duration::from_secs(3600))
            .also_in(JobState::Completed)
    };
    let first = db
        .client
        .enqueue_with(Noop { n: 1 }, EnqueueOptions::new().unique(hourly()))
        .await
        .unwrap();
    let second = db
        .client
        .enqueue_with(Noop { n: 2 }, EnqueueOptions::new().unique(hourly()))
        .await
        .unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.id, second.id);
}

on_both_backends!(concurrent_enqueues_of_one_unique_job_insert_exactly_one);

// ------------------------------------------------------------ global limit

const MEASURED_JOBS: usize = 24;

async fn enqueue_measured<DB: ClusterDb>(db: &TestDatabase<DB>) {
    db.client
        .enqueue_many((0..MEASURED_JOBS).map(|_| MeasureConcurrency { millis: 150 }))
        .await
        .unwrap();
}

async fn max_concurrency_when_done<DB: ClusterDb>(db: &TestDatabase<DB>) -> (i64, Duration) {
    let started = Instant::now();
    eventually(
        Duration::from_secs(60),
        "every measured job completed",
        || async { count_in(db, LIMITED_QUEUE, JobState::Completed).await >= MEASURED_JOBS as i64 },
    )
    .await;
    let took = started.elapsed();
    let gauges = DB::gauges(&db.pool).await;
    let [(_, running_now, max_seen)] = gauges.as_slice() else {
        panic!("one gauge, not {gauges:?}");
    };
    assert_eq!(*running_now, 0, "every job left the gauge");
    (*max_seen, took)
}

fn assert_limit_held(label: &str, max_seen: i64, took: Duration) {
    eprintln!(
        "{label}: global limit {GLOBAL_LIMIT}, {} nodes x 4 slots: at most {max_seen} jobs ran at once; {MEASURED_JOBS} jobs of 150 ms took {took:?}",
        NODES
    );
    assert_eq!(
        max_seen, GLOBAL_LIMIT as i64,
        "the limit is reached and never exceeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_of_two_is_never_exceeded_by_three_processes_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    enqueue_measured(&db).await;
    let (max_seen, took) = max_concurrency_when_done(&db).await;
    drop(cluster);
    assert_limit_held("postgres, 3 processes", max_seen, took);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_of_two_is_never_exceeded_by_three_workers_sqlite() {
    let db = create::<Sqlite>().await;
    let nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    enqueue_measured(&db).await;
    let (max_seen, took) = max_concurrency_when_done(&db).await;
    stop_all(nodes).await;
    assert_limit_held("sqlite, 3 workers", max_seen, took);
    db.drop_database().await;
}

// ------------------------------------------------------------ rate limit

const RATED_JOBS: usize = 30;

/// Enqueues the rated jobs, waits for them, and checks every window of the
/// period held at most the limit of starts (the claims' `attempted_at`).
async fn rate_limit_holds_over_workers<DB: ClusterDb>(db: &TestDatabase<DB>, label: &str) {
    db.client
        .enqueue_many((0..RATED_JOBS).map(|_| RatedNoop))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "every rated job completed",
        || async { count_in(db, RATED_QUEUE, JobState::Completed).await >= RATED_JOBS as i64 },
    )
    .await;
    let starts = DB::attempted_ats(&db.pool, "rated_noop").await;
    assert_eq!(starts.len(), RATED_JOBS);
    let period_us = i64::try_from(RATE_PERIOD_MS * 1_000).unwrap();
    let busiest = (0..starts.len())
        .map(|i| {
            starts[..=i]
                .iter()
                .filter(|t| **t > starts[i] - period_us)
                .count()
        })
        .max()
        .unwrap();
    let span_ms = (starts[starts.len() - 1] - starts[0]) / 1_000;
    eprintln!(
        "{label}: rate limit {RATE_LIMIT} per {RATE_PERIOD_MS} ms, {NODES} workers x {LOCAL_CONCURRENCY} slots: \
         at most {busiest} starts in a window; {RATED_JOBS} starts over {span_ms} ms"
    );
    assert_eq!(
        busiest, RATE_LIMIT as usize,
        "the limit is reached and never exceeded"
    );
    // 30 starts at 6 per 400 ms need at least 4 full periods after the first.
    let least_ms =
        i64::try_from((RATED_JOBS as u64 / u64::from(RATE_LIMIT) - 1) * RATE_PERIOD_MS).unwrap();
    assert!(span_ms >= least_ms, "{span_ms} ms < {least_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_never_exceeded_by_three_processes_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    rate_limit_holds_over_workers(&db, "postgres, 3 processes").await;
    drop(cluster);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_never_exceeded_by_three_workers_sqlite() {
    let db = create::<Sqlite>().await;
    let nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    rate_limit_holds_over_workers(&db, "sqlite, 3 workers").await;
    stop_all(nodes).await;
    db.drop_database().await;
}

// ------------------------------------------------------------ partitions

const KEYS: usize = 4;
const JOBS_PER_KEY: usize = 10;

/// Enqueues jobs of several keys on the partitioned queue, waits for them,
/// and checks each key's gauge (counted inside the jobs) reached the cap
/// per key and never passed it.
async fn per_key_limit_holds_over_workers<DB: ClusterDb>(db: &TestDatabase<DB>, label: &str) {
    let jobs = (0..KEYS * JOBS_PER_KEY).map(|n| MeasureKeyConcurrency {
        key: format!("customer-{}", n % KEYS),
        millis: 100,
    });
    let started = Instant::now();
    db.client.enqueue_many(jobs).await.unwrap();
    let total = (KEYS * JOBS_PER_KEY) as i64;
    eventually(
        Duration::from_secs(60),
        "every keyed job completed",
        || async { count_in(db, PARTITIONED_QUEUE, JobState::Completed).await >= total },
    )
    .await;
    let took = started.elapsed();
    let gauges = DB::gauges(&db.pool).await;
    eprintln!(
        "{label}: cap {PER_KEY_LIMIT} per key, {NODES} nodes x {LOCAL_CONCURRENCY} slots, \
         {KEYS} keys x {JOBS_PER_KEY} jobs of 100 ms took {took:?}; (key, running, most at once): {gauges:?}"
    );
    assert_eq!(gauges.len(), KEYS);
    for (key, running_now, max_seen) in gauges {
        assert_eq!(running_now, 0, "{key}: every job left the gauge");
        assert_eq!(
            max_seen, PER_KEY_LIMIT as i64,
            "{key}: the cap is reached and never exceeded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limit_is_never_exceeded_by_three_processes_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    per_key_limit_holds_over_workers(&db, "postgres, 3 processes").await;
    drop(cluster);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limit_is_never_exceeded_by_three_workers_sqlite() {
    let db = create::<Sqlite>().await;
    let nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    per_key_limit_holds_over_workers(&db, "sqlite, 3 workers").await;
    stop_all(nodes).await;
    db.drop_database().await;
}

// ------------------------------------------------------------ pause/resume

const PAUSED_JOBS: usize = 30;

async fn pause_holds_and_resume_drains<DB: ClusterDb + offload::Backend>(db: &TestDatabase<DB>) {
    let admin = Admin::new(db.pool.clone());
    admin.pause_queue("default").await.unwrap();
    db.client
        .enqueue_many((0..PAUSED_JOBS as u64).map(|n| Noop { n }))
        .await
        .unwrap();
    // Several poll intervals of every node.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        count_in(db, "default", JobState::Available).await,
        PAUSED_JOBS as i64,
        "no node claims from a paused queue"
    );
    assert_eq!(count_in(db, "default", JobState::Running).await, 0);

    let resumed_at = Instant::now();
    admin.resume_queue("default").await.unwrap();
    eventually(Duration::from_secs(20), "every job completed", || async {
        count_in(db, "default", JobState::Completed).await >= PAUSED_JOBS as i64
    })
    .await;
    eprintln!(
        "{}: {PAUSED_JOBS} jobs held while paused, drained {:?} after resume",
        <DB as sqlx::Database>::NAME,
        resumed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_stops_every_process_and_resuming_restarts_them_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    pause_holds_and_resume_drains(&db).await;
    drop(cluster);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_stops_every_worker_and_resuming_restarts_them_sqlite() {
    let db = create::<Sqlite>().await;
    let nodes = start_local_nodes(&db, Duration::from_secs(1)).await;
    pause_holds_and_resume_drains(&db).await;
    stop_all(nodes).await;
    db.drop_database().await;
}

// ------------------------------------------------------------------ cancel

/// SQLite is left out: a job holding its write transaction blocks every
/// other writer, the operator's cancel included, until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_running_in_another_process_rolls_back_its_transaction_postgres() {
    let db = create::<Postgres>().await;
    let cluster = Cluster::start(&db, Duration::from_secs(2)).await;
    let id = db
        .client
        .enqueue(HoldsWrite { millis: 60_000 })
        .await
        .unwrap()
        .id;
    wait_for_state(&db.client, id, JobState::Running).await;
    // Its transaction has written (and holds the counter row) by now.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cancelled_at = Instant::now();
    let admin = Admin::new(db.pool.clone());
    assert!(admin.act_on_job(JobAction::Cancel, id).await.unwrap());
    // The counter row is free once the job's transaction has ended; the job
    // would otherwise hold it for a minute.
    eventually(
        Duration::from_secs(10),
        "the job's transaction ended",
        || async {
            let mut tx = db.pool.begin().await.unwrap();
            sqlx::query("SET LOCAL lock_timeout = '50ms'")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("SELECT value FROM counter WHERE id = 1 FOR UPDATE")
                .execute(&mut *tx)
                .await
                .is_ok()
        },
    )
    .await;
    let stopped_in = cancelled_at.elapsed();
    drop(cluster);

    eprintln!("postgres: running job in another process stopped {stopped_in:?} after cancel");
    let job = db.client.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(Postgres::effects(&db.pool).await, (0, 0), "rolled back");
    assert_eq!(Postgres::counter(&db.pool).await, 0);
    db.drop_database().await;
}
