//! Runs one claimed job: decode, run in its own transaction, record how it
//! ended, tell the hooks and the event stream.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tracing::Instrument;

use super::job_poll::JobPoll;
use super::printable::printable;
use super::shared::{next_delay, sleep_or_stop, Shared};
use super::watchdog::AttemptFacts;
use super::{metrics, running, wake};
use crate::hooks::{AttemptOutcome, JobEvent, JobInfo};
use crate::job::JobError;
use crate::registry::{AttemptInput, Attempted};
use crate::storage::group::{JobTx, Writer};
use crate::storage::{Attempt, Backend, ClaimedJob, Outcome};

/// Runs `job`, listed as running in this process by `tracked` (from its
/// claim until its outcome, or its completion, is written).
pub(crate) async fn execute<DB: Backend>(
    shared: Arc<Shared<DB>>,
    mut job: ClaimedJob,
    tracked: running::RunningGuard,
) {
    let span = tracing::info_span!(
        "job",
        id = job.id,
        kind = %job.kind,
        queue = %job.queue,
        attempt = job.attempt,
    );
    async move {
        let key = job.attempt_key();
        // Shared with the handler's future, which is 'static.
        let info = Arc::new(JobInfo {
            id: job.id,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        });
        let started = std::time::Instant::now();
        let Some(handler) = shared.kinds.get(&job.kind).cloned() else {
            // A newer deploy's kind, claimed by an older worker: retried with
            // back-off, so a worker that knows it gets it; discarded only
            // after its last attempt.
            let error = JobError::failed(format!(
                "unknown job kind `{}`: no handler is registered for it on worker {} (deploy the code that defines it, or delete the job)",
                job.kind, shared.worker.id
            ));
            let outcome = outcome_for(&shared, key, job.max_attempts, error, crate::backoff::exponential);
            finish(&shared, key, info, Ended::Failed(outcome), started).await;
            return;
        };
        let waited = (Utc::now() - job.run_at).to_std().unwrap_or_default();
        metrics::job_started(&job.queue, waited);
        let hooks = shared.kinds.hooks.clone();
        for hook in hooks.iter() {
            guard_hook(hook.before_attempt(&info)).await;
        }
        let args = std::mem::take(&mut job.args);
        let cancel = tracked.token().clone();
        let max_attempts = job.max_attempts;
        let watch = shared.attempts.as_ref().map(|attempts| {
            attempts.watch(AttemptFacts {
                key,
                kind: job.kind.clone(),
                queue: job.queue.clone(),
                max_attempts,
                timeout: handler.timeout(),
                backoff: handler.backoff(key.attempt),
                cancel: cancel.clone(),
            })
        });
        let attempt = handler.attempt(AttemptInput {
            job,
            args,
            pool: shared.pool.clone(),
            group: shared.group.clone(),
            cancel,
            hooks,
            info: Arc::clone(&info),
        });
        let watched = watch.as_ref().map(|guard| guard.watched().clone());
        let Attempted { result, tx } = JobPoll::new(attempt, watched).await;
        if let Some(Err(outcome)) = watch.as_ref().map(|guard| guard.watched().claim_for_executor()) {
            // The watchdog recorded a timeout while this thread was
            // blocked; the job's work, if any, is undone.
            if let Some(tx) = tx {
                let _ = tx.rollback().await;
            }
            tracing::warn!("the job returned after the watchdog recorded its timeout; its result is dropped and its transaction rolled back");
            finish(&shared, key, info, Ended::Failed(outcome), started).await;
            return;
        }

        let watched = watch.as_ref().map(|guard| guard.watched().clone());
        let recording = async {
            let backoff = |attempt| handler.backoff(attempt);
            let ended = conclude(&shared, key, max_attempts, result, tx, tracked, backoff).await;
            finish(&shared, key, info.clone(), ended, started).await;
        };
        // A database that stops answering must not keep the job here: past
        // `database_timeout` the watchdog records the outcome instead.
        let taken_over = async {
            match &watched {
                Some(watched) => watched.taken_over().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = recording => {}
            outcome = taken_over => {
                metrics::job_finished(&info.kind, &info.queue, metrics::outcome_label(&outcome), started.elapsed());
                announce(&shared, info, attempt_outcome(&outcome), started).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Ends an attempt that returned: its completion committed in its
/// transaction or handed to the completer (the job stays listed as running
/// until that is written), or its transaction rolled back and its outcome
/// decided.
async fn conclude<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    max_attempts: i32,
    result: Result<(), JobError>,
    tx: Option<JobTx<DB>>,
    tracked: running::RunningGuard,
    backoff: impl Fn(i32) -> Duration,
) -> Ended {
    match result {
        Ok(()) => match tx {
            None => {
                tracked.until_completion_written();
                if shared.completions.send(key).await.is_err() {
                    tracing::error!("completer stopped before the job's completion was recorded");
                }
                Ended::Completed
            }
            Some(tx) => complete_in_tx(shared, key, max_attempts, tx).await,
        },
        Err(error) => {
            if let Some(tx) = tx {
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "rollback failed; the connection is discarded");
                }
            }
            Ended::Failed(outcome_for(shared, key, max_attempts, error, backoff))
        }
    }
}

/// How an attempt ended, before it is recorded.
enum Ended {
    /// Completed (in its transaction, or handed to the completer).
    Completed,
    /// The row was no longer this attempt's (rescued, cancelled or deleted
    /// meanwhile): nothing to record.
    Lost,
    /// Not completed: this outcome is to be recorded.
    Failed(Outcome),
}

/// Commits a job that returned `Ok` together with its completion.
async fn complete_in_tx<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    max_attempts: i32,
    mut tx: JobTx<DB>,
) -> Ended {
    let delete = shared.config.retention.completed.is_zero();
    let completed = match &mut tx {
        JobTx::Own(tx) => DB::job_complete_in_tx(tx, key, delete).await,
        // Marked when the savepoint opened.
        JobTx::Grouped { ours, .. } => Ok(*ours),
    };
    let error = match completed {
        Ok(true) => match commit(tx).await {
            Ok(()) => return Ended::Completed,
            Err(error) => format!("commit of the job's transaction failed: {error}"),
        },
        Ok(false) => {
            let _ = tx.rollback().await;
            tracing::warn!(
                "job is no longer this attempt's (rescued, cancelled or deleted); its transaction was rolled back"
            );
            return Ended::Lost;
        }
        Err(error) => {
            let _ = tx.rollback().await;
            format!("recording completion in the job's transaction failed: {error}")
        }
    };
    Ended::Failed(outcome_for(
        shared,
        key,
        max_attempts,
        JobError::failed(error),
        crate::backoff::exponential,
    ))
}

/// Commits the job's transaction: its own, or its group's (waiting for it).
async fn commit<DB: Backend>(tx: JobTx<DB>) -> Result<(), String> {
    match tx {
        JobTx::Own(tx) => tx.commit().await.map_err(|error| error.to_string()),
        JobTx::Grouped { member, .. } => {
            let committed = member.release().await.map_err(|error| error.to_string())?;
            committed.wait().await
        }
    }
}

/// Records how the attempt ended, counts it, and tells the hooks and the
/// event stream.
async fn finish<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    job: Arc<JobInfo>,
    ended: Ended,
    started: std::time::Instant,
) {
    let (label, outcome) = match ended {
        Ended::Completed => ("completed", AttemptOutcome::Completed),
        Ended::Lost => (
            "cancelled",
            AttemptOutcome::Cancelled {
                reason: "the job was rescued, cancelled or deleted while it ran".into(),
            },
        ),
        Ended::Failed(outcome) => {
            let told = (metrics::outcome_label(&outcome), attempt_outcome(&outcome));
            let due_now = match &outcome {
                Outcome::Retry { at, .. } | Outcome::Snooze { at } => *at <= Utc::now(),
                Outcome::Requeue { .. } => true,
                Outcome::Cancel { .. } | Outcome::Discard { .. } => false,
            };
            record(shared, key, outcome).await;
            // Recorded as `available`: this process's producers need not
            // wait for their next poll (other processes hear the NOTIFY).
            if due_now {
                wake::wake(&job.queue);
            }
            told
        }
    };
    metrics::job_finished(&job.kind, &job.queue, label, started.elapsed());
    announce(shared, job, outcome, started).await;
}

/// Runs the hooks' `after_attempt` (and `on_discard`) and sends the event,
/// building it only when someone listens.
async fn announce<DB: Backend>(
    shared: &Shared<DB>,
    job: Arc<JobInfo>,
    outcome: AttemptOutcome,
    started: std::time::Instant,
) {
    let hooks = &shared.kinds.hooks;
    if hooks.is_empty() && shared.events.receiver_count() == 0 {
        return;
    }
    let event = JobEvent {
        job: Arc::unwrap_or_clone(job),
        outcome,
        duration: started.elapsed(),
    };
    for hook in hooks.iter() {
        guard_hook(hook.after_attempt(&event)).await;
        if matches!(event.outcome, AttemptOutcome::Discarded { .. }) {
            guard_hook(hook.on_discard(&event)).await;
        }
    }
    // No receiver is not an error: nobody subscribed.
    let _ = shared.events.send(event);
}

/// Awaits a hook, logging a panic instead of passing it on.
async fn guard_hook(hook: futures::future::BoxFuture<'_, ()>) {
    if let Err(panic) = AssertUnwindSafe(hook).catch_unwind().await {
        let error = JobError::from_panic("hook panicked", panic.as_ref());
        tracing::error!(%error, "a job hook panicked; the job's outcome stands");
    }
}

/// The outcome as hooks and subscribers see it.
fn attempt_outcome(outcome: &Outcome) -> AttemptOutcome {
    match outcome {
        Outcome::Retry { error, at } => AttemptOutcome::Retrying {
            error: error.clone(),
            at: *at,
        },
        Outcome::Snooze { at } => AttemptOutcome::Snoozed { until: *at },
        Outcome::Cancel { reason } => AttemptOutcome::Cancelled {
            reason: reason.clone(),
        },
        Outcome::Discard { error } => AttemptOutcome::Discarded {
            error: error.clone(),
        },
        Outcome::Requeue { reason } => AttemptOutcome::Requeued {
            reason: reason.clone(),
        },
    }
}

fn outcome_for<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    max_attempts: i32,
    error: JobError,
    backoff: impl Fn(i32) -> Duration,
) -> Outcome {
    let at = crate::backoff::after;
    match error {
        JobError::Failed(_) if shared.cancel_jobs.is_cancelled() => {
            let error = error.to_string();
            tracing::info!(error = %printable(&error), "job interrupted by shutdown; handed back to the queue");
            Outcome::Requeue {
                reason: format!("interrupted by shutdown: {error}"),
            }
        }
        JobError::Failed(_) if key.attempt >= max_attempts => {
            let error = error.to_string();
            tracing::error!(error = %printable(&error), "job failed on its last attempt; discarded");
            Outcome::Discard { error }
        }
        JobError::Failed(_) => {
            let error = error.to_string();
            let delay = backoff(key.attempt);
            tracing::warn!(error = %printable(&error), retry_in = ?delay, "job failed; will retry");
            Outcome::Retry {
                error,
                at: at(delay),
            }
        }
        JobError::Snooze(delay) => {
            tracing::debug!(?delay, "job snoozed");
            Outcome::Snooze { at: at(delay) }
        }
        JobError::Cancel(reason) => {
            tracing::info!(reason = %printable(&reason), "job cancelled itself");
            Outcome::Cancel { reason }
        }
        JobError::Discard(error) => {
            tracing::error!(error = %printable(&error), "job discarded");
            Outcome::Discard { error }
        }
    }
}

/// Writes `outcome`, retrying while the database is unreachable. If the
/// worker shuts down first, the job stays `running` and is rescued.
pub(crate) async fn record<DB: Backend>(shared: &Shared<DB>, key: Attempt, outcome: Outcome) {
    let mut delay = Duration::from_millis(50);
    loop {
        let recorded = match Writer::begin(&shared.pool, shared.group.as_deref()).await {
            Ok(mut writer) => {
                let result = DB::job_record_outcome_on(writer.conn(), key, &outcome).await;
                writer.end_committed(result).await
            }
            Err(error) => Err(error),
        };
        match recorded {
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, "could not record the job's outcome; retrying");
                if sleep_or_stop(delay, &shared.stop_maintenance).await {
                    return;
                }
                delay = next_delay(delay);
            }
        }
    }
}
