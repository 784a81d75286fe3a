//! The service while its database is away: a PostgreSQL restart or
//! outage, a full SQLite disk. Every answer is honest ("try again later":
//! 503 or 507 with `Retry-After`), never a 500, reads fail fast while the
//! server is down, and the service serves again once it is back.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload_records::store::RecordStore;
use offload_test_fixture::{PrivatePostgres, TinyDisk};

use support::{shut_down, Running};

/// Each request's deadline: far above a fail-fast answer, far below the
/// pool's old 30 s wait.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What one HTTP/1.1 exchange answered.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let exchange = support::exchange(addr, method, path, body);
    let response = tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} took over {REQUEST_DEADLINE:?}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let retry_after = head.lines().find_map(|line| {
        line.to_ascii_lowercase()
            .strip_prefix("retry-after:")
            .map(|v| v.trim().to_owned())
    });
    Answer {
        status,
        retry_after,
        body: body.to_owned(),
    }
}

/// The service with its logs shown (`RUST_LOG`, default warn) and jobs
/// that finish at once.
async fn start<DB: RecordStore>(url: &str, extra: &[&str]) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let mut args = vec!["--job-delay-ms", "0"];
    args.extend_from_slice(extra);
    support::start::<DB>(url, &args).await
}

/// The routes a client and an operator hit: a write and every read.
const READS: [&str; 5] = [
    "/stats",
    "/records/1",
    "/metrics",
    "/dashboard/api/overview",
    "/dashboard",
];

fn create_body(i: usize) -> String {
    format!(r#"{{"name": "outage-{i}", "payload": "p{i}"}}"#)
}

/// Every answer is a success or an honest "later": 503 (or 507) with
/// `Retry-After`. `/metrics` is scraped by machines and needs no header.
fn assert_honest(path: &str, answer: &Answer) {
    match answer.status {
        200..=399 => {}
        503 | 507 => assert!(
            answer.retry_after.is_some() || path == "/metrics",
            "{path}: {} without Retry-After: {}",
            answer.status,
            answer.body
        ),
        _ => panic!("{path} answered {}: {}", answer.status, answer.body),
    }
}

/// Runs a `pg_ctl` step off the runtime, which keeps serving meanwhile.
async fn blocking(server: &Arc<PrivatePostgres>, step: fn(&PrivatePostgres)) {
    let server = server.clone();
    tokio::task::spawn_blocking(move || step(&server))
        .await
        .expect("pg_ctl step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_outage_answer_503_never_500() {
    let server = Arc::new(PrivatePostgres::start());
    // Both ways of writing records: group commit and a transaction each.
    for writers in ["2", "0"] {
        let running = start::<sqlx::Postgres>(
            &server.url(),
            &["--group-commit-writers", writers, "--max-connections", "8"],
        )
        .await;
        let addr = running.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<(String, u16)>::new()));
        let mut clients = Vec::new();
        for client in 0..4 {
            let (stop, seen) = (stop.clone(), seen.clone());
            clients.push(tokio::spawn(async move {
                let mut i = client * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let answer = http(addr, "POST", "/records", &create_body(i)).await;
                    assert_honest("POST /records", &answer);
                    seen.lock().unwrap().push(("POST".into(), answer.status));
                    let path = READS[i % READS.len()];
                    let answer = http(addr, "GET", path, "").await;
                    assert_honest(path, &answer);
                    seen.lock().unwrap().push((path.into(), answer.status));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        blocking(&server, PrivatePostgres::restart_fast).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.expect("client saw only honest answers");
        }
        let seen = seen.lock().unwrap().clone();
        let created_after = seen.iter().rev().take(8).filter(|(_, s)| *s < 400).count();
        assert!(
            created_after > 0,
            "writers={writers}: no success after the restart: {:?}",
            &seen[seen.len().saturating_sub(16)..]
        );

        // Down: every route answers "later", fast.
        blocking(&server, PrivatePostgres::stop).await;
        let began = Instant::now();
        let down: Vec<_> = READS
            .iter()
            .map(|path| tokio::spawn(async move { (*path, http(addr, "GET", path, "").await) }))
            .chain([tokio::spawn(async move {
                (
                    "/records",
                    http(addr, "POST", "/records", &create_body(0)).await,
                )
            })])
            .collect();
        for answer in down {
            let (path, answer) = answer.await.expect("request task");
            assert_eq!(answer.status, 503, "{path} while down: {}", answer.body);
            assert_honest(path, &answer);
        }
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "answers while down took {took:?}"
        );
        blocking(&server, PrivatePostgres::start_again).await;
        let back = Instant::now();
        loop {
            let answer = http(addr, "GET", "/stats", "").await;
            if answer.status == 200 {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(20),
                "never served again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shut_down(running).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_answers_507_and_reads_go_on() {
    for writers in ["1", "0"] {
        // A fresh disk per round: files the last round's connections still
        // held would keep their space.
        let disk = TinyDisk::mount("4m");
        let url = format!("sqlite://{}/records.db", disk.path().display());
        // The default pool: one connection on SQLite, which jobs retrying
        // their writes on the full disk must not keep from requests.
        let running = start::<sqlx::Sqlite>(&url, &["--group-commit-writers", writers]).await;
        let addr = running.addr;
        let payload = "x".repeat(100_000);
        let mut statuses = Vec::new();
        // 4 MiB fills within ~40 records; each later write must be refused.
        for i in 0..80 {
            let body = format!(r#"{{"name": "full-{i}", "payload": "{payload}"}}"#);
            let answer = http(addr, "POST", "/records", &body).await;
            assert_honest("POST /records", &answer);
            statuses.push(answer.status);
        }
        assert!(
            statuses.contains(&507),
            "writers={writers}: the disk never filled: {statuses:?}"
        );
        for path in READS {
            let answer = http(addr, "GET", path, "").await;
            assert_eq!(answer.status, 200, "{path} on a full disk: {}", answer.body);
        }
        shut_down(running).await;
    }
}
