//! What each subcommand does. Everything is generic over the backend; the
//! database URL picks it at run time.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use offload::{
    admin::{
        parse_global_limit, parse_partition, parse_rate_limit, Admin, AdminError, BulkTarget,
        FilterParams, JobAction, JobFilter,
    },
    Backend, BackendKind, JobState,
};
use offload_dashboard::{redact_url, DashboardConfig};
use serde_json::json;
use sqlx::{Pool, Postgres, Sqlite};

use crate::exit::{Failure, NOT_APPLICABLE, NOT_FOUND, USAGE};
use crate::output::{print_job, print_jobs, print_json, print_queues};
use crate::{
    ActionArgs, Command, DashboardArgs, FilterArgs, JobsCommand, ListQueues, QueuesCommand,
};

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    let url = match &command {
        Command::Bench(args) => {
            let json = args.json;
            let report = offload_bench::run(args.clone()).await?;
            if json {
                print_json(&report)?;
            } else {
                print!("{report}");
            }
            return Ok(());
        }
        Command::Migrate { db } | Command::Dashboard(DashboardArgs { db, .. }) => {
            db.database_url.clone()
        }
        Command::Jobs(jobs) => match jobs {
            JobsCommand::List { db, .. } | JobsCommand::Show { db, .. } => db.database_url.clone(),
            JobsCommand::Retry(a) | JobsCommand::Cancel(a) | JobsCommand::Delete(a) => {
                a.db.database_url.clone()
            }
        },
        Command::Queues(queues) => queues.database_url().to_owned(),
    };
    let kind = BackendKind::from_url(&url).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    match kind {
        BackendKind::Postgres => with_pool::<Postgres>(&url, command).await,
        BackendKind::Sqlite => with_pool::<Sqlite>(&url, command).await,
    }
}

async fn with_pool<DB: Backend>(url: &str, command: Command) -> anyhow::Result<()> {
    let connections = if matches!(command, Command::Dashboard(_)) {
        8
    } else {
        2
    };
    // Fail fast when the database is away: a person is waiting.
    let settings = offload::PoolSettings::new(connections)
        .acquire_timeout(offload::INTERACTIVE_ACQUIRE_TIMEOUT);
    let pool = DB::connect_with(url, settings)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
    match command {
        Command::Migrate { .. } => {
            DB::migrate(&pool).await?;
            println!("offload schema is up to date ({})", redact_url(url));
            Ok(())
        }
        Command::Jobs(jobs) => run_jobs(Admin::new(pool), jobs).await,
        Command::Queues(queues) => run_queues(Admin::new(pool), queues.command()).await,
        Command::Dashboard(args) => serve_dashboard(pool, url, args).await,
        Command::Bench(_) => Ok(()),
    }
}

fn filter_params(filter: &FilterArgs) -> FilterParams {
    FilterParams {
        state: filter.state.clone(),
        queue: filter.queue.clone(),
        kind: filter.kind.clone(),
        tag: filter.tag.clone(),
        since: filter.since.clone(),
        until: filter.until.clone(),
        q: filter.search.clone(),
        limit: None,
        before: None,
    }
}

async fn run_jobs<DB: Backend>(admin: Admin<DB>, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            filter,
            limit,
            before,
            json,
            ..
        } => {
            let params = FilterParams {
                limit: Some(limit.to_string()),
                before: before.map(|b| b.to_string()),
                ..filter_params(&filter)
            };
            let (filter, page) = params.parse().map_err(AdminError::from)?;
            let page = admin.list(&filter, page).await?;
            if json {
                print_json(&page)
            } else {
                print_jobs(&page);
                Ok(())
            }
        }
        JobsCommand::Show { id, json, .. } => {
            let job = admin.job(id).await?;
            if json {
                print_json(&job)
            } else {
                print_job(&job)
            }
        }
        JobsCommand::Retry(args) => act(admin, JobAction::Retry, args).await,
        JobsCommand::Cancel(args) => act(admin, JobAction::Cancel, args).await,
        JobsCommand::Delete(args) => act(admin, JobAction::Delete, args).await,
    }
}

fn past_tense(action: JobAction) -> &'static str {
    match action {
        JobAction::Retry => "retried",
        JobAction::Cancel => "cancelled",
        JobAction::Delete => "deleted",
    }
}

async fn act<DB: Backend>(
    admin: Admin<DB>,
    action: JobAction,
    args: ActionArgs,
) -> anyhow::Result<()> {
    let (filter, _) = filter_params(&args.filter)
        .parse()
        .map_err(AdminError::from)?;
    if !args.ids.is_empty() {
        if !filter.is_empty() || args.all {
            return Err(Failure::new(USAGE, "give job ids or filter options, not both").into());
        }
        return act_on_ids(&admin, action, &args.ids, args.json).await;
    }
    if filter.is_empty() && !args.all {
        return Err(Failure::new(
            USAGE,
            format!(
                "no job ids and no filter: pass ids, filter options, or --all to {} every job",
                action.as_str()
            ),
        )
        .into());
    }
    act_on_filter(&admin, action, &filter, &args).await
}

async fn act_on_ids<DB: Backend>(
    admin: &Admin<DB>,
    action: JobAction,
    ids: &[i64],
    json: bool,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut worst = 0u8;
    for &id in ids {
        let outcome = match admin.act_on_job(action, id).await {
            Ok(true) => {
                if !json {
                    println!("job {id} {}", past_tense(action));
                }
                "changed".to_owned()
            }
            Ok(false) => {
                let state = admin.job(id).await.map(|j| j.state).ok();
                let state = state.map(JobState::as_str).unwrap_or("gone");
                eprintln!("job {id} is {state}: {} does not apply", action.as_str());
                worst = worst.max(NOT_APPLICABLE);
                "not_applicable".to_owned()
            }
            Err(AdminError::JobNotFound(_)) => {
                eprintln!("job {id} not found");
                worst = worst.max(NOT_FOUND);
                "not_found".to_owned()
            }
            Err(error) => return Err(error.into()),
        };
        results.push(json!({ "id": id, "outcome": outcome }));
    }
    if json {
        print_json(&json!({ "action": action.as_str(), "results": results }))?;
    }
    if worst != 0 {
        let message = if worst == NOT_APPLICABLE {
            "some jobs were not in a state the action applies to"
        } else {
            "some jobs were not found"
        };
        return Err(Failure::new(worst, message).into());
    }
    Ok(())
}

async fn act_on_filter<DB: Backend>(
    admin: &Admin<DB>,
    action: JobAction,
    filter: &JobFilter,
    args: &ActionArgs,
) -> anyhow::Result<()> {
    let total = admin.count(filter).await?;
    if total == 0 {
        if args.json {
            print_json(&json!({ "action": action.as_str(), "matched": 0, "changed": 0 }))?;
        } else {
            println!("No jobs match.");
        }
        return Ok(());
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::new(
                USAGE,
                format!("{total} jobs match; pass --yes to {} them", action.as_str()),
            )
            .into());
        }
        eprint!(
            "{} {total} matching jobs? [y/N] ",
            capitalize(action.as_str())
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::new(1, "aborted").into());
        }
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::try_from(total).unwrap_or(0))
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("{}ing", action.as_str()));
    let outcome = admin
        .bulk(action, BulkTarget::new(filter, args.all), |so_far| {
            bar.set_position(so_far.matched)
        })
        .await?;
    bar.finish_and_clear();
    if args.json {
        print_json(&json!({
            "action": action.as_str(),
            "matched": outcome.matched,
            "changed": outcome.changed,
        }))
    } else {
        println!(
            "{} {} of {} matching jobs ({} left alone: their state does not allow it)",
            past_tense(action),
            outcome.changed,
            outcome.matched,
            outcome.matched - outcome.changed
        );
        Ok(())
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn run_queues<DB: Backend>(admin: Admin<DB>, command: QueuesCommand) -> anyhow::Result<()> {
    match command {
        QueuesCommand::List(ListQueues { json, .. }) => {
            let overview = admin.overview(std::time::Duration::from_secs(3600)).await?;
            if json {
                print_json(&overview.queues)
            } else {
                print_queues(&overview.queues);
                Ok(())
            }
        }
        QueuesCommand::Pause { name, .. } => {
            admin.pause_queue(&name).await?;
            println!("queue {name} paused");
            Ok(())
        }
        QueuesCommand::Limit {
            name,
            global,
            rate,
            partition,
            ..
        } => {
            if global.is_none() && rate.is_none() && partition.is_none() {
                let message = "name a limit to set: --global N|off, --rate N/PERIOD|off, \
                               --partition N|turns[,N/PERIOD]|off";
                return Err(Failure::new(USAGE, message).into());
            }
            // All are read before any is written.
            let usage = |error: AdminError| Failure::new(USAGE, error.to_string());
            let global = global
                .as_deref()
                .map(parse_global_limit)
                .transpose()
                .map_err(usage)?;
            let rate = rate
                .as_deref()
                .map(parse_rate_limit)
                .transpose()
                .map_err(usage)?;
            let partition = partition
                .as_deref()
                .map(parse_partition)
                .transpose()
                .map_err(usage)?;
            if let Some(limit) = global {
                admin.set_global_limit(&name, limit).await?;
                match limit {
                    Some(limit) => println!("queue {name}: at most {limit} running at once"),
                    None => println!("queue {name}: no global limit"),
                }
            }
            if let Some(rate) = rate {
                admin.set_rate_limit(&name, rate).await?;
                match rate {
                    Some(rate) => println!(
                        "queue {name}: at most {} starts per {:?}",
                        rate.limit(),
                        rate.period()
                    ),
                    None => println!("queue {name}: no rate limit"),
                }
            }
            if let Some(partition) = partition {
                admin.set_partition(&name, partition).await?;
                match partition {
                    Some(partition) => println!("queue {name}: partitioned, {partition}"),
                    None => println!("queue {name}: not partitioned"),
                }
            }
            Ok(())
        }
        QueuesCommand::Resume { name, .. } => {
            admin.resume_queue(&name).await?;
            println!("queue {name} resumed");
            Ok(())
        }
    }
}

async fn serve_dashboard<DB: Backend>(
    pool: Pool<DB>,
    url: &str,
    args: DashboardArgs,
) -> anyhow::Result<()> {
    let mut config = DashboardConfig::new().database(url);
    let token = args.token.filter(|t| !t.is_empty());
    if let Some(token) = &token {
        config = config.token(token.clone());
    }
    for name in &args.allow_host {
        config = config.allow_host(name);
    }
    let config = config
        .for_listener(args.listen)
        .map_err(|e| Failure::new(USAGE, e.to_string()))?;
    if !args.no_migrate {
        DB::migrate(&pool).await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    eprintln!(
        "offload dashboard on http://{address}/ (database {})",
        redact_url(url)
    );
    // Prometheus scrapes /metrics: queue depth by state, read per scrape;
    // behind the dashboard's token when it has one.
    let handle = offload_dashboard::metrics::prometheus()?;
    let mut metrics_state = offload_dashboard::metrics::MetricsState::new(pool.clone(), handle);
    if let Some(token) = token {
        metrics_state = metrics_state.token(token);
    }
    let metrics = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(offload_dashboard::metrics::render::<DB>),
        )
        .with_state(metrics_state);
    let app = offload_dashboard::router(pool, config).merge(metrics);
    // Timeouts and the connection cap keep slow clients from holding every
    // file descriptor; the peer address it passes on keys the wrong-token
    // throttle.
    offload_axum::serve::serve(
        listener,
        app,
        args.limits.limits(),
        offload::shutdown_signal(),
    )
    .await;
    Ok(())
}
