//! Runs one claimed job through the worker's own executor, then writes its
//! batched completion at once instead of leaving it to a completer task.

use std::sync::Arc;

use sqlx::Pool;
use tokio::sync::{broadcast, mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;

use crate::defaults::DEFAULT_QUEUE;
use crate::hooks::{AttemptOutcome, JobEvent};
use crate::registry::Kinds;
use crate::storage::{Attempt, Backend, ClaimedJob, JobRecord, WorkerInfo};
use crate::worker::executor;
use crate::worker::shared::Shared;
use crate::worker::WorkerConfig;
use crate::Result;

/// Completions waiting to be written. The executor blocks when the channel
/// is full, so it is larger than any test runs jobs at once.
const COMPLETION_BUFFER: usize = 4096;

/// Events a test's subscriber may fall behind by.
const EVENT_BUFFER: usize = 4096;

/// One attempt of one job, run by the [`TestKit`](super::TestKit): how it
/// ended and the job's row afterwards.
///
/// ```no_run
/// # use offload::{AttemptOutcome, JobState};
/// # async fn example(worked: offload::testing::Worked) {
/// assert_eq!(worked.outcome, AttemptOutcome::Completed);
/// assert_eq!(worked.job.as_ref().map(|job| job.state), Some(JobState::Completed));
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Worked {
    /// The job's id.
    pub id: i64,
    /// The attempt's number, starting at 1.
    pub attempt: i32,
    /// How the attempt ended, as hooks and the event stream were told.
    pub outcome: AttemptOutcome,
    /// The job's row once the outcome is written; `None` when it is gone
    /// (a completed job under a zero [`Retention::completed`](crate::Retention)).
    pub job: Option<JobRecord>,
}

impl Worked {
    /// Whether the attempt completed (its transaction committed).
    pub fn is_completed(&self) -> bool {
        self.outcome == AttemptOutcome::Completed
    }
}

/// A worker without tasks: the state the executor runs a job with, and the
/// receiving end of its completions.
pub(super) struct Runner<DB: Backend> {
    shared: Arc<Shared<DB>>,
    completions: Mutex<mpsc::Receiver<Attempt>>,
    /// The queues this kit serves: the configured ones, and every
    /// registered kind's own.
    queues: Vec<String>,
}

impl<DB: Backend> Runner<DB> {
    pub(super) fn new(pool: Pool<DB>, kinds: Kinds<DB>, config: WorkerConfig) -> Self {
        let mut queues: Vec<String> = config.queues.iter().map(|q| q.name.clone()).collect();
        for handler in kinds.handlers.values() {
            queues.push(handler.queue().to_owned());
        }
        if queues.is_empty() {
            queues.push(DEFAULT_QUEUE.to_owned());
        }
        queues.sort_unstable();
        queues.dedup();
        let worker = WorkerInfo {
            id: format!(
                "offload-testing-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            host: "offload-testing".to_owned(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            queues: queues.join(","),
        };
        let (completions, receiver) = mpsc::channel(COMPLETION_BUFFER);
        // Nobody leads: the kit runs no maintenance.
        let (_, leading) = watch::channel(false);
        let shared = Shared {
            database: Arc::from(DB::pool_identity(&pool)),
            maintenance_pool: pool.clone(),
            pool,
            kinds,
            config,
            worker,
            completions,
            // One job at a time, each committed on its own.
            group: None,
            cancel_jobs: CancellationToken::new(),
            stop_maintenance: CancellationToken::new(),
            leading,
            events: broadcast::channel(EVENT_BUFFER).0,
            attempts: None,
        };
        Self {
            shared: Arc::new(shared),
            completions: Mutex::new(receiver),
            queues,
        }
    }

    pub(super) fn pool(&self) -> &Pool<DB> {
        &self.shared.pool
    }

    pub(super) fn worker_id(&self) -> &str {
        &self.shared.worker.id
    }

    pub(super) fn queues(&self) -> &[String] {
        &self.queues
    }

    pub(super) fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// Claims the next available job of `queue`, in claim order.
    pub(super) async fn claim_next(&self, queue: &str) -> Result<Option<ClaimedJob>> {
        self.heartbeat().await?;
        let claimed = DB::job_claim(self.pool(), queue, 1, self.worker_id()).await?;
        Ok(claimed.into_iter().next())
    }

    /// Claims job `id`, if it is waiting.
    pub(super) async fn claim_id(&self, id: i64) -> Result<Option<ClaimedJob>> {
        self.heartbeat().await?;
        DB::job_claim_one(self.pool(), id, self.worker_id()).await
    }

    /// Keeps the kit's worker row fresh while it holds a job, so that a
    /// real worker's rescuer on the same database leaves the job alone.
    async fn heartbeat(&self) -> Result<()> {
        DB::worker_heartbeat(self.pool(), &self.shared.worker).await
    }

    /// Runs `job` as a worker's executor does (its own transaction, the
    /// guarded completion, error mapping, hooks, events), writes its
    /// completion, and reads the row back.
    pub(super) async fn run(&self, job: ClaimedJob) -> Result<Worked> {
        let key = job.attempt_key();
        let mut events = self.shared.events.subscribe();
        let tracked =
            crate::worker::running::track(&self.shared.database, job.id, &self.shared.cancel_jobs);
        executor::execute(self.shared.clone(), job, tracked).await;
        self.write_completions().await?;
        let outcome = outcome_of(&mut events, key);
        Ok(Worked {
            id: key.id,
            attempt: key.attempt,
            outcome,
            job: DB::job_get(self.pool(), key.id).await?,
        })
    }

    /// Writes every completion handed over so far, in one batch. The lock
    /// is held while writing, so a concurrent run that finds the channel
    /// empty knows its own completion is written.
    async fn write_completions(&self) -> Result<()> {
        let mut receiver = self.completions.lock().await;
        let mut done = Vec::new();
        while let Ok(attempt) = receiver.try_recv() {
            done.push(attempt);
        }
        if !done.is_empty() {
            let delete = self.shared.config.retention.completed.is_zero();
            let written = DB::job_complete_many(self.pool(), &done, delete).await;
            crate::worker::running::completions_written(&self.shared.database, &done);
            written?;
        }
        Ok(())
    }
}

/// The outcome the executor announced for attempt `key`: the event is sent
/// before `execute` returns, so it is already in the channel.
fn outcome_of(events: &mut broadcast::Receiver<JobEvent>, key: Attempt) -> AttemptOutcome {
    loop {
        match events.try_recv() {
            Ok(event) if event.job.id == key.id && event.job.attempt == key.attempt => {
                return event.outcome;
            }
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(error) => panic!(
                "offload::testing: the executor announced no outcome for job {} attempt {} ({error})",
                key.id, key.attempt
            ),
        }
    }
}
