//! Maps job kinds to the code that runs them.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::context::JobContext;
use crate::job::{Job, JobError};
use crate::storage::Backend;

/// The job kinds a worker can run.
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
pub struct Registry<DB: Backend> {
    handlers: HashMap<&'static str, Arc<dyn Handler<DB>>>,
}

impl<DB: Backend> Default for Registry<DB> {
    fn default() -> Self {
        Self {
            handlers: HashMap::new(),
        }
    }
}

impl<DB: Backend> Registry<DB> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds job kind `J`.
    ///
    /// # Panics
    /// If another type already registered the same [`Job::KIND`]: two types
    /// cannot share a kind, and this is a bug to catch at start-up.
    pub fn register<J: Job<DB>>(mut self) -> Self {
        let previous = self
            .handlers
            .insert(J::KIND, Arc::new(Typed::<J>(PhantomData)));
        assert!(
            previous.is_none(),
            "job kind `{}` is registered twice",
            J::KIND
        );
        self
    }

    /// The registered kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Arc<dyn Handler<DB>>> {
        self.handlers.get(kind)
    }
}

/// A job kind with its type erased.
pub(crate) trait Handler<DB: Backend>: Send + Sync {
    /// Decodes `args` and runs the job.
    fn run<'a>(
        &self,
        args: &str,
        ctx: &'a mut JobContext<DB>,
    ) -> BoxFuture<'a, Result<(), JobError>>;
    fn timeout(&self) -> Option<Duration>;
    fn backoff(&self, attempt: i32) -> Duration;
}

struct Typed<J>(PhantomData<fn() -> J>);

impl<DB: Backend, J: Job<DB>> Handler<DB> for Typed<J> {
    fn run<'a>(
        &self,
        args: &str,
        ctx: &'a mut JobContext<DB>,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        match serde_json::from_str::<J>(args) {
            Ok(job) => Box::pin(job.run(ctx)),
            Err(error) => {
                let reason = format!("args do not decode as job kind `{}`: {error}", J::KIND);
                Box::pin(std::future::ready(Err(JobError::Discard(reason))))
            }
        }
    }

    fn timeout(&self) -> Option<Duration> {
        J::TIMEOUT
    }

    fn backoff(&self, attempt: i32) -> Duration {
        J::backoff(attempt)
    }
}
