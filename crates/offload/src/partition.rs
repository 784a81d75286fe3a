//! Partitioned queues: jobs carry a key (a customer, a tenant, a provider),
//! the queue serves its keys in turn, and may cap how many jobs of one key
//! run at once over every worker on the database.

use std::fmt;

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
/// use offload::Partition;
/// // Every customer in turn, at most 2 of one customer's jobs at once.
/// let per_customer = Partition::new().concurrency(2).unwrap();
/// assert_eq!(per_customer.concurrency_limit(), Some(2));
/// assert_eq!(per_customer.to_string(), "per key: 2 at once");
/// assert!(Partition::new().concurrency(0).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partition {
    concurrency: Option<usize>,
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

    /// The cap on one key's running jobs, if any.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.concurrency
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.concurrency {
            Some(limit) => write!(f, "per key: {limit} at once"),
            None => f.write_str("per key: in turn"),
        }
    }
}
