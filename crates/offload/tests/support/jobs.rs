//! Jobs that exercise each way a job can end.

use std::time::Duration;

use offload::{Job, JobContext, JobError, Registry};
use serde::{Deserialize, Serialize};

use super::TestDb;

fn quick_backoff(attempt: i32) -> Duration {
    offload::backoff::scaled(
        attempt,
        Duration::from_millis(20),
        Duration::from_millis(200),
    )
}

/// Applies one effect (counter + 1, effect row) in its own transaction.
#[derive(Serialize, Deserialize)]
pub struct ApplyEffect;

impl<DB: TestDb> Job<DB> for ApplyEffect {
    const KIND: &'static str = "apply_effect";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        Ok(())
    }
}

/// Records one effect row in its own transaction; jobs do not contend.
#[derive(Serialize, Deserialize)]
pub struct RecordEffect;

impl<DB: TestDb> Job<DB> for RecordEffect {
    const KIND: &'static str = "record_effect";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::record_effect(ctx.tx().await?, id).await?;
        Ok(())
    }
}

/// Sleeps (cancellably), then applies one effect.
#[derive(Serialize, Deserialize)]
pub struct SlowEffect {
    pub millis: u64,
}

impl<DB: TestDb> Job<DB> for SlowEffect {
    const KIND: &'static str = "slow_effect";

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        ctx.sleep(Duration::from_millis(self.millis)).await?;
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        Ok(())
    }
}

/// Applies an effect, then fails while `attempt <= failures`: the effect
/// of a failed attempt must roll back.
#[derive(Serialize, Deserialize)]
pub struct FailTimes {
    pub failures: i32,
}

impl<DB: TestDb> Job<DB> for FailTimes {
    const KIND: &'static str = "fail_times";
    const MAX_ATTEMPTS: i32 = 3;

    fn backoff(attempt: i32) -> Duration {
        quick_backoff(attempt)
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        if ctx.attempt() <= self.failures {
            return Err(JobError::failed(format!(
                "planned failure {}",
                ctx.attempt()
            )));
        }
        Ok(())
    }
}

/// Panics with a message, after writing.
#[derive(Serialize, Deserialize)]
pub struct Panics;

impl<DB: TestDb> Job<DB> for Panics {
    const KIND: &'static str = "panics";
    const MAX_ATTEMPTS: i32 = 2;

    fn backoff(attempt: i32) -> Duration {
        quick_backoff(attempt)
    }

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        panic!("boom in job {id}");
    }
}

/// Writes, then hangs far past its timeout.
#[derive(Serialize, Deserialize)]
pub struct Hangs;

impl<DB: TestDb> Job<DB> for Hangs {
    const KIND: &'static str = "hangs";
    const MAX_ATTEMPTS: i32 = 1;
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(300));

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        let id = ctx.id();
        DB::apply_effect(ctx.tx().await?, id).await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// Snoozes on its first attempt, succeeds on the next.
#[derive(Serialize, Deserialize)]
pub struct SnoozeOnce;

impl<DB: TestDb> Job<DB> for SnoozeOnce {
    const KIND: &'static str = "snooze_once";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err(JobError::snooze(Duration::from_millis(100)));
        }
        Ok(())
    }
}

/// Snoozes for no time on its first attempt, succeeds on the next.
#[derive(Serialize, Deserialize)]
pub struct SnoozeNowOnce;

impl<DB: TestDb> Job<DB> for SnoozeNowOnce {
    const KIND: &'static str = "snooze_now_once";
    const MAX_ATTEMPTS: i32 = 1;

    async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err(JobError::snooze(Duration::ZERO));
        }
        Ok(())
    }
}

/// Cancels itself.
#[derive(Serialize, Deserialize)]
pub struct CancelsItself;

impl<DB: TestDb> Job<DB> for CancelsItself {
    const KIND: &'static str = "cancels_itself";

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Err(JobError::cancel("nothing left to do"))
    }
}

/// Does nothing, never touches the database.
#[derive(Serialize, Deserialize)]
pub struct Noop {
    pub n: u64,
}

impl<DB: TestDb> Job<DB> for Noop {
    const KIND: &'static str = "noop";

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        Ok(())
    }
}

/// Queue of [`Keyed`] jobs.
pub const KEYED_QUEUE: &str = "keyed";

/// Sleeps `ms` milliseconds; partitioned by `key`.
#[derive(Serialize, Deserialize)]
pub struct Keyed {
    pub key: String,
    pub ms: u64,
}

impl<DB: TestDb> Job<DB> for Keyed {
    const KIND: &'static str = "keyed";
    const QUEUE: &'static str = KEYED_QUEUE;

    fn partition_key(&self) -> Option<String> {
        Some(self.key.clone())
    }

    async fn run(self, _ctx: &mut JobContext<DB>) -> Result<(), JobError> {
        tokio::time::sleep(std::time::Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

/// Every test job.
pub fn registry<DB: TestDb>() -> Registry<DB> {
    Registry::new()
        .register::<Keyed>()
        .register::<ApplyEffect>()
        .register::<RecordEffect>()
        .register::<SlowEffect>()
        .register::<FailTimes>()
        .register::<Panics>()
        .register::<Hangs>()
        .register::<SnoozeOnce>()
        .register::<SnoozeNowOnce>()
        .register::<CancelsItself>()
        .register::<Noop>()
}
