//! The worker runtime: producers claim jobs per queue, executors run each in
//! its own task and transaction, the completer writes completions in
//! batches, the leader (elected among the workers on a database) runs the
//! maintenance services and the periodic jobs, and wake-ups connect them.

mod completer;
mod config;
pub(crate) mod executor;
mod job_poll;
pub(crate) mod leader;
mod maintenance;
pub mod metrics;
mod periodic;
mod printable;
mod producer;
pub(crate) mod running;
pub(crate) mod shared;
pub(crate) mod wake;
mod watchdog;

use std::future::Future;
use std::sync::Arc;

use sqlx::Pool;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{QueueConfig, Retention, WorkerConfig};

use shared::Shared;
use watchdog::{Attempts, Watchdog};

use crate::hooks::JobEvent;
use crate::queue_name::check_queue_name;
use crate::registry::{Kinds, Registry};
use crate::storage::group::WriteGroup;
use crate::storage::{Attempt, Backend, LimitChange, WorkerInfo};
use crate::Result;

/// Runs jobs from the database until shut down.
///
/// ```no_run
/// # use offload::{Job, JobContext, JobError, Registry, Worker, WorkerConfig};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Ping;
/// # impl Job<sqlx::Sqlite> for Ping {
/// #     const KIND: &'static str = "ping";
/// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
/// # }
/// # async fn example(pool: sqlx::SqlitePool) -> offload::Result<()> {
/// let registry = Registry::new().register::<Ping>();
/// let config = WorkerConfig::default().queue("default", 16);
/// let worker = Worker::new(pool, registry, config).start().await?;
/// // ... serve requests ...
/// worker.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Worker<DB: Backend> {
    pool: Pool<DB>,
    kinds: Kinds<DB>,
    config: WorkerConfig,
    events: broadcast::Sender<JobEvent>,
}

/// Events a slow subscriber may fall behind by before it misses some (it
/// then gets `RecvError::Lagged` with the count).
const EVENT_BUFFER: usize = 4096;

impl<DB: Backend> Worker<DB> {
    /// A worker for the kinds in `registry`, on `pool`.
    pub fn new<S: Send + Sync + 'static>(
        pool: Pool<DB>,
        registry: Registry<DB, S>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            pool,
            kinds: registry.into_kinds(),
            config,
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Subscribes to the end of every attempt this worker runs, before it
    /// starts so that none is missed. See [`WorkerHandle::events`].
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Registers the worker and starts its tasks. Fails if the database
    /// cannot be reached or the configuration is invalid.
    pub async fn start(self) -> Result<WorkerHandle> {
        let config = self.config.validated()?;
        check_queues_of(&self.kinds)?;
        let info = WorkerInfo {
            id: worker_id(),
            host: host_name(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            queues: config
                .queues
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        };
        DB::worker_heartbeat(&self.pool, &info).await?;
        for queue in &config.queues {
            if let Some(limit) = queue.global_limit {
                DB::queue_set_limit(&self.pool, &queue.name, LimitChange::Global(Some(limit)))
                    .await?;
            }
            if let Some(rate) = queue.rate_limit {
                DB::queue_set_limit(&self.pool, &queue.name, LimitChange::Rate(Some(rate))).await?;
            }
            if let Some(partition) = queue.partition {
                let change = LimitChange::Partition(Some(partition));
                DB::queue_set_limit(&self.pool, &queue.name, change).await?;
            }
        }
        warn_of_unserved_kinds(&self.kinds, &config);
        crate::quiet_panic::install_panic_hook();
        let attempts = Arc::new(Attempts::default());
        let (watchdog, off_thread) =
            Watchdog::spawn(&self.pool, info.clone(), &config, attempts.clone())
                .map_err(|error| crate::Error::Database(sqlx::Error::Io(error)))?;
        let worker_id = info.id.clone();
        tracing::info!(worker = %worker_id, queues = %info.queues, backend = <DB as sqlx::Database>::NAME, "worker started");

        let stop_fetching = CancellationToken::new();
        let cancel_jobs = CancellationToken::new();
        let stop_maintenance = CancellationToken::new();
        let (completions, completions_rx) = mpsc::channel::<Attempt>(config.completer_batch * 4);
        let (leading_tx, leading) = watch::channel(false);
        // Resigns as soon as shutdown begins, so another worker takes over
        // maintenance while this one drains.
        // On the watchdog's thread, as the leader's services: a job that
        // blocks the application's threads stalls neither.
        let campaign = off_thread.runtime.spawn(leader::campaign(
            off_thread.pool.clone(),
            info.id.clone(),
            config.leader_ttl,
            leading_tx,
            stop_fetching.clone(),
        ));
        let group = config.group_commit.unwrap_or(DB::GROUP_COMMIT).then(|| {
            let delete = config.retention.completed.is_zero();
            Arc::new(WriteGroup::new(self.pool.clone(), delete))
        });
        let shared = Arc::new(Shared {
            pool: self.pool.clone(),
            maintenance_pool: off_thread.pool.clone(),
            kinds: self.kinds,
            config,
            worker: info.clone(),
            database: Arc::from(DB::pool_identity(&self.pool)),
            completions,
            group: group.clone(),
            cancel_jobs: cancel_jobs.clone(),
            stop_maintenance: stop_maintenance.clone(),
            leading: leading.clone(),
            events: self.events.clone(),
            attempts: Some(attempts),
        });

        let mut producers = JoinSet::new();
        for queue in &shared.config.queues {
            producers.spawn(producer::run(
                shared.clone(),
                queue.clone(),
                stop_fetching.clone(),
            ));
        }
        let give_up_completions = CancellationToken::new();
        let completer = completer::Completer {
            pool: self.pool.clone(),
            database: shared.database.clone(),
            group,
            batch: shared.config.completer_batch,
            delete: shared.config.retention.completed.is_zero(),
            database_timeout: shared.database_timeout(),
        };
        let mut completer =
            tokio::spawn(completer.run(completions_rx, give_up_completions.clone()));
        let mut maintenance = maintenance::spawn(
            shared.clone(),
            &off_thread.runtime,
            stop_maintenance.clone(),
        );
        let tasks_ended = watchdog.tasks_ended();
        let supervisor = tokio::spawn(async move {
            // Even if this task panics, the watchdog learns it has ended.
            let _ended = tasks_ended.drop_guard();
            while producers.join_next().await.is_some() {}
            if let Err(error) = campaign.await {
                tracing::error!(%error, "leader election task failed");
            }
            stop_maintenance.cancel();
            // Past the shutdown deadline the watchdog's runtime is gone and
            // its services with it: cancelled, not failed.
            while maintenance.join_next().await.is_some() {}
            // Every executor and service has ended; dropping the last
            // completion sender lets the completer flush and stop.
            let flush_limit = shared.config.shutdown_timeout;
            drop(shared);
            if tokio::time::timeout(flush_limit, &mut completer)
                .await
                .is_err()
            {
                give_up_completions.cancel();
                let _ = completer.await;
            }
            // The watchdog stops heartbeating, then deregisters the worker.
        });
        Ok(WorkerHandle {
            stop_fetching,
            cancel_jobs,
            supervisor,
            watchdog,
            id: worker_id,
            leading,
            events: self.events,
        })
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        let handle = self.start().await?;
        signal.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A started worker. Dropping it leaves the worker running; call
/// [`shutdown`](WorkerHandle::shutdown) to stop it.
///
/// ```no_run
/// # use offload::{Registry, Worker, WorkerConfig};
/// # async fn example(pool: sqlx::SqlitePool) -> offload::Result<()> {
/// let worker = Worker::new(pool, Registry::new(), WorkerConfig::default()).start().await?;
/// println!("worker {} started; leader: {}", worker.id(), worker.is_leader());
/// offload::shutdown_signal().await;
/// // Stops claiming, lets running jobs finish (up to `shutdown_timeout`).
/// worker.shutdown().await;
/// # Ok(()) }
/// ```
pub struct WorkerHandle {
    stop_fetching: CancellationToken,
    cancel_jobs: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
    watchdog: Watchdog,
    id: String,
    leading: watch::Receiver<bool>,
    events: broadcast::Sender<JobEvent>,
}

impl WorkerHandle {
    /// This worker's id, as stored on the jobs it runs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this worker leads the workers on its database: only the
    /// leader rescues, promotes, prunes and enqueues periodic jobs.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until this worker leads (or has stopped).
    pub async fn wait_for_leadership(&self) {
        let mut leading = self.leading.clone();
        let _ = leading.wait_for(|leads| *leads).await;
    }

    /// Stops claiming jobs, waits up to `shutdown_timeout` for running jobs,
    /// then cancels the rest, waits `cancel_grace`, and hands back to the
    /// queue those still running. Returns when every task has stopped, or
    /// at the latest about a second after `shutdown_timeout + cancel_grace`
    /// (plus up to a second to write the hand-backs) when jobs block their
    /// threads: the worker's deadline is kept on a thread of its own, so it
    /// holds as long as the task awaiting this gets to run (`main`'s, say).
    pub async fn shutdown(self) {
        self.stop_fetching.cancel();
        match self.watchdog.shutdown().await {
            watchdog::Ended::Clean => {
                if let Err(error) = self.supervisor.await {
                    tracing::error!(%error, "worker supervisor failed");
                }
                tracing::info!(worker = %self.id, "worker stopped");
            }
            watchdog::Ended::Deadline => {
                tracing::warn!(worker = %self.id, "worker stopped at its shutdown deadline; tasks still blocked end when their threads return");
            }
        }
    }

    /// Subscribes to the end of every attempt this worker runs from now on:
    /// each [`JobEvent`] comes after its outcome is written (a completion
    /// without a transaction of its own: once handed to the batched
    /// completer, which writes it within milliseconds). A subscriber
    /// that falls more than 4,096 events behind misses the oldest and is
    /// told how many (`RecvError::Lagged`).
    ///
    /// ```no_run
    /// # async fn example(worker: offload::WorkerHandle) {
    /// let mut events = worker.events();
    /// while let Ok(event) = events.recv().await {
    ///     println!("job {} {}", event.job.id, event.outcome.label());
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Asks running jobs to stop now, without waiting for the timeout.
    pub fn cancel_running_jobs(&self) {
        self.cancel_jobs.cancel();
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere): pass it to
/// [`Worker::run_until`] or axum's graceful shutdown.
///
/// ```no_run
/// # async fn example(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
/// axum::serve(listener, router)
///     .with_graceful_shutdown(offload::shutdown_signal())
///     .await
/// # }
/// ```
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Fails on a registered kind or periodic job whose queue no worker could
/// serve (a bad name): better at start than a job that never runs.
fn check_queues_of<DB: Backend>(kinds: &Kinds<DB>) -> Result<()> {
    for handler in kinds.handlers.values() {
        check_queue_name(handler.queue())?;
    }
    for periodic in &kinds.periodic {
        check_queue_name(periodic.queue())?;
    }
    Ok(())
}

/// Warns of registered kinds whose default queue this worker does not
/// serve: their jobs wait for a worker that does, maybe forever.
fn warn_of_unserved_kinds<DB: Backend>(kinds: &Kinds<DB>, config: &WorkerConfig) {
    let mut unserved: Vec<(&str, &str)> = kinds
        .handlers
        .iter()
        .map(|(kind, handler)| (*kind, handler.queue()))
        .filter(|(_, queue)| !config.queues.iter().any(|served| served.name == *queue))
        .collect();
    unserved.sort_unstable();
    for (kind, queue) in unserved {
        tracing::warn!(
            kind,
            queue,
            "job kind is registered, but its queue is not one this worker serves: its jobs wait for a worker that serves `{queue}` (add it with WorkerConfig::queue)"
        );
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn worker_id() -> String {
    format!(
        "{}-{}-{:08x}",
        host_name(),
        std::process::id(),
        rand::random::<u32>()
    )
}
