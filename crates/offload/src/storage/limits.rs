//! Queue limits over every worker, as both backends read and apply them:
//! the settings a queue's row holds, what a claim found in use, and the
//! arithmetic that turns the two into how many jobs the claim may take.

use std::time::Duration;

use super::rows::ClaimedJob;
use crate::{Partition, RateLimit};

/// The limits a queue has over every worker on the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most of its jobs running at once.
    pub global: Option<usize>,
    /// Most of its jobs starting per period.
    pub rate: Option<RateLimit>,
    /// Whether its keys take turns, and its cap per key.
    pub partition: Option<Partition>,
}

/// A queue row's limit columns, as both backends decode them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LimitColumns {
    pub global: Option<i64>,
    pub rate_limit: Option<i64>,
    pub rate_period_ms: Option<i64>,
    pub partitioned: bool,
    pub partition_limit: Option<i64>,
    pub partition_rate_limit: Option<i64>,
    pub partition_rate_period_ms: Option<i64>,
}

impl From<LimitColumns> for QueueLimits {
    /// A value out of range reads as unset.
    fn from(columns: LimitColumns) -> Self {
        let partition = columns.partitioned.then(|| {
            let per_key = columns
                .partition_limit
                .and_then(|n| usize::try_from(n).ok());
            let partition = per_key
                .and_then(|n| Partition::new().concurrency(n).ok())
                .unwrap_or_default();
            match RateLimit::from_columns(
                columns.partition_rate_limit,
                columns.partition_rate_period_ms,
            ) {
                Some(rate) => partition.rate(rate),
                None => partition,
            }
        });
        Self {
            global: columns.global.and_then(|n| usize::try_from(n).ok()),
            rate: RateLimit::from_columns(columns.rate_limit, columns.rate_period_ms),
            partition,
        }
    }
}

/// One limit of a queue, set (`Some`) or lifted (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitChange {
    /// Most of its jobs running at once.
    Global(Option<usize>),
    /// Most of its jobs starting per period.
    Rate(Option<RateLimit>),
    /// Keys in turn, and a cap per key.
    Partition(Option<Partition>),
}

impl QueueLimits {
    /// Whether a claim must count before it takes jobs.
    pub fn any(&self) -> bool {
        self.global.is_some() || self.rate.is_some() || self.partition.is_some()
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
            let free = rate.starts_left(used.rate_started);
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

/// One walk over a partitioned queue's keys with available jobs, in key
/// order: from `from` (itself included when `inclusive`), up to `to` when
/// set, about `want` keys under the cap.
pub(crate) struct KeyWalk<'a> {
    pub from: &'a str,
    pub inclusive: bool,
    pub to: Option<&'a str>,
    pub want: usize,
}

impl<'a> KeyWalk<'a> {
    /// A claim's first walk: the keys after the cursor.
    pub fn after(cursor: &'a str, room: usize) -> Self {
        Self {
            from: cursor,
            inclusive: false,
            to: None,
            want: room,
        }
    }

    /// Its second, when the first `found` too few keys for `room`: the
    /// cursor wraps around, from the first key up to itself.
    pub fn wrapping(cursor: &'a str, room: usize, found: usize) -> Option<Self> {
        (found < room).then(|| Self {
            from: "",
            inclusive: true,
            to: Some(cursor),
            want: room - found,
        })
    }
}

/// A walked key: its name, its running jobs and its starts in the rate's
/// window (each 0 when its limit is not set).
pub(crate) type KeyLoad = (String, i64, i64);

/// How a partitioned claim shares its room among the keys it walked.
pub(crate) struct KeyUse {
    cap: Option<usize>,
    rate: Option<RateLimit>,
}

impl KeyUse {
    pub fn new(partition: Partition) -> Self {
        Self {
            cap: partition.concurrency_limit(),
            rate: partition.rate_limit(),
        }
    }

    /// The rate per key, as the key walk binds it: (limit, period in ms),
    /// `None` for no limit (and no count).
    pub fn rate_columns(&self) -> (Option<i64>, Option<i64>) {
        (
            self.rate.map(|rate| i64::from(rate.limit())),
            self.rate.map(|rate| rate.period_ms()),
        )
    }

    /// The cap per key, as the key walk binds it (`None`: no cap, and the
    /// walk need not count running jobs).
    pub fn cap(&self) -> Option<i64> {
        self.cap.map(|cap| i64::try_from(cap).unwrap_or(i64::MAX))
    }

    /// Jobs of a key with `running` jobs and `started` starts in the
    /// window that may still start; `None` without a limit.
    fn free(&self, running: i64, started: i64) -> Option<usize> {
        let running = usize::try_from(running).unwrap_or(0);
        let by_cap = self.cap.map(|cap| cap.saturating_sub(running));
        let by_rate = self.rate.map(|rate| rate.starts_left(started));
        match (by_cap, by_rate) {
            (Some(cap), Some(rate)) => Some(cap.min(rate)),
            (one, other) => one.or(other),
        }
    }

    /// The claim's turn: keys `after` the cursor, then those `wrapped` from
    /// the first key up to it, each once with its load, shared `room`
    /// claims one per key per round (every key gets one before any key gets
    /// two; a key at its cap or out of starts in its window gets none, and
    /// none gets more than either leaves). Returns the keys served
    /// and their shares, in turn order.
    pub fn turn(
        &self,
        room: usize,
        after: Vec<KeyLoad>,
        wrapped: Vec<KeyLoad>,
    ) -> Vec<(String, usize)> {
        let mut keys: Vec<(String, Option<usize>)> = Vec::with_capacity(room);
        for (key, running, started) in after.into_iter().chain(wrapped) {
            let free = self.free(running, started);
            if free != Some(0) && keys.iter().all(|(seen, _)| *seen != key) {
                keys.push((key, free));
            }
        }
        keys.truncate(room);
        let mut shares = vec![0usize; keys.len()];
        let mut left = room;
        while left > 0 {
            let before = left;
            for (share, (_, free)) in shares.iter_mut().zip(&keys) {
                if left > 0 && free.is_none_or(|free| *share < free) {
                    *share += 1;
                    left -= 1;
                }
            }
            if left == before {
                break;
            }
        }
        keys.into_iter()
            .zip(shares)
            .filter(|(_, share)| *share > 0)
            .map(|((key, _), share)| (key, share))
            .collect()
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
    /// How its partitions are used (all 0 unless it is partitioned).
    pub partition_use: PartitionUse,
}

/// Per partitioned queue: keys with running jobs, keys at their cap, and
/// the available jobs of keys at their cap (waiting on it). Reads only the
/// running jobs and, per full key, its part of the partition index. One
/// statement both backends run, inside their settings query.
pub(crate) const PARTITION_USE: &str = "SELECT r.queue, CAST(count(*) AS BIGINT) AS keys_running, \
       CAST(sum(CASE WHEN r.n >= r.cap THEN 1 ELSE 0 END) AS BIGINT) AS keys_full, \
       CAST(sum(CASE WHEN r.n >= r.cap THEN (SELECT count(*) FROM offload_jobs a \
           WHERE a.queue = r.queue AND a.state = 'available' AND a.partition_key = r.k) \
           ELSE 0 END) AS BIGINT) AS waiting \
     FROM (SELECT j.queue, j.partition_key AS k, count(*) AS n, max(pq.partition_limit) AS cap \
           FROM offload_jobs j JOIN offload_queues pq ON pq.name = j.queue \
           WHERE j.state = 'running' AND pq.partitioned \
           GROUP BY j.queue, j.partition_key) r \
     GROUP BY r.queue";

/// How a partitioned queue's keys use their cap, as the dashboard and the
/// CLI show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionUse {
    /// Keys with a job running.
    pub keys_running: i64,
    /// Keys with as many jobs running as the cap per key allows.
    pub keys_at_limit: i64,
    /// Available jobs of keys at the cap: waiting on it.
    pub waiting_at_limit: i64,
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
            partition: None,
        }
    }

    fn walked(keys: &[(&str, i64)]) -> Vec<KeyLoad> {
        keys.iter()
            .map(|(key, n)| (key.to_string(), *n, 0))
            .collect()
    }

    #[test]
    fn a_key_gets_no_more_than_its_rate_or_its_cap_leaves() {
        let rate = RateLimit::per_second(3).unwrap();
        let rated = KeyUse::new(Partition::new().rate(rate));
        let both = KeyUse::new(Partition::new().concurrency(2).unwrap().rate(rate));
        let load = |key: &str, running, started| (key.to_owned(), running, started);
        // a: 1 start left in its window; b: none; c: all 3.
        let keys = vec![load("a", 0, 2), load("b", 0, 3), load("c", 0, 0)];
        assert_eq!(
            rated.turn(8, keys.clone(), Vec::new()),
            [("a".into(), 1), ("c".into(), 3)]
        );
        // c's cap of 2 is tighter than its rate; a's rate than its cap.
        assert_eq!(
            both.turn(8, keys, Vec::new()),
            [("a".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(rated.rate_columns(), (Some(3), Some(1000)));
        assert_eq!(KeyUse::new(Partition::new()).rate_columns(), (None, None));
    }

    #[test]
    fn turns_give_every_key_one_before_any_key_two() {
        let capped = KeyUse::new(Partition::new().concurrency(2).unwrap());
        let uncapped = KeyUse::new(Partition::new());
        assert_eq!((capped.cap(), uncapped.cap()), (Some(2), None));
        let after = walked(&[("a", 0), ("b", 1), ("c", 2)]);
        let turn = capped.turn(5, after, walked(&[("d", 0), ("a", 0)]));
        assert_eq!(turn, [("a".into(), 2), ("b".into(), 1), ("d".into(), 2)]);
        let turn = uncapped.turn(2, walked(&[("a", 9), ("b", 0), ("c", 0)]), Vec::new());
        assert_eq!(turn, [("a".into(), 1), ("b".into(), 1)]);
        let turn = uncapped.turn(5, walked(&[("m", 0)]), walked(&[("a", 0), ("m", 0)]));
        assert_eq!(turn, [("m".into(), 3), ("a".into(), 2)]);
        assert!(capped.turn(4, walked(&[("c", 2)]), Vec::new()).is_empty());
    }

    #[test]
    fn a_walk_wraps_around_to_the_cursor_only_when_short_of_keys() {
        let first = KeyWalk::after("m", 4);
        assert_eq!(
            (first.from, first.inclusive, first.to, first.want),
            ("m", false, None, 4)
        );
        assert!(KeyWalk::wrapping("m", 4, 4).is_none());
        let second = KeyWalk::wrapping("m", 4, 1).expect("wraps");
        assert_eq!(
            (second.from, second.inclusive, second.to, second.want),
            ("", true, Some("m"), 3)
        );
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
