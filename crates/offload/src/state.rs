//! The job state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
///
/// ```text
/// scheduled ─┐
///            ├─> available ─> running ─> completed
/// retryable ─┘                   │  └──> retryable / discarded / cancelled
/// ```
///
/// ```
/// use offload::JobState;
/// let state: JobState = "retryable".parse().unwrap();
/// assert_eq!(state.as_str(), "retryable");
/// assert!(!state.is_final());
/// assert!(JobState::Discarded.is_final());
/// assert!("done".parse::<JobState>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
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

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    /// The name stored in the database.
    ///
    /// ```
    /// assert_eq!(offload::JobState::Retryable.as_str(), "retryable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again on its own.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no job state.
///
/// ```
/// let error = "done".parse::<offload::JobState>().unwrap_err();
/// assert_eq!(error.0, "done");
/// assert!(error.to_string().contains("expected one of scheduled"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job state `{0}`: expected one of scheduled, available, running, retryable, completed, discarded, cancelled")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}
