//! Unique jobs: at most one job per key among the jobs in chosen states.
//!
//! The key is stored on the row with the states it holds in, and a partial
//! unique index over `(unique_key)` covers exactly the rows whose state is
//! one of them. An insert that would take a held key does nothing (or, with
//! [`UniqueOptions::replace_pending`], updates the holder while it waits),
//! and the enqueue returns the job that holds it: the database decides, so
//! two concurrent enqueues cannot both insert.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::state::JobState;
use crate::{Error, Result};

/// The states a unique key holds in unless told otherwise: every state
/// before a job finishes.
pub const DEFAULT_UNIQUE_STATES: [JobState; 4] = [
    JobState::Scheduled,
    JobState::Available,
    JobState::Running,
    JobState::Retryable,
];

/// What makes a job unique, for how long and in which states.
///
/// ```
/// use std::time::Duration;
/// use offload::{JobState, UniqueOptions};
///
/// // One job per kind and args while it is pending or running (the default).
/// let by_args = UniqueOptions::by_args();
/// // One digest per user per hour of its run time, even once it has
/// // completed (a period holds through completion).
/// let hourly = UniqueOptions::by_key("digest:user:42").period(Duration::from_secs(3600));
/// // Also while it is discarded: a failed digest is not sent again this hour.
/// let strict = hourly.clone().also_in(JobState::Discarded);
/// // A debounce: one pending reindex per shop; a later enqueue replaces its
/// // args and run time until it starts.
/// let debounced = UniqueOptions::by_key("reindex:shop:7").replace_pending();
/// # let _ = (by_args, strict, debounced);
/// ```
#[derive(Debug, Clone)]
pub struct UniqueOptions {
    by: UniqueBy,
    states: Vec<JobState>,
    period: Option<Duration>,
    replace_pending: bool,
}

#[derive(Debug, Clone)]
enum UniqueBy {
    Args,
    Key(String),
}

impl UniqueOptions {
    /// Unique by kind and args (compared as canonical JSON: key order and
    /// spacing do not matter).
    pub fn by_args() -> Self {
        Self {
            by: UniqueBy::Args,
            states: DEFAULT_UNIQUE_STATES.to_vec(),
            period: None,
            replace_pending: false,
        }
    }

    /// Unique by kind and `key`, whatever the args.
    pub fn by_key(key: impl Into<String>) -> Self {
        Self {
            by: UniqueBy::Key(key.into()),
            ..Self::by_args()
        }
    }

    /// Unique within each period of this length (counted from the Unix
    /// epoch), by the job's scheduled time: its `run_at` when given, else
    /// the enqueue's time. A job scheduled into the next period is a new job.
    ///
    /// A period throttles: its key holds through completion too (as River's
    /// and Oban's unique periods do), so a job that completed in this period
    /// still keeps the next one out. Discarded and cancelled jobs do not
    /// hold it unless asked ([`also_in`](Self::also_in)): a job that failed
    /// or was called off can be enqueued again. The key lasts as long as the
    /// completed row: keep completed jobs at least one period
    /// ([`Retention`](crate::Retention)).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = Some(period).filter(|p| !p.is_zero());
        if self.period.is_some() {
            self = self.also_in(JobState::Completed);
        }
        self
    }

    /// When a job that has not started yet (`scheduled` or `available`)
    /// holds the key, the enqueue updates that job instead of being
    /// dropped: it takes the new args, priority and run time (now, when none
    /// is given), as Oban's `replace`. Its kind, queue, tags and attempts
    /// stay. A running, retrying or finished holder is left alone, as
    /// without this option. The enqueue's result says `duplicate` and
    /// `replaced`. The database decides: a holder claimed at the same moment
    /// is either updated before its claim or not at all.
    pub fn replace_pending(mut self) -> Self {
        self.replace_pending = true;
        self
    }

    /// Also holds the key while a job is in final `state` (completed,
    /// discarded or cancelled). The states before a job finishes always hold
    /// it: a job moving between them must never collide with another.
    pub fn also_in(mut self, state: JobState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// The key and states for a job of `kind` with JSON `args`, due at
    /// `scheduled_at` (its `run_at`, or the enqueue's time when it has none):
    /// the period's bucket is taken from it.
    pub fn key_for(
        &self,
        kind: &str,
        args: &str,
        scheduled_at: DateTime<Utc>,
    ) -> Result<UniqueKey> {
        let mut hasher = Sha256::new();
        hasher.update(kind.as_bytes());
        match &self.by {
            UniqueBy::Args => {
                let value: serde_json::Value =
                    serde_json::from_str(args).map_err(|source| Error::EncodeArgs {
                        kind: kind.to_owned(),
                        source,
                    })?;
                hasher.update(b"\0args\0");
                hasher.update(canonical_json(&value).as_bytes());
            }
            UniqueBy::Key(key) => {
                hasher.update(b"\0key\0");
                hasher.update(key.as_bytes());
            }
        }
        if let Some(period) = self.period {
            let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
            let bucket = scheduled_at.timestamp_micros().div_euclid(period_us);
            hasher.update(format!("\0period\0{period_us}\0{bucket}").as_bytes());
        }
        let digest = hasher.finalize();
        let mut key = format!("{kind}:");
        for byte in digest {
            let _ = write!(key, "{byte:02x}");
        }
        let mut key = UniqueKey::new(key, &self.states)?;
        key.replace_pending = self.replace_pending;
        Ok(key)
    }
}

/// A computed unique key and the states it holds in, as stored on the row,
/// and what an insert that finds it held does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key.
    pub key: String,
    /// The states, like `,scheduled,available,running,retryable,`.
    pub states: String,
    /// Whether an insert that finds the key held by a job that has not
    /// started updates that job ([`UniqueOptions::replace_pending`]).
    pub replace_pending: bool,
}

impl UniqueKey {
    /// A key held in `states`, which must include every state before a job
    /// finishes. A collision keeps the holder as it is.
    ///
    /// ```
    /// use offload::{JobState, UniqueKey, DEFAULT_UNIQUE_STATES};
    /// let key = UniqueKey::new("report:2024-05", &DEFAULT_UNIQUE_STATES).unwrap();
    /// assert_eq!(key.states, ",scheduled,available,running,retryable,");
    /// assert!(UniqueKey::new("k", &[JobState::Available]).is_err());
    /// ```
    pub fn new(key: impl Into<String>, states: &[JobState]) -> Result<Self> {
        if let Some(missing) = DEFAULT_UNIQUE_STATES
            .iter()
            .find(|state| !states.contains(state))
        {
            return Err(Error::Config(format!(
                "unique states must include `{missing}`: a job moving between unfinished states must keep its key"
            )));
        }
        let mut joined = String::from(",");
        for state in JobState::ALL.iter().filter(|s| states.contains(s)) {
            joined.push_str(state.as_str());
            joined.push(',');
        }
        Ok(Self {
            key: key.into(),
            states: joined,
            replace_pending: false,
        })
    }
}

/// JSON with object keys sorted at every level and no spaces, so that equal
/// values give equal text.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_spacing_do_not_change_the_key() {
        let now = Utc::now();
        let unique = UniqueOptions::by_args();
        let a = unique.key_for("k", r#"{"a":1,"b":[1,{"y":2,"x":1}]}"#, now);
        let b = unique.key_for("k", r#"{ "b": [1, {"x":1, "y":2}], "a": 1 }"#, now);
        assert_eq!(a.unwrap(), b.unwrap());
        let other = unique.key_for("k", r#"{"a":2,"b":[1,{"y":2,"x":1}]}"#, now);
        assert_ne!(
            other.unwrap(),
            unique
                .key_for("k", r#"{"a":1,"b":[1,{"y":2,"x":1}]}"#, now)
                .unwrap()
        );
    }

    #[test]
    fn kind_and_period_bucket_are_part_of_the_key() {
        let at = DateTime::from_timestamp(3_600 * 10 + 5, 0).unwrap();
        let later_same_hour = DateTime::from_timestamp(3_600 * 10 + 3_000, 0).unwrap();
        let next_hour = DateTime::from_timestamp(3_600 * 11 + 1, 0).unwrap();
        let hourly = UniqueOptions::by_key("x").period(Duration::from_secs(3600));
        let key = |kind, at| hourly.key_for(kind, "{}", at).unwrap().key;
        assert_eq!(key("a", at), key("a", later_same_hour));
        assert_ne!(key("a", at), key("a", next_hour));
        assert_ne!(key("a", at), key("b", at));
    }

    #[test]
    fn a_period_holds_through_completion_but_not_failure() {
        let key = UniqueOptions::by_args()
            .period(Duration::from_secs(60))
            .key_for("k", "{}", Utc::now())
            .unwrap();
        assert_eq!(
            key.states,
            ",scheduled,available,running,retryable,completed,"
        );
        let no_period = UniqueOptions::by_args()
            .period(Duration::ZERO)
            .key_for("k", "{}", Utc::now())
            .unwrap();
        assert_eq!(no_period.states, ",scheduled,available,running,retryable,");
    }

    #[test]
    fn replace_pending_is_carried_on_the_key() {
        let plain = UniqueOptions::by_key("x").key_for("k", "{}", Utc::now());
        assert!(!plain.unwrap().replace_pending);
        let replacing = UniqueOptions::by_key("x")
            .replace_pending()
            .key_for("k", "{}", Utc::now())
            .unwrap();
        assert!(replacing.replace_pending);
        assert!(
            !UniqueKey::new("k", &DEFAULT_UNIQUE_STATES)
                .unwrap()
                .replace_pending
        );
    }

    #[test]
    fn final_states_can_be_added() {
        let key = UniqueOptions::by_key("x")
            .also_in(JobState::Completed)
            .key_for("k", "{}", Utc::now())
            .unwrap();
        assert_eq!(
            key.states,
            ",scheduled,available,running,retryable,completed,"
        );
    }
}
