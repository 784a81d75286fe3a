//! Background services beside the queues, one per file. Every worker
//! listens for notifications (and heartbeats, from its watchdog's thread:
//! see [`super::watchdog`]); only the leader (see
//! [`super::leader`]) runs the rescuer, the promoter (scheduled →
//! available), the pruner and the periodic jobs. Each stays safe when two
//! workers briefly both think they lead during a hand-over: they claim rows
//! with `SKIP LOCKED` or guarded updates.

mod listener;
mod promoter;
mod pruner;
mod rescuer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::periodic;
use super::shared::{sleep_or_stop, Shared};
use crate::storage::Backend;

/// Starts every service of this worker; they stop when `stop` fires.
pub(crate) fn spawn<DB: Backend>(shared: Arc<Shared<DB>>, stop: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let config = &shared.config;
    leader_only(
        &mut tasks,
        &stop,
        &shared,
        config.rescue_interval,
        "rescuer",
        rescuer::step,
    );
    leader_only(
        &mut tasks,
        &stop,
        &shared,
        config.promote_interval,
        "promoter",
        promoter::step,
    );
    leader_only(
        &mut tasks,
        &stop,
        &shared,
        config.prune_interval,
        "pruner",
        pruner::step,
    );
    if !shared.kinds.periodic.is_empty() {
        tasks.spawn(periodic::run(
            shared.pool.clone(),
            shared.kinds.periodic.clone(),
            shared.leading.clone(),
            stop.clone(),
        ));
    }
    tasks.spawn(listener::run(shared, stop));
    tasks
}

/// Runs `step` every `interval` while this worker leads.
fn leader_only<DB, Fut>(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    shared: &Arc<Shared<DB>>,
    interval: Duration,
    name: &'static str,
    step: fn(Arc<Shared<DB>>) -> Fut,
) where
    DB: Backend,
    Fut: Future<Output = crate::Result<()>> + Send + 'static,
{
    let shared = shared.clone();
    every(tasks, stop, interval, name, move || {
        let shared = shared.clone();
        async move {
            if shared.leads() {
                step(shared).await
            } else {
                Ok(())
            }
        }
    });
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
