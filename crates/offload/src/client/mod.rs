//! Putting jobs in the queue.

mod enqueue;
pub(crate) mod manage;
mod notifier;

use std::sync::Arc;

use sqlx::Pool;

use notifier::Notifier;

use crate::queue_name::check_queue_name;
use crate::state::JobState;
use crate::storage::{Backend, JobRecord, Leader, LimitChange, QueueLimits};
use crate::worker::{leader, wake};
use crate::{Error, Partition, RateLimit, Result};

/// Enqueues jobs and looks them up. Cheap to clone.
///
/// The enqueue methods are one family, each returning an
/// [`Enqueued`](crate::Enqueued) per job: `enqueue` for one job, `_many`
/// for many of a kind, `_tx` to join the caller's transaction, `_with` for
/// [`EnqueueOptions`](crate::EnqueueOptions), unique options included
/// (`enqueue`, `enqueue_with`, `enqueue_tx`, `enqueue_tx_with`,
/// `enqueue_many`, `enqueue_many_with`, `enqueue_many_tx`,
/// `enqueue_many_tx_with`); `insert` and `insert_tx` take prepared rows.
///
/// ```no_run
/// # use offload::{Client, Job, JobContext, JobError};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct SendWelcome { user_id: i64 }
/// # impl Job<sqlx::Postgres> for SendWelcome {
/// #     const KIND: &'static str = "send_welcome";
/// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> { Ok(()) }
/// # }
/// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::new(pool.clone());
/// let mut tx = pool.begin().await?;
/// let user_id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES ($1) RETURNING id")
///     .bind("a@example.com")
///     .fetch_one(&mut *tx)
///     .await?;
/// // The job exists if and only if the user row commits.
/// client.enqueue_tx(&mut tx, SendWelcome { user_id }).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct Client<DB: Backend> {
    pool: Pool<DB>,
    notifier: Arc<Notifier>,
}

impl<DB: Backend> Clone for Client<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            notifier: self.notifier.clone(),
        }
    }
}

impl<DB: Backend> Client<DB> {
    /// A client on `pool`.
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            notifier: Arc::default(),
        }
    }

    /// The pool it uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Creates or upgrades offload's tables.
    pub async fn migrate(&self) -> Result<()> {
        DB::migrate(&self.pool).await
    }

    /// The worker currently leading the cluster (running maintenance and
    /// periodic jobs), if any.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        DB::leader_get(&self.pool, leader::LEADERSHIP).await
    }

    /// Sets the most jobs of `queue` that may run at once over all workers,
    /// or with `None` removes the limit. Workers started with a
    /// [`QueueConfig::global_limit`](crate::QueueConfig::global_limit) set
    /// it themselves; running workers pick a change up within seconds.
    pub async fn set_global_limit(&self, queue: &str, limit: Option<usize>) -> Result<()> {
        check_queue_name(queue)?;
        if limit == Some(0) {
            return Err(Error::Config("a global limit must be at least 1".into()));
        }
        DB::queue_set_limit(&self.pool, queue, LimitChange::Global(limit)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// Sets the most jobs of `queue` that may start per period over all
    /// workers, or with `None` removes the limit. Workers started with a
    /// [`QueueConfig::rate_limit`](crate::QueueConfig::rate_limit) set it
    /// themselves; running workers pick a change up within seconds.
    ///
    /// ```no_run
    /// # async fn run(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// let per_second: offload::RateLimit = "100/s".parse().expect("a valid rate");
    /// client.set_rate_limit("webhooks", Some(per_second)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_rate_limit(&self, queue: &str, rate: Option<RateLimit>) -> Result<()> {
        check_queue_name(queue)?;
        DB::queue_set_limit(&self.pool, queue, LimitChange::Rate(rate)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// Makes `queue` partitioned (its jobs' keys take turns, at most the
    /// partition's cap of one key's jobs running at once over all workers),
    /// or with `None` makes it a plain queue again. Workers started with a
    /// [`QueueConfig::partition`](crate::QueueConfig::partition) set it
    /// themselves; running workers pick a change up within seconds.
    ///
    /// ```no_run
    /// # async fn run(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// let two_per_customer = offload::Partition::new().concurrency(2).expect("at least 1");
    /// client.set_partition("exports", Some(two_per_customer)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_partition(&self, queue: &str, partition: Option<Partition>) -> Result<()> {
        check_queue_name(queue)?;
        DB::queue_set_limit(&self.pool, queue, LimitChange::Partition(partition)).await?;
        wake::wake(queue);
        Ok(())
    }

    /// The queue's global, rate and partition limits over all workers.
    pub async fn limits(&self, queue: &str) -> Result<QueueLimits> {
        check_queue_name(queue)?;
        DB::queue_limits(&self.pool, queue).await
    }

    /// One job, whole, or `None` if there is no such id.
    pub async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        DB::job_get(&self.pool, id).await
    }

    /// How many jobs are in each state, optionally for one queue.
    pub async fn count_by_state(&self, queue: Option<&str>) -> Result<Vec<(JobState, i64)>> {
        DB::job_count_by_state(&self.pool, queue).await
    }
}
