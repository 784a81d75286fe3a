//! Putting jobs in the queue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use sqlx::Pool;

use crate::notifier::{distinct_queues, Notifier};

use crate::backend::{Backend, JobRecord, Leader, NewJob};
use crate::job::Job;
use crate::state::JobState;
use crate::unique::{EnqueueResult, UniqueOptions};
use crate::{wake, Error, Result};

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
}

impl EnqueueOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs on `queue`.
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
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.run_at = Some(
            Utc::now()
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        self
    }

    /// Adds a label.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Enqueues the job only if no job holds the same unique key; otherwise
    /// the enqueue returns the id of the job that does.
    pub fn unique(mut self, unique: UniqueOptions) -> Self {
        self.unique = Some(unique);
        self
    }
}

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
        insert_unique::<DB>(&mut conn, &row).await
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
        insert_unique::<DB>(conn, &row).await
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
                let id = if job.unique.is_some() {
                    insert_unique::<DB>(conn, job).await?.id
                } else {
                    first_id(DB::insert_jobs(conn, std::slice::from_ref(job), true).await?)?
                };
                ids.push(id);
            }
            wake::wake_all(jobs.iter().map(|job| job.queue.as_str()));
            return Ok(ids);
        }
        let queues = distinct_queues(jobs);
        let notify_now = self.notifier.take_slot(&queues);
        let ids = DB::insert_jobs(conn, jobs, notify_now).await?;
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
        DB::leader(&self.pool, crate::leader::LEADERSHIP).await
    }

    /// Sets the most jobs of `queue` that may run at once over all workers,
    /// or with `None` removes the limit. Workers started with a
    /// [`QueueConfig::global_limit`](crate::QueueConfig::global_limit) set
    /// it themselves; running workers pick a change up within seconds.
    pub async fn set_global_limit(&self, queue: &str, limit: Option<usize>) -> Result<()> {
        if limit == Some(0) {
            return Err(Error::Config("a global limit must be at least 1".into()));
        }
        DB::set_global_limit(&self.pool, queue, limit).await?;
        wake::wake(queue);
        Ok(())
    }

    /// One job, whole, or `None` if there is no such id.
    pub async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        DB::fetch_job(&self.pool, id).await
    }

    /// How many jobs are in each state, optionally for one queue.
    pub async fn count_by_state(&self, queue: Option<&str>) -> Result<Vec<(JobState, i64)>> {
        DB::count_by_state(&self.pool, queue).await
    }
}

/// Builds the row for `job` of backend `DB`.
pub(crate) fn new_job_row<DB: Backend, J: Job<DB>>(
    job: &J,
    options: EnqueueOptions,
) -> Result<NewJob> {
    let args = serde_json::to_string(job).map_err(|source| Error::EncodeArgs {
        kind: J::KIND.to_owned(),
        source,
    })?;
    let unique = options
        .unique
        .map(|unique| unique.key_for(J::KIND, &args, Utc::now()))
        .transpose()?;
    Ok(NewJob {
        kind: J::KIND.to_owned(),
        queue: options.queue.unwrap_or_else(|| J::QUEUE.to_owned()),
        args,
        priority: options.priority.unwrap_or(J::PRIORITY),
        max_attempts: options.max_attempts.unwrap_or(J::MAX_ATTEMPTS),
        run_at: options.run_at,
        tags: options.tags,
        unique,
    })
}

/// Inserts a unique row, or finds the job holding its key. Retries when the
/// holder finished between the two statements.
pub(crate) async fn insert_unique<DB: Backend>(
    conn: &mut DB::Connection,
    job: &NewJob,
) -> Result<EnqueueResult> {
    let Some(unique) = &job.unique else {
        let id = first_id(DB::insert_jobs(conn, std::slice::from_ref(job), true).await?)?;
        return Ok(EnqueueResult {
            id,
            duplicate: false,
        });
    };
    for _ in 0..5 {
        if let Some(id) = DB::insert_unique(conn, job).await? {
            wake::wake(&job.queue);
            return Ok(EnqueueResult {
                id,
                duplicate: false,
            });
        }
        if let Some(id) = DB::find_unique(conn, &unique.key).await? {
            return Ok(EnqueueResult {
                id,
                duplicate: true,
            });
        }
    }
    // The key kept changing hands: a holder finished each time we looked.
    Err(Error::Database(sqlx::Error::RowNotFound))
}

fn first_id(ids: Vec<i64>) -> Result<i64> {
    ids.into_iter()
        .next()
        .ok_or_else(|| Error::Database(sqlx::Error::RowNotFound))
}
