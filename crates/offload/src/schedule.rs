//! When periodic jobs run ([`Schedule`]), and a periodic job as the worker
//! keeps it, whatever its job type and backend ([`Periodic`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::state::JobState;
use crate::storage::NewJob;
use crate::unique::UniqueKey;
use crate::Result;

/// Builds the row a tick enqueues.
pub(crate) type MakeRow = Arc<dyn Fn() -> Result<NewJob> + Send + Sync>;

/// When a periodic job's ticks fall.
#[derive(Clone)]
pub enum Schedule {
    /// A cron expression (5 fields, or 6 with seconds first), in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The zone its fields are read in.
        tz: Tz,
    },
    /// Every `interval`, counted from the Unix epoch, so that every worker
    /// agrees on the ticks.
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { cron, tz } => write!(f, "cron `{}` in {tz}", cron.pattern),
            Schedule::Every(interval) => write!(f, "every {interval:?}"),
        }
    }
}

impl Schedule {
    /// The first tick strictly after `at`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::{TimeZone, Utc};
    /// use offload::Schedule;
    /// let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap();
    /// let every_5s = Schedule::Every(Duration::from_secs(5));
    /// assert_eq!(every_5s.next_after(at), Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 10).unwrap()));
    /// ```
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => cron
                .find_next_occurrence(&at.with_timezone(tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Schedule::Every(interval) => {
                let step = interval_micros(*interval);
                let n = at.timestamp_micros().div_euclid(step);
                DateTime::from_timestamp_micros(n.checked_add(1)?.checked_mul(step)?)
            }
        }
    }

    /// The latest tick at or before `at`.
    pub fn latest_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => cron
                .find_previous_occurrence(&at.with_timezone(tz), true)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Schedule::Every(interval) => {
                let step = interval_micros(*interval);
                let n = at.timestamp_micros().div_euclid(step);
                DateTime::from_timestamp_micros(n.checked_mul(step)?)
            }
        }
    }
}

fn interval_micros(interval: Duration) -> i64 {
    i64::try_from(interval.as_micros())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// A [`PeriodicJob`](crate::PeriodicJob) as the worker keeps it, whatever
/// its job type and backend: what [`Registry::periodic`](crate::Registry::periodic)
/// stores.
///
/// ```
/// use std::time::Duration;
/// use offload::{Job, JobContext, JobError, PeriodicJob, Registry};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Cleanup;
/// # impl Job<sqlx::Sqlite> for Cleanup {
/// #     const KIND: &'static str = "cleanup";
/// #     const QUEUE: &'static str = "maintenance";
/// #     async fn run(self, _: &mut JobContext<sqlx::Sqlite>) -> Result<(), JobError> { Ok(()) }
/// # }
/// let job = PeriodicJob::every("hourly_cleanup", Duration::from_secs(3600), || Cleanup).unwrap();
/// let registry = Registry::<sqlx::Sqlite>::new().periodic(job);
/// assert_eq!(registry.periodic_names().collect::<Vec<_>>(), ["hourly_cleanup"]);
/// ```
#[derive(Clone)]
pub struct Periodic {
    name: String,
    schedule: Schedule,
    queue: String,
    make: MakeRow,
}

impl fmt::Debug for Periodic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Periodic {
    /// A schedule `name` whose ticks enqueue the row `make` builds, on
    /// `queue`.
    pub(crate) fn new(name: String, schedule: Schedule, queue: String, make: MakeRow) -> Self {
        Self {
            name,
            schedule,
            queue,
            make,
        }
    }

    /// The queue its jobs go to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The row for tick `tick`: due at the tick, unique per (name, tick) in
    /// every state.
    pub(crate) fn row(&self, tick: DateTime<Utc>) -> Result<NewJob> {
        let mut row = (self.make)()?;
        row.run_at = Some(tick);
        row.unique = Some(UniqueKey::new(
            format!("periodic:{}:{}", self.name, tick.timestamp_micros()),
            &JobState::ALL,
        )?);
        row.tags.push(format!("periodic:{}", self.name));
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use chrono::TimeZone;

    #[test]
    fn interval_ticks_fall_on_multiples_since_the_epoch() {
        let every = Schedule::Every(Duration::from_secs(60));
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 30).unwrap();
        assert_eq!(
            every.latest_until(at),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap())
        );
        assert_eq!(
            every.next_after(at),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 1, 0).unwrap())
        );
        let on_tick = Utc.with_ymd_and_hms(2024, 5, 1, 12, 1, 0).unwrap();
        assert_eq!(
            every.next_after(on_tick),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 2, 0).unwrap())
        );
        assert_eq!(every.latest_until(on_tick), Some(on_tick));
    }

    #[test]
    fn cron_ticks_follow_the_time_zone() {
        let cron = Schedule::Cron {
            cron: Box::new(Cron::from_str("0 9 * * *").unwrap()),
            tz: chrono_tz::America::New_York,
        };
        // 9:00 in New York in May is 13:00 UTC (EDT).
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
        assert_eq!(
            cron.next_after(at),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 13, 0, 0).unwrap())
        );
        // In January (EST) it is 14:00 UTC.
        let at = Utc.with_ymd_and_hms(2024, 1, 10, 0, 0, 0).unwrap();
        assert_eq!(
            cron.next_after(at),
            Some(Utc.with_ymd_and_hms(2024, 1, 10, 14, 0, 0).unwrap())
        );
        assert_eq!(
            cron.latest_until(at),
            Some(Utc.with_ymd_and_hms(2024, 1, 9, 14, 0, 0).unwrap())
        );
    }

    #[test]
    fn cron_with_seconds_ticks_every_second() {
        let cron = Schedule::Cron {
            cron: Box::new(Cron::from_str("* * * * * *").unwrap()),
            tz: Tz::UTC,
        };
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
            + chrono::Duration::milliseconds(400);
        assert_eq!(
            cron.next_after(at),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap())
        );
    }
}
