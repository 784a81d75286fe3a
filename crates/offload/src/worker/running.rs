//! The jobs running in this process, by database and id, so that an
//! operator's cancel reaches the one running it, and a worker can tell a
//! job of its own from one a lost claim took (see `producer`). A job
//! handed to the completer stays listed until its completion is written.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio_util::sync::CancellationToken;

use super::wake::lock;
use crate::storage::Attempt;

/// A running job: its database's identity and its id (ids repeat across
/// databases served by one process).
type RunningKey = (Arc<str>, i64);

/// Cancellation signals of the jobs running in this process.
static RUNNING: LazyLock<Mutex<HashMap<RunningKey, CancellationToken>>> =
    LazyLock::new(Default::default);

/// Lists a claimed job with its cancellation signal (a child of `parent`)
/// until the guard drops.
pub(crate) fn track(database: &Arc<str>, id: i64, parent: &CancellationToken) -> RunningGuard {
    let key = (database.clone(), id);
    let token = parent.child_token();
    lock(&RUNNING).insert(key.clone(), token.clone());
    RunningGuard {
        key: Some(key),
        token,
    }
}

/// Removes a job from the running set when its attempt ends.
pub(crate) struct RunningGuard {
    key: Option<RunningKey>,
    token: CancellationToken,
}

impl RunningGuard {
    /// The job's cancellation signal.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Keeps the job listed after the guard drops, until
    /// [`completions_written`] for it.
    pub fn until_completion_written(mut self) {
        self.key = None;
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&RUNNING).remove(&key);
        }
    }
}

/// Unlists jobs whose completions the completer wrote (or gave up on).
pub(crate) fn completions_written(database: &Arc<str>, attempts: &[Attempt]) {
    let mut running = lock(&RUNNING);
    for attempt in attempts {
        running.remove(&(database.clone(), attempt.id));
    }
}

/// Whether job `id` of `database` runs in this process (or waits for its
/// completion to be written).
pub(crate) fn is_running(database: &Arc<str>, id: i64) -> bool {
    lock(&RUNNING).contains_key(&(database.clone(), id))
}

/// Signals cancellation to jobs of `ids` on `database` running in this
/// process. Their rows must already be `cancelled`, so that their
/// transactions roll back.
pub(crate) fn cancel(database: &str, ids: &[i64]) {
    let running = lock(&RUNNING);
    for id in ids {
        if let Some(token) = running.get(&(Arc::from(database), *id)) {
            token.cancel();
        }
    }
}
