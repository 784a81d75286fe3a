//! What a worker runs: job kinds mapped to their code, the application
//! state they share, the hooks around their attempts and the periodic
//! schedules.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::Pool;
use tokio_util::sync::CancellationToken;

use crate::context::JobContext;
use crate::hooks::{JobHook, JobInfo};
use crate::job::{Job, JobError};
use crate::periodic::PeriodicJob;
use crate::schedule::Periodic;
use crate::storage::group::{JobTx, WriteGroup};
use crate::storage::{Backend, ClaimedJob};

/// The job kinds a worker can run on backend `DB`, with the application
/// state `S` every job's context reaches ([`JobContext::state`]).
///
/// ```
/// # use offload::{Job, JobContext, JobError, Registry};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Ping;
/// # impl Job<sqlx::Sqlite> for Ping {
/// #     const KIND: &'static str = "ping";
/// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
/// # }
/// let registry = Registry::<sqlx::Sqlite>::new().register::<Ping>();
/// assert_eq!(registry.kinds().collect::<Vec<_>>(), ["ping"]);
/// ```
pub struct Registry<DB: Backend, S = ()> {
    state: Arc<S>,
    kinds: Kinds<DB>,
}

/// A registry with its state type erased: what a running worker holds.
pub(crate) struct Kinds<DB: Backend> {
    pub handlers: HashMap<&'static str, Arc<dyn Handler<DB>>>,
    pub hooks: Arc<[Arc<dyn JobHook>]>,
    pub periodic: Vec<Periodic>,
}

impl<DB: Backend> Default for Registry<DB, ()> {
    fn default() -> Self {
        Self::with_state(())
    }
}

impl<DB: Backend> Registry<DB, ()> {
    /// An empty registry, for jobs that need no application state.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<DB: Backend, S: Send + Sync + 'static> Registry<DB, S> {
    /// An empty registry whose jobs all reach `state` through
    /// [`JobContext::state`]: the place for a mail client, an HTTP client
    /// or settings, instead of a `static`.
    ///
    /// ```
    /// use offload::{Job, JobContext, JobError, Registry};
    /// use serde::{Deserialize, Serialize};
    /// use sqlx::Sqlite;
    ///
    /// struct App {
    ///     sender_address: String,
    /// }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SendWelcome { to: String }
    ///
    /// impl Job<Sqlite, App> for SendWelcome {
    ///     const KIND: &'static str = "send_welcome";
    ///     async fn run(self, ctx: &mut JobContext<Sqlite, App>) -> Result<(), JobError> {
    ///         let from = &ctx.state().sender_address;
    ///         tracing::info!(%from, to = %self.to, "sending");
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let registry = Registry::<Sqlite, App>::with_state(App { sender_address: "hi@example.com".into() })
    ///     .register::<SendWelcome>();
    /// # let _ = registry;
    /// ```
    pub fn with_state(state: S) -> Self {
        Self {
            state: Arc::new(state),
            kinds: Kinds {
                handlers: HashMap::new(),
                hooks: Arc::new([]),
                periodic: Vec::new(),
            },
        }
    }

    /// Adds job kind `J`.
    ///
    /// # Panics
    /// If another type already registered the same [`Job::KIND`]: two types
    /// cannot share a kind, and this is a bug to catch at start-up.
    pub fn register<J: Job<DB, S>>(mut self) -> Self {
        let handler = Typed::<J, S> {
            state: self.state.clone(),
            job: PhantomData,
        };
        let previous = self.kinds.handlers.insert(J::KIND, Arc::new(handler));
        assert!(
            previous.is_none(),
            "job kind `{}` is registered twice",
            J::KIND
        );
        self
    }

    /// Adds a hook run around every attempt; hooks run in the order added.
    pub fn hook(mut self, hook: impl JobHook) -> Self {
        let mut hooks = self.kinds.hooks.to_vec();
        hooks.push(Arc::new(hook));
        self.kinds.hooks = hooks.into();
        self
    }

    /// Adds a periodic job (replacing one of the same name). Its kind need
    /// not be registered here: any worker on the database that serves its
    /// queue runs it.
    pub fn periodic<J: Job<DB, S>>(mut self, job: PeriodicJob<J>) -> Self {
        let job = job.into_periodic::<DB, S>();
        self.kinds
            .periodic
            .retain(|other| other.name() != job.name());
        self.kinds.periodic.push(job);
        self
    }

    /// The registered kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.handlers.keys().copied()
    }

    /// The periodic jobs' names, in the order added.
    pub fn periodic_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kinds.periodic.iter().map(Periodic::name)
    }

    pub(crate) fn into_kinds(self) -> Kinds<DB> {
        self.kinds
    }
}

impl<DB: Backend> Kinds<DB> {
    pub(crate) fn get(&self, kind: &str) -> Option<&Arc<dyn Handler<DB>>> {
        self.handlers.get(kind)
    }
}

/// One attempt of a job's code, ended: its result, and the transaction it
/// opened (still open, for the caller to commit with the completion or roll
/// back).
pub(crate) struct Attempted<DB: Backend> {
    pub result: Result<(), JobError>,
    pub tx: Option<JobTx<DB>>,
}

/// What one attempt of a job's code needs.
pub(crate) struct AttemptInput<DB: Backend> {
    /// The claimed row, its args taken out.
    pub job: ClaimedJob,
    /// The args, as JSON.
    pub args: String,
    pub pool: Pool<DB>,
    /// The worker's write group, if it commits in groups.
    pub group: Option<Arc<WriteGroup<DB>>>,
    /// Fires when the job is asked to stop.
    pub cancel: CancellationToken,
    pub hooks: Arc<[Arc<dyn JobHook>]>,
    pub info: Arc<JobInfo>,
}

/// A job kind with its type (and the state's) erased.
pub(crate) trait Handler<DB: Backend>: Send + Sync {
    /// Decodes the args and runs the job's code once, inside the hooks'
    /// `around`, catching panics and enforcing the kind's timeout.
    fn attempt(&self, input: AttemptInput<DB>) -> BoxFuture<'static, Attempted<DB>>;
    /// The queue the kind runs on unless an enqueue names another.
    fn queue(&self) -> &'static str;
    fn backoff(&self, attempt: i32) -> Duration;
    /// The kind's [`Job::TIMEOUT`], which the worker's watchdog also
    /// enforces when the job's thread is blocked.
    fn timeout(&self) -> Option<Duration>;
}

struct Typed<J, S> {
    state: Arc<S>,
    job: PhantomData<fn() -> J>,
}

impl<DB: Backend, S: Send + Sync + 'static, J: Job<DB, S>> Handler<DB> for Typed<J, S> {
    fn attempt(&self, input: AttemptInput<DB>) -> BoxFuture<'static, Attempted<DB>> {
        let state = self.state.clone();
        let AttemptInput {
            job,
            args,
            pool,
            group,
            cancel,
            hooks,
            info,
        } = input;
        Box::pin(async move {
            let decoded = match serde_json::from_str::<J>(&args) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let reason = format!("args do not decode as job kind `{}`: {error}", J::KIND);
                    return Attempted {
                        result: Err(JobError::Discard(reason)),
                        tx: None,
                    };
                }
            };
            let mut ctx = JobContext::new(job, pool, group, cancel, state);
            let mut result = None;
            let attempt: BoxFuture<'_, ()> = Box::pin(async {
                result = Some(run_guarded(decoded, &mut ctx).await);
            });
            let wrapped = hooks
                .iter()
                .rev()
                .fold(attempt, |next, hook| hook.around(&info, next));
            let ran = AssertUnwindSafe(wrapped).catch_unwind().await;
            if let Err(panic) = ran {
                result = Some(Err(JobError::from_panic("a hook panicked", panic.as_ref())));
            }
            let result = result.unwrap_or_else(|| {
                Err(JobError::failed(
                    "a hook's `around` returned without running the attempt",
                ))
            });
            Attempted {
                result,
                tx: ctx.take_tx(),
            }
        })
    }

    fn queue(&self) -> &'static str {
        J::QUEUE
    }

    fn backoff(&self, attempt: i32) -> Duration {
        J::backoff(attempt)
    }

    fn timeout(&self) -> Option<Duration> {
        J::TIMEOUT
    }
}

/// Runs `job` once: a panic becomes a failure, and so does running past
/// [`Job::TIMEOUT`] (the job's future is dropped).
async fn run_guarded<DB: Backend, S: Send + Sync + 'static, J: Job<DB, S>>(
    job: J,
    ctx: &mut JobContext<DB, S>,
) -> Result<(), JobError> {
    let run = AssertUnwindSafe(job.run(ctx)).catch_unwind();
    let result = match J::TIMEOUT {
        Some(limit) => tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Ok(Err(JobError::failed(format!("timed out after {limit:?}"))))),
        None => run.await,
    };
    result.unwrap_or_else(|panic| Err(JobError::from_panic("panicked", panic.as_ref())))
}
