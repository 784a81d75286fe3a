//! Rate-limited cross-process wake-ups for enqueues.
//!
//! On PostgreSQL a transaction that sent `NOTIFY` holds a database-wide lock
//! while it commits, so if every enqueue notified, enqueueing transactions
//! would commit one at a time (about one per disk flush). Instead, per queue
//! and client, the first enqueue in each short window notifies inside its
//! statement (delivered when it commits), and the later ones in that window
//! share one trailing `NOTIFY` sent outside any transaction at the window's
//! end, by which time they have usually committed. Polling covers the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Pool;
use tokio::time::Instant;

use crate::storage::{Backend, NewJob};

/// One notification per queue per window, plus one trailing.
pub(crate) const WINDOW: Duration = Duration::from_millis(10);

#[derive(Default)]
pub(crate) struct Notifier {
    queues: Mutex<HashMap<String, Slot>>,
}

struct Slot {
    last: Instant,
    trailing: bool,
}

impl Notifier {
    /// Whether this enqueue should notify itself: true when none of its
    /// queues notified within the window (and records that it now does).
    pub(crate) fn take_slot(&self, queues: &[String]) -> bool {
        let now = Instant::now();
        let mut slots = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let free = queues.iter().all(|queue| {
            slots
                .get(queue)
                .is_none_or(|slot| now.duration_since(slot.last) >= WINDOW)
        });
        if free {
            for queue in queues {
                let slot = slots.entry(queue.clone()).or_insert(Slot {
                    last: now,
                    trailing: false,
                });
                slot.last = now;
            }
        }
        free
    }

    /// Sends one `NOTIFY` for `queues` at the end of the window, unless one
    /// is already on its way.
    pub(crate) fn notify_later<DB: Backend>(self: Arc<Self>, pool: Pool<DB>, queues: Vec<String>) {
        if !DB::CROSS_PROCESS_WAKE {
            return;
        }
        let due: Vec<String> = {
            let mut slots = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .into_iter()
                .filter(|queue| {
                    let slot = slots.entry(queue.clone()).or_insert(Slot {
                        last: Instant::now(),
                        trailing: false,
                    });
                    !std::mem::replace(&mut slot.trailing, true)
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW).await;
            {
                let mut slots = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                for queue in &due {
                    if let Some(slot) = slots.get_mut(queue) {
                        slot.trailing = false;
                        slot.last = Instant::now();
                    }
                }
            }
            if let Err(error) = DB::queue_notify(&pool, &due).await {
                tracing::debug!(%error, "trailing wake-up failed; workers will poll");
            }
        });
    }
}

/// The distinct queues of `jobs`, in first-seen order.
pub(crate) fn distinct_queues(jobs: &[NewJob]) -> Vec<String> {
    let mut queues: Vec<String> = Vec::new();
    for job in jobs {
        if !queues.iter().any(|q| q == &job.queue) {
            queues.push(job.queue.clone());
        }
    }
    queues
}
