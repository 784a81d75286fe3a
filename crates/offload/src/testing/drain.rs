//! Draining a queue: every available job, one at a time, in claim order,
//! until none is left.

use super::kit::TestKit;
use super::runner::Worked;
use crate::state::JobState;
use crate::storage::Backend;
use crate::Result;

/// Most jobs one drain runs unless told otherwise: past it, a job is
/// likely enqueueing itself forever.
const DEFAULT_MAX_JOBS: usize = 1_000;

/// How far [`TestKit::drain_with`] goes.
///
/// ```
/// use offload::testing::DrainOptions;
/// // Also run jobs scheduled for later and retries, for up to 3 rounds.
/// let options = DrainOptions::new().with_scheduled(3).max_jobs(50);
/// assert_eq!(options.scheduled_rounds, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainOptions {
    /// Times the queue's scheduled and retryable jobs are made available
    /// (due or not) once no available job is left. Zero runs only the jobs
    /// available now.
    pub scheduled_rounds: usize,
    /// Most jobs the drain runs before it panics.
    pub max_jobs: usize,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            scheduled_rounds: 0,
            max_jobs: DEFAULT_MAX_JOBS,
        }
    }
}

impl DrainOptions {
    /// Only available jobs, at most 1,000.
    pub fn new() -> Self {
        Self::default()
    }

    /// Once the available jobs are done, makes the queue's scheduled and
    /// retryable jobs available and drains again, up to `rounds` times (as
    /// Oban's `with_scheduled`). A job that snoozes or fails every time runs
    /// once per round, so the drain ends.
    pub fn with_scheduled(mut self, rounds: usize) -> Self {
        self.scheduled_rounds = rounds;
        self
    }

    /// Runs at most `jobs` jobs, panicking if more are available after
    /// that (a job that enqueues another forever).
    pub fn max_jobs(mut self, jobs: usize) -> Self {
        self.max_jobs = jobs;
        self
    }
}

impl<DB: Backend, S: Send + Sync + 'static> TestKit<DB, S> {
    /// Runs every available job of `queue`, one at a time, in the order a
    /// worker claims them (priority first), until none is left: jobs that
    /// the drained jobs enqueue on `queue` run too. Returns each attempt,
    /// in the order run. A paused queue drains nothing, as for a worker.
    ///
    /// # Panics
    /// After 1,000 jobs with more available (see
    /// [`DrainOptions::max_jobs`]).
    ///
    /// ```no_run
    /// # use offload::testing::TestKit;
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// let drained = kit.drain("default").await?;
    /// assert!(drained.iter().all(|worked| worked.is_completed()));
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self, queue: &str) -> Result<Vec<Worked>> {
        self.drain_with(queue, DrainOptions::new()).await
    }

    /// [`drain`](TestKit::drain), going as far as `options` says.
    ///
    /// ```no_run
    /// # use offload::testing::{DrainOptions, TestKit};
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// // Runs the reminder scheduled for tomorrow, and any retry, today.
    /// let drained = kit.drain_with("reminders", DrainOptions::new().with_scheduled(5)).await?;
    /// # let _ = drained; Ok(()) }
    /// ```
    pub async fn drain_with(&self, queue: &str, options: DrainOptions) -> Result<Vec<Worked>> {
        let mut worked = Vec::new();
        let mut rounds = 0;
        loop {
            if worked.len() >= options.max_jobs {
                let more_rounds = rounds < options.scheduled_rounds;
                self.assert_nothing_left(queue, more_rounds, worked.len())
                    .await?;
                return Ok(worked);
            }
            let Some(job) = self.runner.claim_next(queue).await? else {
                if rounds < options.scheduled_rounds
                    && DB::job_promote_queue(self.pool(), queue).await? > 0
                {
                    rounds += 1;
                    continue;
                }
                return Ok(worked);
            };
            worked.push(self.runner.run(job).await?);
        }
    }

    /// Panics if a drain that ran `ran` jobs, its most, would run more.
    async fn assert_nothing_left(&self, queue: &str, more_rounds: bool, ran: usize) -> Result<()> {
        let left: i64 = DB::job_count_by_state(self.pool(), Some(queue))
            .await?
            .into_iter()
            .filter(|(state, _)| match state {
                JobState::Available => true,
                JobState::Scheduled | JobState::Retryable => more_rounds,
                _ => false,
            })
            .map(|(_, n)| n)
            .sum();
        assert!(
            left == 0,
            "offload::testing: drained {ran} jobs of queue `{queue}` and {left} more are waiting: does a job enqueue itself? Raise DrainOptions::max_jobs if not"
        );
        Ok(())
    }
}
