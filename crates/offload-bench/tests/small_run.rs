//! A tiny run of every phase on each backend: the figures come out, the
//! drains' own checks pass, and the scratch database is gone afterwards.

use clap::Parser;
use offload_bench::BenchArgs;
use offload_test_fixture::{admin_url, FreshDatabase};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn small(extra: &[&str]) -> BenchArgs {
    let mut argv = vec![
        "bench",
        "--bulk-jobs",
        "2000",
        "--bulk-batch",
        "500",
        "--single-jobs",
        "200",
        "--drain-jobs",
        "2000",
        "--tx-jobs",
        "300",
        "--counter-rows",
        "7",
        "--latency-rate",
        "200",
        "--latency-secs",
        "0.5",
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).bench
}

fn assert_complete(report: &offload_bench::Report) {
    for (name, phase) in [
        ("bulk", &report.bulk_enqueue),
        ("single", &report.single_enqueue),
        ("drain", &report.drain_noop),
        ("drain-delete", &report.drain_noop_delete),
        ("drain-tx", &report.drain_tx),
    ] {
        let phase = phase.as_ref().unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            phase.jobs > 0 && phase.jobs_per_sec > 0.0,
            "{name}: {phase:?}"
        );
    }
    let tx = report.drain_tx.as_ref().expect("drain-tx ran");
    assert_eq!(tx.check, "300 completed, counters sum 300");
    let latency = report.latency.as_ref().expect("latency ran");
    assert_eq!(latency.samples, 100);
    assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    let table = report.to_string();
    assert!(table.contains("drain no-op, retention 0"), "{table}");
    let limits: Vec<_> = report
        .comparisons
        .iter()
        .filter(|c| c.phase == offload_bench::Phase::DrainLimits)
        .collect();
    assert_eq!(limits.len(), 2, "a rated and a partitioned drain");
    for row in limits {
        assert!(row.ratio.is_some_and(|r| r > 0.0), "{row:?}");
        assert!(table.contains(&row.measure), "{table}");
    }
}

/// The phases that insert or drain: the ones with the server's cost.
fn throughputs(report: &offload_bench::Report) -> Vec<(&'static str, &offload_bench::Throughput)> {
    [
        ("bulk", &report.bulk_enqueue),
        ("single", &report.single_enqueue),
        ("drain", &report.drain_noop),
        ("drain-delete", &report.drain_noop_delete),
        ("drain-tx", &report.drain_tx),
    ]
    .into_iter()
    .map(|(name, phase)| (name, phase.as_ref().expect("every phase ran")))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_reports_on_sqlite_and_removes_its_file() {
    let db = FreshDatabase::sqlite();
    let report = offload_bench::run(small(&["--database-url", db.url()]))
        .await
        .unwrap();
    assert_eq!(report.backend, "SQLite");
    assert_complete(&report);
    for (name, phase) in throughputs(&report) {
        assert!(phase.server.is_none(), "{name}: SQLite has no server");
    }
    let left: Vec<_> = std::fs::read_dir(db.dir().unwrap()).unwrap().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_reports_on_postgres_and_drops_its_database() {
    let server = admin_url();
    let report = offload_bench::run(small(&[
        "--database-url",
        &server,
        "--max-connections",
        "8",
    ]))
    .await
    .unwrap();
    assert_eq!(report.backend, "PostgreSQL");
    assert_complete(&report);
    // The server runs on this machine, so its processes' CPU is readable.
    // It comes in 10 ms ticks, which a phase this small may not fill: each
    // phase has a figure, and together they have spent some.
    let mut cpu = 0.0;
    for (name, phase) in throughputs(&report) {
        let server = phase
            .server
            .unwrap_or_else(|| panic!("{name}: no server cost"));
        assert!(server.wal_bytes_per_job > 0.0, "{name}: {server:?}");
        let us = server.cpu_us_per_job.expect("server CPU readable");
        assert!(us >= 0.0, "{name}: {server:?}");
        cpu += us;
    }
    assert!(cpu > 0.0, "no server CPU in any phase");
    let table = report.to_string();
    assert!(table.contains("server per job:"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["drain_noop"]["server"]["wal_bytes_per_job"].is_number());
    assert!(json["drain_noop"]["server"]["cpu_us_per_job"].is_number());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&report.database)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "scratch database {} still exists", report.database);
}
