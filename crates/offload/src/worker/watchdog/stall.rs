//! Stall detection: a task on the worker's runtime beats a pulse; the
//! watchdog, on its own thread, notices when the beats stop (every thread of
//! the runtime is busy in one poll) and which job has been inside one poll
//! for too long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::super::metrics;
use super::attempts::Attempts;
use super::clock::millis_since_start;

/// How often the pulse beats, and the watchdog checks.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// A pulse (or one job's poll) this late means a thread is blocked: no
/// `await` in async code takes anywhere near a second between yields.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(1);

/// The last beat of the worker's runtime, in ms since start.
#[derive(Default)]
pub(crate) struct Pulse {
    last: AtomicU64,
}

impl Pulse {
    fn beat(&self) {
        self.last.store(millis_since_start(), Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        Duration::from_millis(
            millis_since_start().saturating_sub(self.last.load(Ordering::Relaxed)),
        )
    }
}

/// Beats `pulse` on the current (the worker's) runtime until `stop`. When
/// the runtime shuts down, this task is dropped, and `gone` tells the
/// watchdog that the worker is gone with it.
pub(crate) fn spawn_beat(pulse: Arc<Pulse>, stop: CancellationToken, gone: CancellationToken) {
    pulse.beat();
    tokio::spawn(async move {
        let _gone = gone.drop_guard();
        loop {
            pulse.beat();
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}

/// The watchdog's view of the pulse: reports each stall once when it
/// starts and once when it ends.
#[derive(Default)]
pub(crate) struct StallDetector {
    stalled: bool,
}

impl StallDetector {
    pub fn check(&mut self, pulse: &Pulse, attempts: &Attempts) {
        for watched in attempts.snapshot() {
            if let Some(ran) = watched.long_poll(STALL_AFTER) {
                let facts = &watched.facts;
                tracing::warn!(
                    id = facts.key.id,
                    kind = %facts.kind,
                    queue = %facts.queue,
                    attempt = facts.key.attempt,
                    blocked_for = ?ran,
                    "a job has been inside one poll for {ran:?}: it is blocking its thread (run blocking work with spawn_blocking)"
                );
                metrics::blocking_poll(&facts.kind);
            }
        }
        let silent = pulse.silent_for();
        if silent > STALL_AFTER {
            if !self.stalled {
                self.stalled = true;
                tracing::warn!(
                    stalled_for = ?silent,
                    "the worker's runtime has run no task for {silent:?}: a job is blocking its thread (run blocking work with spawn_blocking); heartbeats and timeouts go on from the watchdog's thread"
                );
                metrics::runtime_stalled();
            }
            metrics::runtime_stall(silent);
        } else if self.stalled {
            self.stalled = false;
            tracing::info!("the worker's runtime runs tasks again");
            metrics::runtime_stall(Duration::ZERO);
        }
    }
}
