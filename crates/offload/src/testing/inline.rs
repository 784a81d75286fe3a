//! Inline mode, for handler tests: jobs run as soon as this process
//! enqueues them, and [`Inline::settle`] waits until none is left to run.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::kit::TestKit;
use super::runner::{Runner, Worked};
use crate::state::JobState;
use crate::storage::Backend;
use crate::worker::wake;
use crate::Result;

/// How long [`Inline::settle`] waits unless told otherwise.
const DEFAULT_SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// How often the runner looks for jobs when no wake-up came: an enqueue
/// wakes it before its transaction commits, and nothing wakes it at the
/// commit.
const POLL: Duration = Duration::from_millis(50);

/// How often `settle` looks again.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// A task running the kit's jobs as soon as they are enqueued, one at a
/// time, through the same path as [`TestKit::work`]. It serves the kit's
/// [`queues`](TestKit::queues); jobs scheduled for later and retries wait
/// for their turn as they would without a worker's promoter, so they are
/// not run. Stops when dropped (after the job it is running) or on
/// [`stop`](Inline::stop).
///
/// ```no_run
/// # use std::time::Duration;
/// # use offload::{testing::TestKit, Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: i64 }
/// # impl Job<sqlx::Postgres> for Resize {
/// #     const KIND: &'static str = "resize";
/// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> { Ok(()) }
/// # }
/// # async fn example(kit: TestKit<sqlx::Postgres>) -> offload::Result<()> {
/// let inline = kit.inline();
/// kit.client().enqueue(Resize { image: 1 }).await?;
/// inline.settle_within(Duration::from_secs(2)).await;
/// assert_eq!(inline.worked().len(), 1);
/// inline.stop().await;
/// # Ok(()) }
/// ```
pub struct Inline<DB: Backend> {
    runner: Arc<Runner<DB>>,
    status: Arc<Status>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// What the runner task tells `settle`.
#[derive(Default)]
struct Status {
    /// Passes over the queues under way (0 or 1): a job is claimed, running
    /// or having its outcome written.
    busy: AtomicUsize,
    /// Wakes the task at once, for `settle`.
    nudge: Notify,
    /// Every attempt run so far.
    worked: Mutex<Vec<Worked>>,
    /// The last database error the task met.
    error: Mutex<Option<String>>,
}

impl<DB: Backend, S: Send + Sync + 'static> TestKit<DB, S> {
    /// Starts running this kit's jobs as soon as this process enqueues
    /// them: for tests of code that enqueues (an axum handler), which then
    /// [`settle`](Inline::settle) and check the jobs' effects. Needs a
    /// Tokio runtime.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn signup(client: &offload::Client<sqlx::Sqlite>, to: &str) -> offload::Result<()> {
    /// #     client.enqueue(SendWelcome { to: to.into() }).await.map(|_| ())
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// let inline = kit.inline();
    /// signup(kit.client(), "a@example.com").await?; // the code under test enqueues
    /// inline.settle().await;
    /// assert!(inline.worked().iter().all(|worked| worked.is_completed()));
    /// # Ok(()) }
    /// ```
    pub fn inline(&self) -> Inline<DB> {
        let status = Arc::new(Status::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(self.runner.clone(), status.clone(), stop.clone()));
        Inline {
            runner: self.runner.clone(),
            status,
            stop,
            task: Some(task),
        }
    }
}

impl<DB: Backend> Inline<DB> {
    /// Waits until no job of the kit's queues is available or running and
    /// the runner is idle (so the jobs' hooks have run too), up to 10
    /// seconds.
    ///
    /// # Panics
    /// If jobs are still to run after 10 seconds, naming how many per
    /// queue; if the runner met a database error; if it stopped.
    pub async fn settle(&self) {
        self.settle_within(DEFAULT_SETTLE_LIMIT).await;
    }

    /// [`settle`](Inline::settle), waiting up to `limit`.
    pub async fn settle_within(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(error) = wake::lock(&self.status.error).take() {
                panic!("offload::testing: the inline runner failed: {error}");
            }
            if self.task.as_ref().is_none_or(JoinHandle::is_finished) {
                panic!("offload::testing: the inline runner stopped");
            }
            // The rows first, then the runner: a job whose row is done but
            // whose hooks still run keeps the runner busy.
            let pending = match self.pending().await {
                Ok(pending) => pending,
                Err(error) => panic!("offload::testing: could not count the jobs: {error}"),
            };
            if pending.is_empty() && self.status.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let mut waiting: Vec<String> = pending
                    .iter()
                    .map(|(queue, state, n)| format!("{n} {state} in `{queue}`"))
                    .collect();
                if waiting.is_empty() {
                    waiting.push("the runner still busy with its last job".to_owned());
                }
                panic!(
                    "offload::testing: jobs did not settle within {limit:?}: {}",
                    waiting.join(", ")
                );
            }
            self.status.nudge.notify_one();
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Every attempt the runner has run so far, in order.
    pub fn worked(&self) -> Vec<Worked> {
        wake::lock(&self.status.worked).clone()
    }

    /// Stops the runner after the job it is running, and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// `(queue, state, count)` of the kit's jobs available or running.
    async fn pending(&self) -> Result<Vec<(String, JobState, i64)>> {
        let mut pending = Vec::new();
        for queue in self.runner.queues() {
            for (state, n) in DB::job_count_by_state(self.runner.pool(), Some(queue)).await? {
                if n > 0 && matches!(state, JobState::Available | JobState::Running) {
                    pending.push((queue.clone(), state, n));
                }
            }
        }
        Ok(pending)
    }
}

impl<DB: Backend> Drop for Inline<DB> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The runner task: runs what is available, then waits for a wake-up of
/// one of its queues, a nudge from `settle`, or the poll.
async fn serve<DB: Backend>(runner: Arc<Runner<DB>>, status: Arc<Status>, stop: CancellationToken) {
    let notifiers: Vec<Arc<Notify>> = runner.queues().iter().map(|q| wake::notifier(q)).collect();
    while !stop.is_cancelled() {
        // Armed before looking, so that an enqueue while we look wakes us.
        let mut armed: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = notifiers
            .iter()
            .map(|notify| Box::pin(notify.notified()))
            .collect();
        for notified in &mut armed {
            notified.as_mut().enable();
        }
        status.busy.fetch_add(1, Ordering::SeqCst);
        let ran = run_available(&runner, &status, &stop).await;
        status.busy.fetch_sub(1, Ordering::SeqCst);
        match ran {
            Ok(true) => continue,
            Ok(false) => {}
            Err(error) => *wake::lock(&status.error) = Some(error.to_string()),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = futures::future::select_all(armed) => {}
            () = status.nudge.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Runs every available job of the runner's queues, one at a time. Returns
/// whether it ran any.
async fn run_available<DB: Backend>(
    runner: &Runner<DB>,
    status: &Status,
    stop: &CancellationToken,
) -> Result<bool> {
    let mut ran = false;
    for queue in runner.queues() {
        while !stop.is_cancelled() {
            let Some(job) = runner.claim_next(queue).await? else {
                break;
            };
            let worked = runner.run(job).await?;
            wake::lock(&status.worked).push(worked);
            ran = true;
        }
    }
    Ok(ran)
}
