//! Starting and stopping the service: migrations, the in-process worker,
//! the HTTP server and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use offload::{Client, Registry, Worker, WorkerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::job::{ProcessRecord, RECORDS_QUEUE};
use crate::store::RecordStore;

/// Beyond the shutdown timeout: the worker's cancel grace and final writes.
const WORKER_STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last database connections to close.
const POOL_CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Picks the backend from the URL and runs until `shutdown` resolves.
pub async fn run_from_url(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match offload::BackendKind::from_url(&config.database_url)? {
        offload::BackendKind::Postgres => run::<sqlx::Postgres>(config, shutdown).await,
        offload::BackendKind::Sqlite => run::<sqlx::Sqlite>(config, shutdown).await,
    }
}

/// Binds `config.listen` and [`serve`]s.
pub async fn run<DB: RecordStore>(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.listen))?;
    serve::<DB>(config, listener, shutdown).await
}

/// Migrates, starts the worker and serves HTTP on `listener` with backend
/// `DB` until `shutdown` resolves. Then it stops accepting connections, finishes
/// in-flight requests, and stops the worker (running jobs finish, or are
/// handed back to the queue after the shutdown timeout).
pub async fn serve<DB: RecordStore>(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let backend = offload::BackendKind::from_url(&config.database_url)?;
    let dashboard = config.dashboard(listener.local_addr()?).context(
        "the dashboard at /dashboard would be unprotected: set --dashboard-token \
         (OFFLOAD_DASHBOARD_TOKEN), at least 12 characters",
    )?;
    crate::metrics::prometheus()?;
    let pool = DB::connect_with(&config.database_url, config.pool_settings(backend))
        .await
        .context("could not connect to the database")?;
    let client = Client::new(pool.clone());
    client
        .migrate()
        .await
        .context("offload migrations failed")?;
    DB::migrate_records(&pool)
        .await
        .context("records migrations failed")?;

    let worker_config = WorkerConfig::default()
        .shutdown_timeout(config.shutdown_timeout())
        .queue(RECORDS_QUEUE, config.worker_concurrency);
    let worker = Worker::new(
        pool.clone(),
        Registry::new().register::<ProcessRecord>(),
        worker_config,
    )
    .start()
    .await
    .context("could not start the worker")?;

    let state = AppState::new(
        client,
        config.job_settings(),
        config.group_commit_writers(backend),
    );
    let app = api::router_with_dashboard(state, config.body_limit, dashboard);
    let limits = config.server_limits();
    tracing::info!(
        listen = %listener.local_addr()?,
        backend = <DB as sqlx::Database>::NAME,
        max_http_connections = limits.get_max_connections(),
        "offload-records is serving"
    );

    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal.cancel();
    });
    // Timeouts and the connection cap keep slow clients from holding every
    // file descriptor; the peer address it passes on keys the dashboard's
    // wrong-token throttle.
    offload_axum::serve::serve(listener, app, limits, stop.clone().cancelled_owned()).await;
    // Stopped serving: the worker stops too, handing its jobs back.
    stop.cancel();
    tracing::info!("HTTP server stopped; stopping the worker");
    // Bounded: running jobs get the shutdown timeout, cancelled ones the
    // grace period; past that, whatever the worker still waits on is
    // recovered by the next start's rescuer (jobs whose transaction
    // committed are already complete).
    let worker_bound = config.shutdown_timeout() + WORKER_STOP_MARGIN;
    if tokio::time::timeout(worker_bound, worker.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            waited = ?worker_bound,
            "worker did not stop in time; exiting, its jobs will be rescued"
        );
    }
    // Closing the pool lets SQLite fold its WAL back into the database file.
    if tokio::time::timeout(POOL_CLOSE_BOUND, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use at exit");
    }
    Ok(())
}
