//! How many jobs of a queue may start per period, over every worker on the
//! database: one type, parsed and checked in one place.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest period a rate limit may have: a day. Longer windows keep a
/// row per start for that long.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// At most `limit` job starts of a queue in any `period`, counted over every
/// worker on the database (a sliding window: the count never exceeds
/// `limit` in any interval of that length).
///
/// ```
/// use std::time::Duration;
/// use offload::RateLimit;
///
/// let webhooks = RateLimit::new(100, Duration::from_secs(1)).unwrap();
/// assert_eq!(webhooks, "100/s".parse().unwrap());
/// assert_eq!("30/5m".parse::<RateLimit>().unwrap().period(), Duration::from_secs(300));
/// assert_eq!(webhooks.to_string(), "100/1000ms");
/// assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    limit: u32,
    period: Duration,
}

/// Why a rate limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit {given:?}: {why}; write it as N/PERIOD, e.g. 100/s, 20/1500ms, 1000/h")]
pub struct InvalidRateLimit {
    given: String,
    why: &'static str,
}

impl RateLimit {
    /// `limit` starts per `period`: `limit` at least 1, `period` whole
    /// milliseconds from 1 ms to [`MAX_RATE_PERIOD`].
    pub fn new(limit: u32, period: Duration) -> Result<Self, InvalidRateLimit> {
        let refuse = |why| InvalidRateLimit {
            given: format!("{limit}/{}ms", period.as_millis()),
            why,
        };
        if limit == 0 {
            return Err(refuse("the limit must be at least 1"));
        }
        if period < Duration::from_millis(1) || period > MAX_RATE_PERIOD {
            return Err(refuse("the period must be from 1 ms to 24 h"));
        }
        let period = Duration::from_millis(u64::try_from(period.as_millis()).unwrap_or(u64::MAX));
        Ok(Self { limit, period })
    }

    /// `limit` starts per second.
    pub fn per_second(limit: u32) -> Result<Self, InvalidRateLimit> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// Most starts in any period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window's length.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The period in milliseconds, as the database stores it.
    pub(crate) fn period_ms(&self) -> i64 {
        i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX)
    }

    /// Starts still allowed in a window that holds `started` of them.
    pub(crate) fn starts_left(&self, started: i64) -> usize {
        let started = usize::try_from(started).unwrap_or(0);
        usize::try_from(self.limit).map_or(0, |limit: usize| limit.saturating_sub(started))
    }

    /// From the database's columns; `None` when unset or out of range.
    pub(crate) fn from_columns(limit: Option<i64>, period_ms: Option<i64>) -> Option<Self> {
        let limit = u32::try_from(limit?).ok()?;
        let period = Duration::from_millis(u64::try_from(period_ms?).ok()?);
        Self::new(limit, period).ok()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.limit, self.period.as_millis())
    }
}

impl FromStr for RateLimit {
    type Err = InvalidRateLimit;

    /// `N/PERIOD`, the period a unit (`ms`, `s`, `m`, `h`) with an optional
    /// whole count before it: `100/s`, `20/1500ms`, `30/5m`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |why| InvalidRateLimit {
            given: text.chars().take(40).collect(),
            why,
        };
        let (limit, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| refuse("it has no `/`"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .map_err(|_| refuse("the limit is not a whole number"))?;
        let period = period.trim();
        let unit_at = period
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| refuse("the period has no unit (ms, s, m or h)"))?;
        let (count, unit) = period.split_at(unit_at);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count
                .parse()
                .map_err(|_| refuse("the period's count is not a whole number"))?
        };
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(refuse("the period's unit is not ms, s, m or h")),
        };
        let period_ms = count
            .checked_mul(unit_ms)
            .ok_or_else(|| refuse("the period must be from 1 ms to 24 h"))?;
        Self::new(limit, Duration::from_millis(period_ms)).map_err(|error| InvalidRateLimit {
            given: text.chars().take(40).collect(),
            why: error.why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_nonsense() {
        let ms = |text: &str| text.parse::<RateLimit>().map(|rate| rate.period_ms());
        assert_eq!(ms("5/250ms"), Ok(250));
        assert_eq!(ms("5/2s"), Ok(2_000));
        assert_eq!(ms("5/m"), Ok(60_000));
        assert_eq!(ms("5/24h"), Ok(86_400_000));
        for bad in [
            "", "5", "x/s", "5/", "5/s2", "5/25h", "0/s", "5/0ms", "5/d", "-1/s",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?} was accepted");
        }
        let error = "5/d".parse::<RateLimit>().unwrap_err().to_string();
        assert!(error.contains("not ms, s, m or h"), "{error}");
    }
}
