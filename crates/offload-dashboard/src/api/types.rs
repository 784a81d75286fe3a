//! The admin API's request and response bodies, as the OpenAPI document
//! describes them.

use chrono::{DateTime, Utc};
use offload::{
    admin::{
        ActionOutcome, FilterParams, JobAction, JobPage, JobSummary, Overview, QueueSummary,
        StateCounts, ThroughputPoint,
    },
    AttemptError, JobRecord, JobState,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStateBody {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker.
    Running,
    /// Failed; waiting for its next attempt.
    Retryable,
    /// Succeeded.
    Completed,
    /// Out of attempts, or could not run at all.
    Discarded,
    /// Cancelled by the job or an operator.
    Cancelled,
}

impl From<JobState> for JobStateBody {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Scheduled => Self::Scheduled,
            JobState::Available => Self::Available,
            JobState::Running => Self::Running,
            JobState::Retryable => Self::Retryable,
            JobState::Completed => Self::Completed,
            JobState::Discarded => Self::Discarded,
            JobState::Cancelled => Self::Cancelled,
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptErrorBody {
    /// Which attempt failed.
    pub attempt: i32,
    /// When.
    pub at: DateTime<Utc>,
    /// The error message.
    pub error: String,
}

impl From<AttemptError> for AttemptErrorBody {
    fn from(e: AttemptError) -> Self {
        Self {
            attempt: e.attempt,
            at: e.at,
            error: e.error,
        }
    }
}

/// A job, whole.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobBody {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobStateBody,
    /// Its args, as enqueued.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts made so far.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Every recorded error, oldest first.
    pub errors: Vec<AttemptErrorBody>,
    /// Labels.
    pub tags: Vec<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finalized_at: Option<DateTime<Utc>>,
    /// The worker running it, while running.
    pub worker_id: Option<String>,
}

impl From<JobRecord> for JobBody {
    fn from(job: JobRecord) -> Self {
        Self {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            state: job.state.into(),
            args: job.args,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            errors: job.errors.into_iter().map(Into::into).collect(),
            tags: job.tags,
            created_at: job.created_at,
            run_at: job.run_at,
            attempted_at: job.attempted_at,
            finalized_at: job.finalized_at,
            worker_id: job.worker_id,
        }
    }
}

/// A job as lists show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobSummaryBody {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobStateBody,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts made so far.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Labels.
    pub tags: Vec<String>,
    /// The start of the args' JSON text.
    pub args_preview: String,
    /// The latest recorded error.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finalized_at: Option<DateTime<Utc>>,
}

impl From<JobSummary> for JobSummaryBody {
    fn from(job: JobSummary) -> Self {
        Self {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            state: job.state.into(),
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            tags: job.tags,
            args_preview: job.args_preview,
            last_error: job.last_error,
            created_at: job.created_at,
            run_at: job.run_at,
            attempted_at: job.attempted_at,
            finalized_at: job.finalized_at,
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPageBody {
    /// The jobs.
    pub jobs: Vec<JobSummaryBody>,
    /// Pass as `before` to get the next page; absent on the last page.
    pub next_before: Option<i64>,
}

impl From<JobPage> for JobPageBody {
    fn from(page: JobPage) -> Self {
        Self {
            jobs: page.jobs.into_iter().map(Into::into).collect(),
            next_before: page.next_before,
        }
    }
}

/// Which jobs to list. Every parameter is optional; all given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct JobQuery {
    /// Comma-separated states, e.g. `discarded,retryable`.
    pub state: Option<String>,
    /// Exact queue name.
    pub queue: Option<String>,
    /// Exact job kind.
    pub kind: Option<String>,
    /// A tag the job carries.
    pub tag: Option<String>,
    /// Created at or after: RFC 3339, a date, or an age like `15m`, `2h`, `7d`.
    pub since: Option<String>,
    /// Created before: same forms as `since`.
    pub until: Option<String>,
    /// Case-insensitive text in the args or errors.
    pub q: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<String>,
    /// Keyset cursor: the previous page's `next_before`.
    pub before: Option<String>,
}

impl From<JobQuery> for FilterParams {
    fn from(q: JobQuery) -> Self {
        FilterParams {
            state: q.state,
            queue: q.queue,
            kind: q.kind,
            tag: q.tag,
            since: q.since,
            until: q.until,
            q: q.q,
            limit: q.limit,
            before: q.before,
        }
    }
}

/// An action on jobs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionName {
    /// Discarded, cancelled or retryable jobs run again now.
    Retry,
    /// Scheduled, available, retryable or running jobs are cancelled.
    Cancel,
    /// Jobs that are not running are deleted.
    Delete,
}

impl From<ActionName> for JobAction {
    fn from(action: ActionName) -> Self {
        match action {
            ActionName::Retry => JobAction::Retry,
            ActionName::Cancel => JobAction::Cancel,
            ActionName::Delete => JobAction::Delete,
        }
    }
}

/// An action on a queue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueActionName {
    /// Workers stop claiming the queue's jobs; running jobs finish.
    Pause,
    /// Workers claim the queue's jobs again.
    Resume,
}

/// An action on every job matching a filter.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct BulkRequest {
    /// What to do.
    pub action: ActionName,
    /// Which jobs (`limit` and `before` are ignored).
    #[serde(default)]
    pub filter: JobQuery,
    /// Must be `true` to act on every job when the filter is empty.
    #[serde(default)]
    pub all: bool,
}

/// What an action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionOutcomeBody {
    /// Jobs looked at.
    pub matched: u64,
    /// Jobs changed or deleted; jobs in states the action does not apply to
    /// are left alone.
    pub changed: u64,
}

impl From<ActionOutcome> for ActionOutcomeBody {
    fn from(o: ActionOutcome) -> Self {
        Self {
            matched: o.matched,
            changed: o.changed,
        }
    }
}

/// The result of an action on one job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobActionBody {
    /// The action done.
    pub action: ActionName,
    /// The job after the action; absent after a delete.
    pub job: Option<JobBody>,
}

/// Jobs in each state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StateCountsBody {
    /// Waiting for their `run_at`.
    pub scheduled: i64,
    /// Ready to run.
    pub available: i64,
    /// Running now.
    pub running: i64,
    /// Waiting for their next attempt.
    pub retryable: i64,
    /// Done.
    pub completed: i64,
    /// Failed for good.
    pub discarded: i64,
    /// Cancelled.
    pub cancelled: i64,
}

impl From<StateCounts> for StateCountsBody {
    fn from(c: StateCounts) -> Self {
        Self {
            scheduled: c.scheduled,
            available: c.available,
            running: c.running,
            retryable: c.retryable,
            completed: c.completed,
            discarded: c.discarded,
            cancelled: c.cancelled,
        }
    }
}

/// A queue at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueBody {
    /// Queue name.
    pub name: String,
    /// Whether workers skip it.
    pub paused: bool,
    /// Jobs per state.
    pub counts: StateCountsBody,
    /// Seconds the oldest available job has waited.
    pub oldest_available_secs: Option<f64>,
    /// Jobs completed per minute over the overview's window.
    pub completed_per_minute: f64,
}

impl From<QueueSummary> for QueueBody {
    fn from(q: QueueSummary) -> Self {
        Self {
            name: q.name,
            paused: q.paused,
            counts: q.counts.into(),
            oldest_available_secs: q.oldest_available_secs,
            completed_per_minute: q.completed_per_minute,
        }
    }
}

/// Counts per state over all queues, and each queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverviewBody {
    /// Jobs per state, all queues.
    pub totals: StateCountsBody,
    /// Each queue, by name.
    pub queues: Vec<QueueBody>,
    /// Minutes the queues' throughput covers.
    pub window_minutes: u32,
}

impl From<Overview> for OverviewBody {
    fn from(o: Overview) -> Self {
        Self {
            totals: o.totals.into(),
            queues: o.queues.into_iter().map(Into::into).collect(),
            window_minutes: o.window_minutes,
        }
    }
}

/// Jobs finished in one minute.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThroughputBody {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Jobs completed.
    pub completed: i64,
    /// Jobs discarded.
    pub discarded: i64,
}

impl From<ThroughputPoint> for ThroughputBody {
    fn from(p: ThroughputPoint) -> Self {
        Self {
            minute: p.minute,
            completed: p.completed,
            discarded: p.discarded,
        }
    }
}

/// Throughput parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct ThroughputQuery {
    /// Minutes of history, 1 to 1440 (default 60).
    pub minutes: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
}

/// A queue's pause switch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueuePausedBody {
    /// Queue name.
    pub name: String,
    /// Whether workers now skip it.
    pub paused: bool,
}

/// An error, as RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
}
