//! The watchdog: a thread of its own, with a current-thread tokio runtime
//! and a small connection pool made on it, so that the worker's heartbeat,
//! its jobs' timeouts, stall reports and the shutdown deadline go on while
//! jobs block every thread of the application's runtime. A connection is
//! driven by the runtime that opened it, hence the watchdog's own pool.

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
use super::shared::{next_delay, sleep_or_stop};
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

/// The worker's handle on its watchdog.
pub(crate) struct Watchdog {
    shutdown_begun: CancellationToken,
    tasks_ended: CancellationToken,
    stopped: oneshot::Receiver<Ended>,
}

impl Watchdog {
    /// Starts the watchdog thread and, on the current runtime, the pulse it
    /// watches.
    pub fn spawn<DB: Backend>(
        pool: &Pool<DB>,
        worker: WorkerInfo,
        config: &WorkerConfig,
        attempts: Arc<Attempts>,
    ) -> std::io::Result<Self> {
        let shutdown_begun = CancellationToken::new();
        let tasks_ended = CancellationToken::new();
        let (stopped_tx, stopped) = oneshot::channel();
        let pulse = Arc::new(Pulse::default());
        let stop_beat = CancellationToken::new();
        let runtime_gone = CancellationToken::new();
        let watch = Watch::<DB> {
            options: (*pool.connect_options()).clone(),
            worker,
            heartbeat_interval: config.heartbeat_interval,
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
        std::thread::Builder::new()
            .name("offload-watchdog".into())
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let ended = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(watch.run()),
                    Err(error) => {
                        tracing::error!(%error, "could not start the watchdog's runtime");
                        Ended::Deadline
                    }
                };
                let _ = stopped_tx.send(ended);
            })?;
        stall::spawn_beat(pulse, stop_beat, runtime_gone);
        Ok(Self {
            shutdown_begun,
            tasks_ended,
            stopped,
        })
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
struct Watch<DB: Backend> {
    options: <DB::Connection as sqlx::Connection>::Options,
    worker: WorkerInfo,
    heartbeat_interval: Duration,
    shutdown_after: Duration,
    attempts: Arc<Attempts>,
    pulse: Arc<Pulse>,
    shutdown_begun: CancellationToken,
    tasks_ended: CancellationToken,
    runtime_gone: CancellationToken,
    /// Stops the pulse on the worker's runtime.
    stop_beat: CancellationToken,
}

impl<DB: Backend> Watch<DB> {
    async fn run(self) -> Ended {
        let ended = self.watch().await;
        self.stop_beat.cancel();
        ended
    }

    async fn watch(&self) -> Ended {
        // Two connections: the heartbeat's, and one to record outcomes.
        let pool = PoolOptions::<DB>::new()
            .max_connections(2)
            .acquire_timeout(self.heartbeat_interval.max(Duration::from_secs(1)))
            .connect_lazy_with(self.options.clone());
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            pool.clone(),
            self.worker.clone(),
            self.heartbeat_interval,
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
                    pool.close().await;
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
                recording.spawn(record(pool.clone(), watched, outcome));
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                let left = self.attempts.take_all();
                tracing::warn!(
                    jobs = left.len(),
                    "shutdown deadline passed while jobs still block their threads: handing them back to the queue and returning; the worker's remaining tasks end when their threads do"
                );
                for (watched, outcome) in left {
                    watched.facts.cancel.cancel();
                    recording.spawn(record(pool.clone(), watched, outcome));
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
        pool.close().await;
        ended
    }
}

/// Upserts the worker's row every `interval` until `stop`.
async fn heartbeat<DB: Backend>(
    pool: Pool<DB>,
    worker: WorkerInfo,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let beat = tokio::select! {
            beat = DB::worker_heartbeat(&pool, &worker) => beat,
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
async fn record<DB: Backend>(pool: Pool<DB>, watched: Arc<Watched>, outcome: Outcome) {
    let key: Attempt = watched.facts.key;
    let mut delay = Duration::from_millis(50);
    loop {
        let recorded = match pool.acquire().await {
            Ok(mut conn) => DB::job_record_outcome_on(&mut conn, key, &outcome).await,
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
