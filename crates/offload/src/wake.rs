//! In-process wake-ups: an enqueue wakes this process's producers of the
//! queue at once, whatever the backend. PostgreSQL's `NOTIFY` covers other
//! processes; polling covers everything else.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

static QUEUES: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);
/// A running job: its database's identity and its id (ids repeat across
/// databases served by one process).
type RunningKey = (Arc<str>, i64);

/// Cancellation signals of the jobs running in this process.
static RUNNING: LazyLock<Mutex<HashMap<RunningKey, CancellationToken>>> =
    LazyLock::new(Default::default);

/// Registers a running job's signal until the guard drops.
pub(crate) fn track_running(database: Arc<str>, id: i64, token: CancellationToken) -> RunningGuard {
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
pub(crate) fn cancel_running(database: &str, ids: &[i64]) {
    let running = lock(&RUNNING);
    for id in ids {
        if let Some(token) = running.get(&(Arc::from(database), *id)) {
            token.cancel();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The notifier producers of `queue` wait on.
pub(crate) fn notifier(queue: &str) -> Arc<Notify> {
    lock(&QUEUES).entry(queue.to_owned()).or_default().clone()
}

/// Wakes this process's producers of `queue`.
pub(crate) fn wake(queue: &str) {
    if let Some(notify) = lock(&QUEUES).get(queue) {
        notify.notify_waiters();
    }
}

/// Wakes each distinct queue once.
pub(crate) fn wake_all<'a>(queues: impl IntoIterator<Item = &'a str>) {
    let mut seen: Vec<&str> = Vec::new();
    for queue in queues {
        if !seen.contains(&queue) {
            seen.push(queue);
            wake(queue);
        }
    }
}
