//! The admin API's own request and response bodies. Jobs, pages, counts
//! and throughput are offload's types, which describe themselves through
//! offload's `openapi` feature.

use offload::admin::{FilterParams, JobAction};
use offload::JobRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
    pub action: JobAction,
    /// Which jobs (`limit` and `before` are ignored).
    #[serde(default)]
    pub filter: FilterParams,
    /// Must be `true` to act on every job when the filter is empty.
    #[serde(default)]
    pub all: bool,
}

/// The result of an action on one job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobActionBody {
    /// The action done.
    pub action: JobAction,
    /// The job after the action; absent after a delete.
    pub job: Option<JobRecord>,
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

/// A queue's limits over all workers. A `PUT` sets them all: a field left
/// out or `null` removes that limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueLimitsBody {
    /// Most of the queue's jobs running at once (at least 1).
    #[serde(default)]
    pub global_limit: Option<usize>,
    /// Most of the queue's jobs starting per period, as `N/PERIOD`:
    /// `100/s`, `20/1500ms`, `1000/h`.
    #[serde(default)]
    #[schema(example = "100/s")]
    pub rate_limit: Option<String>,
    /// Partitions the queue by its jobs' keys: they take turns; with
    /// `per_key_limit` at most that many of one key's jobs run at once, and
    /// with `per_key_rate` at most that many start per period.
    #[serde(default)]
    pub partition: Option<PartitionBody>,
}

/// A partitioned queue's setting.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionBody {
    /// Most jobs of one key running at once (at least 1); `null`: keys
    /// only take turns.
    #[serde(default)]
    #[schema(example = 2)]
    pub per_key_limit: Option<usize>,
    /// Most starts of one key per period, as `N/PERIOD` (`10/s`); `null`:
    /// no rate per key.
    #[serde(default)]
    #[schema(example = "10/s")]
    pub per_key_rate: Option<String>,
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
