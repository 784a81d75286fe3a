//! The watchdog: a thread of its own, with a current-thread tokio runtime
//! and a small connection pool made on it, so that the worker's heartbeat,
//! its jobs' timeouts, stall reports, the shutdown deadline, the leader
//! election and the leader's maintenance go on while jobs block every
//! thread of the application's runtime. A connection is driven by the
//! runtime that opened it, hence the watchdog's own pool.

mod attempts;
mod clock;
mod stall;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolOptions;
use sqlx::Pool;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::WorkerConfig;
use super::shared::{answered, next_delay, sleep_or_stop, within};
use super::wake;
use crate::storage::{Attempt, Backend, Outcome, WorkerInfo};

pub(crate) use attempts::{AttemptFacts, Attempts, Watched};
use stall::{Pulse, StallDetector, TICK};

/// Shutdown returns at most this long after `shutdown_timeout` plus
/// `cancel_grace` to hand back the jobs whose threads are still blocked,
/// and as long again to write that and deregister.
pub(crate) const SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);

/// How the watchdog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every task of the worker ended in time.
    Clean,
    /// The shutdown deadline passed first; the worker's remaining tasks end
    /// when their threads return.
    Deadline,
}

/// Connections the watchdog's pool may open: the heartbeat's, one to
/// record outcomes, one for the leader's election and maintenance.
const POOL_CONNECTIONS: u32 = 3;

/// Where the worker's off-thread services run: the watchdog's runtime and
/// its pool.
pub(crate) struct OffThread<DB: Backend> {
    pub runtime: tokio::runtime::Handle,
    pub pool: Pool<DB>,
}

/// The worker's handle on its watchdog.
pub(crate) struct Watchdog {
    shutdown_begun: CancellationToken,
    tasks_ended: CancellationToken,
    stopped: oneshot::Receiver<Ended>,
}

impl Watchdog {
    /// Starts the watchdog thread and, on the current runtime, the pulse it
    /// watches; returns where off-thread services are to be spawned.
    pub fn spawn<DB: Backend>(
        pool: &Pool<DB>,
        worker: WorkerInfo,
        config: &WorkerConfig,
        attempts: Arc<Attempts>,
    ) -> std::io::Result<(Self, OffThread<DB>)> {
        let shutdown_begun = CancellationToken::new();
        let tasks_ended = CancellationToken::new();
        let (stopped_tx, stopped) = oneshot::channel();
        let pulse = Arc::new(Pulse::default());
        let stop_beat = CancellationToken::new();
        let runtime_gone = CancellationToken::new();
        let options = (*pool.connect_options()).clone();
        let acquire_timeout = config.heartbeat_interval.max(Duration::from_secs(1));
        let watch = Watch {
            worker,
            heartbeat_interval: config.heartbeat_interval,
            database_timeout: config.database_timeout_on::<DB>(),
            shutdown_after: config.shutdown_timeout + config.cancel_grace + SHUTDOWN_MARGIN,
            attempts,
            pulse: pulse.clone(),
            shutdown_begun: shutdown_begun.clone(),
            tasks_ended: tasks_ended.clone(),
            runtime_gone: runtime_gone.clone(),
            stop_beat: stop_beat.clone(),
        };
        // Its lines go wherever the worker's would.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let (started_tx, started) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("offload-watchdog".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                // Made on this runtime, so its connections are driven here.
                let pool = {
                    let _inside = runtime.enter();
                    PoolOptions::<DB>::new()
                        .max_connections(POOL_CONNECTIONS)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(options)
                };
                let off_thread = OffThread {
                    runtime: runtime.handle().clone(),
                    pool: pool.clone(),
                };
                let _ = started_tx.send(Ok(off_thread));
                let ended = runtime.block_on(watch.run(pool));
                let _ = stopped_tx.send(ended);
            })?;
        // Building a runtime takes microseconds; nothing else is awaited.
        let off_thread = started
            .recv()
            .map_err(|_| std::io::Error::other("the watchdog thread ended at start"))??;
        stall::spawn_beat(pulse, stop_beat, runtime_gone);
        let watchdog = Self {
            shutdown_begun,
            tasks_ended,
            stopped,
        };
        Ok((watchdog, off_thread))
    }

    /// Cancelled (or dropped) when every task of the worker has ended.
    pub fn tasks_ended(&self) -> CancellationToken {
        self.tasks_ended.clone()
    }

    /// Starts the shutdown deadline and waits for the watchdog to stop:
    /// after the worker's tasks end, or at the deadline.
    pub async fn shutdown(self) -> Ended {
        self.shutdown_begun.cancel();
        self.stopped.await.unwrap_or(Ended::Deadline)
    }
}

/// What the watchdog thread runs with.
struct Watch {
    worker: WorkerInfo,
    heartbeat_interval: Duration,
    /// `WorkerConfig::database_timeout` on this backend.
    database_timeout: Option<Duration>,
    shutdown_after: Duration,
    attempts: Arc<Attempts>,
    pulse: Arc<Pulse>,
    shutdown_begun: CancellationToken,
    tasks_ended: CancellationToken,
    runtime_gone: CancellationToken,
    /// Stops the pulse on the worker's runtime.
    stop_beat: CancellationToken,
}

impl Watch {
    async fn run<DB: Backend>(self, pool: Pool<DB>) -> Ended {
        let ended = self.watch(pool).await;
        self.stop_beat.cancel();
        ended
    }

    async fn watch<DB: Backend>(&self, pool: Pool<DB>) -> Ended {
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            pool.clone(),
            self.worker.clone(),
            self.heartbeat_interval,
            self.database_timeout,
            stop_heartbeat.clone(),
        ));
        let mut recording = JoinSet::new();
        let mut detector = StallDetector::default();
        let mut deadline = None;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ended = loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.tasks_ended.cancelled() => break Ended::Clean,
                () = self.runtime_gone.cancelled() => {
                    // The application's runtime shut down without stopping
                    // the worker: like a crash, its jobs are rescued once
                    // its heartbeat is stale.
                    stop_heartbeat.cancel();
                    let _ = heartbeat.await;
                    close(pool).await;
                    return Ended::Deadline;
                }
                () = self.shutdown_begun.cancelled(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + self.shutdown_after);
                }
            }
            detector.check(&self.pulse, &self.attempts);
            for (watched, outcome) in self.attempts.take_overdue() {
                tracing::warn!(
                    id = watched.facts.key.id,
                    kind = %watched.facts.kind,
                    attempt = watched.facts.key.attempt,
                    "a job ran past its timeout without returning (its thread is blocked); the watchdog records the timeout"
                );
                watched.facts.cancel.cancel();
                recording.spawn(record(
                    pool.clone(),
                    watched,
                    outcome,
                    self.database_timeout,
                ));
            }
            for (watched, outcome) in self.attempts.take_unrecorded(self.database_timeout) {
                tracing::warn!(
                    id = watched.facts.key.id,
                    kind = %watched.facts.kind,
                    attempt = watched.facts.key.attempt,
                    "the job returned but the database did not answer the recording of its outcome in time (database_timeout); the watchdog hands it back to the queue unless its completion did commit"
                );
                recording.spawn(record(
                    pool.clone(),
                    watched,
                    outcome,
                    self.database_timeout,
                ));
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                let left = self.attempts.take_all();
                tracing::warn!(
                    jobs = left.len(),
                    "shutdown deadline passed while jobs still block their threads: handing them back to the queue and returning; the worker's remaining tasks end when their threads do"
                );
                for (watched, outcome) in left {
                    watched.facts.cancel.cancel();
                    recording.spawn(record(
                        pool.clone(),
                        watched,
                        outcome,
                        self.database_timeout,
                    ));
                }
                break Ended::Deadline;
            }
        };
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        let finish = async {
            while recording.join_next().await.is_some() {}
            if let Err(error) = DB::worker_deregister(&pool, &self.worker.id).await {
                tracing::warn!(%error, "could not deregister worker; its row expires with its lease");
            }
        };
        if tokio::time::timeout(SHUTDOWN_MARGIN, finish).await.is_err() {
            tracing::warn!("the database did not answer in time at shutdown: jobs not handed back are rescued once the worker's heartbeat is stale");
        }
        close(pool).await;
        ended
    }
}

/// Closes the watchdog's pool, without waiting past `SHUTDOWN_MARGIN` for
/// a connection sqlx is still pinging (a silent one never answers): the
/// rest close when this thread's runtime drops.
async fn close<DB: Backend>(pool: Pool<DB>) {
    if tokio::time::timeout(SHUTDOWN_MARGIN, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("a connection of the watchdog's pool did not close in time (the database is not answering); it is dropped");
    }
}

/// Upserts the worker's row every `interval` until `stop`.
async fn heartbeat<DB: Backend>(
    pool: Pool<DB>,
    worker: WorkerInfo,
    interval: Duration,
    database_timeout: Option<Duration>,
    stop: CancellationToken,
) {
    loop {
        let beat = tokio::select! {
            beat = answered(database_timeout, DB::worker_heartbeat(&pool, &worker)) => beat,
            () = stop.cancelled() => return,
        };
        if let Err(error) = beat {
            tracing::warn!(%error, service = "heartbeat", "heartbeat failed; will retry");
        }
        if sleep_or_stop(interval, &stop).await {
            return;
        }
    }
}

/// Records an outcome the watchdog decided, guarded by the attempt (a
/// no-op if the executor got there first), retrying while the database is
/// unreachable until shutdown gives up on it (and drops this task).
async fn record<DB: Backend>(
    pool: Pool<DB>,
    watched: Arc<Watched>,
    outcome: Outcome,
    database_timeout: Option<Duration>,
) {
    let key: Attempt = watched.facts.key;
    let mut delay = Duration::from_millis(50);
    loop {
        let recorded = match pool.acquire().await {
            Ok(mut conn) => {
                match within(
                    database_timeout,
                    DB::job_record_outcome_on(&mut conn, key, &outcome),
                )
                .await
                {
                    Ok(recorded) => recorded,
                    Err(no_answer) => {
                        // Never ping it back into the pool: it may never answer.
                        conn.close_on_drop();
                        Err(no_answer.into())
                    }
                }
            }
            Err(error) => Err(error.into()),
        };
        match recorded {
            Ok(_) => {
                if matches!(outcome, Outcome::Retry { .. } | Outcome::Requeue { .. }) {
                    wake::wake(&watched.facts.queue);
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, id = key.id, "could not record the job's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
        }
    }
}
