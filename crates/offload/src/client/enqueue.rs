//! The enqueue family: one job or many, with options or without, on the
//! pool or in the caller's transaction. Unique jobs are not a family of
//! their own: they are `EnqueueOptions::unique`. Every member builds its
//! rows and ends in `Client::insert_on`, which checks them, inserts them
//! and wakes this process's producers.

use super::notifier::distinct_queues;
use super::Client;
use crate::job::Job;
use crate::options::{new_job_row, EnqueueOptions};
use crate::storage::ops::insert_unique;
use crate::storage::{Backend, Enqueued, NewJob};
use crate::worker::wake;
use crate::{Error, Result};

/// Where rows go in.
enum On<'c, DB: Backend> {
    /// A connection of the client's pool, each statement committing alone.
    Pool,
    /// The caller's connection, normally inside its transaction.
    Conn(&'c mut DB::Connection),
}

impl<DB: Backend> Client<DB> {
    /// Enqueues `job` with its kind's defaults.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct SendWelcome { user_id: i64 }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// let enqueued = client.enqueue(SendWelcome { user_id: 42 }).await?;
    /// println!("job {}", enqueued.id);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        job: J,
    ) -> Result<Enqueued> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues `job` with `options` overriding its kind's defaults. With
    /// [`EnqueueOptions::unique`], a job already holding the key makes this
    /// a duplicate: nothing is inserted, and the result carries the
    /// holder's id.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct RebuildIndex { shop_id: i64 }
    /// # impl Job<sqlx::Sqlite> for RebuildIndex {
    /// #     const KIND: &'static str = "rebuild_index";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::{EnqueueOptions, UniqueOptions};
    ///
    /// let options = EnqueueOptions::new()
    ///     .queue("search")
    ///     .priority(-1)
    ///     .unique(UniqueOptions::by_args());
    /// let first = client.enqueue_with(RebuildIndex { shop_id: 7 }, options.clone()).await?;
    /// let again = client.enqueue_with(RebuildIndex { shop_id: 7 }, options).await?;
    /// assert!(!first.duplicate && again.duplicate);
    /// assert_eq!(first.id, again.id);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_with<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        job: J,
        options: EnqueueOptions,
    ) -> Result<Enqueued> {
        let row = self.new_job(&job, options)?;
        only(self.insert_on(On::Pool, &[row]).await?)
    }

    /// Enqueues `job` on `conn`, normally the caller's transaction: the job
    /// exists if and only if that transaction commits.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct SendWelcome { user_id: i64 }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::Backend;
    ///
    /// let mut tx = sqlx::Sqlite::begin_write(client.pool()).await?;
    /// let user_id: i64 = sqlx::query_scalar("INSERT INTO users DEFAULT VALUES RETURNING id")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// let welcome = client.enqueue_tx(&mut tx, SendWelcome { user_id }).await?;
    /// tx.commit().await?; // the user and job `welcome.id` together, or neither
    /// # let _ = welcome; Ok(()) }
    /// ```
    pub async fn enqueue_tx<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        conn: &mut DB::Connection,
        job: J,
    ) -> Result<Enqueued> {
        self.enqueue_tx_with(conn, job, EnqueueOptions::default())
            .await
    }

    /// [`enqueue_with`](Self::enqueue_with) on `conn`: the options, the
    /// duplicate check and the insert all join the caller's transaction.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct SendDigest { user_id: i64 }
    /// # impl Job<sqlx::Sqlite> for SendDigest {
    /// #     const KIND: &'static str = "send_digest";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use std::time::Duration;
    /// use offload::{Backend, EnqueueOptions, UniqueOptions};
    ///
    /// let mut tx = sqlx::Sqlite::begin_write(client.pool()).await?;
    /// // One digest per user per hour, however many requests ask for it.
    /// let options = EnqueueOptions::new()
    ///     .queue("mail")
    ///     .unique(UniqueOptions::by_key("digest:42").period(Duration::from_secs(3600)));
    /// let digest = client.enqueue_tx_with(&mut tx, SendDigest { user_id: 42 }, options).await?;
    /// tx.commit().await?;
    /// if digest.duplicate {
    ///     println!("already queued as job {}", digest.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_tx_with<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        conn: &mut DB::Connection,
        job: J,
        options: EnqueueOptions,
    ) -> Result<Enqueued> {
        let row = self.new_job(&job, options)?;
        only(self.insert_on(On::Conn(conn), &[row]).await?)
    }

    /// Enqueues many jobs of one kind in one statement. Returns one result
    /// per job, in order.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Resize { image_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// let enqueued = client.enqueue_many((1..=5_000).map(|image_id| Resize { image_id })).await?;
    /// assert_eq!(enqueued.len(), 5_000);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_many_with(jobs, EnqueueOptions::default())
            .await
    }

    /// Enqueues many jobs of one kind, each with `options`. Without unique
    /// options they go in one statement; with them, one at a time, each
    /// committing alone (concurrent batches sharing keys then cannot
    /// deadlock), so a failure part-way leaves the earlier ones enqueued:
    /// use [`enqueue_many_tx_with`](Self::enqueue_many_tx_with) for all or
    /// nothing.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Reindex { shop_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Reindex {
    /// #     const KIND: &'static str = "reindex";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::{EnqueueOptions, UniqueOptions};
    ///
    /// let options = EnqueueOptions::new().queue("search").unique(UniqueOptions::by_args());
    /// let shops = [7, 8, 7];
    /// let enqueued = client
    ///     .enqueue_many_with(shops.map(|shop_id| Reindex { shop_id }), options)
    ///     .await?;
    /// assert!(enqueued[2].duplicate);
    /// assert_eq!(enqueued[2].id, enqueued[0].id);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many_with<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        options: EnqueueOptions,
    ) -> Result<Vec<Enqueued>> {
        let rows = self.rows(jobs, &options)?;
        self.insert_on(On::Pool, &rows).await
    }

    /// [`enqueue_many`](Self::enqueue_many) on `conn`, normally the caller's
    /// transaction.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Resize { image_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>, image_ids: Vec<i64>) -> offload::Result<()> {
    /// use offload::Backend;
    ///
    /// let mut tx = sqlx::Sqlite::begin_write(client.pool()).await?;
    /// let jobs = image_ids.iter().map(|&image_id| Resize { image_id });
    /// let enqueued = client.enqueue_many_tx(&mut tx, jobs).await?;
    /// tx.commit().await?;
    /// assert_eq!(enqueued.len(), image_ids.len());
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many_tx<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        conn: &mut DB::Connection,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_many_tx_with(conn, jobs, EnqueueOptions::default())
            .await
    }

    /// [`enqueue_many_with`](Self::enqueue_many_with) on `conn`: all the
    /// jobs, or none if the transaction rolls back.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Reindex { shop_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Reindex {
    /// #     const KIND: &'static str = "reindex";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use std::time::Duration;
    /// use offload::{Backend, EnqueueOptions, UniqueOptions};
    ///
    /// let mut tx = sqlx::Sqlite::begin_write(client.pool()).await?;
    /// let options = EnqueueOptions::new()
    ///     .delay(Duration::from_secs(60))
    ///     .tag("nightly")
    ///     .unique(UniqueOptions::by_args());
    /// let jobs = [1, 2, 3].map(|shop_id| Reindex { shop_id });
    /// let enqueued = client.enqueue_many_tx_with(&mut tx, jobs, options).await?;
    /// tx.commit().await?;
    /// let new = enqueued.iter().filter(|job| !job.duplicate).count();
    /// println!("{new} new, {} already queued", enqueued.len() - new);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many_tx_with<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        conn: &mut DB::Connection,
        jobs: impl IntoIterator<Item = J>,
        options: EnqueueOptions,
    ) -> Result<Vec<Enqueued>> {
        let rows = self.rows(jobs, &options)?;
        self.insert_on(On::Conn(conn), &rows).await
    }

    /// Builds the row for `job` without inserting it, to insert with rows
    /// of other kinds or options through [`insert`](Self::insert).
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Resize { image_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::EnqueueOptions;
    ///
    /// let row = client.new_job(&Resize { image_id: 1 }, EnqueueOptions::new().queue("images"))?;
    /// assert_eq!((row.kind.as_str(), row.queue.as_str()), ("resize", "images"));
    /// # Ok(()) }
    /// ```
    pub fn new_job<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        job: &J,
        options: EnqueueOptions,
    ) -> Result<NewJob> {
        new_job_row::<DB, S, J>(job, options)
    }

    /// Inserts prepared rows, of any kinds and options. Returns one result
    /// per row, in order. Runs of rows without a unique key go in one
    /// statement each; unique rows one at a time, each committing alone.
    ///
    /// ```no_run
    /// # use offload::{Client, Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Resize { image_id: i64 }
    /// # impl Job<sqlx::Sqlite> for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(client: Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::{EnqueueOptions, NewJob, UniqueOptions};
    ///
    /// let rows = [
    ///     client.new_job(&Resize { image_id: 1 }, EnqueueOptions::new())?,
    ///     client.new_job(&Resize { image_id: 2 }, EnqueueOptions::new().unique(UniqueOptions::by_args()))?,
    ///     // A kind this process does not link.
    ///     NewJob::new("send_report", r#"{"to":"ops@example.com"}"#),
    /// ];
    /// let enqueued = client.insert(&rows).await?;
    /// assert_eq!(enqueued.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn insert(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        self.insert_on(On::Pool, jobs).await
    }

    /// [`insert`](Self::insert) on `conn`, normally the caller's
    /// transaction: all the rows, or none if it rolls back.
    ///
    /// ```no_run
    /// # async fn example(client: offload::Client<sqlx::Sqlite>) -> offload::Result<()> {
    /// use offload::{Backend, NewJob};
    ///
    /// let mut tx = sqlx::Sqlite::begin_write(client.pool()).await?;
    /// let mut row = NewJob::new("send_report", r#"{"to":"ops@example.com"}"#);
    /// row.queue = "reports".to_owned();
    /// let enqueued = client.insert_tx(&mut tx, &[row]).await?;
    /// tx.commit().await?;
    /// # let _ = enqueued; Ok(()) }
    /// ```
    pub async fn insert_tx(
        &self,
        conn: &mut DB::Connection,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>> {
        self.insert_on(On::Conn(conn), jobs).await
    }

    /// The rows for `jobs`, each with `options`.
    fn rows<J: Job<DB, S>, S: Send + Sync + 'static>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        options: &EnqueueOptions,
    ) -> Result<Vec<NewJob>> {
        jobs.into_iter()
            .map(|job| self.new_job(&job, options.clone()))
            .collect()
    }

    /// Where every enqueue ends: checks the rows (a bad one fails the lot
    /// before anything is inserted), inserts them in order, then wakes this
    /// process's producers of the queues that got a job.
    async fn insert_on(&self, on: On<'_, DB>, rows: &[NewJob]) -> Result<Vec<Enqueued>> {
        // Rows built by hand (`NewJob::new`) skip `new_job`'s check.
        for row in rows {
            row.validate()?;
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let results = match on {
            On::Pool => {
                let mut conn = self.pool.acquire().await?;
                self.write(&mut conn, rows).await?
            }
            On::Conn(conn) => self.write(conn, rows).await?,
        };
        wake::wake_all(
            rows.iter()
                .zip(&results)
                // A replaced holder may have become due now.
                .filter(|(_, result)| !result.duplicate || result.replaced)
                .map(|(row, _)| row.queue.as_str()),
        );
        Ok(results)
    }

    /// Inserts `rows` on `conn` in order: each run of plain rows in one
    /// statement, each unique row by itself (taking a held key inserts
    /// nothing and reports the holder).
    async fn write(&self, conn: &mut DB::Connection, rows: &[NewJob]) -> Result<Vec<Enqueued>> {
        let mut results = Vec::with_capacity(rows.len());
        let mut rest = rows;
        while let Some(first) = rest.first() {
            let done = if first.unique.is_some() {
                // Wakes other processes in its statement (PostgreSQL).
                results.push(insert_unique::<DB>(conn, first).await?);
                1
            } else {
                let plain = rest.iter().take_while(|row| row.unique.is_none()).count();
                self.write_plain(conn, &rest[..plain], &mut results).await?;
                plain
            };
            rest = &rest[done..];
        }
        Ok(results)
    }

    /// Inserts rows without a unique key in one statement, the fast path.
    /// Other processes are woken through the client's rate limiter (see
    /// `notifier.rs`): in this statement, or by one trailing `NOTIFY`.
    async fn write_plain(
        &self,
        conn: &mut DB::Connection,
        rows: &[NewJob],
        results: &mut Vec<Enqueued>,
    ) -> Result<()> {
        let queues = distinct_queues(rows);
        let notify_now = self.notifier.take_slot(&queues);
        let ids = DB::job_insert_many(conn, rows, notify_now).await?;
        if !notify_now {
            self.notifier
                .clone()
                .notify_later(self.pool.clone(), queues);
        }
        if ids.len() != rows.len() {
            return Err(Error::MissingInsertId);
        }
        results.extend(ids.into_iter().map(Enqueued::inserted));
        Ok(())
    }
}

/// The one result of a one-job enqueue.
fn only(results: Vec<Enqueued>) -> Result<Enqueued> {
    results.into_iter().next().ok_or(Error::MissingInsertId)
}
