//! Issue 14, point 4: every limit holds while worker processes are
//! SIGKILLed and restarted. Four processes of 64 slots on each of four
//! queues (a cap per key, a global limit, a rate limit, a rate per key)
//! drain a backlog;
//! every start is a row the job writes outside its transaction (its claim
//! time, its own start and end, its key, its pid), so a start whose process
//! was killed stays counted. Afterwards the limits are switched off at run
//! time and the same checks must see them exceeded: the checks can fail.

mod support;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use offload::{
    EnqueueOptions, Job, JobContext, JobError, JobState, Partition, QueueConfig, RateLimit,
    Registry, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use sqlx::{Pool, Postgres, Sqlite};
use support::processes::{Children, URL_ENV};
use support::{count_in, eventually, fast_config, TestDatabase, TestDb};

const CHILD: &str = "limits_chaos_worker_process";
const PROCESSES: usize = 4;
const SLOTS: usize = 64;
const KEYED: &str = "keyed";
const PER_KEY: usize = 2;
const KEYS: usize = 16;
const CAPPED: &str = "capped";
const GLOBAL: usize = 16;
const RATED: &str = "rated";
const RATE: u32 = 40;
const RATE_PERIOD: Duration = Duration::from_millis(500);
const KEY_RATED: &str = "key_rated";
const KEY_RATE: u32 = 10;
const RATED_KEYS: usize = 8;
const KILLS: usize = 6;

fn now_us() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_micros()).expect("fits")
}

/// A number in `0..n`, different each call.
fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n
}

/// One start as its job logged it.
#[derive(Debug, sqlx::FromRow)]
struct Start {
    queue: String,
    key: String,
    pid: i64,
    /// The claim's time (`attempted_at`), the one a rate limit counts.
    claimed_us: i64,
    started_us: i64,
    finished_us: Option<i64>,
}

/// The start log, per backend: written on the pool, outside the job's
/// transaction, so it survives the job's process.
trait StartLog: TestDb {
    fn create_log(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
    fn log_start(
        pool: &Pool<Self>,
        job_id: i64,
        pid: u32,
        started_us: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn log_finish(
        pool: &Pool<Self>,
        job_id: i64,
        attempt: i32,
        finished_us: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn starts(pool: &Pool<Self>) -> impl Future<Output = Vec<Start>> + Send;
    fn clear_log(pool: &Pool<Self>) -> impl Future<Output = ()> + Send;
}

impl StartLog for Postgres {
    async fn create_log(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE starts (job_id int8, attempt int4, queue text, key text, pid int8, \
             claimed_us int8, started_us int8, finished_us int8)",
        )
        .execute(pool)
        .await
        .expect("start log");
    }

    async fn log_start(
        pool: &Pool<Self>,
        job_id: i64,
        pid: u32,
        started_us: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO starts SELECT id, attempt, queue, partition_key, $2, \
             (extract(epoch FROM attempted_at) * 1000000)::int8, $3, NULL \
             FROM offload_jobs WHERE id = $1",
        )
        .bind(job_id)
        .bind(i64::from(pid))
        .bind(started_us)
        .execute(pool)
        .await
        .map(drop)
    }

    async fn log_finish(
        pool: &Pool<Self>,
        job_id: i64,
        attempt: i32,
        finished_us: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE starts SET finished_us = $3 WHERE job_id = $1 AND attempt = $2")
            .bind(job_id)
            .bind(attempt)
            .bind(finished_us)
            .execute(pool)
            .await
            .map(drop)
    }

    async fn starts(pool: &Pool<Self>) -> Vec<Start> {
        sqlx::query_as("SELECT queue, key, pid, claimed_us, started_us, finished_us FROM starts")
            .fetch_all(pool)
            .await
            .expect("starts")
    }

    async fn clear_log(pool: &Pool<Self>) {
        sqlx::raw_sql("DELETE FROM starts")
            .execute(pool)
            .await
            .expect("clear");
    }
}

impl StartLog for Sqlite {
    async fn create_log(pool: &Pool<Self>) {
        sqlx::raw_sql(
            "CREATE TABLE starts (job_id INTEGER, attempt INTEGER, queue TEXT, key TEXT, \
             pid INTEGER, claimed_us INTEGER, started_us INTEGER, finished_us INTEGER)",
        )
        .execute(pool)
        .await
        .expect("start log");
    }

    async fn log_start(
        pool: &Pool<Self>,
        job_id: i64,
        pid: u32,
        started_us: i64,
    ) -> Result<(), sqlx::Error> {
        // attempted_at is in microseconds already.
        sqlx::query(
            "INSERT INTO starts SELECT id, attempt, queue, partition_key, ?2, attempted_at, ?3, \
             NULL FROM offload_jobs WHERE id = ?1",
        )
        .bind(job_id)
        .bind(i64::from(pid))
        .bind(started_us)
        .execute(pool)
        .await
        .map(drop)
    }

    async fn log_finish(
        pool: &Pool<Self>,
        job_id: i64,
        attempt: i32,
        finished_us: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE starts SET finished_us = ?3 WHERE job_id = ?1 AND attempt = ?2")
            .bind(job_id)
            .bind(attempt)
            .bind(finished_us)
            .execute(pool)
            .await
            .map(drop)
    }

    async fn starts(pool: &Pool<Self>) -> Vec<Start> {
        sqlx::query_as("SELECT queue, key, pid, claimed_us, started_us, finished_us FROM starts")
            .fetch_all(pool)
            .await
            .expect("starts")
    }

    async fn clear_log(pool: &Pool<Self>) {
        sqlx::raw_sql("DELETE FROM starts")
            .execute(pool)
            .await
            .expect("clear");
    }
}

/// Logs its start, sleeps, logs its end. Its queue comes from the enqueue;
/// a key, when set, is its partition key.
#[derive(Serialize, Deserialize)]
struct LoggedStart {
    key: String,
    millis: u64,
}

impl<DB: StartLog> Job<DB> for LoggedStart {
    const KIND: &'static str = "logged_start";
    const QUEUE: &'static str = KEYED;

    fn partition_key(&self) -> Option<String> {
        (!self.key.is_empty()).then(|| self.key.clone())
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        DB::log_start(ctx.pool(), ctx.id(), std::process::id(), now_us()).await?;
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        DB::log_finish(ctx.pool(), ctx.id(), ctx.attempt(), now_us()).await?;
        Ok(())
    }
}

fn limited_config() -> WorkerConfig {
    fast_config()
        .queue_config(
            QueueConfig::new(KEYED, SLOTS)
                .partition(Partition::new().concurrency(PER_KEY).expect("valid")),
        )
        .queue_with_global_limit(CAPPED, SLOTS, GLOBAL)
        .queue_config(
            QueueConfig::new(RATED, SLOTS)
                .rate_limit(RateLimit::new(RATE, RATE_PERIOD).expect("valid")),
        )
        .queue_config(QueueConfig::new(KEY_RATED, SLOTS).partition(
            Partition::new().rate(RateLimit::new(KEY_RATE, RATE_PERIOD).expect("valid")),
        ))
}

async fn run_child<DB: StartLog>(url: &str, connections: u32) {
    let pool = DB::connect(url, connections).await.expect("child connects");
    let jobs = Registry::<DB>::new().register::<LoggedStart>();
    let _worker = Worker::new(pool, jobs, limited_config())
        .start()
        .await
        .expect("worker starts");
    std::future::pending::<()>().await;
}

/// Not a test on its own: a worker process the tests below kill.
#[test]
#[ignore = "run by the limit chaos tests as a child process"]
fn limits_chaos_worker_process() {
    let Ok(url) = std::env::var(URL_ENV) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        if url.starts_with("postgres") {
            run_child::<Postgres>(&url, 12).await;
        } else {
            run_child::<Sqlite>(&url, 4).await;
        }
    });
}

/// The most jobs of one group running at once, by group: each start runs
/// from its logged start to its logged end, or, killed, to its process's
/// kill. That span lies inside the one the limit counts (claim to
/// completion or rescue), so a count over the cap is a real breach.
fn most_at_once<'a>(
    starts: impl Iterator<Item = &'a Start>,
    group: impl Fn(&Start) -> String,
    killed_at: &HashMap<i64, i64>,
) -> BTreeMap<String, i64> {
    let mut events: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for start in starts {
        let end = start
            .finished_us
            .or_else(|| killed_at.get(&start.pid).copied())
            .unwrap_or(i64::MAX);
        let spans = events.entry(group(start)).or_default();
        spans.push((start.started_us, 1));
        spans.push((end, -1));
    }
    events
        .into_iter()
        .map(|(group, mut spans)| {
            // At one instant, an end before a start.
            spans.sort();
            let mut running = 0;
            let most = spans
                .iter()
                .map(|(_, step)| {
                    running += step;
                    running
                })
                .max()
                .unwrap_or(0);
            (group, most)
        })
        .collect()
}

/// The most claims in any window of the rate's period.
fn busiest_window<'a>(starts: impl IntoIterator<Item = &'a Start>) -> usize {
    let mut claims: Vec<i64> = starts.into_iter().map(|start| start.claimed_us).collect();
    claims.sort_unstable();
    let period = i64::try_from(RATE_PERIOD.as_micros()).expect("fits");
    let mut first = 0;
    let mut busiest = 0;
    for (last, at) in claims.iter().enumerate() {
        while claims[first] <= at - period {
            first += 1;
        }
        busiest = busiest.max(last + 1 - first);
    }
    busiest
}

/// What the start log shows of each limit.
#[derive(Debug)]
struct Seen {
    most_per_key: i64,
    keys: usize,
    most_capped: i64,
    busiest_rated: usize,
    busiest_key: usize,
    rated_keys: usize,
    starts: usize,
    unfinished: usize,
}

async fn seen<DB: StartLog>(pool: &Pool<DB>, killed_at: &HashMap<i64, i64>) -> Seen {
    let starts = DB::starts(pool).await;
    let per_key = most_at_once(
        starts.iter().filter(|start| start.queue == KEYED),
        |start| start.key.clone(),
        killed_at,
    );
    let capped = most_at_once(
        starts.iter().filter(|start| start.queue == CAPPED),
        |_| String::new(),
        killed_at,
    );
    let mut by_key: BTreeMap<&str, Vec<&Start>> = BTreeMap::new();
    for start in starts.iter().filter(|start| start.queue == KEY_RATED) {
        by_key.entry(start.key.as_str()).or_default().push(start);
    }
    Seen {
        most_per_key: per_key.values().copied().max().unwrap_or(0),
        keys: per_key.len(),
        most_capped: capped.values().copied().max().unwrap_or(0),
        busiest_rated: busiest_window(starts.iter().filter(|start| start.queue == RATED)),
        busiest_key: by_key
            .values()
            .map(|starts| busiest_window(starts.iter().copied()))
            .max()
            .unwrap_or(0),
        rated_keys: by_key.len(),
        starts: starts.len(),
        unfinished: starts
            .iter()
            .filter(|start| start.finished_us.is_none())
            .count(),
    }
}

/// The backlog: `per_key` jobs of each key, and `plain` jobs on each of the
/// other two queues.
async fn enqueue_backlog<DB: StartLog>(db: &TestDatabase<DB>, per_key: usize, plain: usize) {
    let keyed = (0..KEYS * per_key).map(|n| LoggedStart {
        key: format!("customer-{}", n % KEYS),
        millis: 100,
    });
    db.client.enqueue_many(keyed).await.expect("keyed");
    let key_rated = (0..RATED_KEYS * per_key).map(|n| LoggedStart {
        key: format!("provider-{}", n % RATED_KEYS),
        millis: 10,
    });
    db.client
        .enqueue_many_with(key_rated, EnqueueOptions::new().queue(KEY_RATED))
        .await
        .expect("key rated");
    for queue in [CAPPED, RATED] {
        let jobs = (0..plain).map(|_| LoggedStart {
            key: String::new(),
            millis: 100,
        });
        db.client
            .enqueue_many_with(jobs, EnqueueOptions::new().queue(queue))
            .await
            .expect("plain");
    }
}

async fn drained<DB: StartLog>(db: &TestDatabase<DB>, total: i64) -> bool {
    count_in(&db.client, JobState::Completed).await >= total
}

/// One scenario at a time: each loads both cores on its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn limits_hold_through_sigkills<DB: StartLog>(label: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = TestDatabase::<DB>::create().await;
    DB::create_log(&db.pool).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut children = Children::new(CHILD, &db.url, logs.path());
    for _ in 0..PROCESSES {
        children.spawn(0);
    }
    let (per_key, plain) = (40, 400);
    enqueue_backlog(&db, per_key, plain).await;
    let total = ((KEYS + RATED_KEYS) * per_key + 2 * plain) as i64;

    // Kill a random process every 0.2-0.6 s, restarting it at once: all the
    // kills land within the rate limit's least drain time (5 s).
    let started = Instant::now();
    let mut killed_at = HashMap::new();
    let mut next_kill = Instant::now() + Duration::from_millis(500);
    while !drained(&db, total).await {
        children.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the drain stalled: {} of {total} completed",
            count_in(&db.client, JobState::Completed).await
        );
        if children.kills < KILLS && Instant::now() >= next_kill {
            let victim = usize::try_from(random_below(PROCESSES as u64)).expect("small");
            let pid = i64::from(children.pid(victim));
            children.kill_and_restart(victim);
            killed_at.insert(pid, now_us());
            next_kill = Instant::now() + Duration::from_millis(200 + random_below(400));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let chaos = seen(&db.pool, &killed_at).await;
    // The log read once: starts past one per job came after a kill.
    let reruns = chaos
        .starts
        .saturating_sub(usize::try_from(total).expect("fits"));
    eprintln!(
        "{label}: {PROCESSES} processes x {SLOTS} slots, {} SIGKILLs, {total} jobs in {took:.1?}: \
         {} starts ({reruns} after a kill, {} cut by one); at most {} per key \
         (cap {PER_KEY}, {} keys), {} at once on the capped queue (limit {GLOBAL}), {} \
         claims in a {RATE_PERIOD:?} window (limit {RATE}), {} of one key (limit {KEY_RATE}, \
         {} keys)",
        children.kills,
        chaos.starts,
        chaos.unfinished,
        chaos.most_per_key,
        chaos.keys,
        chaos.most_capped,
        chaos.busiest_rated,
        chaos.busiest_key,
        chaos.rated_keys,
    );
    assert_eq!(children.kills, KILLS, "the drain outlasted the kills");
    assert_eq!(chaos.keys, KEYS);
    assert!(chaos.most_per_key <= PER_KEY as i64, "{chaos:?}");
    assert!(chaos.most_capped <= GLOBAL as i64, "{chaos:?}");
    assert!(chaos.busiest_rated <= RATE as usize, "{chaos:?}");
    assert_eq!(chaos.rated_keys, RATED_KEYS);
    assert!(chaos.busiest_key <= KEY_RATE as usize, "{chaos:?}");
    // The limits bound the drain, or holding them proves little.
    assert_eq!(chaos.most_per_key, PER_KEY as i64, "{chaos:?}");
    assert!(chaos.most_capped >= GLOBAL as i64 / 2, "{chaos:?}");
    assert!(chaos.busiest_rated >= RATE as usize / 2, "{chaos:?}");
    assert!(chaos.busiest_key >= KEY_RATE as usize / 2, "{chaos:?}");

    // The control: the same checks see the limits broken once they are off.
    db.client.set_partition(KEYED, None).await.expect("off");
    db.client.set_global_limit(CAPPED, None).await.expect("off");
    db.client.set_rate_limit(RATED, None).await.expect("off");
    db.client.set_partition(KEY_RATED, None).await.expect("off");
    DB::clear_log(&db.pool).await;
    let (per_key, plain) = (20, 100);
    enqueue_backlog(&db, per_key, plain).await;
    let total = total + ((KEYS + RATED_KEYS) * per_key + 2 * plain) as i64;
    eventually(
        Duration::from_secs(60),
        "the unlimited backlog drained",
        || drained(&db, total),
    )
    .await;
    let unlimited = seen(&db.pool, &killed_at).await;
    eprintln!("{label}, limits off: {unlimited:?}");
    assert!(unlimited.most_per_key > PER_KEY as i64, "{unlimited:?}");
    assert!(unlimited.most_capped > GLOBAL as i64, "{unlimited:?}");
    assert!(unlimited.busiest_rated > RATE as usize, "{unlimited:?}");
    assert!(unlimited.busiest_key > KEY_RATE as usize, "{unlimited:?}");
    children.assert_alive();
    children.stop();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_holds_through_sigkills_postgres() {
    limits_hold_through_sigkills::<Postgres>("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_holds_through_sigkills_sqlite() {
    limits_hold_through_sigkills::<Sqlite>("sqlite").await;
}
