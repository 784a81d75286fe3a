//! The kit itself: built from the application's registry, it enqueues a
//! job for real and runs exactly that job through the worker's executor.

use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::Pool;
use tokio::sync::broadcast;

use super::runner::{Runner, Worked};
use crate::client::Client;
use crate::hooks::JobEvent;
use crate::job::Job;
use crate::options::EnqueueOptions;
use crate::registry::Registry;
use crate::storage::Backend;
use crate::worker::WorkerConfig;
use crate::Result;

/// Runs the application's jobs in tests, on a real database, through the
/// same code a [`Worker`](crate::Worker) runs them with: each job in its
/// own transaction, its completion guarded by its attempt, errors, panics
/// and timeouts mapped to retries, the registry's state and hooks included.
/// Nothing runs in the background: each call returns once the job's outcome
/// is written. Cheap to clone.
///
/// While it claims jobs the kit heartbeats as a worker of its own
/// (`offload-testing-…`), so that a real [`Worker`](crate::Worker)'s
/// rescuer on the same database leaves its jobs alone.
///
/// `S` is the registry's application state, so that
/// [`enqueued::<J>`](TestKit::enqueued) knows which `Job<DB, S>` `J` is.
///
/// ```no_run
/// use offload::testing::TestKit;
/// use offload::{AttemptOutcome, Job, JobContext, JobError, Registry};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct Archive { note_id: i64 }
///
/// impl Job<Sqlite> for Archive {
///     const KIND: &'static str = "archive";
///     async fn run(self, ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
///         sqlx::query("UPDATE notes SET archived = 1 WHERE id = ?1")
///             .bind(self.note_id)
///             .execute(ctx.tx().await?)
///             .await?;
///         Ok(())
///     }
/// }
///
/// # async fn example(pool: sqlx::SqlitePool) -> offload::Result<()> {
/// let kit = TestKit::new(pool.clone(), Registry::new().register::<Archive>());
/// let worked = kit.work(Archive { note_id: 7 }).await?;
/// assert_eq!(worked.outcome, AttemptOutcome::Completed);
/// # Ok(()) }
/// ```
pub struct TestKit<DB: Backend, S = ()> {
    pub(super) runner: Arc<Runner<DB>>,
    pub(super) client: Client<DB>,
    state: PhantomData<fn() -> S>,
}

impl<DB: Backend, S> Clone for TestKit<DB, S> {
    fn clone(&self) -> Self {
        Self {
            runner: self.runner.clone(),
            client: self.client.clone(),
            state: PhantomData,
        }
    }
}

impl<DB: Backend, S: Send + Sync + 'static> TestKit<DB, S> {
    /// A kit for the kinds, state and hooks of `registry`, on `pool`, with
    /// the default [`WorkerConfig`].
    pub fn new(pool: Pool<DB>, registry: Registry<DB, S>) -> Self {
        Self::with_config(pool, registry, WorkerConfig::default())
    }

    /// A kit whose runs follow `config` where a worker's single attempt
    /// does (its retention: a zero `completed` deletes completed jobs).
    /// Its queues, with every registered kind's own, are the ones
    /// [`inline`](TestKit::inline) serves.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Registry, Retention, WorkerConfig};
    /// # use std::time::Duration;
    /// # fn example(pool: sqlx::PgPool) {
    /// let config = WorkerConfig::default()
    ///     .queue("mail", 1)
    ///     .retention(Retention::default().completed(Duration::ZERO));
    /// let kit = TestKit::with_config(pool, Registry::new(), config);
    /// # let _ = kit; }
    /// ```
    pub fn with_config(pool: Pool<DB>, registry: Registry<DB, S>, config: WorkerConfig) -> Self {
        Self {
            client: Client::new(pool.clone()),
            runner: Arc::new(Runner::new(pool, registry.into_kinds(), config)),
            state: PhantomData,
        }
    }

    /// The client the kit enqueues with, for the code under test.
    pub fn client(&self) -> &Client<DB> {
        &self.client
    }

    /// The pool the kit runs on.
    pub fn pool(&self) -> &Pool<DB> {
        self.runner.pool()
    }

    /// The worker id stored on the jobs the kit runs.
    pub fn worker_id(&self) -> &str {
        self.runner.worker_id()
    }

    /// The queues [`inline`](TestKit::inline) serves: the configured ones
    /// and every registered kind's own, sorted.
    ///
    /// ```
    /// # use offload::{testing::TestKit, Job, JobContext, JobError, Registry, WorkerConfig};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Mail;
    /// # impl Job<sqlx::Sqlite> for Mail {
    /// #     const KIND: &'static str = "mail";
    /// #     const QUEUE: &'static str = "mail";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let registry = Registry::new().register::<Mail>();
    /// let kit = TestKit::with_config(pool, registry, WorkerConfig::default().queue("reports", 1));
    /// assert_eq!(kit.queues(), ["mail", "reports"]);
    /// assert!(kit.worker_id().starts_with("offload-testing-"));
    /// # }
    /// ```
    pub fn queues(&self) -> &[String] {
        self.runner.queues()
    }

    /// Subscribes to the end of every attempt the kit runs from now on, as
    /// [`WorkerHandle::events`](crate::WorkerHandle::events) does.
    ///
    /// ```no_run
    /// # async fn example(kit: offload::testing::TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// let mut events = kit.events();
    /// kit.drain("default").await?;
    /// while let Ok(event) = events.try_recv() {
    ///     println!("job {} {}", event.job.id, event.outcome.label());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.runner.events()
    }

    /// Enqueues `job` for real, then runs exactly that job once, now.
    /// Returns how the attempt ended and the job's row afterwards. A kind
    /// missing from the registry fails as on a worker that does not know
    /// it: retried, with an error naming the kind.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, AttemptOutcome, Job, JobContext, JobError, Registry};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: i64 }
    /// # impl Job<sqlx::Postgres> for Charge {
    /// #     const KIND: &'static str = "charge";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Postgres>) -> Result<(), JobError> {
    /// #         Err(JobError::failed("card declined"))
    /// #     }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Postgres>) -> offload::Result<()> {
    /// let worked = kit.work(Charge { cents: 500 }).await?;
    /// let AttemptOutcome::Retrying { error, .. } = &worked.outcome else {
    ///     panic!("expected a retry, got {:?}", worked.outcome);
    /// };
    /// assert_eq!(error, "card declined");
    /// # Ok(()) }
    /// ```
    pub async fn work<J: Job<DB, S>>(&self, job: J) -> Result<Worked> {
        self.work_with(job, EnqueueOptions::default()).await
    }

    /// [`work`](TestKit::work) with `options`. A job enqueued for later
    /// (`run_at`, `delay`) runs now all the same; a unique job whose key is
    /// held runs the job holding it.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, EnqueueOptions, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Remind;
    /// # impl Job<sqlx::Sqlite> for Remind {
    /// #     const KIND: &'static str = "remind";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// let options = EnqueueOptions::new().queue("reminders").max_attempts(1);
    /// let worked = kit.work_with(Remind, options).await?;
    /// assert_eq!(worked.job.unwrap().queue, "reminders");
    /// # Ok(()) }
    /// ```
    pub async fn work_with<J: Job<DB, S>>(
        &self,
        job: J,
        options: EnqueueOptions,
    ) -> Result<Worked> {
        let id = self.client.enqueue_with(job, options).await?.id;
        self.work_id(id).await
    }

    /// Runs job `id`, already enqueued (say by the code under test), once,
    /// now, whatever its `run_at`.
    ///
    /// # Panics
    /// If the job does not exist or is not waiting (scheduled, available or
    /// retryable): it is running elsewhere, or finished.
    ///
    /// ```no_run
    /// # use offload::{testing::TestKit, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendWelcome { to: String }
    /// # impl Job<sqlx::Sqlite> for SendWelcome {
    /// #     const KIND: &'static str = "send_welcome";
    /// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
    /// # }
    /// # async fn example(kit: TestKit<sqlx::Sqlite>) -> offload::Result<()> {
    /// let welcome = kit.assert_enqueued::<SendWelcome>(|job| job.args.to == "a@example.com").await;
    /// assert!(kit.work_id(welcome.id).await?.is_completed());
    /// # Ok(()) }
    /// ```
    pub async fn work_id(&self, id: i64) -> Result<Worked> {
        let Some(claimed) = self.runner.claim_id(id).await? else {
            let state = DB::job_get(self.pool(), id).await?.map(|job| job.state);
            match state {
                Some(state) => panic!(
                    "offload::testing: job {id} is {state}, so it cannot be worked: only scheduled, available and retryable jobs can"
                ),
                None => panic!("offload::testing: there is no job {id} to work"),
            }
        };
        self.runner.run(claimed).await
    }
}
