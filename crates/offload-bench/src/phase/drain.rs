//! Drain rate: a worker runs a backlog of jobs to completion.

use std::time::{Duration, Instant};

use anyhow::bail;
use offload::{EnqueueOptions, JobState, Retention, Worker};

use super::{bar, finish, retention, Bench};
use crate::jobs::{self, CounterJob, NoopJob};
use crate::report::{drain_check, tx_drain_check, ServerCost, Throughput};
use crate::store::BenchStore;

/// A phase that makes no progress for this long has failed.
const STALL_LIMIT: Duration = Duration::from_secs(60);

impl<DB: BenchStore> Bench<DB> {
    /// Drains `jobs` no-op jobs. With `delete_on_completion`, completed rows
    /// are deleted instead of kept (retention 0).
    pub async fn drain_noop(
        &self,
        jobs: u64,
        batch: usize,
        delete_on_completion: bool,
    ) -> anyhow::Result<Throughput> {
        let phase = if delete_on_completion {
            "drain no-op, retention 0"
        } else {
            "drain no-op"
        };
        let rows = (0..jobs)
            .map(|n| self.client.new_job(&NoopJob { n }, EnqueueOptions::new()))
            .collect::<Result<Vec<_>, _>>()?;
        self.prepare(phase, rows, batch).await?;
        let (elapsed, server) = self
            .run_worker(
                phase,
                jobs,
                self.settings.concurrency,
                retention(delete_on_completion),
            )
            .await?;
        let completed = self.count(JobState::Completed).await?;
        let left = self.total().await?;
        let check = drain_check(phase, jobs, delete_on_completion, completed, left)?;
        Ok(Throughput::new(jobs, elapsed, check).with_server(server))
    }

    /// Drains `jobs` jobs that each add one to a counter row (of
    /// `counter_rows`) in their own transaction, `concurrency` at once.
    pub async fn drain_tx(
        &self,
        jobs: u64,
        counter_rows: i64,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<Throughput> {
        let phase = &format!("drain tx ({concurrency})");
        let counter_rows = counter_rows.max(1);
        DB::reset_counters(self.pool(), counter_rows).await?;
        let rows = (0..jobs)
            .map(|n| {
                let counter = i64::try_from(n).unwrap_or(0) % counter_rows;
                self.client
                    .new_job(&CounterJob { counter }, EnqueueOptions::new())
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.prepare(phase, rows, batch).await?;
        let (elapsed, server) = self
            .run_worker(phase, jobs, concurrency, Retention::default())
            .await?;
        let completed = self.count(JobState::Completed).await?;
        let total = u64::try_from(DB::counter_total(self.pool()).await?).unwrap_or(0);
        let check = tx_drain_check(phase, jobs, completed, total)?;
        Ok(Throughput::new(jobs, elapsed, check).with_server(server))
    }

    /// Starts a worker on the prepared backlog of `jobs` and returns how long
    /// it took until every one of them was finished in the database, and
    /// what that cost the server (PostgreSQL).
    pub(super) async fn run_worker(
        &self,
        phase: &str,
        jobs: u64,
        concurrency: usize,
        retention: Retention,
    ) -> anyhow::Result<(Duration, Option<ServerCost>)> {
        jobs::reset_started();
        let bar = bar(phase, jobs);
        let config = self.worker_config(concurrency, retention);
        let before = DB::server_reading(self.pool()).await?;
        let started = Instant::now();
        let worker = Worker::new(self.pool().clone(), jobs::registry::<DB>(), config)
            .start()
            .await?;
        let outcome = self.wait_until_drained(jobs, &bar).await;
        let elapsed = started.elapsed();
        let server = match outcome {
            Ok(()) => DB::server_cost(self.pool(), before, jobs).await,
            Err(_) => Ok(None),
        };
        worker.shutdown().await;
        outcome?;
        let server = server?;
        let result = jobs as f64 / elapsed.as_secs_f64();
        finish(bar, &format!("{result:.0} jobs/s"));
        Ok((elapsed, server))
    }

    async fn wait_until_drained(
        &self,
        jobs: u64,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        // Counting starts in memory is free; the database is asked only at
        // the end, when the last completions are being written.
        let mut last = (0, Instant::now());
        loop {
            let started = jobs::started();
            bar.set_position(started);
            if started >= jobs {
                break;
            }
            stalled(&mut last, started)?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut last = (u64::MAX, Instant::now());
        loop {
            let unfinished = self.unfinished().await?;
            if unfinished == 0 {
                return Ok(());
            }
            stalled(&mut last, unfinished)?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Jobs of the bench queue not yet in a final state.
    async fn unfinished(&self) -> anyhow::Result<u64> {
        let counts = self.client.count_by_state(Some(crate::QUEUE)).await?;
        Ok(counts
            .into_iter()
            .filter(|(state, _)| !state.is_final())
            .map(|(_, n)| u64::try_from(n).unwrap_or(0))
            .sum())
    }

    /// Jobs of the bench queue in any state.
    pub(super) async fn total(&self) -> anyhow::Result<u64> {
        let counts = self.client.count_by_state(Some(crate::QUEUE)).await?;
        Ok(counts
            .into_iter()
            .map(|(_, n)| u64::try_from(n).unwrap_or(0))
            .sum())
    }
}

/// Fails when `value` has not changed for [`STALL_LIMIT`].
fn stalled(last: &mut (u64, Instant), value: u64) -> anyhow::Result<()> {
    if value != last.0 {
        *last = (value, Instant::now());
    } else if last.1.elapsed() > STALL_LIMIT {
        bail!("no progress for {STALL_LIMIT:?} (stuck at {value})");
    }
    Ok(())
}
