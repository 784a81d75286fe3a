//! What operators see: pages, counts per state and queue, throughput, and
//! the actions they can take.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::filter::shorten;
use crate::state::JobState;
use crate::storage::{JobFilter, JobSummary};
use crate::RateLimit;

/// One page of jobs.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as `before` for the next page; `None` (JSON `null`) on the last
    /// page.
    pub next_before: Option<i64>,
}

/// Jobs in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateCounts {
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

impl StateCounts {
    /// The count for `state`.
    pub fn get(&self, state: JobState) -> i64 {
        match state {
            JobState::Scheduled => self.scheduled,
            JobState::Available => self.available,
            JobState::Running => self.running,
            JobState::Retryable => self.retryable,
            JobState::Completed => self.completed,
            JobState::Discarded => self.discarded,
            JobState::Cancelled => self.cancelled,
        }
    }

    pub(super) fn add(&mut self, state: JobState, n: i64) {
        let slot = match state {
            JobState::Scheduled => &mut self.scheduled,
            JobState::Available => &mut self.available,
            JobState::Running => &mut self.running,
            JobState::Retryable => &mut self.retryable,
            JobState::Completed => &mut self.completed,
            JobState::Discarded => &mut self.discarded,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// All jobs.
    pub fn total(&self) -> i64 {
        JobState::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// A queue at a glance.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueSummary {
    /// Queue name.
    pub name: String,
    /// Whether workers skip it.
    pub paused: bool,
    /// Jobs per state.
    pub counts: StateCounts,
    /// Seconds the oldest available job has been waiting.
    pub oldest_available_secs: Option<f64>,
    /// Jobs completed over the summary's window, per minute.
    pub completed_per_minute: f64,
    /// Most of its jobs running at once over all workers.
    pub global_limit: Option<usize>,
    /// Most of its jobs starting per period over all workers, and the
    /// starts in the current window.
    pub rate_limit: Option<RateLimitUse>,
    /// Whether its keys take turns, its cap per key, and the cap's use.
    pub partition: Option<PartitionSummary>,
    /// Available jobs held back because a limit is reached (0 when none
    /// is): every available job at the global or rate limit, else those of
    /// keys at their cap.
    pub waiting_on_limit: i64,
}

/// A partitioned queue's cap per key and how its keys use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionSummary {
    /// Most jobs of one key running at once; `None`: keys only take turns.
    pub per_key_limit: Option<usize>,
    /// Most starts of one key per period, if limited.
    pub per_key_rate: Option<RateSetting>,
    /// Keys with a job running.
    pub keys_running: i64,
    /// Keys running as many jobs as the cap allows.
    pub keys_at_limit: i64,
}

impl PartitionSummary {
    /// One line for a table cell: the cap and its use.
    ///
    /// ```
    /// use offload::admin::{PartitionSummary, RateSetting};
    /// let busy = PartitionSummary {
    ///     per_key_limit: Some(2),
    ///     per_key_rate: None,
    ///     keys_running: 3,
    ///     keys_at_limit: 1,
    /// };
    /// assert_eq!(busy.describe(), "2 per key; 3 keys running, 1 at the cap");
    /// let turns = PartitionSummary {
    ///     per_key_limit: None,
    ///     per_key_rate: Some(RateSetting { limit: 10, period_ms: 1000 }),
    ///     keys_running: 4,
    ///     keys_at_limit: 0,
    /// };
    /// assert_eq!(turns.describe(), "keys in turn, 10/1000ms per key; 4 keys running");
    /// ```
    pub fn describe(&self) -> String {
        let rate = self
            .per_key_rate
            .map(|rate| format!(", {}/{}ms per key", rate.limit, rate.period_ms))
            .unwrap_or_default();
        match self.per_key_limit {
            Some(cap) => format!(
                "{cap} per key{rate}; {} keys running, {} at the cap",
                self.keys_running, self.keys_at_limit
            ),
            None => format!("keys in turn{rate}; {} keys running", self.keys_running),
        }
    }
}

/// A rate limit's setting: most starts per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateSetting {
    /// Most starts per period.
    pub limit: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
}

impl From<RateLimit> for RateSetting {
    fn from(rate: RateLimit) -> Self {
        Self {
            limit: rate.limit(),
            period_ms: u64::try_from(rate.period().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A rate limit and how much of its current window is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitUse {
    /// Most starts per period.
    pub limit: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// Starts in the window ending now.
    pub started: i64,
}

/// Everything the overview shows.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// Jobs per state over all queues.
    pub totals: StateCounts,
    /// Each queue, by name.
    pub queues: Vec<QueueSummary>,
    /// Minutes the throughput covers.
    pub window_minutes: u32,
}

/// Jobs that finished in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThroughputPoint {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Jobs completed in it.
    pub completed: i64,
    /// Jobs discarded in it.
    pub discarded: i64,
}

/// What an action did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionOutcome {
    /// Jobs the action looked at.
    pub matched: u64,
    /// Jobs it changed (or deleted). Jobs in a state the action does not
    /// apply to are left alone.
    pub changed: u64,
}

/// Which jobs a bulk action ([`Admin::bulk`](super::Admin::bulk)) changes.
/// Every job takes its own variant, so that an empty filter (a form sent
/// blank, a query string lost on the way) never acts on all of them.
///
/// ```
/// use offload::admin::{BulkTarget, JobFilter};
/// let filter = JobFilter::default();
/// // The user chose "all": every job. Otherwise the (empty) filter, refused.
/// assert!(matches!(BulkTarget::new(&filter, true), BulkTarget::Every));
/// assert!(matches!(BulkTarget::new(&filter, false), BulkTarget::Matching(_)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkTarget<'a> {
    /// The jobs matching this filter, which must narrow the selection down
    /// from every job.
    Matching(&'a JobFilter),
    /// Every job in the database, asked for explicitly.
    Every,
}

impl<'a> BulkTarget<'a> {
    /// The jobs matching `filter`; when `filter` selects every job, every
    /// job if the user explicitly asked for `all` of them.
    pub fn new(filter: &'a JobFilter, all: bool) -> Self {
        if all && filter.is_empty() {
            BulkTarget::Every
        } else {
            BulkTarget::Matching(filter)
        }
    }
}

/// An action on jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// Any job but a running one → available now (attempts kept; one more
    /// granted if none is left).
    Retry,
    /// Scheduled, available, retryable or running → cancelled.
    Cancel,
    /// Removes jobs that are not running.
    Delete,
}

impl JobAction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Retry => "retry",
            JobAction::Cancel => "cancel",
            JobAction::Delete => "delete",
        }
    }

    /// Whether this action changes a job in `state`.
    pub fn applies_to(self, state: JobState) -> bool {
        match self {
            JobAction::Retry => state != JobState::Running,
            JobAction::Cancel => !state.is_final(),
            JobAction::Delete => state != JobState::Running,
        }
    }
}

impl std::str::FromStr for JobAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "retry" => Ok(JobAction::Retry),
            "cancel" => Ok(JobAction::Cancel),
            "delete" => Ok(JobAction::Delete),
            other => Err(format!(
                "unknown action `{}`: expected retry, cancel or delete",
                shorten(other)
            )),
        }
    }
}
