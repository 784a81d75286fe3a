//! Measures offload on a real database: bulk and single enqueue rate, drain
//! rate for no-op jobs and for jobs that update a row in their own
//! transaction, and enqueue-to-start latency at a steady rate.
//!
//! Every run works in a scratch database it creates and drops: on
//! PostgreSQL `offload_bench_<pid>` on the server the URL names (created
//! through the server's `postgres` database), on SQLite a file
//! `offload_bench_<pid>.db` beside the named file or in the temp directory.
//! It never reads or writes another database's rows.
//!
//! With `--baseline`, every measure also runs against a hand-written job
//! table with its own SQL in the same scratch database (sqlx on PostgreSQL,
//! rusqlite on SQLite), the two sides taking turns for `--rounds` rounds, and
//! the report gives both medians and their ratio.
//!
//! The binary `offload-bench` runs it; a CLI can embed it by flattening
//! [`BenchArgs`] into one of its subcommands and calling [`run`]:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     bench: offload_bench::BenchArgs,
//! }
//!
//! # async fn example() -> anyhow::Result<()> {
//! let cli = Cli::parse_from(["bench", "--database-url", "postgres://postgres@127.0.0.1:5432/test"]);
//! let report = offload_bench::run(cli.bench).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod baseline;
mod comparison;
mod jobs;
mod phase;
mod report;
mod rounds;
pub mod store;

use anyhow::Context as _;
use offload::{Backend, BackendKind};
use sqlx::{Postgres, Sqlite};

pub use comparison::{Comparison, Side};
pub use jobs::{CounterJob, LatencyJob, NoopJob, QUEUE};
pub use report::{Latency, Report, ServerCost, Settings, Throughput};

use crate::baseline::WithBaseline;
use crate::store::{postgres::ScratchDatabase, sqlite::ScratchFile};

/// The measurements a run can make, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Phase {
    /// `enqueue_many` in batches.
    Bulk,
    /// One `enqueue` per job.
    Single,
    /// No-op jobs, completed rows kept.
    Drain,
    /// No-op jobs, completed rows deleted (retention 0).
    DrainDelete,
    /// Jobs that update a row in their own transaction.
    DrainTx,
    /// The no-op drain under a rate limit and under a cap per key over
    /// 1,000 keys, each against the same drain without a limit.
    DrainLimits,
    /// Enqueue-to-start latency at a steady rate.
    Latency,
}

/// What to measure and how hard. Every flag has a default that finishes
/// well within a minute per backend on a 2-core machine.
///
/// The struct defines `--database-url`; a CLI that flattens it must not
/// define another argument with that name in the same command.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server or file to benchmark: `postgres://user@host:port/db` (a
    /// scratch database is created on that server and dropped after) or
    /// `sqlite://path.db` (a scratch file beside it). Default: a scratch
    /// SQLite file in the temp directory.
    #[arg(long)]
    pub database_url: Option<String>,

    /// Phases to run, comma-separated. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phases: Vec<Phase>,

    /// Jobs inserted by the bulk-enqueue phase.
    #[arg(long, default_value_t = 100_000)]
    pub bulk_jobs: u64,

    /// Jobs per `enqueue_many` call.
    #[arg(long, default_value_t = 5_000)]
    pub bulk_batch: usize,

    /// Tasks inserting batches at once in the bulk-enqueue phase.
    #[arg(long, default_value_t = 2)]
    pub bulk_tasks: usize,

    /// Jobs inserted one `enqueue` at a time.
    #[arg(long, default_value_t = 10_000)]
    pub single_jobs: u64,

    /// Tasks calling `enqueue` at once.
    #[arg(long, default_value_t = 8)]
    pub single_tasks: usize,

    /// No-op jobs drained by each of the drain phases.
    #[arg(long, default_value_t = 100_000)]
    pub drain_jobs: u64,

    /// Transactional jobs drained by the drain-tx phase.
    #[arg(long, default_value_t = 20_000)]
    pub tx_jobs: u64,

    /// Rows of `bench_counters` the transactional jobs spread their updates over.
    #[arg(long, default_value_t = 1_000)]
    pub counter_rows: i64,

    /// Queue concurrency for no-op and latency jobs.
    #[arg(long, default_value_t = 1_000)]
    pub concurrency: usize,

    /// Queue concurrency for transactional jobs; each holds a connection
    /// while it runs. Comma-separated for one drain-tx measure per value
    /// (`16,64`). Default: 16 on PostgreSQL, 2 on SQLite.
    #[arg(long, value_delimiter = ',')]
    pub tx_concurrency: Vec<usize>,

    /// Most jobs claimed per statement (`WorkerConfig::fetch_batch`).
    #[arg(long, default_value_t = 1_000)]
    pub fetch_batch: usize,

    /// Most completions per statement (`WorkerConfig::completer_batch`).
    #[arg(long, default_value_t = 1_000)]
    pub completer_batch: usize,

    /// Pool size. Default: 20 on PostgreSQL (the server is shared; mind its
    /// `max_connections`), 8 on SQLite.
    #[arg(long)]
    pub max_connections: Option<u32>,

    /// Jobs per second the latency phase enqueues.
    #[arg(long, default_value_t = 1_000.0)]
    pub latency_rate: f64,

    /// How long the latency phase enqueues, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub latency_secs: f64,

    /// PostgreSQL only: run with `synchronous_commit = off` on the scratch
    /// database, to see what waiting for the WAL flush of each commit costs.
    #[arg(long)]
    pub async_commit: bool,

    /// Also run the hand-written baseline (its own minimal tables and SQL in
    /// the same scratch database), alternating with offload in every
    /// measure, and report both medians and their ratio.
    #[arg(long)]
    pub baseline: bool,

    /// Rounds of each measure (per side); the report gives medians.
    /// Default: 3 with `--baseline`, else 1.
    #[arg(long)]
    pub rounds: Option<usize>,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    fn runs(&self, phase: Phase) -> bool {
        self.phases.is_empty() || self.phases.contains(&phase)
    }
}

/// Runs the phases `args` selects and returns their figures. Progress bars
/// go to stderr. The scratch database is removed at the end, also when a
/// phase fails. Runs in one process wait for each other.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    // The bench jobs count in process-wide statics, so runs in one process
    // take turns.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let url = args.database_url.clone();
    let kind = match url.as_deref() {
        Some(url) => BackendKind::from_url(url)?,
        None => BackendKind::Sqlite,
    };
    match kind {
        BackendKind::Postgres => {
            let server = url.as_deref().unwrap_or_default();
            let scratch = ScratchDatabase::create(server, args.async_commit)
                .await
                .context("creating the scratch database (needs CREATEDB and a free connection)")?;
            let name = scratch.name().to_owned();
            let result =
                until_interrupted(run_on::<Postgres>(scratch.url(), &name, &args, 20, 16)).await;
            let dropped = scratch.drop().await;
            let report = result?;
            dropped.context("dropping the scratch database")?;
            Ok(report)
        }
        BackendKind::Sqlite => {
            let scratch = ScratchFile::new(url.as_deref())?;
            let name = scratch.path().display().to_string();
            let result =
                until_interrupted(run_on::<Sqlite>(scratch.url(), &name, &args, 8, 2)).await;
            let removed = scratch.remove();
            let report = result?;
            removed.context("removing the scratch file")?;
            Ok(report)
        }
    }
}

async fn run_on<DB: WithBaseline>(
    url: &str,
    database: &str,
    args: &BenchArgs,
    default_connections: u32,
    default_tx_concurrency: usize,
) -> anyhow::Result<Report> {
    let settings = Settings {
        max_connections: args.max_connections.unwrap_or(default_connections),
        concurrency: args.concurrency,
        tx_concurrency: if args.tx_concurrency.is_empty() {
            vec![default_tx_concurrency]
        } else {
            args.tx_concurrency.clone()
        },
        fetch_batch: args.fetch_batch,
        completer_batch: args.completer_batch,
        synchronous_commit: !args.async_commit,
    };
    let rounds = args
        .rounds
        .unwrap_or(if args.baseline { 3 } else { 1 })
        .max(1);
    let pool = DB::connect(url, settings.max_connections).await?;
    let bench = phase::Bench::<DB>::new(pool.clone(), settings.clone());
    bench.client.migrate().await?;
    let baseline = if args.baseline {
        Some(DB::baseline(&pool, url, &settings).await?)
    } else {
        None
    };
    let mut report = Report {
        backend: backend_name::<DB>().to_owned(),
        database: database.to_owned(),
        settings,
        rounds,
        baseline: args.baseline,
        bulk_enqueue: None,
        single_enqueue: None,
        drain_noop: None,
        drain_noop_delete: None,
        drain_tx: None,
        latency: None,
        comparisons: Vec::new(),
    };
    rounds::measure_all(&bench, baseline.as_ref(), args, rounds, &mut report).await?;
    pool.close().await;
    Ok(report)
}

/// Runs `bench` until it ends or Ctrl-C arrives, so that the scratch
/// database is removed either way.
async fn until_interrupted(
    bench: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<Report> {
    tokio::select! {
        result = bench => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    }
}

fn backend_name<DB: Backend>() -> &'static str {
    <DB as sqlx::Database>::NAME
}
