//! Claims jobs of one queue and runs each in its own task, never more than
//! the queue's concurrency at once.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::QueueConfig;
use super::executor::{execute, record};
use super::shared::{next_delay, sleep_or_stop, Shared};
use super::{metrics, wake};
use crate::storage::group::Writer;
use crate::storage::{Attempt, Backend, ClaimedJob, Outcome};

pub(crate) async fn run<DB: Backend>(
    shared: Arc<Shared<DB>>,
    queue: QueueConfig,
    stop: CancellationToken,
) {
    let notify = wake::notifier(&queue.name);
    let mut running = Running::default();
    let batch = shared.config.fetch_batch.min(queue.concurrency);
    // After a full batch there are probably more jobs: claim again once a
    // quarter of a batch of slots is free, without waiting for a wake-up.
    let refill = (batch / 4).max(1);
    let mut woken = true;
    let mut draining = false;
    let mut error_delay = Duration::from_millis(100);
    let mut global_limit = GlobalLimit::new(&queue);

    while !stop.is_cancelled() {
        // Registered before claiming, so a wake-up during the claim counts.
        let mut notified = pin!(notify.notified());
        notified.as_mut().enable();

        let free = queue.concurrency - running.len();
        if free > 0 && (woken || (draining && free >= refill)) {
            let want = free.min(batch);
            let limited = global_limit.applies(&shared, &queue).await;
            // A claim can wait for the write group, which a job holding its
            // transaction open keeps: shutdown must not wait with it.
            let claimed = tokio::select! {
                claimed = claim(&shared, &queue.name, want, limited) => claimed,
                () = stop.cancelled() => break,
            };
            match claimed {
                Ok(jobs) => {
                    error_delay = Duration::from_millis(100);
                    draining = jobs.len() == want;
                    woken = false;
                    for job in jobs {
                        let key = job.attempt_key();
                        running.spawn(key, execute(shared.clone(), job));
                    }
                    if draining && queue.concurrency - running.len() >= refill {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, queue = %queue.name, retry_in = ?error_delay, "claiming jobs failed");
                    if sleep_or_stop(error_delay, &stop).await {
                        break;
                    }
                    error_delay = next_delay(error_delay);
                    continue;
                }
            }
        }

        metrics::worker_load(&queue.name, running.len(), queue.concurrency);
        tokio::select! {
            () = stop.cancelled() => break,
            Some(()) = running.join_next() => {}
            () = &mut notified => woken = true,
            () = tokio::time::sleep(shared.poll_interval()) => woken = true,
        }
    }
    drain(&shared, &queue, running).await;
}

/// Claims up to `want` jobs. In a write group the claim commits with the
/// group, and its jobs start at once: until then no other writer can claim
/// them (the group holds the write lock), and if the group rolls back,
/// their completions find the rows no longer theirs and roll back too.
async fn claim<DB: Backend>(
    shared: &Shared<DB>,
    queue: &str,
    want: usize,
    limited: bool,
) -> Result<Vec<ClaimedJob>, String> {
    let mut writer = Writer::begin(&shared.pool, shared.group.as_deref()).await?;
    let result = DB::job_claim_on(writer.conn(), queue, want, &shared.worker.id, limited).await;
    writer.end(result).await.map(|(jobs, _commit_ahead)| jobs)
}

/// Whether a queue has a global limit, from this worker's config or from
/// the database (another worker or an operator may have set it). Read again
/// every few seconds.
struct GlobalLimit {
    configured: bool,
    in_database: bool,
    checked_at: Option<Instant>,
}

impl GlobalLimit {
    const RECHECK: Duration = Duration::from_secs(5);

    fn new(queue: &QueueConfig) -> Self {
        Self {
            configured: queue.global_limit.is_some(),
            in_database: false,
            checked_at: None,
        }
    }

    async fn applies<DB: Backend>(&mut self, shared: &Shared<DB>, queue: &QueueConfig) -> bool {
        if self.configured {
            return true;
        }
        if self
            .checked_at
            .is_none_or(|at| at.elapsed() >= Self::RECHECK)
        {
            match DB::queue_global_limit(&shared.pool, &queue.name).await {
                Ok(limit) => self.in_database = limit.is_some(),
                Err(error) => {
                    tracing::warn!(%error, queue = %queue.name, "could not read the queue's global limit")
                }
            }
            self.checked_at = Some(Instant::now());
        }
        self.in_database
    }
}

/// Lets running jobs finish within the shutdown timeout, then cancels them,
/// then aborts the rest and hands them back to the queue.
async fn drain<DB: Backend>(shared: &Shared<DB>, queue: &QueueConfig, mut running: Running) {
    if running.is_empty() {
        return;
    }
    tracing::info!(queue = %queue.name, jobs = running.len(), "waiting for running jobs to finish");
    let deadline = Instant::now() + shared.config.shutdown_timeout;
    while !running.is_empty() {
        tokio::select! {
            _ = running.join_next() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    if running.is_empty() {
        return;
    }
    tracing::warn!(queue = %queue.name, jobs = running.len(), "shutdown timeout reached; cancelling running jobs");
    shared.cancel_jobs.cancel();
    let deadline = Instant::now() + shared.config.cancel_grace;
    while !running.is_empty() {
        tokio::select! {
            _ = running.join_next() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    for key in running.abort_all().await {
        let reason =
            "interrupted by shutdown: did not stop within the cancel grace period".to_owned();
        record(shared, key, Outcome::Requeue { reason }).await;
    }
}

/// The executor tasks of one queue, by the attempt each runs.
#[derive(Default)]
struct Running {
    tasks: JoinSet<()>,
    attempts: HashMap<Id, Attempt>,
}

impl Running {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn spawn(
        &mut self,
        key: Attempt,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.attempts.insert(handle.id(), key);
    }

    /// Waits for one task; `None` when there are none.
    async fn join_next(&mut self) -> Option<()> {
        let id = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => id,
            Err(error) => {
                // Executors catch job panics, so this is a bug in offload.
                tracing::error!(%error, "executor task failed");
                error.id()
            }
        };
        self.attempts.remove(&id);
        Some(())
    }

    /// Aborts every task and returns the attempts that were cut short.
    async fn abort_all(&mut self) -> Vec<Attempt> {
        self.tasks.abort_all();
        let mut cut = Vec::new();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let id = match joined {
                Ok((id, ())) => id,
                Err(error) => {
                    if let Some(key) = self.attempts.get(&error.id()) {
                        cut.push(*key);
                    }
                    error.id()
                }
            };
            self.attempts.remove(&id);
        }
        cut
    }
}
