//! Background services beside the queues, one per file. Every worker
//! listens for notifications (and heartbeats, from its watchdog's thread:
//! see [`super::watchdog`]); only the leader (see [`super::leader`]) runs
//! the rescuer, the promoter (scheduled → available), the pruner and the
//! periodic jobs, on the watchdog's thread too. Each stays safe when two
//! workers briefly both think they lead during a hand-over: they claim rows
//! with `SKIP LOCKED` or guarded updates.

mod listener;
mod promoter;
mod pruner;
mod rescuer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::periodic;
use super::shared::{sleep_or_stop, Shared};
use crate::storage::Backend;

/// Starts every service of this worker; they stop when `stop` fires. The
/// leader's run on `off_thread` (the watchdog's runtime), with
/// `shared.maintenance_pool`, so jobs blocking the application's threads
/// stall none of them.
pub(crate) fn spawn<DB: Backend>(
    shared: Arc<Shared<DB>>,
    off_thread: &Handle,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let config = &shared.config;
    leader_only(
        &mut tasks,
        off_thread,
        &stop,
        &shared,
        config.rescue_interval,
        "rescuer",
        rescuer::step,
    );
    leader_only(
        &mut tasks,
        off_thread,
        &stop,
        &shared,
        config.promote_interval,
        "promoter",
        promoter::step,
    );
    leader_only(
        &mut tasks,
        off_thread,
        &stop,
        &shared,
        config.prune_interval,
        "pruner",
        pruner::step,
    );
    if !shared.kinds.periodic.is_empty() {
        tasks.spawn_on(
            periodic::run(
                shared.maintenance_pool.clone(),
                shared.kinds.periodic.clone(),
                shared.leading.clone(),
                stop.clone(),
            ),
            off_thread,
        );
    }
    tasks.spawn(listener::run(shared, stop));
    tasks
}

/// Runs `step` every `interval` while this worker leads.
fn leader_only<DB, Fut>(
    tasks: &mut JoinSet<()>,
    off_thread: &Handle,
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
    every(tasks, off_thread, stop, interval, name, move || {
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
    runtime: &Handle,
    stop: &CancellationToken,
    interval: Duration,
    name: &'static str,
    step: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = crate::Result<()>> + Send,
{
    let stop = stop.clone();
    let service = async move {
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
    };
    tasks.spawn_on(service, runtime);
}
