//! The baseline on PostgreSQL: hand-written SQL through sqlx on offload's
//! own pool, in the same scratch database, on its own tables.

mod latency;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::Value;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::{Baseline, Batches, WithBaseline};
use crate::jobs::{self, CounterJob, NoopJob, QUEUE};
use crate::phase::{bar, finish};
use crate::report::{drain_check, tx_drain_check, Latency, Settings, Throughput};
use crate::store::BenchStore;

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS baseline_jobs (
        id bigserial PRIMARY KEY,
        queue text NOT NULL,
        state text NOT NULL DEFAULT 'available',
        args jsonb NOT NULL,
        attempt int NOT NULL DEFAULT 0,
        run_at timestamptz NOT NULL DEFAULT now())",
    // The claim's index; the guarded completion goes by primary key.
    "CREATE INDEX IF NOT EXISTS baseline_jobs_claim ON baseline_jobs (queue, run_at, id)
        WHERE state = 'available'",
    "CREATE TABLE IF NOT EXISTS baseline_counters (id bigint PRIMARY KEY, n bigint NOT NULL)",
];

const INSERT_MANY: &str =
    "INSERT INTO baseline_jobs (queue, args) SELECT * FROM unnest($1::text[], $2::jsonb[])";

/// One job per statement; [`NOTIFY`] follows in its own statement.
const INSERT_ONE: &str = "INSERT INTO baseline_jobs (queue, args) VALUES ($1, $2) RETURNING id";

/// Wakes the listening worker. Sent after the insert has committed rather
/// than inside it: a transaction that notifies holds a database-wide lock
/// through its commit, so notifying inside every insert makes the inserts
/// wait for each other's WAL flush; a notify on its own writes no WAL.
const NOTIFY: &str = "SELECT pg_notify('baseline_jobs', '')";

const CLAIM: &str = "UPDATE baseline_jobs SET state = 'running', attempt = attempt + 1
     WHERE id IN (SELECT id FROM baseline_jobs
                  WHERE queue = $1 AND state = 'available' AND run_at <= now()
                  ORDER BY run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
     RETURNING id, args, attempt";

const COMPLETE_MANY: &str = "UPDATE baseline_jobs SET state = 'completed' WHERE id = ANY($1)";
const DELETE_MANY: &str = "DELETE FROM baseline_jobs WHERE id = ANY($1)";
const BUMP_COUNTER: &str = "UPDATE baseline_counters SET n = n + 1 WHERE id = $1";
const COMPLETE_GUARDED: &str = "UPDATE baseline_jobs SET state = 'completed'
     WHERE id = $1 AND attempt = $2 AND state = 'running'";

/// Completion statements in flight at once, as offload's completer has.
const COMPLETION_WRITERS: usize = 2;

/// The PostgreSQL baseline, on offload's pool.
pub(crate) struct PgBaseline {
    pool: PgPool,
    batches: Batches,
}

impl WithBaseline for Postgres {
    type Baseline = PgBaseline;

    async fn baseline(
        pool: &PgPool,
        _url: &str,
        settings: &Settings,
    ) -> anyhow::Result<PgBaseline> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(pool).await?;
        }
        Ok(PgBaseline {
            pool: pool.clone(),
            batches: Batches::new(settings),
        })
    }
}

impl Baseline for PgBaseline {
    async fn bulk_insert(
        &self,
        jobs: u64,
        batch: usize,
        tasks: usize,
    ) -> anyhow::Result<Throughput> {
        self.clear().await?;
        let bar = bar("baseline bulk insert", jobs);
        let batch = batch.max(1) as u64;
        let next = Arc::new(AtomicU64::new(0));
        let before = Postgres::server_reading(&self.pool).await?;
        let started = Instant::now();
        let mut inserters = JoinSet::new();
        for _ in 0..tasks.max(1) {
            let (pool, next, bar) = (self.pool.clone(), next.clone(), bar.clone());
            inserters.spawn(async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= jobs {
                        return anyhow::Ok(());
                    }
                    let end = (first + batch).min(jobs);
                    insert_noops(&pool, first..end).await?;
                    bar.inc(end - first);
                }
            });
        }
        while let Some(joined) = inserters.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        let server = Postgres::server_cost(&self.pool, before, jobs).await?;
        let stored = self.count("available").await?;
        ensure!(
            stored == jobs,
            "baseline bulk insert stored {stored} of {jobs} jobs"
        );
        let result =
            Throughput::new(jobs, elapsed, format!("{stored} rows available")).with_server(server);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    async fn drain(&self, jobs: u64, batch: usize, delete: bool) -> anyhow::Result<Throughput> {
        let phase = if delete {
            "baseline drain, deleted"
        } else {
            "baseline drain"
        };
        self.clear().await?;
        for first in (0..jobs).step_by(batch.max(1)) {
            insert_noops(&self.pool, first..(first + batch as u64).min(jobs)).await?;
        }
        let bar = bar(phase, jobs);
        let before = Postgres::server_reading(&self.pool).await?;
        let started = Instant::now();
        // The claim loop hands finished jobs to a completer task over a
        // channel, so claims and completions overlap as in offload's worker.
        let (finished, to_complete) = mpsc::channel(self.batches.in_flight);
        let completer = tokio::spawn(complete_batches(
            self.pool.clone(),
            to_complete,
            self.batches.complete,
            delete,
        ));
        let mut claimed = 0;
        while claimed < jobs {
            let rows = claim(&self.pool, self.batches.fetch.min(self.batches.in_flight)).await?;
            ensure!(
                !rows.is_empty(),
                "{phase}: nothing to claim after {claimed} of {jobs}"
            );
            claimed += rows.len() as u64;
            for (id, args, _attempt) in rows {
                let _job: NoopJob = serde_json::from_value(args)?;
                jobs::count_start();
                finished.send(id).await?;
            }
            bar.set_position(claimed);
        }
        drop(finished);
        completer.await??;
        let elapsed = started.elapsed();
        let server = Postgres::server_cost(&self.pool, before, jobs).await?;
        let completed = self.count("completed").await?;
        let left = self.count_all().await?;
        let check = drain_check(phase, jobs, delete, completed, left)?;
        let result = Throughput::new(jobs, elapsed, check).with_server(server);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    async fn drain_tx(
        &self,
        jobs: u64,
        counter_rows: i64,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<Throughput> {
        let phase = format!("baseline drain tx ({concurrency})");
        let counter_rows = counter_rows.max(1);
        self.clear().await?;
        self.reset_counters(counter_rows).await?;
        for first in (0..jobs).step_by(batch.max(1)) {
            let counters = (first..(first + batch as u64).min(jobs)).map(|n| CounterJob {
                counter: i64::try_from(n).unwrap_or(0) % counter_rows,
            });
            self.insert_many(counters).await?;
        }
        let bar = bar(&phase, jobs);
        let before = Postgres::server_reading(&self.pool).await?;
        let started = Instant::now();
        let concurrency = concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        let mut claimed = 0;
        while claimed < jobs {
            // Like offload, claim no more than the free slots can start.
            let rows = claim(&self.pool, self.batches.fetch.min(concurrency)).await?;
            ensure!(
                !rows.is_empty(),
                "{phase}: nothing to claim after {claimed} of {jobs}"
            );
            claimed += rows.len() as u64;
            for (id, args, attempt) in rows {
                let slot = slots.clone().acquire_owned().await?;
                let job: CounterJob = serde_json::from_value(args)?;
                let pool = self.pool.clone();
                running.spawn(async move {
                    jobs::count_start();
                    let done = bump_and_complete(&pool, id, attempt, job.counter).await;
                    drop(slot);
                    done
                });
                while let Some(joined) = running.try_join_next() {
                    joined??;
                }
            }
            bar.set_position(claimed);
        }
        while let Some(joined) = running.join_next().await {
            joined??;
        }
        let elapsed = started.elapsed();
        let server = Postgres::server_cost(&self.pool, before, jobs).await?;
        let completed = self.count("completed").await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COALESCE(sum(n), 0)::int8 FROM baseline_counters")
                .fetch_one(&self.pool)
                .await?;
        let total = u64::try_from(total).unwrap_or(0);
        let check = tx_drain_check(&phase, jobs, completed, total)?;
        let result = Throughput::new(jobs, elapsed, check).with_server(server);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    async fn latency(&self, rate: f64, duration: Duration) -> anyhow::Result<Latency> {
        latency::measure(self, rate, duration).await
    }
}

impl PgBaseline {
    async fn clear(&self) -> sqlx::Result<()> {
        sqlx::query("TRUNCATE baseline_jobs")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reset_counters(&self, rows: i64) -> sqlx::Result<()> {
        sqlx::query("TRUNCATE baseline_counters")
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO baseline_counters (id, n) SELECT i, 0 FROM generate_series(0, $1 - 1) AS i")
            .bind(rows)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_many(
        &self,
        jobs: impl Iterator<Item = impl serde::Serialize>,
    ) -> anyhow::Result<()> {
        insert_args(&self.pool, jobs).await
    }

    async fn count(&self, state: &str) -> sqlx::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM baseline_jobs WHERE state = $1")
            .bind(state)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn count_all(&self) -> sqlx::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM baseline_jobs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn insert_noops(pool: &PgPool, numbers: std::ops::Range<u64>) -> anyhow::Result<()> {
    insert_args(pool, numbers.map(|n| NoopJob { n })).await
}

/// One `INSERT ... SELECT FROM unnest` for every job of `jobs`.
async fn insert_args(
    pool: &PgPool,
    jobs: impl Iterator<Item = impl serde::Serialize>,
) -> anyhow::Result<()> {
    let args = jobs
        .map(serde_json::to_value)
        .collect::<Result<Vec<Value>, _>>()?;
    let queues = vec![QUEUE; args.len()];
    sqlx::query(INSERT_MANY)
        .bind(queues)
        .bind(args)
        .execute(pool)
        .await?;
    Ok(())
}

/// Claims up to `limit` available jobs: (id, args, attempt) each.
async fn claim(pool: &PgPool, limit: usize) -> sqlx::Result<Vec<(i64, Value, i32)>> {
    sqlx::query_as(CLAIM)
        .bind(QUEUE)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
}

/// Completes (or deletes) the ids that arrive, `batch` per statement, with
/// up to [`COMPLETION_WRITERS`] statements in flight, until every sender is
/// gone. Whatever arrives while a batch is written goes into the next.
async fn complete_batches(
    pool: PgPool,
    mut ids: mpsc::Receiver<i64>,
    batch: usize,
    delete: bool,
) -> anyhow::Result<()> {
    let statement = if delete { DELETE_MANY } else { COMPLETE_MANY };
    let mut writing = JoinSet::new();
    loop {
        while writing.len() >= COMPLETION_WRITERS {
            if let Some(joined) = writing.join_next().await {
                joined??;
            }
        }
        let mut pending = Vec::with_capacity(batch);
        if ids.recv_many(&mut pending, batch).await == 0 {
            break;
        }
        let pool = pool.clone();
        writing.spawn(async move {
            let written = sqlx::query(statement).bind(&pending).execute(&pool).await?;
            ensure!(
                written.rows_affected() == pending.len() as u64,
                "a completion batch missed rows"
            );
            anyhow::Ok(())
        });
    }
    while let Some(joined) = writing.join_next().await {
        joined??;
    }
    Ok(())
}

/// One transactional job: the counter update and the guarded completion
/// commit together.
async fn bump_and_complete(
    pool: &PgPool,
    id: i64,
    attempt: i32,
    counter: i64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(BUMP_COUNTER)
        .bind(counter)
        .execute(&mut *tx)
        .await?;
    let completed = sqlx::query(COMPLETE_GUARDED)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    ensure!(
        completed.rows_affected() == 1,
        "job {id} attempt {attempt} was no longer running"
    );
    tx.commit().await?;
    Ok(())
}
