//! Background services beside the queues. Every worker heartbeats and
//! listens for `NOTIFY`; only the leader (see [`crate::leader`]) runs the
//! rescuer, the promoter (scheduled → available), the pruner and the
//! periodic jobs. Each stays safe when two workers briefly both think they
//! lead during a hand-over: they claim rows with `SKIP LOCKED` or guarded
//! updates.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Signals};
use crate::state::JobState;
use crate::wake;
use crate::worker::{next_delay, sleep_or_stop, Shared};

/// Jobs moved or deleted per statement.
const BATCH: usize = 5_000;

pub(crate) fn spawn<DB: Backend>(shared: Arc<Shared<DB>>, stop: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let config = &shared.config;
    every(&mut tasks, &stop, config.heartbeat_interval, "heartbeat", {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move { DB::heartbeat(&shared.pool, &shared.worker).await }
        }
    });
    every(&mut tasks, &stop, config.rescue_interval, "rescuer", {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                if !shared.leads() {
                    return Ok(());
                }
                let queues = DB::rescue(&shared.pool, shared.config.lease).await?;
                if !queues.is_empty() {
                    tracing::warn!(
                        jobs = queues.len(),
                        "rescued jobs of workers that stopped heartbeating"
                    );
                    wake::wake_all(queues.iter().map(String::as_str));
                }
                Ok(())
            }
        }
    });
    every(&mut tasks, &stop, config.promote_interval, "promoter", {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                if !shared.leads() {
                    return Ok(());
                }
                loop {
                    let queues = DB::promote(&shared.pool, BATCH).await?;
                    wake::wake_all(queues.iter().map(String::as_str));
                    if queues.len() < BATCH {
                        return Ok(());
                    }
                }
            }
        }
    });
    every(&mut tasks, &stop, config.prune_interval, "pruner", {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                if !shared.leads() {
                    return Ok(());
                }
                let retention = &shared.config.retention;
                for (state, keep) in [
                    (JobState::Completed, retention.completed),
                    (JobState::Discarded, retention.discarded),
                    (JobState::Cancelled, retention.cancelled),
                ] {
                    // Small batches keep each delete's locks short.
                    while DB::prune(&shared.pool, state, keep, BATCH).await? == BATCH as u64 {
                        tokio::task::yield_now().await;
                    }
                }
                Ok(())
            }
        }
    });
    if !config.periodic.is_empty() {
        tasks.spawn(crate::periodic::run(
            shared.pool.clone(),
            config.periodic.clone(),
            shared.leading.clone(),
            stop.clone(),
        ));
    }
    tasks.spawn(listen(shared, stop));
    tasks
}

/// Runs `step` every `interval` until `stop`, logging failures.
fn every<F, Fut>(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    interval: Duration,
    name: &'static str,
    step: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = crate::Result<()>> + Send,
{
    let stop = stop.clone();
    tasks.spawn(async move {
        loop {
            let result = tokio::select! {
                result = step() => result,
                () = stop.cancelled() => return,
            };
            if let Err(error) = result {
                tracing::warn!(%error, service = name, "maintenance step failed; will retry");
            }
            if sleep_or_stop(interval, &stop).await {
                return;
            }
        }
    });
}

/// Forwards `NOTIFY`s to this process's producers, reconnecting with
/// back-off.
async fn listen<DB: Backend>(shared: Arc<Shared<DB>>, stop: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            result = DB::listen(&shared.pool, Signals { wake: wake::wake, cancel: wake::cancel_running }) => result,
            () = stop.cancelled() => return,
        };
        match result {
            // The backend has no notifications.
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "listening for new jobs failed; polling meanwhile");
                for queue in &shared.config.queues {
                    wake::wake(&queue.name);
                }
                if sleep_or_stop(delay, &stop).await {
                    return;
                }
                delay = next_delay(delay);
            }
        }
    }
}
