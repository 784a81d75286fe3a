//! In-process wake-ups: an enqueue wakes this process's producers of the
//! queue at once, whatever the backend. PostgreSQL's `NOTIFY` covers other
//! processes; polling covers everything else.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;

static QUEUES: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// Wakes every producer in this process.
pub(crate) fn wake_every() {
    for notify in lock(&QUEUES).values() {
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
