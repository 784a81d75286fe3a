//! The jobs running in this process, by database and id, so that an
//! operator's cancel reaches the one running it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio_util::sync::CancellationToken;

use super::wake::lock;

/// A running job: its database's identity and its id (ids repeat across
/// databases served by one process).
type RunningKey = (Arc<str>, i64);

/// Cancellation signals of the jobs running in this process.
static RUNNING: LazyLock<Mutex<HashMap<RunningKey, CancellationToken>>> =
    LazyLock::new(Default::default);

/// Registers a running job's signal until the guard drops.
pub(crate) fn track(database: Arc<str>, id: i64, token: CancellationToken) -> RunningGuard {
    let key = (database, id);
    lock(&RUNNING).insert(key.clone(), token);
    RunningGuard(key)
}

/// Removes a job from the running set when its attempt ends.
pub(crate) struct RunningGuard(RunningKey);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        lock(&RUNNING).remove(&self.0);
    }
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
