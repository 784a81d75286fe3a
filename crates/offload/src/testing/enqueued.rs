//! What was enqueued: the jobs of one kind, with their args decoded, and
//! assertions over them that say what was there when they fail.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::kit::TestKit;
use crate::job::Job;
use crate::state::JobState;
use crate::storage::{Backend, JobRecord};
use crate::{Error, Result};

/// One job of kind `J` as stored, its args decoded as `J`.
///
/// ```no_run
/// # use offload::{testing::TestKit, Job, JobContext, JobError, JobState};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
/// # impl Job<sqlx::Sqlite> for SendWelcome {
/// #     const KIND: &'static str = "send_welcome";
/// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
/// # }
/// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
/// let welcomes = kit.enqueued::<SendWelcome>().await?;
/// assert_eq!(welcomes.len(), 1);
/// assert_eq!(welcomes[0].args.to, "a@example.com");
/// assert_eq!(welcomes[0].state, JobState::Available);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EnqueuedJob<J> {
    /// The job's id.
    pub id: i64,
    /// Its args, decoded.
    pub args: J,
    /// Its queue.
    pub queue: String,
    /// Lower runs first.
    pub priority: i16,
    /// Its state now.
    pub state: JobState,
    /// Attempts made so far.
    pub attempt: i32,
    /// Attempts before it is discarded.
    pub max_attempts: i32,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// Its labels.
    pub tags: Vec<String>,
    /// Its unique key, if enqueued as unique.
    pub unique_key: Option<String>,
}

impl<DB: Backend, S: Send + Sync + 'static> TestKit<DB, S> {
    /// Every job of kind `J` in the database, oldest first, in any state
    /// (check [`EnqueuedJob::state`] for the ones still waiting).
    ///
    /// Fails with [`Error::CorruptRow`] if a job of the kind has args that
    /// do not decode as `J`.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError, JobState};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Reindex { shop: i64 }
    /// # impl Job<sqlx::Postgres> for Reindex {
    /// #     const KIND: &'static str = "reindex";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Postgres>) -> offload::Result<()> {
    /// let shops: Vec<i64> = kit
    ///     .enqueued::<Reindex>()
    ///     .await?
    ///     .into_iter()
    ///     .filter(|job| job.state == JobState::Available)
    ///     .map(|job| job.args.shop)
    ///     .collect();
    /// assert_eq!(shops, [7, 9]);
    /// # Ok(()) }
    /// ```
    pub async fn enqueued<J: Job<DB, S>>(&self) -> Result<Vec<EnqueuedJob<J>>> {
        let mut conn = self.pool().acquire().await?;
        self.enqueued_tx::<J>(&mut conn).await
    }

    /// [`enqueued`](TestKit::enqueued) read on `conn`: inside the caller's
    /// transaction it sees the jobs that transaction enqueued, before it
    /// commits.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
    /// # impl Job<sqlx::Postgres> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Postgres>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = kit.pool().begin().await?;
    /// kit.client().enqueue_tx(&mut tx, SendWelcome { to: "a@example.com".into() }).await?;
    /// assert_eq!(kit.enqueued_tx::<SendWelcome>(&mut tx).await?.len(), 1);
    /// tx.rollback().await?;
    /// assert!(kit.enqueued::<SendWelcome>().await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn enqueued_tx<J: Job<DB, S>>(
        &self,
        conn: &mut DB::Connection,
    ) -> Result<Vec<EnqueuedJob<J>>> {
        DB::job_list_of_kind(conn, J::KIND)
            .await?
            .into_iter()
            .map(|(job, key)| decode::<J>(job, key))
            .collect()
    }

    /// Asserts that some job of kind `J` matches `matches`, and returns the
    /// first (oldest) that does.
    ///
    /// # Panics
    /// If none does, listing every job of kind `J` there is; or if the
    /// database cannot be read.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError, JobState};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     const QUEUE: &'static str = "mail";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) {
    /// let welcome = kit
    ///     .assert_enqueued::<SendWelcome>(|job| job.args.to == "a@example.com" && job.state == JobState::Available)
    ///     .await;
    /// assert_eq!(welcome.queue, "mail");
    /// # }
    /// ```
    pub async fn assert_enqueued<J: Job<DB, S>>(
        &self,
        matches: impl Fn(&EnqueuedJob<J>) -> bool,
    ) -> EnqueuedJob<J> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .unwrap_or_else(|error| panic!("offload::testing: no connection: {error}"));
        self.assert_enqueued_tx::<J>(&mut conn, matches).await
    }

    /// [`assert_enqueued`](TestKit::assert_enqueued) read on `conn`, the
    /// caller's transaction.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Audit { user: i64 }
    /// # impl Job<sqlx::Sqlite> for Audit {
    /// #     const KIND: &'static str = "audit";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> Result<(), Box<dyn std::error::Error>> {
    /// use offload::Backend;
    /// let mut tx = sqlx::Sqlite::begin_write(kit.pool()).await?;
    /// kit.client().enqueue_tx(&mut tx, Audit { user: 1 }).await?;
    /// // EnqueuedJob, though not committed yet.
    /// kit.assert_enqueued_tx::<Audit>(&mut tx, |job| job.args.user == 1).await;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn assert_enqueued_tx<J: Job<DB, S>>(
        &self,
        conn: &mut DB::Connection,
        matches: impl Fn(&EnqueuedJob<J>) -> bool,
    ) -> EnqueuedJob<J> {
        let jobs = read::<DB, J>(conn, J::KIND).await;
        let found = jobs
            .iter()
            .position(|(_, decoded)| decoded.as_ref().is_ok_and(&matches));
        match found {
            Some(at) => match jobs.into_iter().nth(at) {
                Some((_, Ok(decoded))) => decoded,
                _ => unreachable!("the position found holds a decoded job"),
            },
            None => panic!(
                "offload::testing: no job of kind `{}` matches{}",
                J::KIND,
                listing(&jobs)
            ),
        }
    }

    /// Asserts that no job of kind `J` exists, in any state.
    ///
    /// # Panics
    /// If one does, listing them; or if the database cannot be read.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) {
    /// // A signup that failed validation sends no welcome.
    /// kit.assert_not_enqueued::<SendWelcome>().await;
    /// # }
    /// ```
    pub async fn assert_not_enqueued<J: Job<DB, S>>(&self) {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .unwrap_or_else(|error| panic!("offload::testing: no connection: {error}"));
        self.assert_not_enqueued_tx::<J>(&mut conn).await;
    }

    /// [`assert_not_enqueued`](TestKit::assert_not_enqueued) read on
    /// `conn`, the caller's transaction.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Audit { user: i64 }
    /// # impl Job<sqlx::Postgres> for Audit {
    /// #     const KIND: &'static str = "audit";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Postgres>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = kit.pool().begin().await?;
    /// kit.assert_not_enqueued_tx::<Audit>(&mut tx).await;
    /// tx.rollback().await?;
    /// # Ok(()) }
    /// ```
    pub async fn assert_not_enqueued_tx<J: Job<DB, S>>(&self, conn: &mut DB::Connection) {
        let jobs = read::<DB, J>(conn, J::KIND).await;
        assert!(
            jobs.is_empty(),
            "offload::testing: expected no job of kind `{}`{}",
            J::KIND,
            listing(&jobs)
        );
    }
}

/// A job row with its args decoded as `J`, or the reason they do not.
type Read<J> = (JobRecord, Result<EnqueuedJob<J>>);

/// Every job of `kind`, for an assertion: panics if it cannot read.
async fn read<DB: Backend, J: DeserializeOwned>(
    conn: &mut DB::Connection,
    kind: &str,
) -> Vec<Read<J>> {
    let jobs = DB::job_list_of_kind(conn, kind)
        .await
        .unwrap_or_else(|error| panic!("offload::testing: could not read the jobs: {error}"));
    jobs.into_iter()
        .map(|(job, key)| (job.clone(), decode::<J>(job, key)))
        .collect()
}

fn decode<J: DeserializeOwned>(
    job: JobRecord,
    unique_key: Option<String>,
) -> Result<EnqueuedJob<J>> {
    let args = J::deserialize(&job.args).map_err(|error| Error::CorruptRow {
        table: "offload_jobs",
        detail: format!(
            "job {} of kind `{}` has args that do not decode: {error}",
            job.id, job.kind
        ),
    })?;
    Ok(EnqueuedJob {
        id: job.id,
        args,
        queue: job.queue,
        priority: job.priority,
        state: job.state,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        run_at: job.run_at,
        tags: job.tags,
        unique_key,
    })
}

/// What a failed assertion shows: every job of the kind, one a line.
fn listing<J>(jobs: &[Read<J>]) -> String {
    if jobs.is_empty() {
        return ": none is enqueued".to_owned();
    }
    let mut out = format!("; {} enqueued:", jobs.len());
    for (job, decoded) in jobs {
        let _ = write!(
            out,
            "\n  job {} ({}, queue `{}`, priority {}, attempt {}/{}, run_at {}) args {}",
            job.id,
            job.state,
            job.queue,
            job.priority,
            job.attempt,
            job.max_attempts,
            job.run_at,
            job.args
        );
        if !job.tags.is_empty() {
            let _ = write!(out, " tags {:?}", job.tags);
        }
        if let Ok(EnqueuedJob {
            unique_key: Some(key),
            ..
        }) = decoded
        {
            let _ = write!(out, " unique key `{key}`");
        }
        if let Err(error) = decoded {
            let _ = write!(out, " [{error}]");
        }
    }
    out
}
