//! The baseline on SQLite: rusqlite against the C library, on the same
//! scratch file, as an embedded user could write it. Each measure runs its
//! statements on one connection in a dedicated thread (SQLite has one writer
//! at a time, so more connections would only wait on its lock); the latency
//! measure adds a second thread for the inserts.

mod latency;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use rusqlite::{params, Connection, TransactionBehavior};
use sqlx::{Sqlite, SqlitePool};

use super::{Baseline, Batches, WithBaseline};
use crate::jobs::{self, CounterJob, LatencyJob, NoopJob, QUEUE};
use crate::phase::{bar, finish};
use crate::report::{drain_check, tx_drain_check, Latency, Settings, Throughput};
use crate::store::sqlite::sqlite_path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS baseline_jobs (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'available',
    args TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS baseline_jobs_claim ON baseline_jobs (queue, run_at, id)
    WHERE state = 'available';
CREATE TABLE IF NOT EXISTS baseline_counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
";

/// `run_at` is in microseconds since the Unix epoch.
const INSERT: &str = "INSERT INTO baseline_jobs (queue, args, run_at) VALUES (?1, ?2, ?3)";

const CLAIM: &str = "UPDATE baseline_jobs SET state = 'running', attempt = attempt + 1
     WHERE id IN (SELECT id FROM baseline_jobs
                  WHERE queue = ?1 AND state = 'available' AND run_at <= ?2
                  ORDER BY run_at, id LIMIT ?3)
     RETURNING id, args, attempt";

const COMPLETE: &str = "UPDATE baseline_jobs SET state = 'completed' WHERE id = ?1";
const DELETE: &str = "DELETE FROM baseline_jobs WHERE id = ?1";
const BUMP_COUNTER: &str = "UPDATE baseline_counters SET n = n + 1 WHERE id = ?1";
const COMPLETE_GUARDED: &str = "UPDATE baseline_jobs SET state = 'completed'
     WHERE id = ?1 AND attempt = ?2 AND state = 'running'";

/// The SQLite baseline: a path, since every measure opens its own
/// connections in its own threads.
pub(crate) struct SqliteBaseline {
    path: PathBuf,
    batches: Batches,
}

impl WithBaseline for Sqlite {
    type Baseline = SqliteBaseline;

    async fn baseline(
        _pool: &SqlitePool,
        url: &str,
        settings: &Settings,
    ) -> anyhow::Result<SqliteBaseline> {
        let path = sqlite_path(url);
        let opened = path.clone();
        tokio::task::spawn_blocking(move || open(&opened)?.execute_batch(SCHEMA)).await??;
        Ok(SqliteBaseline {
            path,
            batches: Batches::new(settings),
        })
    }
}

/// A connection with offload's pragmas: WAL, `synchronous = NORMAL`, a busy
/// timeout.
fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // The pragma answers with the mode in force, which is all it reports.
    let _wal: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Baseline for SqliteBaseline {
    /// On one connection: SQLite has one writer at a time, so `tasks` more
    /// connections would only take turns.
    async fn bulk_insert(
        &self,
        jobs: u64,
        batch: usize,
        _tasks: usize,
    ) -> anyhow::Result<Throughput> {
        let bar = bar("baseline bulk insert", jobs);
        let path = self.path.clone();
        let thread_bar = bar.clone();
        let (elapsed, stored) = on_thread(move || {
            let mut conn = open(&path)?;
            clear(&conn)?;
            let started = Instant::now();
            insert_noops(&mut conn, jobs, batch, &thread_bar)?;
            Ok((started.elapsed(), count(&conn, Some("available"))?))
        })
        .await?;
        ensure!(
            stored == jobs,
            "baseline bulk insert stored {stored} of {jobs} jobs"
        );
        let result = Throughput::new(jobs, elapsed, format!("{stored} rows available"));
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    async fn drain(&self, jobs: u64, batch: usize, delete: bool) -> anyhow::Result<Throughput> {
        let phase = if delete {
            "baseline drain, deleted"
        } else {
            "baseline drain"
        };
        let bar = bar(phase, jobs);
        let (path, batches, thread_bar) = (self.path.clone(), self.batches, bar.clone());
        let (elapsed, completed, left) = on_thread(move || {
            let mut conn = open(&path)?;
            clear(&conn)?;
            insert_noops(&mut conn, jobs, batch, &indicatif::ProgressBar::hidden())?;
            let started = Instant::now();
            let complete = if delete { DELETE } else { COMPLETE };
            let mut claimed = 0;
            while claimed < jobs {
                let rows = claim(&mut conn, batches.fetch)?;
                ensure!(
                    !rows.is_empty(),
                    "{phase}: nothing to claim after {claimed} of {jobs}"
                );
                claimed += rows.len() as u64;
                for (_, args, _) in &rows {
                    let _job: NoopJob = serde_json::from_str(args)?;
                    jobs::count_start();
                }
                for chunk in rows.chunks(batches.complete) {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let mut statement = tx.prepare_cached(complete)?;
                    for (id, _, _) in chunk {
                        ensure!(statement.execute([id])? == 1, "{phase}: job {id} missed");
                    }
                    drop(statement);
                    tx.commit()?;
                }
                thread_bar.set_position(claimed);
            }
            let elapsed = started.elapsed();
            Ok((
                elapsed,
                count(&conn, Some("completed"))?,
                count(&conn, None)?,
            ))
        })
        .await?;
        let check = drain_check(phase, jobs, delete, completed, left)?;
        let result = Throughput::new(jobs, elapsed, check);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    /// One connection runs the transactions one after another: SQLite
    /// serialises writers anyway, so `concurrency` only labels the row.
    async fn drain_tx(
        &self,
        jobs: u64,
        counter_rows: i64,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<Throughput> {
        let phase = format!("baseline drain tx ({concurrency})");
        let bar = bar(&phase, jobs);
        let (path, batches, thread_bar) = (self.path.clone(), self.batches, bar.clone());
        let counter_rows = counter_rows.max(1);
        let thread_phase = phase.clone();
        let (elapsed, completed, total) = on_thread(move || {
            let mut conn = open(&path)?;
            clear(&conn)?;
            conn.execute("DELETE FROM baseline_counters", [])?;
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
                 INSERT INTO baseline_counters (id, n) SELECT i, 0 FROM n",
                [counter_rows],
            )?;
            let counters = (0..jobs).map(|n| CounterJob {
                counter: i64::try_from(n).unwrap_or(0) % counter_rows,
            });
            insert_batches(&mut conn, counters, batch)?;
            let started = Instant::now();
            let mut claimed = 0;
            while claimed < jobs {
                let rows = claim(&mut conn, batches.fetch)?;
                ensure!(
                    !rows.is_empty(),
                    "{thread_phase}: nothing to claim after {claimed} of {jobs}"
                );
                claimed += rows.len() as u64;
                for (id, args, attempt) in rows {
                    let job: CounterJob = serde_json::from_str(&args)?;
                    jobs::count_start();
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.prepare_cached(BUMP_COUNTER)?.execute([job.counter])?;
                    let done = tx
                        .prepare_cached(COMPLETE_GUARDED)?
                        .execute(params![id, attempt])?;
                    ensure!(
                        done == 1,
                        "job {id} attempt {attempt} was no longer running"
                    );
                    tx.commit()?;
                }
                thread_bar.set_position(claimed);
            }
            let elapsed = started.elapsed();
            let total: i64 = conn.query_row(
                "SELECT COALESCE(sum(n), 0) FROM baseline_counters",
                [],
                |row| row.get(0),
            )?;
            Ok((
                elapsed,
                count(&conn, Some("completed"))?,
                u64::try_from(total).unwrap_or(0),
            ))
        })
        .await?;
        let check = tx_drain_check(&phase, jobs, completed, total)?;
        let result = Throughput::new(jobs, elapsed, check);
        finish(bar, &format!("{:.0} jobs/s", result.jobs_per_sec));
        Ok(result)
    }

    async fn latency(&self, rate: f64, duration: Duration) -> anyhow::Result<Latency> {
        latency::measure(self, rate, duration).await
    }
}

/// Runs `work` on a blocking thread.
async fn on_thread<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

fn clear(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM baseline_jobs", []).map(drop)
}

fn count(conn: &Connection, state: Option<&str>) -> rusqlite::Result<u64> {
    let n: i64 = match state {
        Some(state) => conn.query_row(
            "SELECT count(*) FROM baseline_jobs WHERE state = ?1",
            [state],
            |row| row.get(0),
        )?,
        None => conn.query_row("SELECT count(*) FROM baseline_jobs", [], |row| row.get(0))?,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

fn insert_noops(
    conn: &mut Connection,
    jobs: u64,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut next = 0;
    while next < jobs {
        let end = (next + batch.max(1) as u64).min(jobs);
        insert_batches(conn, (next..end).map(|n| NoopJob { n }), batch)?;
        bar.inc(end - next);
        next = end;
    }
    Ok(())
}

/// One prepared INSERT per job, `batch` jobs per transaction.
fn insert_batches(
    conn: &mut Connection,
    jobs: impl Iterator<Item = impl serde::Serialize>,
    batch: usize,
) -> anyhow::Result<()> {
    let mut jobs = jobs.peekable();
    while jobs.peek().is_some() {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut statement = tx.prepare_cached(INSERT)?;
        let now = jobs::now_micros();
        for job in jobs.by_ref().take(batch.max(1)) {
            statement.execute(params![QUEUE, serde_json::to_string(&job)?, now])?;
        }
        drop(statement);
        tx.commit()?;
    }
    Ok(())
}

fn insert_one(conn: &Connection, job: &LatencyJob) -> anyhow::Result<i64> {
    conn.prepare_cached(INSERT)?.execute(params![
        QUEUE,
        serde_json::to_string(job)?,
        jobs::now_micros()
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Claims up to `limit` available jobs in one transaction: (id, args,
/// attempt) each.
fn claim(conn: &mut Connection, limit: usize) -> rusqlite::Result<Vec<(i64, String, i64)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = {
        let mut statement = tx.prepare_cached(CLAIM)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![QUEUE, jobs::now_micros(), limit], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
    Ok(rows)
}
