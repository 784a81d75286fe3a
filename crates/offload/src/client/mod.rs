//! Putting jobs in the queue.

pub(crate) mod manage;
mod notifier;

use std::sync::Arc;

use sqlx::Pool;

use notifier::{distinct_queues, Notifier};

use crate::job::Job;
use crate::options::{new_job_row, EnqueueOptions};
use crate::state::JobState;
use crate::storage::ops::{first_id, insert_unique};
use crate::storage::{Backend, JobRecord, Leader, NewJob};
use crate::unique::{EnqueueResult, UniqueOptions};
use crate::worker::{leader, wake};
use crate::{Error, Result};

/// Enqueues jobs and looks them up. Cheap to clone.
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

    /// Builds the row for `job` without inserting it.
    pub fn new_job<J: Job<DB>>(&self, job: &J, options: EnqueueOptions) -> Result<NewJob> {
        new_job_row::<DB, J>(job, options)
    }

    /// Enqueues `job` in its own statement. Returns its id.
    pub async fn enqueue<J: Job<DB>>(&self, job: J) -> Result<i64> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues `job` with `options`.
    pub async fn enqueue_with<J: Job<DB>>(&self, job: J, options: EnqueueOptions) -> Result<i64> {
        let row = self.new_job(&job, options)?;
        first_id(self.insert(&[row]).await?)
    }

    /// Enqueues `job` on `conn`, normally the caller's transaction: the job
    /// exists if and only if that transaction commits.
    pub async fn enqueue_tx<J: Job<DB>>(&self, conn: &mut DB::Connection, job: J) -> Result<i64> {
        self.enqueue_tx_with(conn, job, EnqueueOptions::default())
            .await
    }

    /// [`enqueue_tx`](Self::enqueue_tx) with `options`.
    pub async fn enqueue_tx_with<J: Job<DB>>(
        &self,
        conn: &mut DB::Connection,
        job: J,
        options: EnqueueOptions,
    ) -> Result<i64> {
        let row = self.new_job(&job, options)?;
        first_id(self.insert_tx(conn, &[row]).await?)
    }

    /// Enqueues `job` unless a job holds the same unique key, in which case
    /// it returns that job's id with `duplicate` set. Safe under concurrent
    /// enqueues: the database's unique index decides.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError, UniqueOptions};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct RebuildIndex { shop_id: i64 }
    /// # impl Job<sqlx::Sqlite> for RebuildIndex {
    /// #     const KIND: &'static str = "rebuild_index";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// let first = client.enqueue_unique(RebuildIndex { shop_id: 7 }, UniqueOptions::by_args()).await?;
    /// let again = client.enqueue_unique(RebuildIndex { shop_id: 7 }, UniqueOptions::by_args()).await?;
    /// assert!(!first.duplicate && again.duplicate);
    /// assert_eq!(first.id, again.id);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_unique<J: Job<DB>>(
        &self,
        job: J,
        unique: UniqueOptions,
    ) -> Result<EnqueueResult> {
        let row = self.new_job(&job, EnqueueOptions::new().unique(unique))?;
        let mut conn = self.pool.acquire().await?;
        let result = insert_unique::<DB>(&mut conn, &row).await?;
        wake_if_new(&row, result);
        Ok(result)
    }

    /// [`enqueue_unique`](Self::enqueue_unique) inside the caller's
    /// transaction, with more `options`.
    pub async fn enqueue_unique_tx<J: Job<DB>>(
        &self,
        conn: &mut DB::Connection,
        job: J,
        options: EnqueueOptions,
        unique: UniqueOptions,
    ) -> Result<EnqueueResult> {
        let row = self.new_job(&job, options.unique(unique))?;
        let result = insert_unique::<DB>(conn, &row).await?;
        wake_if_new(&row, result);
        Ok(result)
    }

    /// Enqueues many jobs of one kind in one statement. Returns their ids in
    /// order.
    pub async fn enqueue_many<J: Job<DB>>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<i64>> {
        let rows = jobs
            .into_iter()
            .map(|job| self.new_job(&job, EnqueueOptions::default()))
            .collect::<Result<Vec<_>>>()?;
        self.insert(&rows).await
    }

    /// [`enqueue_many`](Self::enqueue_many) inside the caller's transaction.
    pub async fn enqueue_many_tx<J: Job<DB>>(
        &self,
        conn: &mut DB::Connection,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<i64>> {
        let rows = jobs
            .into_iter()
            .map(|job| self.new_job(&job, EnqueueOptions::default()))
            .collect::<Result<Vec<_>>>()?;
        self.insert_tx(conn, &rows).await
    }

    /// Inserts prepared rows, of any kinds, in one statement.
    pub async fn insert(&self, jobs: &[NewJob]) -> Result<Vec<i64>> {
        let mut conn = self.pool.acquire().await?;
        self.insert_tx(&mut conn, jobs).await
    }

    /// Inserts prepared rows on `conn`. Unique rows go one at a time (a
    /// duplicate gives the holder's id); the others in one statement.
    pub async fn insert_tx(&self, conn: &mut DB::Connection, jobs: &[NewJob]) -> Result<Vec<i64>> {
        if jobs.iter().any(|job| job.unique.is_some()) {
            let mut ids = Vec::with_capacity(jobs.len());
            for job in jobs {
                // Inserts plain rows too, one at a time, in order.
                ids.push(insert_unique::<DB>(conn, job).await?.id);
            }
            wake::wake_all(jobs.iter().map(|job| job.queue.as_str()));
            return Ok(ids);
        }
        let queues = distinct_queues(jobs);
        let notify_now = self.notifier.take_slot(&queues);
        let ids = DB::job_insert_many(conn, jobs, notify_now).await?;
        if !notify_now {
            self.notifier
                .clone()
                .notify_later(self.pool.clone(), queues.clone());
        }
        wake::wake_all(queues.iter().map(String::as_str));
        Ok(ids)
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
        if limit == Some(0) {
            return Err(Error::Config("a global limit must be at least 1".into()));
        }
        DB::queue_set_global_limit(&self.pool, queue, limit).await?;
        wake::wake(queue);
        Ok(())
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

/// Wakes this process's producers of a unique job's queue when it was
/// inserted (other processes hear the insert's `NOTIFY`).
fn wake_if_new(row: &NewJob, result: EnqueueResult) {
    if !result.duplicate {
        wake::wake(&row.queue);
    }
}
