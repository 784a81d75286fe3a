//! What a run measured: printable as a table, serializable as JSON.

use std::fmt;

use serde::Serialize;

use crate::comparison::{median, write_table, Comparison};
use crate::Phase;

/// Every figure of one run. Phases that were not run are `None`; with more
/// than one round, each phase's field holds offload's median round (by
/// jobs/s, or by p99 for latency; for drain-tx, of the first concurrency),
/// and [`Report::comparisons`] has every round.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `postgres` or `sqlite`.
    pub backend: String,
    /// The scratch database (PostgreSQL) or file (SQLite) the run used.
    pub database: String,
    /// The settings the run used.
    pub settings: Settings,
    /// Rounds of each measure, per side.
    pub rounds: usize,
    /// Whether the hand-written baseline ran, alternating with offload.
    pub baseline: bool,
    /// `enqueue_many` in batches.
    pub bulk_enqueue: Option<Throughput>,
    /// One `enqueue` per job, from several tasks.
    pub single_enqueue: Option<Throughput>,
    /// No-op jobs, completed rows kept (default retention).
    pub drain_noop: Option<Throughput>,
    /// No-op jobs, completed rows deleted (retention 0).
    pub drain_noop_delete: Option<Throughput>,
    /// Jobs that update a row in their own transaction.
    pub drain_tx: Option<Throughput>,
    /// Enqueue-to-start delay at a steady enqueue rate.
    pub latency: Option<Latency>,
    /// Per measure (and per drain-tx concurrency): every round's figure on
    /// both sides, both medians and offload ÷ baseline.
    pub comparisons: Vec<Comparison>,
}

/// The knobs a run used, so that figures can be compared.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Pool size.
    pub max_connections: u32,
    /// Queue concurrency for no-op and latency jobs.
    pub concurrency: usize,
    /// Queue concurrency for transactional jobs: one drain-tx measure per value.
    pub tx_concurrency: Vec<usize>,
    /// Most jobs claimed per statement.
    pub fetch_batch: usize,
    /// Most completions written per statement.
    pub completer_batch: usize,
    /// Whether commits wait for the WAL flush (PostgreSQL's default).
    pub synchronous_commit: bool,
}

/// Jobs handled per second in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Jobs handled.
    pub jobs: u64,
    /// Wall-clock time, in seconds.
    pub seconds: f64,
    /// `jobs / seconds`.
    pub jobs_per_sec: f64,
    /// What the phase checked after it ran (counts, counter sums).
    pub check: String,
    /// PostgreSQL only: what the timed part of the phase cost the server.
    /// `None` on SQLite.
    pub server: Option<ServerCost>,
}

/// What a measured phase cost the PostgreSQL server, per job, read just
/// before and just after its timed part (the untimed backlog insert of a
/// drain is not in it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCost {
    /// WAL bytes written, from `pg_current_wal_lsn()` before and after:
    /// the whole server's WAL, so other databases' writes meanwhile count.
    pub wal_bytes_per_job: f64,
    /// CPU time (user + system, in µs) of the server processes serving the
    /// scratch database (`pg_stat_activity`), from `/proc/<pid>/stat` in
    /// 10 ms ticks; the WAL writer, checkpointer and other background
    /// processes are not in it. `None` when those processes' `/proc`
    /// entries could not be read (for example a server on another machine).
    pub cpu_us_per_job: Option<f64>,
}

impl ServerCost {
    /// The median of each figure over `costs` (CPU only if every one has
    /// it); `None` for no costs.
    pub(crate) fn median(costs: &[ServerCost]) -> Option<Self> {
        if costs.is_empty() {
            return None;
        }
        let wal: Vec<f64> = costs.iter().map(|c| c.wal_bytes_per_job).collect();
        let cpu: Option<Vec<f64>> = costs.iter().map(|c| c.cpu_us_per_job).collect();
        Some(Self {
            wal_bytes_per_job: median(&wal),
            cpu_us_per_job: cpu.map(|cpu| median(&cpu)),
        })
    }
}

impl fmt::Display for ServerCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server per job: {:.0} WAL bytes, ",
            self.wal_bytes_per_job
        )?;
        match self.cpu_us_per_job {
            Some(us) => write!(f, "{us:.1} µs CPU"),
            None => write!(f, "CPU n/a"),
        }
    }
}

/// What a no-op drain checks after it ran, as the report shows it: every
/// job `completed` (rows kept) or no row left (`delete`).
pub(crate) fn drain_check(
    phase: &str,
    jobs: u64,
    delete: bool,
    completed: u64,
    left: u64,
) -> anyhow::Result<String> {
    if delete {
        anyhow::ensure!(left == 0, "{phase}: {left} rows left after the drain");
        Ok("0 rows left".to_owned())
    } else {
        anyhow::ensure!(
            completed == jobs,
            "{phase}: {completed} of {jobs} jobs completed"
        );
        Ok(format!("{completed} completed"))
    }
}

/// What a transactional drain checks after it ran: every job completed,
/// and the counters sum to the number of jobs (each effect committed once).
pub(crate) fn tx_drain_check(
    phase: &str,
    jobs: u64,
    completed: u64,
    counter_total: u64,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        completed == jobs && counter_total == jobs,
        "{phase}: {completed} of {jobs} jobs completed, counters sum to {counter_total}"
    );
    Ok(format!(
        "{completed} completed, counters sum {counter_total}"
    ))
}

impl Throughput {
    pub(crate) fn new(jobs: u64, elapsed: std::time::Duration, check: String) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            jobs,
            seconds,
            jobs_per_sec: if seconds > 0.0 {
                jobs as f64 / seconds
            } else {
                0.0
            },
            check,
            server: None,
        }
    }

    /// The same figures with the server's cost of the phase.
    pub(crate) fn with_server(self, server: Option<ServerCost>) -> Self {
        Self { server, ..self }
    }
}

/// Enqueue-to-start delays, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Jobs per second the bench tried to enqueue.
    pub target_rate: f64,
    /// Jobs per second it did enqueue.
    pub achieved_rate: f64,
    /// Jobs measured.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Median delay from the enqueue call's return (the commit) to the
    /// start: the pick-up time alone, without the insert.
    pub pickup_p50_ms: f64,
    /// 99th percentile of that delay.
    pub pickup_p99_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(f, "offload bench: {} ({})", self.backend, self.database)?;
        writeln!(
            f,
            "pool {} connections, concurrency {} (tx jobs {}), fetch batch {}, completer batch {}{}",
            s.max_connections,
            s.concurrency,
            s.tx_concurrency
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            s.fetch_batch,
            s.completer_batch,
            if s.synchronous_commit { "" } else { ", synchronous_commit off" }
        )?;
        writeln!(f)?;
        if self.rounds > 1 || self.baseline {
            return write_table(f, &self.comparisons, self.rounds);
        }
        writeln!(
            f,
            "{:<34} {:>9} {:>9} {:>12}  check",
            "phase", "jobs", "seconds", "jobs/s"
        )?;
        writeln!(f, "{}", "-".repeat(78))?;
        let rows = [
            ("bulk enqueue (enqueue_many)", &self.bulk_enqueue),
            ("single enqueue (enqueue)", &self.single_enqueue),
            ("drain no-op, rows kept", &self.drain_noop),
            ("drain no-op, retention 0", &self.drain_noop_delete),
            ("drain tx (update row in job tx)", &self.drain_tx),
        ];
        for (name, phase) in rows {
            match phase {
                Some(t) => {
                    writeln!(
                        f,
                        "{name:<34} {:>9} {:>9.3} {:>12.0}  {}",
                        t.jobs, t.seconds, t.jobs_per_sec, t.check
                    )?;
                    if let Some(server) = &t.server {
                        writeln!(f, "  {server}")?;
                    }
                }
                None => writeln!(f, "{name:<34} {:>9}", "skipped")?,
            }
        }
        writeln!(f)?;
        match &self.latency {
            Some(l) => {
                writeln!(
                    f,
                    "latency at {:.0} jobs/s target (achieved {:.0}/s, {} jobs, one enqueue each):",
                    l.target_rate, l.achieved_rate, l.samples
                )?;
                writeln!(
                    f,
                    "  enqueue call -> job start: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
                )?;
                writeln!(
                    f,
                    "  commit       -> job start: p50 {:.2} ms, p99 {:.2} ms",
                    l.pickup_p50_ms, l.pickup_p99_ms
                )
            }
            None => writeln!(f, "enqueue-to-start latency: skipped"),
        }?;
        // A limit's cost is a comparison even in one round.
        let limits: Vec<Comparison> = self
            .comparisons
            .iter()
            .filter(|c| c.phase == Phase::DrainLimits)
            .cloned()
            .collect();
        if limits.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        write_table(f, &limits, self.rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::ServerCost;

    #[test]
    fn server_cost_prints_and_takes_medians_without_cpu() {
        let cost = |cpu| ServerCost {
            wal_bytes_per_job: 100.0,
            cpu_us_per_job: cpu,
        };
        assert_eq!(
            cost(Some(2.54)).to_string(),
            "server per job: 100 WAL bytes, 2.5 µs CPU"
        );
        assert_eq!(
            cost(None).to_string(),
            "server per job: 100 WAL bytes, CPU n/a"
        );
        let median = ServerCost::median(&[cost(Some(1.0)), cost(None), cost(Some(3.0))]);
        assert_eq!(median, Some(cost(None)));
        let median = ServerCost::median(&[cost(Some(1.0)), cost(Some(5.0)), cost(Some(3.0))]);
        assert_eq!(median, Some(cost(Some(3.0))));
        assert_eq!(ServerCost::median(&[]), None);
    }
}
