//! Figures of several rounds per measure, offload's and the baseline's, with
//! their medians and ratio; printed as a table when a run has more than one
//! round or a baseline.

use std::fmt;

use serde::Serialize;

use crate::report::{Latency, ServerCost, Throughput};
use crate::Phase;

/// One measure's figures over every round, on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The phase the figures come from.
    pub phase: Phase,
    /// What was measured, as the table names it.
    pub measure: String,
    /// The transactional drain's queue concurrency; `None` for other phases.
    pub tx_concurrency: Option<usize>,
    /// `jobs/s`, or `ms` for latencies.
    pub unit: String,
    /// offload's figures.
    pub offload: Side,
    /// The hand-written baseline's figures; `None` without `--baseline` and
    /// for the `single` phase, which has no baseline.
    pub baseline: Option<Side>,
    /// offload's median ÷ the baseline's median. For jobs/s above 1 means
    /// offload is faster; for ms below 1 does.
    pub ratio: Option<f64>,
}

/// One side's figures of a measure.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// The figure of each round, in the order they ran.
    pub rounds: Vec<f64>,
    /// Their median (the mean of the middle two for an even count).
    pub median: f64,
    /// What each round checked after it ran.
    pub checks: Vec<String>,
    /// PostgreSQL throughput measures only: the median over the rounds of
    /// each of the server's figures per job.
    pub server: Option<ServerCost>,
}

impl Side {
    fn new(rounds: Vec<f64>, checks: Vec<String>, server: Option<ServerCost>) -> Self {
        Self {
            median: median(&rounds),
            rounds,
            checks,
            server,
        }
    }
}

impl Comparison {
    /// A row in jobs/s from the runs of each side.
    pub(crate) fn throughput(
        phase: Phase,
        measure: &str,
        tx_concurrency: Option<usize>,
        offload: &[Throughput],
        baseline: Option<&[Throughput]>,
    ) -> Self {
        let side = |runs: &[Throughput]| {
            let costs: Option<Vec<ServerCost>> = runs.iter().map(|t| t.server).collect();
            Side::new(
                runs.iter().map(|t| t.jobs_per_sec).collect(),
                runs.iter().map(|t| t.check.clone()).collect(),
                costs.as_deref().and_then(ServerCost::median),
            )
        };
        Self::new(
            phase,
            measure,
            tx_concurrency,
            "jobs/s",
            side(offload),
            baseline.map(side),
        )
    }

    /// A latency row: `figure` picks one number (in `unit`) out of each run.
    pub(crate) fn latency(
        measure: &str,
        unit: &str,
        figure: fn(&Latency) -> f64,
        offload: &[Latency],
        baseline: Option<&[Latency]>,
    ) -> Self {
        let side = |runs: &[Latency]| {
            Side::new(
                runs.iter().map(figure).collect(),
                runs.iter()
                    .map(|l| format!("{} samples", l.samples))
                    .collect(),
                None,
            )
        };
        Self::new(
            Phase::Latency,
            measure,
            None,
            unit,
            side(offload),
            baseline.map(side),
        )
    }

    fn new(
        phase: Phase,
        measure: &str,
        tx_concurrency: Option<usize>,
        unit: &str,
        offload: Side,
        baseline: Option<Side>,
    ) -> Self {
        let ratio = baseline
            .as_ref()
            .filter(|b| b.median > 0.0)
            .map(|b| offload.median / b.median);
        Self {
            phase,
            measure: measure.to_owned(),
            tx_concurrency,
            unit: unit.to_owned(),
            offload,
            baseline,
            ratio,
        }
    }
}

/// The median of `values`; 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The run whose `figure` is the median (the lower middle one for an even
/// count), so that a report's single-run fields show a typical round.
pub(crate) fn median_run<T: Clone>(runs: &[T], figure: impl Fn(&T) -> f64) -> Option<T> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| figure(&runs[a]).total_cmp(&figure(&runs[b])));
    let middle = *order.get(runs.len().saturating_sub(1) / 2)?;
    Some(runs[middle].clone())
}

/// Writes the comparison table: medians and ratio, then every round.
pub(crate) fn write_table(
    f: &mut fmt::Formatter<'_>,
    rows: &[Comparison],
    rounds: usize,
) -> fmt::Result {
    let figure = |unit: &str, value: f64| {
        if unit == "ms" {
            format!("{value:.2}")
        } else {
            format!("{value:.0}")
        }
    };
    writeln!(
        f,
        "{:<40} {:>6} {:>10} {:>10} {:>7}",
        "measure (median)", "unit", "offload", "baseline", "ratio"
    )?;
    writeln!(f, "{}", "-".repeat(77))?;
    for row in rows {
        let baseline = row
            .baseline
            .as_ref()
            .map_or_else(|| "—".to_owned(), |b| figure(&row.unit, b.median));
        let ratio = row
            .ratio
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
        writeln!(
            f,
            "{:<40} {:>6} {:>10} {:>10} {:>7}",
            row.measure,
            row.unit,
            figure(&row.unit, row.offload.median),
            baseline,
            ratio
        )?;
        write_server_rows(f, row)?;
    }
    writeln!(
        f,
        "medians of {rounds} round(s); ratio = offload ÷ baseline (jobs/s: above 1 means offload is faster; ms, B and µs per job: below 1)"
    )?;
    if rows.iter().any(|row| row.phase == Phase::DrainLimits) {
        writeln!(
            f,
            "rows \"(vs none)\": offload under the limit | the same drain without it; ratio = limited ÷ unlimited"
        )?;
    }
    writeln!(f)?;
    writeln!(f, "per round (offload | baseline):")?;
    for row in rows {
        let list = |side: &Side| {
            side.rounds
                .iter()
                .map(|&v| figure(&row.unit, v))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let baseline = row.baseline.as_ref().map_or_else(|| "—".to_owned(), list);
        writeln!(
            f,
            "  {:<38} {} | {}",
            row.measure,
            list(&row.offload),
            baseline
        )?;
    }
    Ok(())
}

/// Picks one figure out of a server cost.
type ServerFigure = fn(&ServerCost) -> Option<f64>;

/// Under a PostgreSQL throughput row: WAL bytes and server CPU per job,
/// each side's median and their ratio, in the table's columns.
fn write_server_rows(f: &mut fmt::Formatter<'_>, row: &Comparison) -> fmt::Result {
    let Some(offload) = &row.offload.server else {
        return Ok(());
    };
    let baseline = row.baseline.as_ref().and_then(|b| b.server);
    let figures: [(&str, &str, ServerFigure); 2] = [
        ("  WAL per job", "B", |c| Some(c.wal_bytes_per_job)),
        ("  server CPU per job", "µs", |c| c.cpu_us_per_job),
    ];
    for (measure, unit, figure) in figures {
        let text = |value: Option<f64>| {
            value.map_or_else(
                || "n/a".to_owned(),
                |v| {
                    if unit == "B" {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.1}")
                    }
                },
            )
        };
        let ours = figure(offload);
        let theirs = baseline.as_ref().map(figure);
        let ratio = match (ours, theirs.flatten()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "—".to_owned(),
        };
        let theirs = theirs.map_or_else(|| "—".to_owned(), text);
        writeln!(
            f,
            "{measure:<40} {unit:>6} {:>10} {theirs:>10} {ratio:>7}",
            text(ours)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median_run(&[5, 1, 3], |&v| f64::from(v)), Some(3));
    }
}
