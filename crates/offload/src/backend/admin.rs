//! Operator views and actions: job lists with filters and keyset
//! pagination, queue summaries, throughput, and retry / cancel / delete /
//! pause. The dashboard and the `offload` CLI share this code; the SQL lives
//! in `postgres/admin.rs` and `sqlite/admin.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Pool;

use super::{Backend, JobRecord};
use crate::state::JobState;
use crate::wake;

/// Most jobs one page may hold.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Jobs per page unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Longest text search accepted, in characters.
pub const MAX_TEXT_LEN: usize = 200;
/// Longest queue, kind or tag name accepted in a filter, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// How many jobs a bulk action changes per statement.
pub const BULK_BATCH: u32 = 500;

/// The admin operations, implemented in SQL by each backend. Call them
/// through [`Admin`], which validates input and signals workers.
pub trait AdminBackend: Backend {
    /// One page of jobs matching `filter`, newest first, with ids below
    /// `page.before`.
    fn list_jobs(
        pool: &Pool<Self>,
        filter: &JobFilter,
        page: &Page,
    ) -> impl Future<Output = crate::Result<Vec<JobSummary>>> + Send;

    /// Ids of jobs matching `filter` below `before`, newest first.
    fn job_ids(
        pool: &Pool<Self>,
        filter: &JobFilter,
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = crate::Result<Vec<i64>>> + Send;

    /// How many jobs match `filter`.
    fn count_jobs(
        pool: &Pool<Self>,
        filter: &JobFilter,
    ) -> impl Future<Output = crate::Result<i64>> + Send;

    /// Per queue and state: the number of jobs, and for `available` the
    /// earliest `run_at`.
    fn queue_state_counts(
        pool: &Pool<Self>,
    ) -> impl Future<Output = crate::Result<Vec<QueueStateCount>>> + Send;

    /// Per queue: jobs completed since `since`.
    fn completed_since(
        pool: &Pool<Self>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = crate::Result<Vec<(String, i64)>>> + Send;

    /// Every queue with a row in `offload_queues`, and whether it is paused.
    fn queue_flags(
        pool: &Pool<Self>,
    ) -> impl Future<Output = crate::Result<Vec<(String, bool)>>> + Send;

    /// Completed and discarded jobs per minute since `since`, optionally
    /// for one queue: `(minute start, state, count)`.
    fn finished_per_minute(
        pool: &Pool<Self>,
        since: DateTime<Utc>,
        queue: Option<&str>,
    ) -> impl Future<Output = crate::Result<Vec<(DateTime<Utc>, JobState, i64)>>> + Send;

    /// Makes discarded, cancelled and retryable jobs of `ids` available now,
    /// keeping their attempt count and granting one more attempt if they
    /// had none left. Returns `(id, queue)` of the jobs changed.
    fn retry_jobs(
        pool: &Pool<Self>,
        ids: &[i64],
    ) -> impl Future<Output = crate::Result<Vec<(i64, String)>>> + Send;

    /// Cancels the scheduled, available, retryable and running jobs of
    /// `ids`. Returns `(id, was_running)` of the jobs changed. PostgreSQL
    /// also notifies `offload_cancel` for each running one.
    fn cancel_jobs(
        pool: &Pool<Self>,
        ids: &[i64],
    ) -> impl Future<Output = crate::Result<Vec<(i64, bool)>>> + Send;

    /// Deletes the jobs of `ids` that are not running. Returns the ids
    /// deleted.
    fn delete_jobs(
        pool: &Pool<Self>,
        ids: &[i64],
    ) -> impl Future<Output = crate::Result<Vec<i64>>> + Send;

    /// Pauses or resumes `queue` for every worker on the database.
    fn set_queue_paused(
        pool: &Pool<Self>,
        queue: &str,
        paused: bool,
    ) -> impl Future<Output = crate::Result<()>> + Send;
}

/// A filter input that cannot be used. The message is safe to show to the
/// user; it never contains SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A state name that does not exist.
    #[error("unknown state `{0}`: expected scheduled, available, running, retryable, completed, discarded or cancelled")]
    UnknownState(String),
    /// A time that is neither RFC 3339 nor a relative age like `15m`.
    #[error("invalid time `{value}` for `{field}`: use RFC 3339 (2024-05-01T12:00:00Z) or an age like 30s, 15m, 2h, 7d")]
    BadTime {
        /// The parameter.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `since` is not before `until`.
    #[error("`since` must be before `until`")]
    EmptyTimeRange,
    /// A page size outside 1..=[`MAX_PAGE_SIZE`].
    #[error("`limit` must be a whole number from 1 to {max}, got `{0}`", max = MAX_PAGE_SIZE)]
    BadLimit(String),
    /// A cursor that is not a positive job id.
    #[error("`before` must be a positive job id, got `{0}`")]
    BadCursor(String),
    /// A value longer than allowed.
    #[error("`{field}` is longer than {max} characters")]
    TooLong {
        /// The parameter.
        field: &'static str,
        /// Its longest allowed length.
        max: usize,
    },
    /// A value holding characters a filter cannot match (NUL, controls).
    #[error("`{0}` contains control characters")]
    ControlCharacters(&'static str),
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request's filter is unusable; nothing was queried.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(i64),
    /// A queue name that is empty, too long or holds control characters.
    #[error("invalid queue name: {0}")]
    BadQueueName(String),
    /// The database failed.
    #[error(transparent)]
    Offload(#[from] crate::Error),
}

/// Which jobs to show or act on. All conditions must hold. Build one from
/// user input with [`FilterParams::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobFilter {
    /// Any of these states; empty means every state.
    pub states: Vec<JobState>,
    /// Exactly this queue.
    pub queue: Option<String>,
    /// Exactly this kind.
    pub kind: Option<String>,
    /// Jobs carrying this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Case-insensitive text found in the args or errors.
    pub text: Option<String>,
}

impl JobFilter {
    /// `text` as a `LIKE` pattern: `%text%` with `%`, `_` and `\` escaped
    /// (use with `ESCAPE '\'`).
    pub fn like_pattern(&self) -> Option<String> {
        self.text.as_ref().map(|text| {
            let mut pattern = String::with_capacity(text.len() + 2);
            pattern.push('%');
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }

    /// Whether the filter selects every job.
    pub fn is_empty(&self) -> bool {
        self == &JobFilter::default()
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Only jobs with a smaller id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Most jobs on the page.
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            before: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Filter and page parameters as they arrive from a query string or the
/// command line: all text, checked by [`parse`](Self::parse).
///
/// ```
/// use offload::{FilterParams, JobState};
/// let params = FilterParams {
///     state: Some("discarded,retryable".into()),
///     since: Some("2h".into()),
///     limit: Some("20".into()),
///     ..FilterParams::default()
/// };
/// let (filter, page) = params.parse().unwrap();
/// assert_eq!(filter.states, [JobState::Discarded, JobState::Retryable]);
/// assert_eq!(page.limit, 20);
///
/// let bad = FilterParams { state: Some("exploded".into()), ..FilterParams::default() };
/// assert!(bad.parse().unwrap_err().to_string().contains("unknown state"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterParams {
    /// Comma-separated states.
    pub state: Option<String>,
    /// Queue name.
    pub queue: Option<String>,
    /// Job kind.
    pub kind: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Created at or after: RFC 3339 or an age (`30s`, `15m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Created before: RFC 3339 or an age.
    pub until: Option<String>,
    /// Text in args or errors.
    pub q: Option<String>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: Option<String>,
    /// Keyset cursor: only jobs with a smaller id.
    pub before: Option<String>,
}

impl FilterParams {
    /// Checks every parameter. Empty values count as absent.
    pub fn parse(&self) -> Result<(JobFilter, Page), FilterError> {
        let now = Utc::now();
        let mut states = Vec::new();
        if let Some(raw) = present(&self.state) {
            for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let state: JobState = name
                    .parse()
                    .map_err(|_| FilterError::UnknownState(shorten(name)))?;
                if !states.contains(&state) {
                    states.push(state);
                }
            }
        }
        let since = present(&self.since)
            .map(|raw| parse_time("since", raw, now))
            .transpose()?;
        let until = present(&self.until)
            .map(|raw| parse_time("until", raw, now))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err(FilterError::EmptyTimeRange);
            }
        }
        let filter = JobFilter {
            states,
            queue: name_param("queue", &self.queue)?,
            kind: name_param("kind", &self.kind)?,
            tag: name_param("tag", &self.tag)?,
            since,
            until,
            text: checked_text("q", &self.q, MAX_TEXT_LEN)?,
        };
        let limit = match present(&self.limit) {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| FilterError::BadLimit(shorten(raw)))?,
        };
        let before = present(&self.before)
            .map(|raw| {
                raw.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| FilterError::BadCursor(shorten(raw)))
            })
            .transpose()?;
        Ok((filter, Page { before, limit }))
    }

    /// The parameters that select `filter` (without page), for links.
    pub fn from_filter(filter: &JobFilter) -> Self {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        Self {
            state: (!states.is_empty()).then(|| states.join(",")),
            queue: filter.queue.clone(),
            kind: filter.kind.clone(),
            tag: filter.tag.clone(),
            since: filter.since.map(|t| t.to_rfc3339()),
            until: filter.until.map(|t| t.to_rfc3339()),
            q: filter.text.clone(),
            limit: None,
            before: None,
        }
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// At most 60 characters of user input, for error messages.
fn shorten(value: &str) -> String {
    let mut short: String = value.chars().take(60).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    short
}

fn checked_text(
    field: &'static str,
    value: &Option<String>,
    max: usize,
) -> Result<Option<String>, FilterError> {
    let Some(value) = present(value) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(FilterError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(FilterError::ControlCharacters(field));
    }
    Ok(Some(value.to_owned()))
}

fn name_param(field: &'static str, value: &Option<String>) -> Result<Option<String>, FilterError> {
    checked_text(field, value, MAX_NAME_LEN)
}

/// Reads RFC 3339, a bare date (`2024-05-01`, midnight UTC) or an age
/// before `now` (`90s`, `15m`, `2h`, `7d`, `1w`).
pub fn parse_time(
    field: &'static str,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FilterError> {
    let bad = || FilterError::BadTime {
        field,
        value: shorten(raw),
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(bad);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = raw.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds_per_unit)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(bad)
}

/// A job as a list shows it: no full args or errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
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

/// Characters of args a [`JobSummary`] keeps.
pub const ARGS_PREVIEW_LEN: usize = 160;

/// One page of jobs.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as [`Page::before`] for the next page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// One row of [`AdminBackend::queue_state_counts`].
#[derive(Debug, Clone)]
pub struct QueueStateCount {
    /// Queue name.
    pub queue: String,
    /// State.
    pub state: JobState,
    /// Jobs in it.
    pub count: i64,
    /// For `available`: the earliest `run_at`.
    pub oldest_run_at: Option<DateTime<Utc>>,
}

/// Jobs in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

    fn add(&mut self, state: JobState, n: i64) {
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
}

/// Everything the overview shows.
#[derive(Debug, Clone, Serialize)]
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
pub struct ActionOutcome {
    /// Jobs the action looked at.
    pub matched: u64,
    /// Jobs it changed (or deleted). Jobs in a state the action does not
    /// apply to are left alone.
    pub changed: u64,
}

/// An action on jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// Discarded, cancelled or retryable → available now.
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
            JobAction::Retry => matches!(
                state,
                JobState::Discarded | JobState::Cancelled | JobState::Retryable
            ),
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

/// Operator access to the jobs of one database. Cheap to clone.
///
/// ```no_run
/// # async fn example(pool: sqlx::SqlitePool) -> Result<(), offload::AdminError> {
/// use offload::{Admin, FilterParams, JobAction};
/// let admin = Admin::new(pool);
/// let params = FilterParams { state: Some("discarded".into()), ..Default::default() };
/// let (filter, page) = params.parse()?;
/// let first = admin.list(&filter, page).await?;
/// let outcome = admin.bulk(JobAction::Retry, &filter, |_done| {}).await?;
/// println!("{} listed, {} retried", first.jobs.len(), outcome.changed);
/// # Ok(()) }
/// ```
pub struct Admin<DB: AdminBackend> {
    pool: Pool<DB>,
}

impl<DB: AdminBackend> Clone for Admin<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: AdminBackend> Admin<DB> {
    /// Admin access on `pool`.
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }

    /// The pool it uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// One page of jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter, page: Page) -> Result<JobPage, AdminError> {
        let limit = page.limit.clamp(1, MAX_PAGE_SIZE);
        let page = Page { limit, ..page };
        let jobs = DB::list_jobs(&self.pool, filter, &page).await?;
        let next_before = (jobs.len() == limit as usize)
            .then(|| jobs.last().map(|job| job.id))
            .flatten();
        Ok(JobPage { jobs, next_before })
    }

    /// How many jobs match `filter`.
    pub async fn count(&self, filter: &JobFilter) -> Result<i64, AdminError> {
        Ok(DB::count_jobs(&self.pool, filter).await?)
    }

    /// One job, whole.
    pub async fn job(&self, id: i64) -> Result<JobRecord, AdminError> {
        DB::fetch_job(&self.pool, id)
            .await?
            .ok_or(AdminError::JobNotFound(id))
    }

    /// Counts per state and per queue, with throughput over the last
    /// `window` (at least one minute).
    pub async fn overview(&self, window: Duration) -> Result<Overview, AdminError> {
        let window_minutes = u32::try_from(window.as_secs() / 60)
            .unwrap_or(u32::MAX)
            .max(1);
        let now = Utc::now();
        let since = now - chrono::Duration::minutes(i64::from(window_minutes));
        let counts = DB::queue_state_counts(&self.pool).await?;
        let completed = DB::completed_since(&self.pool, since).await?;
        let flags = DB::queue_flags(&self.pool).await?;

        let mut queues: BTreeMap<String, QueueSummary> = BTreeMap::new();
        let mut totals = StateCounts::default();
        for row in counts {
            totals.add(row.state, row.count);
            let queue = queue_entry(&mut queues, &row.queue);
            queue.counts.add(row.state, row.count);
            if let Some(oldest) = row.oldest_run_at {
                let age = (now - oldest).num_milliseconds().max(0) as f64 / 1000.0;
                queue.oldest_available_secs = Some(age);
            }
        }
        for (name, n) in completed {
            queue_entry(&mut queues, &name).completed_per_minute =
                n as f64 / f64::from(window_minutes);
        }
        for (name, paused) in flags {
            queue_entry(&mut queues, &name).paused = paused;
        }
        Ok(Overview {
            totals,
            queues: queues.into_values().collect(),
            window_minutes,
        })
    }

    /// Completed and discarded jobs per minute over the last `minutes`
    /// minutes (1 to 1440), oldest first, with empty minutes as zeros.
    pub async fn throughput(
        &self,
        minutes: u32,
        queue: Option<&str>,
    ) -> Result<Vec<ThroughputPoint>, AdminError> {
        let minutes = minutes.clamp(1, 1440);
        let now = Utc::now();
        let current_minute = now.timestamp() - now.timestamp().rem_euclid(60);
        let first = current_minute - 60 * (i64::from(minutes) - 1);
        let since = DateTime::from_timestamp(first, 0).unwrap_or(now);
        let rows = DB::finished_per_minute(&self.pool, since, queue).await?;
        let mut points: Vec<ThroughputPoint> = (0..i64::from(minutes))
            .map(|i| ThroughputPoint {
                minute: DateTime::from_timestamp(first + 60 * i, 0).unwrap_or(now),
                completed: 0,
                discarded: 0,
            })
            .collect();
        for (minute, state, n) in rows {
            let index = (minute.timestamp() - first).div_euclid(60);
            if let Some(point) = usize::try_from(index).ok().and_then(|i| points.get_mut(i)) {
                match state {
                    JobState::Completed => point.completed += n,
                    JobState::Discarded => point.discarded += n,
                    _ => {}
                }
            }
        }
        Ok(points)
    }

    /// Applies `action` to the jobs of `ids`. Jobs it does not apply to are
    /// left alone; see [`JobAction`].
    pub async fn act(&self, action: JobAction, ids: &[i64]) -> Result<ActionOutcome, AdminError> {
        let changed = match action {
            JobAction::Retry => {
                let retried = DB::retry_jobs(&self.pool, ids).await?;
                wake::wake_all(retried.iter().map(|(_, queue)| queue.as_str()));
                retried.len()
            }
            JobAction::Cancel => {
                let cancelled = DB::cancel_jobs(&self.pool, ids).await?;
                let running: Vec<i64> = cancelled
                    .iter()
                    .filter(|(_, was_running)| *was_running)
                    .map(|(id, _)| *id)
                    .collect();
                // Jobs running in this process stop at once; other processes
                // hear it through `offload_cancel` (PostgreSQL).
                wake::cancel_running(&DB::identity(&self.pool), &running);
                cancelled.len()
            }
            JobAction::Delete => DB::delete_jobs(&self.pool, ids).await?.len(),
        };
        Ok(ActionOutcome {
            matched: ids.len() as u64,
            changed: changed as u64,
        })
    }

    /// Applies `action` to one job. Fails with
    /// [`AdminError::JobNotFound`] when there is no such job; returns
    /// `false` when the job's state does not allow the action.
    pub async fn act_on_job(&self, action: JobAction, id: i64) -> Result<bool, AdminError> {
        let outcome = self.act(action, &[id]).await?;
        if outcome.changed == 1 {
            return Ok(true);
        }
        self.job(id).await?;
        Ok(false)
    }

    /// Applies `action` to every job matching `filter`, [`BULK_BATCH`] at a
    /// time, newest first. `progress` gets the outcome so far after each
    /// batch.
    pub async fn bulk(
        &self,
        action: JobAction,
        filter: &JobFilter,
        mut progress: impl FnMut(&ActionOutcome) + Send,
    ) -> Result<ActionOutcome, AdminError> {
        let mut total = ActionOutcome::default();
        let mut before = None;
        loop {
            let ids = DB::job_ids(&self.pool, filter, before, BULK_BATCH).await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            let outcome = self.act(action, &ids).await?;
            total.matched += outcome.matched;
            total.changed += outcome.changed;
            progress(&total);
            if ids.len() < BULK_BATCH as usize {
                break;
            }
            before = Some(last);
        }
        Ok(total)
    }

    /// Stops workers on every host from claiming jobs of `queue`. Running
    /// jobs finish.
    pub async fn pause_queue(&self, queue: &str) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        Ok(DB::set_queue_paused(&self.pool, queue, true).await?)
    }

    /// Lets workers claim jobs of `queue` again.
    pub async fn resume_queue(&self, queue: &str) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        DB::set_queue_paused(&self.pool, queue, false).await?;
        wake::wake(queue);
        Ok(())
    }
}

fn queue_entry<'a>(
    queues: &'a mut BTreeMap<String, QueueSummary>,
    name: &str,
) -> &'a mut QueueSummary {
    queues
        .entry(name.to_owned())
        .or_insert_with(|| QueueSummary {
            name: name.to_owned(),
            paused: false,
            counts: StateCounts::default(),
            oldest_available_secs: None,
            completed_per_minute: 0.0,
        })
}

fn check_queue_name(queue: &str) -> Result<(), AdminError> {
    if queue.trim().is_empty() {
        return Err(AdminError::BadQueueName("it is empty".into()));
    }
    if queue.chars().count() > MAX_NAME_LEN {
        return Err(AdminError::BadQueueName(format!(
            "longer than {MAX_NAME_LEN} characters"
        )));
    }
    if queue.chars().any(char::is_control) {
        return Err(AdminError::BadQueueName(
            "it contains control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut FilterParams)) -> FilterParams {
        let mut p = FilterParams::default();
        f(&mut p);
        p
    }

    #[test]
    fn unknown_state_is_a_filter_error() {
        let err = params(|p| p.state = Some("available,bogus".into()))
            .parse()
            .unwrap_err();
        assert_eq!(err, FilterError::UnknownState("bogus".into()));
    }

    #[test]
    fn relative_and_absolute_times_parse() {
        let now = Utc::now();
        let two_hours = parse_time("since", "2h", now).unwrap();
        assert_eq!(now - two_hours, chrono::Duration::hours(2));
        let at = parse_time("since", "2024-05-01T12:00:00Z", now).unwrap();
        assert_eq!(at.to_rfc3339(), "2024-05-01T12:00:00+00:00");
        assert!(parse_time("since", "yesterday", now).is_err());
        assert!(parse_time("since", "99999999999999999d", now).is_err());
    }

    #[test]
    fn reversed_time_range_is_rejected() {
        let err = params(|p| {
            p.since = Some("1h".into());
            p.until = Some("2h".into());
        })
        .parse()
        .unwrap_err();
        assert_eq!(err, FilterError::EmptyTimeRange);
    }

    #[test]
    fn limit_and_cursor_are_checked() {
        assert!(matches!(
            params(|p| p.limit = Some("0".into())).parse(),
            Err(FilterError::BadLimit(_))
        ));
        assert!(matches!(
            params(|p| p.limit = Some("501".into())).parse(),
            Err(FilterError::BadLimit(_))
        ));
        assert!(matches!(
            params(|p| p.before = Some("-3".into())).parse(),
            Err(FilterError::BadCursor(_))
        ));
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        let filter = JobFilter {
            text: Some(r"50%_a\b".into()),
            ..JobFilter::default()
        };
        assert_eq!(filter.like_pattern().unwrap(), r"%50\%\_a\\b%");
    }

    #[test]
    fn control_characters_are_rejected() {
        assert_eq!(
            params(|p| p.q = Some("a\0b".into())).parse().unwrap_err(),
            FilterError::ControlCharacters("q")
        );
    }
}
