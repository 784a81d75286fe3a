//! Panics the worker catches and records as an attempt's error (a job's
//! poll, its `ctx.blocking` work) stay out of the panic hook's output: the
//! stored error and one log line say it, not a stderr backtrace as well.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// Whether this thread is running a job's code right now.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();

/// Installs, once per process, a panic hook that stays silent inside a
/// job's code and hands every other panic to the hook installed before it.
pub(crate) fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !quiet() {
                previous(info);
            }
        }));
    });
}

/// Whether a panic now is a job's, caught and recorded by its executor.
pub(crate) fn quiet() -> bool {
    IN_JOB.with(Cell::get)
}

/// Marks this thread as running a job's code until dropped (also on
/// unwind), restoring the mark it found.
pub(crate) struct InJob {
    was: bool,
}

impl InJob {
    pub fn enter() -> Self {
        Self {
            was: IN_JOB.with(|mark| mark.replace(true)),
        }
    }
}

impl Drop for InJob {
    fn drop(&mut self) {
        IN_JOB.with(|mark| mark.set(self.was));
    }
}

/// Runs `work` marked as a job's code.
pub(crate) fn quietly<T>(work: impl FnOnce() -> T) -> T {
    let _mark = InJob::enter();
    work()
}
