//! What storage reads and writes: the rows going in (new jobs, outcomes)
//! and coming out (claimed jobs, whole jobs, summaries), the same on every
//! backend.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::defaults::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, MAX_ERROR_LEN};
use crate::state::JobState;
use crate::unique::UniqueKey;
use crate::{Error, Result};

/// A job ready to insert. Build one with [`Client::new_job`](crate::Client::new_job)
/// or [`NewJob::new`] for kinds this process does not link.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job kind.
    pub kind: String,
    /// The queue it runs on.
    pub queue: String,
    /// JSON-encoded args.
    pub args: String,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Earliest start; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// Set for unique jobs: the key and the states it holds in.
    pub unique: Option<UniqueKey>,
    /// The key a partitioned queue takes turns by and caps; empty for none.
    pub partition_key: String,
}

impl NewJob {
    /// Checks what every backend must refuse before anything is inserted:
    /// a queue name no queue can have, a partition key too long to index,
    /// and a NUL character in the args, tags, kind or partition key.
    pub(crate) fn validate(&self) -> Result<()> {
        crate::queue_name::check_queue_name(&self.queue)?;
        if self.partition_key.len() > crate::MAX_PARTITION_KEY_LEN {
            return Err(Error::Config(format!(
                "the partition key of a `{}` job is {} bytes; at most {} are allowed",
                self.kind.replace('\0', "\u{FFFD}"),
                self.partition_key.len(),
                crate::MAX_PARTITION_KEY_LEN
            )));
        }
        let field = if has_escaped_nul(&self.args) {
            "args"
        } else if self.tags.iter().any(|tag| tag.contains('\0')) {
            "tags"
        } else if self.kind.contains('\0') {
            "kind"
        } else if self.partition_key.contains('\0') {
            "partition key"
        } else {
            return Ok(());
        };
        Err(Error::ContainsNul {
            kind: self.kind.replace('\0', "\u{FFFD}"),
            field,
        })
    }

    /// A job of `kind` with JSON `args` on the default queue.
    ///
    /// ```
    /// let job = offload::NewJob::new("send_email", r#"{"to":"a@example.com"}"#);
    /// assert_eq!(job.queue, "default");
    /// ```
    pub fn new(kind: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            args: args.into(),
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at: None,
            tags: Vec::new(),
            unique: None,
            partition_key: String::new(),
        }
    }

    /// The tags as the JSON array both backends store.
    pub(crate) fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// What enqueueing one job did: every enqueue returns one per job, in the
/// order given.
///
/// ```
/// let inserted = offload::Enqueued { id: 7, duplicate: false, replaced: false };
/// assert!(!inserted.duplicate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The new job's id or, for a duplicate, the id of the job holding the
    /// unique key.
    pub id: i64,
    /// Whether the job was unique and a job already held its key, so
    /// nothing was inserted. Always false for a job without unique options.
    pub duplicate: bool,
    /// Whether that holder had not started and took this enqueue's args,
    /// priority and run time instead
    /// ([`UniqueOptions::replace_pending`](crate::UniqueOptions::replace_pending)).
    /// Implies `duplicate`.
    pub replaced: bool,
}

impl Enqueued {
    /// A job that was inserted.
    pub(crate) fn inserted(id: i64) -> Self {
        Self {
            id,
            duplicate: false,
            replaced: false,
        }
    }
}

/// A job a worker has claimed: `state = running`, attempt already counted.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// JSON-encoded args.
    pub args: String,
    /// This attempt's number, starting at 1.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// When it became due.
    pub run_at: DateTime<Utc>,
}

impl ClaimedJob {
    /// The (id, attempt) pair that guards this attempt's writes.
    pub fn attempt_key(&self) -> Attempt {
        Attempt {
            id: self.id,
            attempt: self.attempt,
        }
    }
}

/// One attempt of one job: the guard on every write that ends an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// Job id.
    pub id: i64,
    /// Attempt number.
    pub attempt: i32,
}

/// How an attempt that did not complete ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Failed; runs again at `at`.
    Retry {
        /// The error to record.
        error: String,
        /// When to run again.
        at: DateTime<Utc>,
    },
    /// Failed for the last time, or cannot run at all.
    Discard {
        /// The error to record.
        error: String,
    },
    /// The job asked to stop for good.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Run again at `at`; not a failure, and does not use up an attempt.
    Snooze {
        /// When to run again.
        at: DateTime<Utc>,
    },
    /// Interrupted by shutdown; back to the queue without using up an attempt.
    Requeue {
        /// Why.
        reason: String,
    },
}

/// What an [`Outcome`] writes to the job row.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The new state.
    pub state: JobState,
    /// The new `run_at`, when it changes.
    pub run_at: Option<DateTime<Utc>>,
    /// Added to `max_attempts`, so that an attempt that was not a failure
    /// does not use one up.
    pub extra_attempts: i32,
    /// The error to append to the job's errors.
    pub error: Option<String>,
}

impl Outcome {
    /// The row change this outcome makes.
    pub fn change(&self) -> StateChange {
        let (state, run_at, extra_attempts, error) = match self {
            Outcome::Retry { error, at } => (JobState::Retryable, Some(*at), 0, Some(error)),
            Outcome::Discard { error } => (JobState::Discarded, None, 0, Some(error)),
            Outcome::Cancel { reason } => (JobState::Cancelled, None, 0, Some(reason)),
            Outcome::Snooze { at } => (JobState::Scheduled, Some(*at), 1, None),
            Outcome::Requeue { reason } => (JobState::Available, None, 1, Some(reason)),
        };
        StateChange {
            state,
            run_at,
            extra_attempts,
            error: error.map(|e| clean_error(e)),
        }
    }
}

/// Makes an error message storable: no NUL bytes (PostgreSQL rejects them in
/// text) and at most [`MAX_ERROR_LEN`] bytes.
///
/// ```
/// let cleaned = offload::clean_error("bad\0byte");
/// assert_eq!(cleaned, "bad\u{FFFD}byte");
/// ```
pub fn clean_error(message: &str) -> String {
    let mut cleaned = message.replace('\0', "\u{FFFD}");
    if cleaned.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
        cleaned.push_str("… (truncated)");
    }
    cleaned
}

/// A worker process's identity, written with each heartbeat.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Unique id: host, pid and a random suffix.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i32,
    /// Queues it serves, comma-separated.
    pub queues: String,
}

/// One recorded failure of a job, in [`JobRecord::errors`], oldest first.
///
/// ```
/// let error: offload::AttemptError = serde_json::from_str(
///     r#"{"attempt": 2, "at": "2026-01-02T03:04:05Z", "error": "smtp refused"}"#,
/// ).unwrap();
/// assert_eq!((error.attempt, error.error.as_str()), (2, "smtp refused"));
/// ```
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    /// Which attempt failed.
    pub attempt: i32,
    /// When.
    pub at: DateTime<Utc>,
    /// The error message.
    pub error: String,
}

/// A job row, whole: what [`Client::job`](crate::Client::job) and the
/// admin API return.
///
/// ```no_run
/// use offload::{Client, JobState};
/// # async fn example(client: Client<sqlx::Sqlite>, id: i64) -> offload::Result<()> {
/// if let Some(job) = client.job(id).await? {
///     println!("{} #{} on {}: {} (attempt {} of {})", job.kind, job.id, job.queue, job.state, job.attempt, job.max_attempts);
///     if job.state == JobState::Retryable {
///         let last = job.errors.last().expect("a retryable job has failed");
///         println!("failed at {}: {}; runs again at {}", last.at, last.error, job.run_at);
///     }
///     let user_id = job.args["user_id"].as_i64();
/// #   let _ = user_id;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// Row id.
    pub id: i64,
    /// The job kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// Its args.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: serde_json::Value,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts made so far.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
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
    /// The key a partitioned queue takes turns by; empty for none.
    pub partition_key: String,
}

/// A job as a list shows it: no full args or errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The current holder of a leadership: the worker running maintenance and
/// periodic jobs ([`Client::leader`](crate::Client::leader)).
///
/// ```no_run
/// # async fn example(client: offload::Client<sqlx::Postgres>) -> offload::Result<()> {
/// match client.leader().await? {
///     Some(leader) => println!("{} leads until {}", leader.leader_id, leader.expires_at),
///     None => println!("no worker leads: maintenance and periodic jobs are stopped"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    /// The leading worker's id.
    pub leader_id: String,
    /// When it took over.
    pub elected_at: DateTime<Utc>,
    /// When it loses leadership unless it renews.
    pub expires_at: DateTime<Utc>,
}

/// Whether JSON text holds an escaped NUL (`\u0000`), as serde_json writes
/// one: a `\` that is not itself escaped, then `u0000`.
fn has_escaped_nul(json: &str) -> bool {
    json.match_indices("u0000").any(|(at, _)| {
        let backslashes = json[..at].bytes().rev().take_while(|b| *b == b'\\').count();
        backslashes % 2 == 1
    }) || json.contains('\0')
}

// A test beside the function, not in a child module: `super::` would read
// as an import of `storage/mod.rs` to scripts/import-loops.py.
#[cfg(test)]
#[test]
fn finds_escaped_nuls_but_not_escaped_backslashes() {
    assert!(has_escaped_nul(r#"{"note":"a\u0000b"}"#));
    assert!(has_escaped_nul(r#"{"note":"\\\u0000"}"#));
    assert!(!has_escaped_nul(r#"{"note":"\\u0000"}"#));
    assert!(!has_escaped_nul(r#"{"n":10000}"#));
    assert!(has_escaped_nul("{\"raw\":\"\0\"}"));
}
