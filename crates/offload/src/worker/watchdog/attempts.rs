//! The attempts running on this worker, as the watchdog sees them: when each
//! must end by, whether its future is inside a poll and since when, and who
//! decides its outcome (its executor, or the watchdog when the job's thread
//! is blocked past its timeout or the shutdown deadline).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::super::wake::lock;
use super::clock::millis_since_start;
use crate::storage::{Attempt, Outcome};

/// How long past its timeout a job's own (in-runtime) timeout gets to end
/// it before the watchdog does: the two never race while the runtime runs.
pub(crate) const TIMEOUT_SLACK: Duration = Duration::from_millis(500);

/// What the watchdog needs to know of one attempt.
pub(crate) struct AttemptFacts {
    pub key: Attempt,
    pub kind: String,
    pub queue: String,
    pub max_attempts: i32,
    /// The kind's timeout, if it has one.
    pub timeout: Option<Duration>,
    /// The back-off before its next attempt, should this one time out.
    pub backoff: Duration,
    /// The job's own cancellation signal.
    pub cancel: CancellationToken,
}

/// One running attempt.
pub(crate) struct Watched {
    pub facts: AttemptFacts,
    deadline: Option<Instant>,
    /// When its current poll began (ms since start, plus one), 0 between polls.
    poll_since: AtomicU64,
    /// Whether the current long poll was already reported.
    reported: AtomicBool,
    decided: Mutex<Decision>,
    /// When the executor claimed the outcome (ms since start, plus one), 0
    /// before: from then on it is writing it to the database.
    recording_since: AtomicU64,
    /// Cancelled when the watchdog takes over recording the outcome from
    /// an executor whose database stopped answering.
    taken_over: CancellationToken,
}

/// Who decides how an attempt ended.
enum Decision {
    Running,
    /// Its executor: the watchdog keeps out.
    Executor,
    /// The watchdog, which recorded this outcome.
    Watchdog(Outcome),
}

impl Watched {
    /// Marks the start of a poll of the job's future.
    pub fn poll_started(&self) {
        self.poll_since
            .store(millis_since_start() + 1, Ordering::Relaxed);
    }

    /// Marks the end of a poll.
    pub fn poll_ended(&self) {
        self.poll_since.store(0, Ordering::Relaxed);
        self.reported.store(false, Ordering::Relaxed);
    }

    /// How long the current poll has run, once per poll that ran longer
    /// than `limit`.
    pub fn long_poll(&self, limit: Duration) -> Option<Duration> {
        let since = self.poll_since.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let ran = Duration::from_millis(millis_since_start().saturating_sub(since - 1));
        (ran > limit && !self.reported.swap(true, Ordering::Relaxed)).then_some(ran)
    }

    /// Claims the outcome for the executor. `Err` holds the outcome the
    /// watchdog already recorded.
    pub fn claim_for_executor(&self) -> Result<(), Outcome> {
        let mut decided = lock(&self.decided);
        match &*decided {
            Decision::Watchdog(outcome) => Err(outcome.clone()),
            _ => {
                *decided = Decision::Executor;
                self.recording_since
                    .store(millis_since_start() + 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Fires when the watchdog took the recording over; the executor then
    /// stops waiting for the database and reports this outcome.
    pub async fn taken_over(&self) -> Outcome {
        self.taken_over.cancelled().await;
        match &*lock(&self.decided) {
            Decision::Watchdog(outcome) => outcome.clone(),
            _ => unreachable!("taken over only with the watchdog's outcome"),
        }
    }

    /// Claims the outcome from an executor that has been recording it for
    /// longer than `limit`.
    fn take_from_stuck_executor(&self, limit: Duration, outcome: &Outcome) -> bool {
        let since = self.recording_since.load(Ordering::Relaxed);
        if since == 0 {
            return false;
        }
        let recording = Duration::from_millis(millis_since_start().saturating_sub(since - 1));
        let mut decided = lock(&self.decided);
        if recording <= limit || !matches!(*decided, Decision::Executor) {
            return false;
        }
        *decided = Decision::Watchdog(outcome.clone());
        self.taken_over.cancel();
        true
    }

    /// Claims the outcome for the watchdog, unless the executor has.
    fn claim_for_watchdog(&self, outcome: &Outcome) -> bool {
        let mut decided = lock(&self.decided);
        if !matches!(*decided, Decision::Running) {
            return false;
        }
        *decided = Decision::Watchdog(outcome.clone());
        true
    }
}

/// Every attempt running on one worker.
#[derive(Default)]
pub(crate) struct Attempts {
    running: Mutex<HashMap<Attempt, Arc<Watched>>>,
}

impl Attempts {
    /// Watches an attempt until the guard drops.
    pub fn watch(self: &Arc<Self>, facts: AttemptFacts) -> WatchGuard {
        let deadline = facts
            .timeout
            .map(|limit| Instant::now() + limit + TIMEOUT_SLACK);
        let key = facts.key;
        let watched = Arc::new(Watched {
            facts,
            deadline,
            poll_since: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            decided: Mutex::new(Decision::Running),
            recording_since: AtomicU64::new(0),
            taken_over: CancellationToken::new(),
        });
        lock(&self.running).insert(key, watched.clone());
        WatchGuard {
            attempts: self.clone(),
            watched,
        }
    }

    /// Every running attempt, for the watchdog's checks.
    pub fn snapshot(&self) -> Vec<Arc<Watched>> {
        lock(&self.running).values().cloned().collect()
    }

    /// Takes over the attempts past their deadline, with the outcome each is
    /// to be recorded with.
    pub fn take_overdue(&self) -> Vec<(Arc<Watched>, Outcome)> {
        let now = Instant::now();
        self.snapshot()
            .into_iter()
            .filter(|watched| watched.deadline.is_some_and(|at| at <= now))
            .filter_map(|watched| {
                let outcome = timed_out(&watched.facts);
                watched
                    .claim_for_watchdog(&outcome)
                    .then_some((watched, outcome))
            })
            .collect()
    }

    /// Takes over recording the outcome of attempts whose executor has been
    /// waiting on the database for longer than `database_timeout`: they go
    /// back to the queue, a no-op if their completion did commit (the write
    /// is guarded by the attempt).
    pub fn take_unrecorded(
        &self,
        database_timeout: Option<Duration>,
    ) -> Vec<(Arc<Watched>, Outcome)> {
        let Some(limit) = database_timeout else {
            return Vec::new();
        };
        let outcome = Outcome::Requeue {
            reason: format!("the worker's database did not answer within {limit:?} while it recorded the attempt's outcome (database_timeout)"),
        };
        self.snapshot()
            .into_iter()
            .filter(|watched| watched.take_from_stuck_executor(limit, &outcome))
            .map(|watched| (watched, outcome.clone()))
            .collect()
    }

    /// Takes over every attempt still running at the shutdown deadline.
    pub fn take_all(&self) -> Vec<(Arc<Watched>, Outcome)> {
        self.snapshot()
            .into_iter()
            .filter_map(|watched| {
                let outcome = Outcome::Requeue {
                    reason: "interrupted by shutdown: the job did not return by the shutdown deadline (its thread was blocked)".to_owned(),
                };
                watched
                    .claim_for_watchdog(&outcome)
                    .then_some((watched, outcome))
            })
            .collect()
    }
}

/// The outcome of an attempt that ran past its timeout, by the executor's
/// rules: discarded on its last attempt, retried after its back-off
/// otherwise.
fn timed_out(facts: &AttemptFacts) -> Outcome {
    let limit = facts.timeout.unwrap_or_default();
    let error = format!(
        "timed out after {limit:?}; the job did not return, so the worker's watchdog recorded it (a blocking call holds its thread: run blocking work with spawn_blocking)"
    );
    if facts.key.attempt >= facts.max_attempts {
        Outcome::Discard { error }
    } else {
        Outcome::Retry {
            error,
            at: crate::backoff::after(facts.backoff),
        }
    }
}

/// Keeps an attempt watched while its executor runs it.
pub(crate) struct WatchGuard {
    attempts: Arc<Attempts>,
    watched: Arc<Watched>,
}

impl WatchGuard {
    pub fn watched(&self) -> &Arc<Watched> {
        &self.watched
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        lock(&self.attempts.running).remove(&self.watched.facts.key);
    }
}
