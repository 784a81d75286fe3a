//! The operator layer: job lists with filters and keyset pagination, queue
//! summaries, throughput, and retry / cancel / delete / pause. The
//! dashboard and the `offload` CLI share it. Storage runs the SQL; this
//! layer validates input and tells workers what changed.

mod filter;
mod views;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Pool;

pub use filter::{parse_time, FilterError, FilterParams, MAX_NAME_LEN, MAX_TEXT_LEN};
pub use views::{
    ActionOutcome, BulkTarget, JobAction, JobPage, Overview, PartitionSummary, QueueSummary,
    RateLimitUse, RateSetting, StateCounts, ThroughputPoint,
};

pub use crate::storage::{
    JobFilter, JobRecord, JobSummary, Page, ARGS_PREVIEW_LEN, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};

use crate::client::manage;
use crate::state::JobState;
use crate::storage::{Backend, LimitChange};
use crate::worker::wake;
use crate::{Partition, RateLimit};

/// How many jobs a bulk action changes per statement.
pub const BULK_BATCH: u32 = 500;

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request's filter is unusable; nothing was queried.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(i64),
    /// A queue name no queue can have (see [`check_queue_name`](crate::check_queue_name)).
    #[error("{0}")]
    BadQueueName(String),
    /// A limit no queue can have (a global limit of 0, a malformed rate).
    #[error("{0}")]
    BadLimit(String),
    /// A bulk action's filter selects every job, and the caller did not ask
    /// for every job ([`BulkTarget::Every`]); nothing was changed.
    #[error("the filter selects every job: narrow it, or ask to {} every job explicitly", .0.as_str())]
    BulkNeedsFilter(JobAction),
    /// The database failed.
    #[error(transparent)]
    Offload(#[from] crate::Error),
}

/// Operator access to the jobs of one database. Cheap to clone.
///
/// ```no_run
/// # async fn example(pool: sqlx::SqlitePool) -> Result<(), offload::admin::AdminError> {
/// use offload::admin::{Admin, BulkTarget, FilterParams, JobAction};
/// let admin = Admin::new(pool);
/// let params = FilterParams { state: Some("discarded".into()), ..Default::default() };
/// let (filter, page) = params.parse()?;
/// let first = admin.list(&filter, page).await?;
/// let outcome = admin.bulk(JobAction::Retry, BulkTarget::Matching(&filter), |_done| {}).await?;
/// println!("{} listed, {} retried", first.jobs.len(), outcome.changed);
/// # Ok(()) }
/// ```
pub struct Admin<DB: Backend> {
    pool: Pool<DB>,
}

impl<DB: Backend> Clone for Admin<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Backend> Admin<DB> {
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
        let jobs = DB::job_list(&self.pool, filter, &page).await?;
        let next_before = (jobs.len() == limit as usize)
            .then(|| jobs.last().map(|job| job.id))
            .flatten();
        Ok(JobPage { jobs, next_before })
    }

    /// How many jobs match `filter`.
    pub async fn count(&self, filter: &JobFilter) -> Result<i64, AdminError> {
        Ok(DB::job_count(&self.pool, filter).await?)
    }

    /// One job, whole.
    pub async fn job(&self, id: i64) -> Result<JobRecord, AdminError> {
        DB::job_get(&self.pool, id)
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
        let oldest = DB::queue_oldest_available(&self.pool).await?;
        let completed = DB::queue_completed_since(&self.pool, since).await?;
        let settings = DB::queue_settings(&self.pool).await?;

        let mut queues: BTreeMap<String, QueueSummary> = BTreeMap::new();
        let mut totals = StateCounts::default();
        for (name, state, count) in counts {
            totals.add(state, count);
            queue_entry(&mut queues, &name).counts.add(state, count);
        }
        for (name, oldest_run_at) in oldest {
            let age = (now - oldest_run_at).num_milliseconds().max(0) as f64 / 1000.0;
            queue_entry(&mut queues, &name).oldest_available_secs = Some(age);
        }
        for (name, n) in completed {
            queue_entry(&mut queues, &name).completed_per_minute =
                n as f64 / f64::from(window_minutes);
        }
        for queue in settings {
            let entry = queue_entry(&mut queues, &queue.name);
            entry.paused = queue.paused;
            entry.global_limit = queue.limits.global;
            entry.rate_limit = queue.limits.rate.map(|rate| RateLimitUse {
                limit: rate.limit(),
                period_ms: u64::try_from(rate.period().as_millis()).unwrap_or(u64::MAX),
                started: queue.rate_started,
            });
            let running = entry.counts.get(JobState::Running);
            let at_global = entry
                .global_limit
                .is_some_and(|limit| running >= i64::try_from(limit).unwrap_or(i64::MAX));
            let at_rate = entry
                .rate_limit
                .is_some_and(|rate| rate.started >= i64::from(rate.limit));
            entry.partition = queue.limits.partition.map(|partition| PartitionSummary {
                per_key_limit: partition.concurrency_limit(),
                per_key_rate: partition.rate_limit().map(RateSetting::from),
                keys_running: queue.partition_use.keys_running,
                keys_at_limit: queue.partition_use.keys_at_limit,
            });
            entry.waiting_on_limit = if at_global || at_rate {
                entry.counts.get(JobState::Available)
            } else {
                queue.partition_use.waiting_at_limit
            };
        }
        Ok(Overview {
            totals,
            queues: queues.into_values().collect(),
            window_minutes,
        })
    }

    /// Jobs per queue and state, as `(queue, state, count)`: the queue
    /// depth a metrics exporter reports.
    pub async fn queue_depths(&self) -> Result<Vec<(String, JobState, i64)>, AdminError> {
        Ok(DB::queue_state_counts(&self.pool).await?)
    }

    /// Completed and discarded jobs per minute over the last `minutes`
    /// minutes (1 to 1440), oldest first, with empty minutes as zeros.
    /// `queue` is checked like a filter's queue ([`AdminError::Filter`]).
    pub async fn throughput(
        &self,
        minutes: u32,
        queue: Option<&str>,
    ) -> Result<Vec<ThroughputPoint>, AdminError> {
        let queue = filter::name_param("queue", queue)?;
        let queue = queue.as_deref();
        let minutes = minutes.clamp(1, 1440);
        let now = Utc::now();
        let current_minute = now.timestamp() - now.timestamp().rem_euclid(60);
        let first = current_minute - 60 * (i64::from(minutes) - 1);
        let since = DateTime::from_timestamp(first, 0).unwrap_or(now);
        let rows = DB::job_finished_per_minute(&self.pool, since, queue).await?;
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

    /// Applies `action` to the jobs of `ids`, committed at once (no caller's
    /// transaction). Jobs it does not apply to are left alone; see
    /// [`JobAction`].
    /// Runs through the same code as [`Client::cancel`](crate::Client::cancel),
    /// [`retry`](crate::Client::retry) and [`delete`](crate::Client::delete).
    pub async fn act(&self, action: JobAction, ids: &[i64]) -> Result<ActionOutcome, AdminError> {
        let changed = match action {
            JobAction::Retry => {
                let mut conn = self.pool.acquire().await.map_err(crate::Error::from)?;
                manage::retry_in::<DB>(&mut conn, ids).await?.len()
            }
            JobAction::Cancel => manage::cancel_now(&self.pool, ids).await?.len(),
            JobAction::Delete => {
                let mut conn = self.pool.acquire().await.map_err(crate::Error::from)?;
                manage::delete_in::<DB>(&mut conn, ids).await?.len()
            }
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

    /// Applies `action` to every job `target` selects, [`BULK_BATCH`] at a
    /// time, newest first. `progress` gets the outcome so far after each
    /// batch. A filter that selects every job fails with
    /// [`AdminError::BulkNeedsFilter`] before anything changes: acting on
    /// every job takes [`BulkTarget::Every`].
    ///
    /// ```no_run
    /// # async fn example(admin: offload::admin::Admin<sqlx::Sqlite>) -> Result<(), offload::admin::AdminError> {
    /// use offload::admin::{AdminError, BulkTarget, JobAction, JobFilter};
    /// let everything = JobFilter::default();
    /// let refused = admin.bulk(JobAction::Delete, BulkTarget::Matching(&everything), |_| {}).await;
    /// assert!(matches!(refused, Err(AdminError::BulkNeedsFilter(JobAction::Delete))));
    /// admin.bulk(JobAction::Delete, BulkTarget::Every, |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bulk(
        &self,
        action: JobAction,
        target: BulkTarget<'_>,
        mut progress: impl FnMut(&ActionOutcome) + Send,
    ) -> Result<ActionOutcome, AdminError> {
        let every = JobFilter::default();
        let filter = match target {
            BulkTarget::Matching(filter) if filter.is_empty() => {
                return Err(AdminError::BulkNeedsFilter(action));
            }
            BulkTarget::Matching(filter) => filter,
            BulkTarget::Every => &every,
        };
        let mut total = ActionOutcome::default();
        let mut before = None;
        loop {
            let ids = DB::job_list_ids(&self.pool, filter, before, BULK_BATCH).await?;
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
        Ok(DB::queue_set_paused(&self.pool, queue, true).await?)
    }

    /// Sets (or with `None` removes) the most jobs of `queue` running at
    /// once over all workers; running workers pick it up within seconds.
    pub async fn set_global_limit(
        &self,
        queue: &str,
        limit: Option<usize>,
    ) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        if limit == Some(0) {
            return Err(AdminError::BadLimit(
                "a global limit must be at least 1".into(),
            ));
        }
        DB::queue_set_limit(&self.pool, queue, LimitChange::Global(limit)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// Sets (or with `None` removes) the most jobs of `queue` starting per
    /// period over all workers; running workers pick it up within seconds.
    pub async fn set_rate_limit(
        &self,
        queue: &str,
        rate: Option<RateLimit>,
    ) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        DB::queue_set_limit(&self.pool, queue, LimitChange::Rate(rate)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// Makes `queue` partitioned with `partition`, or with `None` a plain
    /// queue again; running workers pick it up within seconds.
    pub async fn set_partition(
        &self,
        queue: &str,
        partition: Option<Partition>,
    ) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        DB::queue_set_limit(&self.pool, queue, LimitChange::Partition(partition)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// Lets workers claim jobs of `queue` again.
    pub async fn resume_queue(&self, queue: &str) -> Result<(), AdminError> {
        check_queue_name(queue)?;
        DB::queue_set_paused(&self.pool, queue, false).await?;
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
            global_limit: None,
            rate_limit: None,
            partition: None,
            waiting_on_limit: 0,
        })
}

fn check_queue_name(queue: &str) -> Result<(), AdminError> {
    crate::queue_name::check_queue_name(queue)
        .map_err(|error| AdminError::BadQueueName(error.to_string()))
}

// Queue limits as operators type them, one grammar for the CLI, the
// dashboard's forms and the API: a value, or `off` (or nothing) for none.

/// Whether the text asks for no limit: empty, `off` or `none`.
fn is_off(text: &str) -> bool {
    matches!(text, "" | "off" | "none")
}

/// A running limit: a whole number from 1, or `off` (or nothing) for none.
///
/// ```
/// use offload::admin::parse_global_limit;
/// assert_eq!(parse_global_limit("5").unwrap(), Some(5));
/// assert_eq!(parse_global_limit(" off ").unwrap(), None);
/// assert!(parse_global_limit("0").is_err());
/// ```
pub fn parse_global_limit(text: &str) -> Result<Option<usize>, AdminError> {
    let text = text.trim();
    if is_off(text) {
        return Ok(None);
    }
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(AdminError::BadLimit(format!(
            "running limit {:?}: expected a whole number from 1, or off",
            text.chars().take(40).collect::<String>()
        ))),
    }
}

/// A rate limit: `N/PERIOD` as [`RateLimit`] parses it (`100/s`, `30/5m`),
/// or `off` (or nothing) for none.
///
/// ```
/// use offload::admin::parse_rate_limit;
/// assert_eq!(parse_rate_limit("100/s").unwrap().unwrap().limit(), 100);
/// assert_eq!(parse_rate_limit("").unwrap(), None);
/// assert!(parse_rate_limit("100").is_err());
/// ```
pub fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, AdminError> {
    let text = text.trim();
    if is_off(text) {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|error: crate::InvalidRateLimit| AdminError::BadLimit(error.to_string()))
}

/// A partition setting: `turns` (keys take turns, no cap), a whole number
/// from 1 (keys take turns, at most that many of one key's jobs at once),
/// either followed by `,N/PERIOD` (at most N starts of one key per
/// period), or the rate alone; `off` (or nothing) for a plain queue.
///
/// ```
/// use offload::admin::parse_partition;
/// use offload::RateLimit;
/// assert_eq!(parse_partition("2").unwrap().unwrap().concurrency_limit(), Some(2));
/// assert_eq!(parse_partition("turns").unwrap().unwrap().concurrency_limit(), None);
/// let rated = parse_partition("2, 10/s").unwrap().unwrap();
/// assert_eq!(rated.rate_limit(), Some(RateLimit::per_second(10).unwrap()));
/// assert_eq!(parse_partition("10/s").unwrap().unwrap().concurrency_limit(), None);
/// assert_eq!(parse_partition("off").unwrap(), None);
/// assert!(parse_partition("0").is_err());
/// assert!(parse_partition("2,10").is_err());
/// ```
pub fn parse_partition(text: &str) -> Result<Option<Partition>, AdminError> {
    let text = text.trim();
    if is_off(text) {
        return Ok(None);
    }
    let refuse = |why: &str| {
        AdminError::BadLimit(format!(
            "partition {:?}: {why}; expected a cap per key from 1 or turns, \
             and or else a rate per key (N/PERIOD), e.g. 2, turns, 2,10/s or off",
            text.chars().take(40).collect::<String>()
        ))
    };
    let (cap, rate) = match text.split_once(',') {
        Some((cap, rate)) => (cap.trim(), Some(rate.trim())),
        None if text.contains('/') => ("turns", Some(text)),
        None => (text, None),
    };
    let partition = match cap {
        "turns" => Partition::new(),
        cap => cap
            .parse::<usize>()
            .ok()
            .and_then(|cap| Partition::new().concurrency(cap).ok())
            .ok_or_else(|| refuse("the cap is not a whole number from 1"))?,
    };
    match rate {
        None => Ok(Some(partition)),
        Some(rate) => {
            let rate: RateLimit = rate
                .parse()
                .map_err(|error: crate::InvalidRateLimit| refuse(&error.to_string()))?;
            Ok(Some(partition.rate(rate)))
        }
    }
}
