//! Periodic jobs: a job enqueued on a cron schedule or at a fixed interval
//! by the workers' leader (see `worker::periodic` for how each tick is
//! enqueued exactly once).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use croner::Cron;

use crate::job::Job;
use crate::options::{new_job_row, EnqueueOptions};
use crate::schedule::{Periodic, Schedule};
use crate::storage::Backend;
use crate::{Error, Result};

/// A job of type `J` to enqueue on a schedule. Add it to a worker with
/// [`Registry::periodic`](crate::Registry::periodic), which fixes the
/// backend; every worker on the database can carry the same list, only the
/// leader enqueues.
///
/// ```
/// use std::time::Duration;
/// use offload::{Job, JobContext, JobError, PeriodicJob, Registry};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct SendDigest {
///     edition: String,
/// }
///
/// impl Job<Sqlite> for SendDigest {
///     const KIND: &'static str = "send_digest";
///     async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
///
/// # fn main() -> offload::Result<()> {
/// let registry = Registry::<Sqlite>::new()
///     .register::<SendDigest>()
///     // 08:30 on weekdays, Paris time.
///     .periodic(PeriodicJob::cron("morning_digest", "30 8 * * MON-FRI", chrono_tz::Europe::Paris, || {
///         SendDigest { edition: "morning".into() }
///     })?)
///     // Every 15 minutes, on the quarter hour.
///     .periodic(PeriodicJob::every("quarter_digest", Duration::from_secs(900), || {
///         SendDigest { edition: "quarter".into() }
///     })?);
/// assert_eq!(registry.periodic_names().collect::<Vec<_>>(), ["morning_digest", "quarter_digest"]);
/// # Ok(()) }
/// ```
pub struct PeriodicJob<J> {
    name: String,
    schedule: Schedule,
    options: EnqueueOptions,
    make: Arc<dyn Fn() -> J + Send + Sync>,
}

impl<J: Send + 'static> PeriodicJob<J> {
    /// Enqueues `make()` at every tick of cron expression `expr` read in
    /// time zone `tz`. Five fields (minute first), or six with seconds
    /// first. `name` identifies the schedule across workers and restarts.
    pub fn cron<F>(name: impl Into<String>, expr: &str, tz: Tz, make: F) -> Result<Self>
    where
        F: Fn() -> J + Send + Sync + 'static,
    {
        let cron = Cron::from_str(expr)
            .map_err(|error| Error::Config(format!("cron expression `{expr}`: {error}")))?;
        Self::new(
            name.into(),
            Schedule::Cron {
                cron: Box::new(cron),
                tz,
            },
            make,
        )
    }

    /// Enqueues `make()` every `interval`, on multiples of it since the Unix
    /// epoch (every minute: on the minute).
    pub fn every<F>(name: impl Into<String>, interval: Duration, make: F) -> Result<Self>
    where
        F: Fn() -> J + Send + Sync + 'static,
    {
        if interval < Duration::from_millis(1) {
            return Err(Error::Config(
                "a periodic interval must be at least 1 ms".into(),
            ));
        }
        Self::new(name.into(), Schedule::Every(interval), make)
    }

    fn new<F>(name: String, schedule: Schedule, make: F) -> Result<Self>
    where
        F: Fn() -> J + Send + Sync + 'static,
    {
        if name.trim().is_empty() {
            return Err(Error::Config("a periodic job needs a name".into()));
        }
        Ok(Self {
            name,
            schedule,
            options: EnqueueOptions::default(),
            make: Arc::new(make),
        })
    }

    /// Enqueues with these options (queue, priority, attempts, tags); their
    /// `run_at` and `unique` are replaced by the tick's.
    pub fn options(mut self, options: EnqueueOptions) -> Self {
        self.options = options;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The schedule as a worker on backend `DB` with state `S` keeps it.
    pub(crate) fn into_periodic<DB: Backend, S: Send + Sync + 'static>(self) -> Periodic
    where
        J: Job<DB, S>,
    {
        let (make, options) = (self.make, self.options);
        let queue = options.queue.clone().unwrap_or_else(|| J::QUEUE.to_owned());
        Periodic::new(
            self.name,
            self.schedule,
            queue,
            Arc::new(move || new_job_row::<DB, S, J>(&make(), options.clone())),
        )
    }
}
