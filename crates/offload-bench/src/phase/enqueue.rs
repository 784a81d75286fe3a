//! Enqueue rate: `enqueue_many` in batches, and one `enqueue` per job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::ensure;
use offload::{JobState, NewJob};
use tokio::task::JoinSet;

use super::{bar, finish, Bench};
use crate::jobs::{NoopJob, QUEUE};
use crate::report::Throughput;
use crate::store::BenchStore;

impl<DB: BenchStore> Bench<DB> {
    /// Inserts `jobs` no-op jobs with `enqueue_many`, `batch` per call, from
    /// `tasks` tasks at once.
    pub async fn bulk_enqueue(
        &self,
        jobs: u64,
        batch: usize,
        tasks: usize,
    ) -> anyhow::Result<Throughput> {
        DB::clear_jobs(self.pool()).await?;
        let bar = bar("bulk enqueue", jobs);
        let batch = batch.max(1) as u64;
        let next = Arc::new(AtomicU64::new(0));
        let before = DB::server_reading(self.pool()).await?;
        let started = Instant::now();
        let mut inserters = JoinSet::new();
        for _ in 0..tasks.max(1) {
            let (client, next, bar) = (self.client.clone(), next.clone(), bar.clone());
            inserters.spawn(async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= jobs {
                        return anyhow::Ok(());
                    }
                    let end = (first + batch).min(jobs);
                    client
                        .enqueue_many((first..end).map(|n| NoopJob { n }))
                        .await?;
                    bar.inc(end - first);
                }
            });
        }
        while let Some(joined) = inserters.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        let server = DB::server_cost(self.pool(), before, jobs).await?;
        let stored = self.count(JobState::Available).await?;
        ensure!(
            stored == jobs,
            "bulk enqueue stored {stored} of {jobs} jobs"
        );
        let result =
            Throughput::new(jobs, elapsed, format!("{stored} rows available")).with_server(server);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    /// Inserts `jobs` no-op jobs with one `enqueue` each, from `tasks` tasks.
    pub async fn single_enqueue(&self, jobs: u64, tasks: usize) -> anyhow::Result<Throughput> {
        DB::clear_jobs(self.pool()).await?;
        let bar = bar("single enqueue", jobs);
        let next = Arc::new(AtomicU64::new(0));
        let before = DB::server_reading(self.pool()).await?;
        let started = Instant::now();
        let mut enqueuers = JoinSet::new();
        for _ in 0..tasks.max(1) {
            let (client, next, bar) = (self.client.clone(), next.clone(), bar.clone());
            enqueuers.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= jobs {
                        return anyhow::Ok(());
                    }
                    client.enqueue(NoopJob { n }).await?;
                    bar.inc(1);
                }
            });
        }
        while let Some(joined) = enqueuers.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        let server = DB::server_cost(self.pool(), before, jobs).await?;
        let stored = self.count(JobState::Available).await?;
        ensure!(
            stored == jobs,
            "single enqueue stored {stored} of {jobs} jobs"
        );
        let result =
            Throughput::new(jobs, elapsed, format!("{stored} rows available")).with_server(server);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    /// Inserts `rows` untimed, for a drain phase to work on.
    pub(super) async fn prepare(
        &self,
        phase: &str,
        rows: Vec<NewJob>,
        batch: usize,
    ) -> anyhow::Result<()> {
        DB::clear_jobs(self.pool()).await?;
        let bar = bar(&format!("{phase}: enqueue"), rows.len() as u64);
        for chunk in rows.chunks(batch.max(1)) {
            self.client.insert(chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Jobs of the bench queue in `state`.
    pub(super) async fn count(&self, state: JobState) -> anyhow::Result<u64> {
        let counts = self.client.count_by_state(Some(QUEUE)).await?;
        Ok(counts
            .into_iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| u64::try_from(n).unwrap_or(0)))
    }
}
