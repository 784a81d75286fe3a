//! Queue limits over every worker, as both backends read and apply them:
//! the settings a queue's row holds, what a claim found in use, and the
//! arithmetic that turns the two into how many jobs the claim may take.

use std::time::Duration;

use super::rows::ClaimedJob;
use crate::RateLimit;

/// The limits a queue has over every worker on the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most of its jobs running at once.
    pub global: Option<usize>,
    /// Most of its jobs starting per period.
    pub rate: Option<RateLimit>,
}

impl QueueLimits {
    /// From the queue row's columns; a value out of range reads as unset.
    pub(crate) fn from_columns(
        global: Option<i64>,
        rate_limit: Option<i64>,
        rate_period_ms: Option<i64>,
    ) -> Self {
        Self {
            global: global.and_then(|n| usize::try_from(n).ok()),
            rate: RateLimit::from_columns(rate_limit, rate_period_ms),
        }
    }

    /// Whether a claim must count before it takes jobs.
    pub fn any(&self) -> bool {
        self.global.is_some() || self.rate.is_some()
    }

    /// How many of `max` jobs a claim may take given what is in use, and
    /// the limit that held it to fewer, if one did.
    pub(crate) fn room(&self, max: usize, used: &LimitUse) -> (usize, Option<Throttle>) {
        let mut room = max;
        let mut throttled = None;
        if let Some(global) = self.global {
            let free = usize::try_from(used.running).map_or(global, |n| global.saturating_sub(n));
            if free < room {
                room = free;
                throttled = Some(Throttle::Global);
            }
        }
        if let (Some(rate), true) = (self.rate, room > 0) {
            // The window before now, with no upper bound, holds the limit in
            // every window, whatever order claimers' clocks and commits took.
            let started = usize::try_from(used.rate_started).unwrap_or(0);
            let free =
                usize::try_from(rate.limit()).map_or(0, |n: usize| n.saturating_sub(started));
            if free < room {
                room = free;
                let free_in = used
                    .rate_oldest_age
                    .map_or(Duration::ZERO, |age| rate.period().saturating_sub(age));
                throttled = Some(Throttle::Rate { free_in });
            }
        }
        (room, throttled)
    }
}

/// What a claim found in use, counted after it took its turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LimitUse {
    /// The queue's jobs running now.
    pub running: i64,
    /// Starts in the rate limit's window before now.
    pub rate_started: i64,
    /// How long ago the window's oldest start was.
    pub rate_oldest_age: Option<Duration>,
}

/// A queue's settings row: whether it is paused, its limits, and the starts
/// its rate limit counted in the current window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Queue name.
    pub name: String,
    /// Whether workers skip it.
    pub paused: bool,
    /// Its global and rate limits.
    pub limits: QueueLimits,
    /// Starts in the rate limit's current window (0 without one).
    pub rate_started: i64,
}

/// What a claim took, and which limit, if any, held it to fewer jobs than
/// were asked for.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The jobs claimed.
    pub jobs: Vec<ClaimedJob>,
    /// The limit that cut the claim short.
    pub throttled: Option<Throttle>,
}

/// A limit that cut a claim short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The queue's global limit: as many of its jobs run as it allows.
    Global,
    /// The queue's rate limit: its window is full until `free_in` from now.
    Rate {
        /// When the window's oldest start leaves it.
        free_in: Duration,
    },
}

impl Throttle {
    /// The limit's name, as metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            Throttle::Global => "global",
            Throttle::Rate { .. } => "rate",
        }
    }
}

impl From<Vec<ClaimedJob>> for Claimed {
    fn from(jobs: Vec<ClaimedJob>) -> Self {
        Self {
            jobs,
            throttled: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: Option<usize>, rate: Option<&str>) -> QueueLimits {
        QueueLimits {
            global,
            rate: rate.map(|r| r.parse().unwrap()),
        }
    }

    #[test]
    fn room_is_the_tightest_limit_and_names_it() {
        let idle = LimitUse::default();
        assert_eq!(limits(None, None).room(8, &idle), (8, None));
        assert_eq!(
            limits(Some(3), None).room(8, &idle),
            (3, Some(Throttle::Global))
        );
        let busy = LimitUse {
            running: 5,
            rate_started: 9,
            rate_oldest_age: Some(Duration::from_millis(400)),
        };
        assert_eq!(
            limits(Some(3), None).room(8, &busy),
            (0, Some(Throttle::Global))
        );
        let free_in = Duration::from_millis(600);
        assert_eq!(
            limits(None, Some("10/s")).room(8, &busy),
            (1, Some(Throttle::Rate { free_in }))
        );
        assert_eq!(limits(Some(20), Some("10/s")).room(1, &busy), (1, None));
    }
}
