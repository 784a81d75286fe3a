//! Runs one claimed job: decode, run in its own transaction, record how it
//! ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tracing::Instrument;

use super::shared::{next_delay, sleep_or_stop, Shared};
use super::{metrics, running};
use crate::context::JobContext;
use crate::job::JobError;
use crate::storage::{Attempt, Backend, ClaimedJob, Outcome};

pub(crate) async fn execute<DB: Backend>(shared: Arc<Shared<DB>>, mut job: ClaimedJob) {
    let span = tracing::info_span!(
        "job",
        id = job.id,
        kind = %job.kind,
        queue = %job.queue,
        attempt = job.attempt,
    );
    async move {
        let key = job.attempt_key();
        let Some(handler) = shared.registry.get(&job.kind).cloned() else {
            let error = format!(
                "unknown job kind `{}`: no handler is registered for it on worker {}",
                job.kind, shared.worker.id
            );
            tracing::error!(%error, "job discarded");
            metrics::job_finished(&job.kind, &job.queue, "discarded", Duration::ZERO);
            record(&shared, key, Outcome::Discard { error }).await;
            return;
        };
        let max_attempts = job.max_attempts;
        let (kind, queue) = (job.kind.clone(), job.queue.clone());
        let waited = (Utc::now() - job.run_at).to_std().unwrap_or_default();
        metrics::job_started(&queue, waited);
        let started = std::time::Instant::now();
        let args = std::mem::take(&mut job.args);
        let cancel = shared.cancel_jobs.child_token();
        let _tracked = running::track(shared.database.clone(), key.id, cancel.clone());
        let mut ctx = JobContext::new(job, shared.pool.clone(), cancel);

        let run = AssertUnwindSafe(handler.run(&args, &mut ctx)).catch_unwind();
        let result = match handler.timeout() {
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                Ok(Err(JobError::failed(format!("timed out after {limit:?}"))))
            }),
            None => run.await,
        };
        let result =
            result.unwrap_or_else(|panic| Err(JobError::from_panic("panicked", panic.as_ref())));

        match result {
            Ok(()) => {
                let outcome = succeed(&shared, key, &mut ctx).await;
                metrics::job_finished(&kind, &queue, outcome, started.elapsed());
            }
            Err(error) => {
                if let Some(tx) = ctx.take_tx() {
                    if let Err(error) = tx.rollback().await {
                        tracing::warn!(%error, "rollback failed; the connection is discarded");
                    }
                }
                let outcome = outcome_for(&shared, key, max_attempts, error, |attempt| {
                    handler.backoff(attempt)
                });
                let label = metrics::outcome_label(&outcome);
                metrics::job_finished(&kind, &queue, label, started.elapsed());
                record(&shared, key, outcome).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Completes a job that returned `Ok`: in its own transaction if it opened
/// one, else through the batched completer. Returns the outcome's metric label.
async fn succeed<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    ctx: &mut JobContext<DB>,
) -> &'static str {
    let delete = shared.config.retention.completed.is_zero();
    let Some(mut tx) = ctx.take_tx() else {
        if shared.completions.send(key).await.is_err() {
            tracing::error!("completer stopped before the job's completion was recorded");
        }
        return "completed";
    };
    let error = match DB::job_complete_in_tx(&mut tx, key, delete).await {
        Ok(true) => match tx.commit().await {
            Ok(()) => return "completed",
            Err(error) => format!("commit of the job's transaction failed: {error}"),
        },
        Ok(false) => {
            let _ = tx.rollback().await;
            tracing::warn!(
                "job is no longer this attempt's (rescued, cancelled or deleted); its transaction was rolled back"
            );
            return "cancelled";
        }
        Err(error) => {
            let _ = tx.rollback().await;
            format!("recording completion in the job's transaction failed: {error}")
        }
    };
    let outcome = outcome_for(
        shared,
        key,
        ctx.max_attempts(),
        JobError::failed(error),
        crate::backoff::exponential,
    );
    let label = metrics::outcome_label(&outcome);
    record(shared, key, outcome).await;
    label
}

fn outcome_for<DB: Backend>(
    shared: &Shared<DB>,
    key: Attempt,
    max_attempts: i32,
    error: JobError,
    backoff: impl Fn(i32) -> Duration,
) -> Outcome {
    let at = |delay: Duration| {
        Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
    };
    match error {
        JobError::Failed(_) if shared.cancel_jobs.is_cancelled() => {
            tracing::info!(%error, "job interrupted by shutdown; handed back to the queue");
            Outcome::Requeue {
                reason: format!("interrupted by shutdown: {error}"),
            }
        }
        JobError::Failed(_) if key.attempt >= max_attempts => {
            tracing::error!(%error, "job failed on its last attempt; discarded");
            Outcome::Discard {
                error: error.to_string(),
            }
        }
        JobError::Failed(_) => {
            let delay = backoff(key.attempt);
            tracing::warn!(%error, retry_in = ?delay, "job failed; will retry");
            Outcome::Retry {
                error: error.to_string(),
                at: at(delay),
            }
        }
        JobError::Snooze(delay) => {
            tracing::debug!(?delay, "job snoozed");
            Outcome::Snooze { at: at(delay) }
        }
        JobError::Cancel(reason) => {
            tracing::info!(%reason, "job cancelled itself");
            Outcome::Cancel { reason }
        }
        JobError::Discard(error) => {
            tracing::error!(%error, "job discarded");
            Outcome::Discard { error }
        }
    }
}

/// Writes `outcome`, retrying while the database is unreachable. If the
/// worker shuts down first, the job stays `running` and is rescued.
pub(crate) async fn record<DB: Backend>(shared: &Shared<DB>, key: Attempt, outcome: Outcome) {
    let mut delay = Duration::from_millis(50);
    loop {
        match DB::job_record_outcome(&shared.pool, key, &outcome).await {
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
