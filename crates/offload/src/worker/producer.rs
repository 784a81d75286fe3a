//! Claims jobs of one queue and runs each in its own task, never more than
//! the queue's concurrency at once.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::QueueConfig;
use super::executor::{execute, record};
use super::shared::{answered, next_delay, sleep_or_stop, within, Shared};
use super::{metrics, running, wake};
use crate::state::JobState;
use crate::storage::group::Writer;
use crate::storage::{
    Attempt, Backend, Claimed, JobFilter, Outcome, Page, Throttle, MAX_PAGE_SIZE,
};

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
    let mut limits = Limits::new(&queue);
    let mut unheard_checked = Instant::now();
    // When the queue's rate window frees a start: claim again then, not
    // at the next poll.
    let mut rate_free_in: Option<Duration> = None;

    while !stop.is_cancelled() {
        // Registered before claiming, so a wake-up during the claim counts.
        let mut notified = pin!(notify.notified());
        notified.as_mut().enable();

        if unheard_checked.elapsed() >= shared.config.lease {
            unheard_checked = Instant::now();
            if let Err(error) = hand_back_unheard(&shared, &queue.name).await {
                tracing::warn!(%error, queue = %queue.name, "could not look for jobs a lost claim took; will look again");
            }
        }
        let free = queue.concurrency - running.len();
        if free > 0 && (woken || (draining && free >= refill)) {
            let want = free.min(batch);
            let limited = limits.apply(&shared, &queue).await;
            // A claim can wait for the write group, which a job holding its
            // transaction open keeps: shutdown must not wait with it.
            let claimed = tokio::select! {
                claimed = within(shared.database_timeout(), claim(&shared, &queue.name, want, limited)) => {
                    claimed.unwrap_or_else(|no_answer| Err(no_answer.to_string()))
                }
                () = stop.cancelled() => break,
            };
            match claimed {
                Ok(Claimed { jobs, throttled }) => {
                    error_delay = Duration::from_millis(100);
                    if let Some(limit) = throttled {
                        metrics::claim_throttled(&queue.name, limit.label());
                    }
                    rate_free_in = match throttled {
                        Some(Throttle::Rate { free_in }) => Some(free_in),
                        _ => None,
                    };
                    draining = jobs.len() == want;
                    woken = false;
                    for job in jobs {
                        let key = job.attempt_key();
                        // Listed at once, so a look for lost claims never
                        // mistakes a job just claimed for one.
                        let tracked = running::track(&shared.database, key.id, &shared.cancel_jobs);
                        running.spawn(key, execute(shared.clone(), job, tracked));
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
            () = sleep_for(rate_free_in) => woken = true,
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
) -> Result<Claimed, String> {
    let mut writer = Writer::begin(&shared.pool, shared.group.as_deref()).await?;
    let result = DB::job_claim_on(writer.conn(), queue, want, &shared.worker.id, limited).await;
    writer.end(result).await.map(|(jobs, _commit_ahead)| jobs)
}

/// Hands back to the queue the jobs a lost claim took: a claim's statement
/// can commit on the server while its answer never arrives (a reset, a
/// stall, `database_timeout`), leaving jobs `running` under this live
/// worker's id, where no rescuer looks. Such a job is in this queue, runs
/// under our id, and is not listed as running in this process; it was
/// claimed longer ago than a claim may wait for its answer
/// (`database_timeout`, else `lease`). The hand-back is guarded by the
/// attempt. Runs every `lease`; it reads with the admin statements.
async fn hand_back_unheard<DB: Backend>(shared: &Shared<DB>, queue: &str) -> Result<(), String> {
    let limit = shared.database_timeout();
    let waited = limit.unwrap_or(shared.config.lease);
    let Some(claimed_before) = chrono::Duration::from_std(waited)
        .ok()
        .and_then(|waited| Utc::now().checked_sub_signed(waited))
    else {
        return Ok(());
    };
    let filter = JobFilter {
        states: vec![JobState::Running],
        queue: Some(queue.to_owned()),
        worker_id: Some(shared.worker.id.clone()),
        ..JobFilter::default()
    };
    let page = Page {
        before: None,
        limit: MAX_PAGE_SIZE,
    };
    let listed = answered(limit, DB::job_list(&shared.pool, &filter, &page))
        .await
        .map_err(|error| error.to_string())?;
    for job in listed {
        if running::is_running(&shared.database, job.id) {
            continue;
        }
        let record = answered(limit, DB::job_get(&shared.pool, job.id))
            .await
            .map_err(|error| error.to_string())?;
        let Some(record) = record else { continue };
        let unheard = record.state == JobState::Running
            && record.worker_id.as_deref() == Some(shared.worker.id.as_str())
            && record.attempted_at.is_some_and(|at| at < claimed_before)
            && !running::is_running(&shared.database, job.id);
        if !unheard {
            continue;
        }
        let key = Attempt {
            id: record.id,
            attempt: record.attempt,
        };
        let outcome = Outcome::Requeue {
            reason: "claimed by a statement whose answer never reached the worker; handed back"
                .into(),
        };
        let recorded = answered(limit, DB::job_record_outcome(&shared.pool, key, &outcome));
        if recorded.await.map_err(|error| error.to_string())? {
            tracing::warn!(
                id = key.id,
                queue,
                "handed back a job a lost claim had taken"
            );
            wake::wake(queue);
        }
    }
    Ok(())
}

/// Sleeps `wait` (at least a millisecond), or forever when `None`.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
        None => std::future::pending().await,
    }
}

/// Whether a queue has a global or rate limit, from this worker's config or
/// from the database (another worker or an operator may have set one). Read
/// again every few seconds.
struct Limits {
    configured: bool,
    in_database: bool,
    checked_at: Option<Instant>,
}

impl Limits {
    const RECHECK: Duration = Duration::from_secs(5);

    fn new(queue: &QueueConfig) -> Self {
        Self {
            configured: queue.global_limit.is_some()
                || queue.rate_limit.is_some()
                || queue.partition.is_some(),
            in_database: false,
            checked_at: None,
        }
    }

    async fn apply<DB: Backend>(&mut self, shared: &Shared<DB>, queue: &QueueConfig) -> bool {
        if self.configured {
            return true;
        }
        if self
            .checked_at
            .is_none_or(|at| at.elapsed() >= Self::RECHECK)
        {
            match DB::queue_limits(&shared.pool, &queue.name).await {
                Ok(limits) => self.in_database = limits.any(),
                Err(error) => {
                    tracing::warn!(%error, queue = %queue.name, "could not read the queue's limits")
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
