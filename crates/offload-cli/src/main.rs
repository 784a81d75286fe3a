//! `offload`: migrate the schema, inspect and act on jobs, pause queues,
//! serve the dashboard and run the benchmark, against any `DATABASE_URL`.

mod commands;
mod exit;
mod output;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit::Failure;

const EXAMPLES: &str = "\
Examples:
  offload migrate --database-url postgres://app@db/app
  offload jobs list --state discarded --since 2h
  offload jobs list --queue mail --search timeout --json | jq '.jobs[].id'
  offload jobs show 42
  offload jobs retry 42 43
  offload jobs retry --state discarded --kind send_email
  offload jobs delete --state cancelled --until 7d --yes
  offload queues pause mail
  offload dashboard --listen 0.0.0.0:8080 --token \"$OFFLOAD_DASHBOARD_TOKEN\"
  offload bench --database-url sqlite:///tmp/bench.db

Exit codes: 0 ok, 1 error, 2 usage or invalid filter, 3 job not found,
4 the action does not apply to the job's state.

DATABASE_URL selects the backend (postgres://... or sqlite://...); without it,
sqlite://offload.db in the working directory.";

/// Durable background jobs: inspect and operate offload's queues.
#[derive(Debug, Parser)]
#[command(name = "offload", version, about, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates or upgrades offload's tables.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Lists, shows, retries, cancels and deletes jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Lists queues (alone, or with `list`); pauses and resumes them.
    Queues(QueuesArgs),
    /// Serves the web dashboard and admin API.
    #[command(
        after_long_help = "Examples:\n  offload dashboard\n  offload dashboard --listen 0.0.0.0:8080 --token \"$TOKEN\"\n\nListening beyond loopback requires a token."
    )]
    Dashboard(DashboardArgs),
    /// Measures enqueue rate, drain rate and latency.
    Bench(offload_bench::BenchArgs),
}

/// Where the jobs are.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    /// Database URL: postgres://user@host/db or sqlite://path.db.
    #[arg(long, env = "DATABASE_URL", default_value = offload::DEFAULT_DATABASE_URL, hide_env_values = true, hide_default_value = true)]
    pub database_url: String,
}

/// Which jobs: all conditions must hold.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct FilterArgs {
    /// States, comma-separated (scheduled, available, running, retryable,
    /// completed, discarded, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Queue name.
    #[arg(long)]
    pub queue: Option<String>,
    /// Job kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// A tag the job carries.
    #[arg(long)]
    pub tag: Option<String>,
    /// Created at or after: an age (30m, 2h, 7d), a date or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Created before: same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Text in the args or errors (case-insensitive).
    #[arg(long)]
    pub search: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Lists jobs, newest first.
    #[command(
        after_long_help = "Examples:\n  offload jobs list --state discarded,retryable\n  offload jobs list --queue mail --limit 100 --before 5000\n  offload jobs list --tag signup --json"
    )]
    List {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Jobs per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs with a smaller id (the previous page's last id).
        #[arg(long)]
        before: Option<i64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one job: args, attempts and errors.
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// Job id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs jobs again now: any job that is not running (scheduled,
    /// available, retryable, completed, discarded or cancelled). Attempts
    /// are kept; a job with none left gets one more.
    #[command(
        after_long_help = "Examples:\n  offload jobs retry 42\n  offload jobs retry --state discarded --queue mail\n  offload jobs retry --state completed --kind send_digest --since 1h"
    )]
    Retry(ActionArgs),
    /// Cancels scheduled, available, retryable or running jobs.
    #[command(
        after_long_help = "Examples:\n  offload jobs cancel 42\n  offload jobs cancel --state scheduled --kind send_digest"
    )]
    Cancel(ActionArgs),
    /// Deletes jobs that are not running.
    #[command(
        after_long_help = "Examples:\n  offload jobs delete 42\n  offload jobs delete --state completed --until 1d"
    )]
    Delete(ActionArgs),
}

/// Which jobs an action applies to: ids, or a filter.
#[derive(Debug, Clone, Args)]
pub(crate) struct ActionArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Job ids. Without ids, the action applies to every job matching the
    /// filter options.
    pub ids: Vec<i64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Act on every job: required when no id and no filter is given, so
    /// that a forgotten filter never touches every job.
    #[arg(long)]
    pub all: bool,
    /// Do not ask before a bulk action (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `offload queues` with no subcommand lists the queues, as
/// `offload queues list` does.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct QueuesArgs {
    #[command(subcommand)]
    command: Option<QueuesCommand>,
    #[command(flatten)]
    list: ListQueues,
}

impl QueuesArgs {
    /// The subcommand, `list` when none was given.
    pub(crate) fn command(self) -> QueuesCommand {
        self.command.unwrap_or(QueuesCommand::List(self.list))
    }

    /// The database the command acts on.
    pub(crate) fn database_url(&self) -> &str {
        match &self.command {
            None => &self.list.db.database_url,
            Some(QueuesCommand::List(ListQueues { db, .. }))
            | Some(QueuesCommand::Pause { db, .. })
            | Some(QueuesCommand::Resume { db, .. })
            | Some(QueuesCommand::Limit { db, .. }) => &db.database_url,
        }
    }
}

/// `offload queues list`'s arguments.
#[derive(Debug, Clone, Args)]
pub(crate) struct ListQueues {
    #[command(flatten)]
    pub db: DbArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Every queue: counts by state, throughput, oldest waiting job, paused.
    List(ListQueues),
    /// Stops every worker from claiming the queue's jobs.
    Pause {
        #[command(flatten)]
        db: DbArgs,
        /// Queue name.
        name: String,
    },
    /// Lets workers claim the queue's jobs again.
    Resume {
        #[command(flatten)]
        db: DbArgs,
        /// Queue name.
        name: String,
    },
    /// Sets or removes the queue's limits over every worker; running
    /// workers pick them up within seconds. Limits not named stay.
    Limit {
        #[command(flatten)]
        db: DbArgs,
        /// Queue name.
        name: String,
        /// Most jobs running at once, or `off`.
        #[arg(long, value_name = "N|off")]
        global: Option<String>,
        /// Most job starts per period, as N/PERIOD (`100/s`, `20/1500ms`,
        /// `1000/h`), or `off`.
        #[arg(long, value_name = "N/PERIOD|off")]
        rate: Option<String>,
        /// Partitions the queue by its jobs' keys: `turns` (keys take
        /// turns), N (turns, and at most N of one key's jobs at once),
        /// either with `,N/PERIOD` (at most N starts of one key per period,
        /// e.g. `2,10/s`), or `off`.
        #[arg(long, value_name = "N|turns[,N/PERIOD]|off")]
        partition: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DashboardArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on. Beyond loopback a token is required.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Access token (at least 12 characters).
    #[arg(long, env = "OFFLOAD_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Do not run migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
    /// Also answer, without a token, to this `Host` name (repeatable): for
    /// a proxy that authenticates. Otherwise only loopback names are
    /// answered, so a DNS-rebound page cannot drive the dashboard.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Timeouts for slow clients and the cap on open HTTP connections.
    #[command(flatten)]
    pub limits: offload_axum::serve::LimitsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure:#}");
            ExitCode::from(Failure::code_of(&failure))
        }
    }
}
