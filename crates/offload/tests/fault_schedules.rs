//! Randomized fault schedules (issue 13), on both backends. Each schedule
//! runs two workers on a queue of its own and throws a seeded random mix of
//! faults at them while jobs are enqueued and run: on PostgreSQL, through a
//! TCP proxy per worker, connection resets, refusals, stalls, half-open
//! connections and cuts of a connection mid-transaction, plus (both
//! backends) foreign locks, failing completions, worker restarts, and jobs
//! that fail, panic or hang on their first attempt. Every schedule writes
//! its event history (acknowledged enqueues, attempts, completions, faults)
//! and its end state to `fault-histories/` in Cargo's test temp dir, and the
//! checker in `support/history.rs` asserts the invariants.
//!
//! `OFFLOAD_FAULT_SCHEDULES` (default 100 per backend), `OFFLOAD_FAULT_SEED`
//! (the first schedule's seed; random by default, printed),
//! `OFFLOAD_FAULT_SECONDS` (the time bound per backend, default 900), and
//! `OFFLOAD_FAULT_KINDS` (the kinds to draw from, by name; see
//! [`FAULT_KINDS`]).
//! `scripts/fault-schedules.sh` runs 500 per backend.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use offload::{AttemptOutcome, Client, EnqueueOptions, Job, JobContext, JobError, Worker};
use offload::{PoolSettings, WorkerConfig, WorkerHandle};
use offload_test_fixture::{Cut, FaultProxy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sqlx::{Pool, Postgres, Sqlite};
use support::faults::FaultDb;
use support::history::{self, Counts, Event, History, Observed};
use support::{fast_config, TestDatabase};

const WORKERS: usize = 2;
const SLOTS_PER_WORKER: usize = 4;
const POOL_CONNECTIONS: u32 = 6;
const JOBS_BEFORE_FAULTS: usize = 12;
const JOBS_DURING_FAULTS: usize = 12;
/// Faults start within this much of the schedule's start.
const FAULT_WINDOW: Duration = Duration::from_millis(1_000);
const LONGEST_FAULT_MS: u64 = 700;
/// After the faults are lifted, every job must be finished within this.
const FINISH_WITHIN: Duration = Duration::from_secs(30);
/// A statement on a silent (half-open) connection is given up after this.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);
/// A job hanging on its first attempt is stopped by its timeout.
const JOB_TIMEOUT: Duration = Duration::from_millis(400);
/// An enqueue through a broken connection is given up on after this (the
/// job may exist: that is allowed, only acknowledged ones must run).
const ENQUEUE_LIMIT: Duration = Duration::from_secs(5);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// How a job behaves on its first attempt (later attempts succeed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum FirstAttempt {
    Succeeds,
    Fails,
    Panics,
    Hangs,
}

/// Records its attempt in the schedule's history, writes its effect row in
/// its own transaction, then behaves as told.
#[derive(Serialize, Deserialize)]
struct Tracked {
    first_attempt: FirstAttempt,
}

/// Each running schedule's history, by its queue.
static HISTORIES: Mutex<BTreeMap<String, History>> = Mutex::new(BTreeMap::new());

fn history_of(queue: &str) -> Option<History> {
    HISTORIES.lock().expect("histories").get(queue).cloned()
}

impl<DB: FaultDb> Job<DB> for Tracked {
    const KIND: &'static str = "tracked";
    // Faults must delay jobs, never make them give up.
    const MAX_ATTEMPTS: i32 = 10_000;
    const TIMEOUT: Option<Duration> = Some(JOB_TIMEOUT);

    fn backoff(_attempt: i32) -> Duration {
        Duration::from_millis(20)
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        if let Some(history) = history_of(ctx.queue()) {
            history.record(Event::Claimed { id, attempt });
        }
        DB::record_effect(ctx.tx().await?, id).await?;
        match (attempt, self.first_attempt) {
            (1, FirstAttempt::Fails) => Err(JobError::failed("fails its first attempt")),
            (1, FirstAttempt::Panics) => panic!("panics on its first attempt"),
            (1, FirstAttempt::Hangs) => {
                tokio::time::sleep(JOB_TIMEOUT * 10).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every open connection of a worker reset.
    Reset(usize),
    /// A worker's connections reset and new ones refused for a while.
    Refuse(usize, Duration),
    /// No byte moves to or from a worker for a while.
    Stall(usize, Duration),
    /// Every open connection of a worker goes silent (half-open).
    HalfOpen(usize),
    /// One of a worker's connections inside a transaction (or, if none is,
    /// any) cut.
    CutBusy(usize, Cut),
    /// A foreign transaction holds the queue's rows (SQLite: the write lock).
    HoldLocks(Duration),
    /// Completions of the queue's jobs fail for a while.
    FailCompletions(Duration),
    /// A worker shut down and started again.
    Restart(usize),
}

impl Fault {
    fn lasts(&self) -> Option<Duration> {
        match self {
            Fault::Refuse(_, d) | Fault::Stall(_, d) => Some(*d),
            Fault::HoldLocks(d) | Fault::FailCompletions(d) => Some(*d),
            _ => None,
        }
    }
}

/// A seeded schedule: when each fault strikes, and each job's first attempt.
struct Plan {
    faults: Vec<(Duration, Fault)>,
    first_attempts: Vec<FirstAttempt>,
}

/// Every fault kind by name, and whether it needs the network proxy.
const FAULT_KINDS: [(&str, bool); 9] = [
    ("locks", false),
    ("failing-completions", false),
    ("restart", false),
    ("reset", true),
    ("refuse", true),
    ("stall", true),
    ("cut-reset", true),
    ("half-open", true),
    ("cut-half-open", true),
];

/// The fault kinds schedules draw from: `OFFLOAD_FAULT_KINDS` (names,
/// comma-separated), or every kind the backend supports.
fn fault_kinds(network: bool) -> Vec<&'static str> {
    let chosen = std::env::var("OFFLOAD_FAULT_KINDS").ok();
    let kinds: Vec<&str> = FAULT_KINDS
        .iter()
        .filter(|(_, needs_network)| network || !needs_network)
        .map(|(name, _)| *name)
        .filter(|name| match &chosen {
            Some(chosen) => chosen.split(',').any(|wanted| wanted.trim() == *name),
            None => true,
        })
        .collect();
    assert!(!kinds.is_empty(), "no fault kind left from {chosen:?}");
    kinds
}

fn plan(seed: u64, kinds: &[&str]) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<(Duration, Fault)> = (0..rng.random_range(1..=4))
        .map(|_| {
            let at = Duration::from_millis(rng.random_range(0..FAULT_WINDOW.as_millis() as u64));
            let lasts = Duration::from_millis(rng.random_range(50..=LONGEST_FAULT_MS));
            let worker = rng.random_range(0..WORKERS);
            let fault = match kinds[rng.random_range(0..kinds.len())] {
                "locks" => Fault::HoldLocks(lasts),
                "failing-completions" => Fault::FailCompletions(lasts),
                "restart" => Fault::Restart(worker),
                "reset" => Fault::Reset(worker),
                "refuse" => Fault::Refuse(worker, lasts),
                "stall" => Fault::Stall(worker, lasts),
                "cut-reset" => Fault::CutBusy(worker, Cut::Reset),
                "half-open" => Fault::HalfOpen(worker),
                _ => Fault::CutBusy(worker, Cut::HalfOpen),
            };
            (at, fault)
        })
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    let first_attempts = (0..JOBS_BEFORE_FAULTS + JOBS_DURING_FAULTS)
        .map(|_| match rng.random_range(0..10) {
            0 => FirstAttempt::Fails,
            1 => FirstAttempt::Panics,
            2 => FirstAttempt::Hangs,
            _ => FirstAttempt::Succeeds,
        })
        .collect();
    Plan {
        faults,
        first_attempts,
    }
}

fn worker_config(queue: &str) -> WorkerConfig {
    let mut config = fast_config()
        .shutdown_timeout(Duration::from_secs(1))
        .database_timeout(DATABASE_TIMEOUT);
    config.queues.clear();
    config.queue(queue, SLOTS_PER_WORKER)
}

/// One worker of a schedule: its proxy (PostgreSQL), pool and handle.
struct Node<DB: FaultDb> {
    proxy: Option<FaultProxy>,
    pool: Pool<DB>,
    handle: Option<WorkerHandle>,
}

async fn start_worker<DB: FaultDb>(
    pool: &Pool<DB>,
    queue: &str,
    index: usize,
    history: &History,
) -> WorkerHandle {
    // As a supervisor would: a worker restarted while its database is out
    // of reach starts when it is back.
    let started = Instant::now();
    let handle = loop {
        let jobs = offload::Registry::new().register::<Tracked>();
        match Worker::new(pool.clone(), jobs, worker_config(queue))
            .start()
            .await
        {
            Ok(handle) => break handle,
            Err(error) if started.elapsed() < FINISH_WITHIN => {
                history.record(Event::Fault {
                    name: format!("worker {index} did not start: {error}"),
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("worker {index} did not start in {FINISH_WITHIN:?}: {error}"),
        }
    };
    let mut events = handle.events();
    let history = history.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) if event.outcome == AttemptOutcome::Completed => {
                    history.record(Event::Completed {
                        id: event.job.id,
                        worker: index,
                    });
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    panic!("the history missed {missed} worker events")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    handle
}

async fn shut_down(handle: WorkerHandle) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(15), handle.shutdown())
        .await
        .map_err(|_| "a worker's shutdown took over 15 s".to_owned())
}

async fn inject<DB: FaultDb>(
    fault: Fault,
    nodes: &Mutex<Vec<Node<DB>>>,
    admin: &Pool<DB>,
    queue: &str,
    history: &History,
) {
    let name = format!("{fault:?}");
    history.record(Event::Fault { name: name.clone() });
    let proxy_of = |worker: usize, act: &dyn Fn(&FaultProxy)| {
        if let Some(proxy) = &nodes.lock().expect("nodes")[worker].proxy {
            act(proxy);
        }
    };
    match fault {
        Fault::Reset(worker) => proxy_of(worker, &|proxy| proxy.reset_all()),
        Fault::HalfOpen(worker) => proxy_of(worker, &|proxy| proxy.half_open_all()),
        Fault::Refuse(worker, lasts) => {
            proxy_of(worker, &|proxy| proxy.refuse(true));
            tokio::time::sleep(lasts).await;
            proxy_of(worker, &|proxy| proxy.refuse(false));
        }
        Fault::Stall(worker, lasts) => {
            proxy_of(worker, &|proxy| proxy.stall());
            tokio::time::sleep(lasts).await;
            proxy_of(worker, &|proxy| proxy.flow());
        }
        Fault::CutBusy(worker, how) => {
            let ports = {
                let nodes = nodes.lock().expect("nodes");
                nodes[worker]
                    .proxy
                    .as_ref()
                    .map(FaultProxy::upstream_ports)
                    .unwrap_or_default()
            };
            let busy = DB::busy_connections(admin, &ports).await;
            if let Some(port) = busy.first().or(ports.first()) {
                proxy_of(worker, &|proxy| proxy.cut(*port, how));
            }
        }
        Fault::HoldLocks(lasts) => DB::hold_locks(admin, queue, lasts).await,
        Fault::FailCompletions(lasts) => {
            DB::fail_completions(admin, queue, true).await;
            tokio::time::sleep(lasts).await;
            DB::fail_completions(admin, queue, false).await;
        }
        Fault::Restart(worker) => {
            let (handle, pool) = {
                let mut nodes = nodes.lock().expect("nodes");
                (nodes[worker].handle.take(), nodes[worker].pool.clone())
            };
            if let Some(handle) = handle {
                if let Err(error) = shut_down(handle).await {
                    panic!("restart: {error}");
                }
            }
            let handle = start_worker(&pool, queue, worker, history).await;
            nodes.lock().expect("nodes")[worker].handle = Some(handle);
        }
    }
    if fault.lasts().is_some() {
        history.record(Event::FaultEnded { name });
    }
}

/// Runs one schedule; its counts, or what went wrong and where the history is.
async fn run_schedule<DB: FaultDb>(
    db: &TestDatabase<DB>,
    server: Option<std::net::SocketAddr>,
    backend: &str,
    seed: u64,
) -> Result<Counts, String> {
    let plan = plan(seed, &fault_kinds(server.is_some()));
    // Both backends' tests share this process (and the history map).
    let queue = format!("{backend}_{seed}");
    let history = History::new();
    HISTORIES
        .lock()
        .expect("histories")
        .insert(queue.clone(), history.clone());
    let mut nodes = Vec::new();
    for index in 0..WORKERS {
        let proxy = match server {
            Some(server) => Some(FaultProxy::start(server).await),
            None => None,
        };
        let url = proxy
            .as_ref()
            .map_or(db.url.clone(), |proxy| proxy.route(&db.url));
        // A service's fail-fast pool: a silent connection costs a third.
        let settings = PoolSettings::new(POOL_CONNECTIONS).acquire_timeout(Duration::from_secs(3));
        let pool = DB::connect_with(&url, settings).await.expect("worker pool");
        let handle = start_worker(&pool, &queue, index, &history).await;
        nodes.push(Node {
            proxy,
            pool,
            handle: Some(handle),
        });
    }
    let nodes = Mutex::new(nodes);
    let client = Client::new(nodes.lock().expect("nodes")[0].pool.clone());
    let enqueue = |first_attempt: FirstAttempt| {
        let (client, queue, history) = (client.clone(), queue.clone(), history.clone());
        async move {
            let options = EnqueueOptions::new().queue(&queue);
            let job = Tracked { first_attempt };
            match tokio::time::timeout(ENQUEUE_LIMIT, client.enqueue_with(job, options)).await {
                Ok(Ok(job)) => history.record(Event::Acked { id: job.id }),
                Ok(Err(error)) => history.record(Event::EnqueueFailed {
                    error: error.to_string(),
                }),
                Err(_) => history.record(Event::EnqueueFailed {
                    error: "timed out".into(),
                }),
            }
        }
    };
    let (before, during) = plan.first_attempts.split_at(JOBS_BEFORE_FAULTS);
    for first_attempt in before {
        enqueue(*first_attempt).await;
    }
    let began = Instant::now();
    let enqueuing = async {
        for first_attempt in during {
            enqueue(*first_attempt).await;
            tokio::time::sleep(FAULT_WINDOW / JOBS_DURING_FAULTS as u32).await;
        }
    };
    let faults = futures::future::join_all(plan.faults.iter().map(|(at, fault)| {
        let (nodes, queue, history) = (&nodes, &queue, &history);
        async move {
            tokio::time::sleep_until((began + *at).into()).await;
            inject(*fault, nodes, &db.pool, queue, history).await;
        }
    }));
    tokio::join!(enqueuing, faults);
    for node in nodes.lock().expect("nodes").iter() {
        if let Some(proxy) = &node.proxy {
            proxy.heal();
        }
    }
    history.record(Event::Healed);
    let finished = Instant::now() + FINISH_WITHIN;
    let mut jobs = DB::jobs_of(&db.pool, &queue).await;
    while Instant::now() < finished && jobs.iter().any(|job| job.state != "completed") {
        tokio::time::sleep(Duration::from_millis(50)).await;
        jobs = DB::jobs_of(&db.pool, &queue).await;
    }
    let observed = Observed {
        jobs,
        effects: DB::effects_of(&db.pool, &queue).await.into_iter().collect(),
        live_workers: DB::live_workers(&db.pool, Duration::from_secs(1)).await,
    };
    let mut problems = Vec::new();
    let handles: Vec<WorkerHandle> = nodes
        .lock()
        .expect("nodes")
        .iter_mut()
        .filter_map(|node| node.handle.take())
        .collect();
    for handle in handles {
        if let Err(error) = shut_down(handle).await {
            problems.push(error);
        }
    }
    HISTORIES.lock().expect("histories").remove(&queue);
    let events = history.events();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fault-histories");
    let path = history::write(&dir, &format!("{backend}-{seed}"), &events, &observed);
    for node in nodes.into_inner().expect("nodes") {
        // sqlx pings each connection it takes back, without a limit: one
        // left silent by a fault never comes back.
        let _ = tokio::time::timeout(Duration::from_secs(2), node.pool.close()).await;
    }
    match history::check(&events, &observed) {
        Ok(counts) if problems.is_empty() => Ok(counts),
        Ok(_) => Err(format!(
            "seed {seed}: {}; history {}",
            problems.join("; "),
            path.display()
        )),
        Err(violations) => {
            problems.extend(violations);
            Err(format!(
                "seed {seed}: {}; history {}",
                problems.join("; "),
                path.display()
            ))
        }
    }
}

async fn run_schedules<DB: FaultDb>(backend: &str, network: bool) {
    let db = TestDatabase::<DB>::create().await;
    DB::install_completion_fault(&db.pool).await;
    let server = network.then(|| support::postgres::server_address(&db.url));
    let count = env_number("OFFLOAD_FAULT_SCHEDULES", 100);
    let first = env_number("OFFLOAD_FAULT_SEED", rand::random::<u32>() as u64);
    let limit = Duration::from_secs(env_number("OFFLOAD_FAULT_SECONDS", 900));
    let began = Instant::now();
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for seed in first..first + count {
        assert!(
            began.elapsed() < limit,
            "{backend}: {} of {count} schedules in the {limit:?} bound (first seed {first})",
            seed - first
        );
        // A panic (a worker that would not stop or start) fails the
        // schedule, named by its seed, like a broken invariant.
        let schedule = std::panic::AssertUnwindSafe(run_schedule(&db, server, backend, seed));
        match futures::FutureExt::catch_unwind(schedule).await {
            Ok(Ok(counts)) => total += counts,
            Ok(Err(failure)) => failures.push(failure),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_default();
                failures.push(format!("seed {seed}: panicked: {message}"));
            }
        }
        if failures.len() >= 3 {
            break;
        }
    }
    eprintln!(
        "fault schedules ({backend}): {} passed, {} failed, first seed {first}, {:.0} s; \
         {} acknowledged, {} completed, {} attempts, {} jobs retried, {} enqueues failed, {} faults",
        total.schedules,
        failures.len(),
        began.elapsed().as_secs_f64(),
        total.acked,
        total.completed,
        total.attempts,
        total.retried_jobs,
        total.failed_enqueues,
        total.faults,
    );
    assert!(failures.is_empty(), "{backend}:\n{}", failures.join("\n"));
    // The faults and first-attempt failures must have made jobs retry.
    assert!(
        total.schedules < 10 || total.retried_jobs > 0,
        "{backend}: no job was retried in {} schedules",
        total.schedules
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_random_fault_schedules() {
    run_schedules::<Postgres>("postgres", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_random_fault_schedules() {
    run_schedules::<Sqlite>("sqlite", false).await;
}

/// The checker is not a formality: each invariant broken by hand is named.
#[test]
fn the_checker_names_each_broken_invariant() {
    use support::faults::JobRow;
    let row = |id: i64, state: &str, worker: Option<&str>| JobRow {
        id,
        state: state.into(),
        attempt: 1,
        worker_id: worker.map(str::to_owned),
    };
    let events: Vec<(u128, Event)> = [1, 2, 3, 4, 5]
        .into_iter()
        .flat_map(|id| [Event::Acked { id }, Event::Claimed { id, attempt: 1 }])
        .chain([
            Event::Completed { id: 4, worker: 0 },
            Event::Completed { id: 4, worker: 1 },
        ])
        .map(|event| (0, event))
        .collect();
    let observed = Observed {
        // 1 lost; 2 stuck on a live worker; 3 completed without its effect;
        // 4 completed twice (two effects); 5 discarded with its effect.
        jobs: vec![
            row(2, "running", Some("w1")),
            row(3, "completed", None),
            row(4, "completed", None),
            row(5, "discarded", None),
        ],
        effects: [(4, 2), (5, 1)].into_iter().collect(),
        live_workers: vec!["w1".into()],
    };
    let violations = history::check(&events, &observed).expect_err("violations");
    let text = violations.join("\n");
    for expected in [
        "job 1: acknowledged, then lost",
        "job 2: stuck running on w1 (live)",
        "job 3: completed with 0 effect rows",
        "job 4: completed with 2 effect rows",
        "job 4: completed 2 times",
        "job 5: acknowledged but ended discarded",
        "job 5: 1 effect rows committed, but it is discarded",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert_eq!(violations.len(), 7, "{text}");
}
