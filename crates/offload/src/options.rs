//! How a job becomes a row: a kind's defaults, overridden per enqueue.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::Job;
use crate::storage::{Backend, NewJob};
use crate::unique::UniqueOptions;
use crate::{Error, Result};

/// Per-enqueue overrides of a job kind's defaults.
///
/// ```
/// use std::time::Duration;
/// let options = offload::EnqueueOptions::new()
///     .queue("mail")
///     .priority(-1)
///     .delay(Duration::from_secs(60))
///     .tag("signup");
/// assert_eq!(options.queue.as_deref(), Some("mail"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Queue to run on.
    pub queue: Option<String>,
    /// Lower runs first.
    pub priority: Option<i16>,
    /// Attempts before discarding.
    pub max_attempts: Option<i32>,
    /// Earliest start.
    pub run_at: Option<DateTime<Utc>>,
    /// Labels for filtering.
    pub tags: Vec<String>,
    /// Makes the job unique; see [`UniqueOptions`].
    pub unique: Option<UniqueOptions>,
    /// The key a partitioned queue takes turns by; overrides the kind's
    /// [`Job::partition_key`].
    pub partition_key: Option<String>,
}

impl EnqueueOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs on `queue`, which must pass
    /// [`check_queue_name`](crate::check_queue_name) (the enqueue fails
    /// otherwise).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the priority; lower runs first.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the number of attempts.
    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Starts no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Starts no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = Some(crate::backoff::after(delay));
        self
    }

    /// Adds a label.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Gives the job partition key `key` (at most
    /// [`MAX_PARTITION_KEY_LEN`](crate::MAX_PARTITION_KEY_LEN) bytes): a
    /// partitioned queue ([`Partition`](crate::Partition)) serves its keys
    /// in turn and may cap how many jobs of one key run at once.
    ///
    /// ```
    /// let options = offload::EnqueueOptions::new().partition_key("customer-42");
    /// assert_eq!(options.partition_key.as_deref(), Some("customer-42"));
    /// ```
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Enqueues the job only if no job holds the same unique key; otherwise
    /// the enqueue inserts nothing and returns the id of the job that does,
    /// with [`Enqueued::duplicate`](crate::Enqueued::duplicate) set. Every
    /// enqueue method takes it, one job or many, on the pool or in a
    /// transaction.
    ///
    /// ```
    /// use offload::{EnqueueOptions, UniqueOptions};
    /// let options = EnqueueOptions::new().queue("reports").unique(UniqueOptions::by_args());
    /// assert!(options.unique.is_some());
    /// ```
    pub fn unique(mut self, unique: UniqueOptions) -> Self {
        self.unique = Some(unique);
        self
    }
}

/// Builds the row for `job` of backend `DB`. Every enqueue and every
/// periodic tick passes here.
pub(crate) fn new_job_row<DB: Backend, S: Send + Sync + 'static, J: Job<DB, S>>(
    job: &J,
    options: EnqueueOptions,
) -> Result<NewJob> {
    let queue = options.queue.unwrap_or_else(|| J::QUEUE.to_owned());
    let args = serde_json::to_string(job).map_err(|source| Error::EncodeArgs {
        kind: J::KIND.to_owned(),
        source,
    })?;
    let unique = options
        .unique
        .map(|unique| unique.key_for(J::KIND, &args, options.run_at.unwrap_or_else(Utc::now)))
        .transpose()?;
    let row = NewJob {
        kind: J::KIND.to_owned(),
        queue,
        args,
        priority: options.priority.unwrap_or(J::PRIORITY),
        max_attempts: options.max_attempts.unwrap_or(J::MAX_ATTEMPTS),
        run_at: options.run_at,
        tags: options.tags,
        unique,
        partition_key: options
            .partition_key
            .or_else(|| job.partition_key())
            .unwrap_or_default(),
    };
    row.validate()?;
    Ok(row)
}
