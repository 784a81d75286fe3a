//! Partitioned queues: jobs carry a key (a customer, a tenant, a provider),
//! the queue serves its keys in turn, and may cap how many jobs of one key
//! run at once, and how many start per period, over every worker on the
//! database.

use std::fmt;

use crate::RateLimit;

/// The longest partition key, in bytes: keys are index entries.
pub const MAX_PARTITION_KEY_LEN: usize = 255;

/// How a queue treats its jobs' partition keys
/// ([`EnqueueOptions::partition_key`](crate::EnqueueOptions::partition_key),
/// [`Job::partition_key`](crate::Job::partition_key)).
///
/// A partitioned queue's claims take keys in turn (round-robin, in key
/// order from where the last claim stopped), so a key with a backlog of
/// 100,000 jobs delays another key's jobs by at most one turn; within one
/// key, jobs run in the queue's usual order (priority, then due time).
/// Jobs without a key share the key `""`.
///
/// ```
/// use offload::{Partition, RateLimit};
/// // Every customer in turn, at most 2 of one customer's jobs at once.
/// let per_customer = Partition::new().concurrency(2).unwrap();
/// assert_eq!(per_customer.concurrency_limit(), Some(2));
/// assert_eq!(per_customer.to_string(), "per key: 2 at once");
/// assert!(Partition::new().concurrency(0).is_err());
/// // And at most 10 of one customer's webhooks per second.
/// let webhooks = per_customer.rate(RateLimit::per_second(10).unwrap());
/// assert_eq!(webhooks.rate_limit(), Some("10/s".parse().unwrap()));
/// assert_eq!(webhooks.to_string(), "per key: 2 at once, 10/1000ms");
/// ```
///
/// A limit per kind is a partition keyed by the kind: return
/// `Some(Self::KIND.to_owned())` from
/// [`Job::partition_key`](crate::Job::partition_key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partition {
    concurrency: Option<usize>,
    rate: Option<RateLimit>,
}

/// Why a partition setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a per-key concurrency limit must be at least 1")]
pub struct InvalidPartition;

impl Partition {
    /// Keys in turn, with no cap per key.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `limit` jobs of one key running at once, over every worker.
    pub fn concurrency(mut self, limit: usize) -> Result<Self, InvalidPartition> {
        if limit == 0 {
            return Err(InvalidPartition);
        }
        self.concurrency = Some(limit);
        Ok(self)
    }

    /// At most `rate` job starts of one key per period, over every worker
    /// (a sliding window, as a queue's [`RateLimit`]).
    pub fn rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// The cap on one key's running jobs, if any.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.concurrency
    }

    /// The limit on one key's starts per period, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.concurrency {
            Some(limit) => write!(f, "per key: {limit} at once")?,
            None => f.write_str("per key: in turn")?,
        }
        match self.rate {
            Some(rate) => write!(f, ", {rate}"),
            None => Ok(()),
        }
    }
}
