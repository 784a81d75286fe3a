//! A tiny `--baseline --rounds 1` run on each backend: both sides of every
//! measure ran and passed their checks, and the table shows both medians.

use clap::Parser;
use offload_bench::{BenchArgs, Comparison, Phase, Report};
use offload_test_fixture::{admin_url, FreshDatabase};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn tiny(extra: &[&str]) -> BenchArgs {
    let mut argv = vec![
        "bench",
        "--baseline",
        "--rounds",
        "1",
        "--bulk-jobs",
        "1000",
        "--bulk-batch",
        "250",
        "--single-jobs",
        "50",
        "--drain-jobs",
        "1000",
        "--tx-jobs",
        "120",
        "--counter-rows",
        "7",
        "--tx-concurrency",
        "2,4",
        "--latency-rate",
        "200",
        "--latency-secs",
        "0.3",
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).bench
}

fn row<'a>(report: &'a Report, measure: &str) -> &'a Comparison {
    report
        .comparisons
        .iter()
        .find(|c| c.measure == measure)
        .unwrap_or_else(|| panic!("no row {measure:?} in {:#?}", report.comparisons))
}

fn assert_both_sides_ran(report: &Report) {
    assert!(report.baseline);
    assert_eq!(report.rounds, 1);
    let expected_checks = [
        ("bulk enqueue (enqueue_many)", "1000 rows available"),
        ("drain no-op, rows kept", "1000 completed"),
        ("drain no-op, retention 0", "0 rows left"),
        ("drain tx, concurrency 2", "120 completed, counters sum 120"),
        ("drain tx, concurrency 4", "120 completed, counters sum 120"),
        ("latency p99, enqueue call -> start", "60 samples"),
    ];
    for (measure, check) in expected_checks {
        let row = row(report, measure);
        let baseline = row.baseline.as_ref().expect("the baseline ran");
        for side in [&row.offload, baseline] {
            assert_eq!(side.rounds.len(), 1, "{measure}: {side:?}");
            assert!(side.median > 0.0, "{measure}: {side:?}");
            assert_eq!(side.checks, [check], "{measure}");
        }
        assert!(row.ratio.is_some_and(|r| r > 0.0), "{measure}: {row:?}");
    }
    let single = row(report, "single enqueue (enqueue)");
    assert_eq!(single.phase, Phase::Single);
    assert!(single.baseline.is_none() && single.ratio.is_none());
    let table = report.to_string();
    assert!(table.contains("baseline") && table.contains('—'), "{table}");
    let json = serde_json::to_value(report).unwrap();
    assert!(json["comparisons"][0]["baseline"]["median"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_runs_beside_offload_on_sqlite() {
    let db = FreshDatabase::sqlite();
    let report = offload_bench::run(tiny(&["--database-url", db.url()]))
        .await
        .unwrap();
    assert_both_sides_ran(&report);
    assert!(report
        .comparisons
        .iter()
        .all(|c| c.offload.server.is_none()));
    assert!(!report.to_string().contains("WAL per job"));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_runs_beside_offload_on_postgres() {
    let report = offload_bench::run(tiny(&[
        "--database-url",
        &admin_url(),
        "--max-connections",
        "8",
    ]))
    .await
    .unwrap();
    assert_both_sides_ran(&report);
    // Both sides' throughput measures carry the server's cost per job. CPU
    // comes in 10 ms ticks, which measures this small may not fill: each
    // has a figure, and together each side's have spent some.
    let mut cpu = [0.0, 0.0];
    for measure in [
        "bulk enqueue (enqueue_many)",
        "drain no-op, rows kept",
        "drain no-op, retention 0",
        "drain tx, concurrency 2",
        "drain tx, concurrency 4",
    ] {
        let row = row(&report, measure);
        let baseline = row.baseline.as_ref().expect("the baseline ran");
        for (total, side) in cpu.iter_mut().zip([&row.offload, baseline]) {
            let server = side.server.unwrap_or_else(|| panic!("{measure}: {side:?}"));
            assert!(server.wal_bytes_per_job > 0.0, "{measure}: {server:?}");
            let us = server.cpu_us_per_job.expect("server CPU readable");
            assert!(us >= 0.0, "{measure}: {server:?}");
            *total += us;
        }
    }
    assert!(
        cpu.iter().all(|&us| us > 0.0),
        "server CPU per side: {cpu:?}"
    );
    assert!(row(&report, "latency p99, enqueue call -> start")
        .offload
        .server
        .is_none());
    let table = report.to_string();
    assert!(
        table.contains("WAL per job") && table.contains("server CPU per job"),
        "{table}"
    );
}
