//! Retry delays.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Shortest delay before a retry.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// Longest delay before a retry.
pub const MAX_DELAY: Duration = Duration::from_secs(6 * 60 * 60);

/// Exponential back-off with jitter: about 1 s after the first failure,
/// doubling each time, capped at six hours. The jitter spreads retries of
/// jobs that failed together.
///
/// ```
/// use std::time::Duration;
/// let first = offload::backoff::exponential(1);
/// assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
/// assert!(offload::backoff::exponential(50) <= offload::backoff::MAX_DELAY * 2);
/// ```
pub fn exponential(attempt: i32) -> Duration {
    scaled(attempt, MIN_DELAY, MAX_DELAY)
}

/// Exponential back-off with jitter from `min` up to `max` (plus jitter).
///
/// ```
/// use std::time::Duration;
/// let d = offload::backoff::scaled(3, Duration::from_millis(10), Duration::from_secs(1));
/// assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(80));
/// ```
pub fn scaled(attempt: i32, min: Duration, max: Duration) -> Duration {
    // Past 64 doublings any delay is capped, so iterate no further.
    let step = usize::try_from(attempt.clamp(1, 64) - 1).unwrap_or(0);
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(step)
        .unwrap_or(max)
}

/// The time `delay` from now, saturating at the latest time chrono can
/// hold instead of panicking (a snooze or back-off of `Duration::MAX`).
pub(crate) fn after(delay: Duration) -> chrono::DateTime<chrono::Utc> {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_add_signed(delay)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}
