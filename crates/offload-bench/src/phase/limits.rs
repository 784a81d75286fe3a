//! What limits cost: the no-op drain with a queue limit set, against the
//! same drain without one. The limit is set far above what the drain
//! reaches, so the figure is the cost of keeping to it (the counted claim,
//! the rows it writes), not the limit holding jobs back.

use offload::{EnqueueOptions, JobState, Partition, RateLimit, Retention};

use super::Bench;
use crate::jobs::NoopJob;
use crate::report::{drain_check, Throughput};
use crate::store::BenchStore;
use crate::QUEUE;

/// Keys the drain's jobs are spread over.
pub const KEYS: u64 = 1_000;
/// The cap per key of the partitioned drain: above what one key's share of
/// the queue's concurrency reaches.
pub const PER_KEY_LIMIT: usize = 4;
/// The rate limit of the rated drain, per second.
pub const RATE_PER_SECOND: u32 = 1_000_000;

/// A queue limit the drain runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// None: the drain to compare with.
    Unlimited,
    /// [`RATE_PER_SECOND`] starts per second.
    Rate,
    /// Keys in turn, at most [`PER_KEY_LIMIT`] of one key at once.
    PerKey,
}

impl QueueLimit {
    /// The measure's name in the report.
    pub fn measure(self) -> String {
        match self {
            QueueLimit::Unlimited => "drain no-op, no limit".to_owned(),
            QueueLimit::Rate => format!("drain, rate limit {RATE_PER_SECOND}/s"),
            QueueLimit::PerKey => format!("drain, {PER_KEY_LIMIT} per key, {KEYS} keys"),
        }
    }
}

impl<DB: BenchStore> Bench<DB> {
    /// Drains `jobs` no-op jobs spread over [`KEYS`] partition keys, under
    /// `limit`.
    pub async fn drain_limited(
        &self,
        jobs: u64,
        batch: usize,
        limit: QueueLimit,
    ) -> anyhow::Result<Throughput> {
        let phase = &limit.measure();
        let rows = (0..jobs)
            .map(|n| {
                let key = format!("key-{}", n % KEYS);
                let options = EnqueueOptions::new().partition_key(key);
                self.client.new_job(&NoopJob { n }, options)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.prepare(phase, rows, batch).await?;
        let rate = (limit == QueueLimit::Rate).then(|| RateLimit::per_second(RATE_PER_SECOND));
        let partition = (limit == QueueLimit::PerKey)
            .then(|| Partition::new().concurrency(PER_KEY_LIMIT))
            .transpose()?;
        self.client.set_rate_limit(QUEUE, rate.transpose()?).await?;
        self.client.set_partition(QUEUE, partition).await?;
        let drained = self
            .run_worker(phase, jobs, self.settings.concurrency, Retention::default())
            .await;
        self.client.set_rate_limit(QUEUE, None).await?;
        self.client.set_partition(QUEUE, None).await?;
        let (elapsed, server) = drained?;
        let completed = self.count(JobState::Completed).await?;
        let left = self.total().await?;
        let check = drain_check(phase, jobs, false, completed, left)?;
        Ok(Throughput::new(jobs, elapsed, check).with_server(server))
    }
}
