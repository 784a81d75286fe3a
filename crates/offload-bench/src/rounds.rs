//! Runs every selected measure for the configured rounds, offload and the
//! baseline taking turns inside each measure (offload, baseline, offload,
//! ...), so that both sides see the same drift of the machine.

use std::future::{Future, Pending};
use std::time::Duration;

use crate::baseline::{Baseline, WithBaseline};
use crate::comparison::{median_run, Comparison};
use crate::phase::limits::QueueLimit;
use crate::phase::Bench;
use crate::report::{Latency, Report};
use crate::{BenchArgs, Phase};

/// Fills `report` with every selected measure's rounds, on offload and (if
/// given) on `baseline`.
pub(crate) async fn measure_all<DB: WithBaseline>(
    bench: &Bench<DB>,
    baseline: Option<&DB::Baseline>,
    args: &BenchArgs,
    rounds: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    if args.runs(Phase::Bulk) {
        let (batch, tasks) = (args.bulk_batch, args.bulk_tasks);
        let (offload, base) = alternate(
            rounds,
            || bench.bulk_enqueue(args.bulk_jobs, batch, tasks),
            baseline.map(|b| move || b.bulk_insert(args.bulk_jobs, batch, tasks)),
        )
        .await?;
        report.bulk_enqueue = median_run(&offload, |t| t.jobs_per_sec);
        report.comparisons.push(Comparison::throughput(
            Phase::Bulk,
            "bulk enqueue (enqueue_many)",
            None,
            &offload,
            base.as_deref(),
        ));
    }
    if args.runs(Phase::Single) {
        // No baseline: one insert per call is what the bulk and latency
        // measures already compare.
        let (offload, _) = alternate(
            rounds,
            || bench.single_enqueue(args.single_jobs, args.single_tasks),
            no_baseline(),
        )
        .await?;
        report.single_enqueue = median_run(&offload, |t| t.jobs_per_sec);
        report.comparisons.push(Comparison::throughput(
            Phase::Single,
            "single enqueue (enqueue)",
            None,
            &offload,
            None,
        ));
    }
    for (phase, delete, measure) in [
        (Phase::Drain, false, "drain no-op, rows kept"),
        (Phase::DrainDelete, true, "drain no-op, retention 0"),
    ] {
        if !args.runs(phase) {
            continue;
        }
        let (jobs, batch) = (args.drain_jobs, args.bulk_batch);
        let (offload, base) = alternate(
            rounds,
            || bench.drain_noop(jobs, batch, delete),
            baseline.map(|b| move || b.drain(jobs, batch, delete)),
        )
        .await?;
        let median = median_run(&offload, |t| t.jobs_per_sec);
        if delete {
            report.drain_noop_delete = median;
        } else {
            report.drain_noop = median;
        }
        report.comparisons.push(Comparison::throughput(
            phase,
            measure,
            None,
            &offload,
            base.as_deref(),
        ));
    }
    if args.runs(Phase::DrainTx) {
        let (jobs, rows, batch) = (args.tx_jobs, args.counter_rows, args.bulk_batch);
        for &concurrency in &report.settings.tx_concurrency.clone() {
            let (offload, base) = alternate(
                rounds,
                || bench.drain_tx(jobs, rows, batch, concurrency),
                baseline.map(|b| move || b.drain_tx(jobs, rows, batch, concurrency)),
            )
            .await?;
            if report.drain_tx.is_none() {
                report.drain_tx = median_run(&offload, |t| t.jobs_per_sec);
            }
            report.comparisons.push(Comparison::throughput(
                Phase::DrainTx,
                &format!("drain tx, concurrency {concurrency}"),
                Some(concurrency),
                &offload,
                base.as_deref(),
            ));
        }
    }
    if args.runs(Phase::DrainLimits) {
        let (jobs, batch) = (args.drain_jobs, args.bulk_batch);
        for limit in [QueueLimit::Rate, QueueLimit::PerKey] {
            // The unlimited drain takes the baseline's turns and column.
            let (limited, unlimited) = alternate(
                rounds,
                || bench.drain_limited(jobs, batch, limit),
                Some(|| bench.drain_limited(jobs, batch, QueueLimit::Unlimited)),
            )
            .await?;
            report.comparisons.push(Comparison::throughput(
                Phase::DrainLimits,
                &format!("{} (vs none)", limit.measure()),
                None,
                &limited,
                unlimited.as_deref(),
            ));
        }
    }
    if args.runs(Phase::Latency) {
        let rate = args.latency_rate;
        let duration = Duration::from_secs_f64(args.latency_secs.max(0.1));
        let (offload, base) = alternate(
            rounds,
            || bench.latency(rate, duration),
            baseline.map(|b| move || b.latency(rate, duration)),
        )
        .await?;
        report.latency = median_run(&offload, |l| l.p99_ms);
        // p99 is the figure to compare; the achieved rate and the pick-up
        // time (commit -> start) tell a slow insert from a slow worker.
        let rows: [(&str, &str, LatencyFigure); 4] = [
            ("latency p50, enqueue call -> start", "ms", |l| l.p50_ms),
            ("latency p99, enqueue call -> start", "ms", |l| l.p99_ms),
            ("latency p99, commit -> start", "ms", |l| l.pickup_p99_ms),
            ("latency, achieved enqueue rate", "jobs/s", |l| {
                l.achieved_rate
            }),
        ];
        for (measure, unit, figure) in rows {
            report.comparisons.push(Comparison::latency(
                measure,
                unit,
                figure,
                &offload,
                base.as_deref(),
            ));
        }
    }
    Ok(())
}

/// Picks one figure out of a latency run.
type LatencyFigure = fn(&Latency) -> f64;

/// Runs `offload` and `baseline` in turns, `rounds` times each; returns
/// each side's results in the order they ran.
async fn alternate<T, OfferOffload, OffloadRun, OfferBaseline, BaselineRun>(
    rounds: usize,
    mut offload: OfferOffload,
    mut baseline: Option<OfferBaseline>,
) -> anyhow::Result<(Vec<T>, Option<Vec<T>>)>
where
    OfferOffload: FnMut() -> OffloadRun,
    OffloadRun: Future<Output = anyhow::Result<T>>,
    OfferBaseline: FnMut() -> BaselineRun,
    BaselineRun: Future<Output = anyhow::Result<T>>,
{
    let mut offload_runs = Vec::with_capacity(rounds);
    let mut baseline_runs = baseline.as_ref().map(|_| Vec::with_capacity(rounds));
    for _ in 0..rounds.max(1) {
        offload_runs.push(offload().await?);
        if let (Some(run), Some(runs)) = (baseline.as_mut(), baseline_runs.as_mut()) {
            runs.push(run().await?);
        }
    }
    Ok((offload_runs, baseline_runs))
}

/// The `baseline` argument of [`alternate`] for a measure without one.
fn no_baseline<T>() -> Option<fn() -> Pending<anyhow::Result<T>>> {
    None
}
