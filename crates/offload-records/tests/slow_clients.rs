//! The service against slow clients on real sockets. Before it had header
//! and body timeouts and a connection cap, 1,100 stalled connections under
//! the common open-file limit of 1,024 left it answering nobody.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use offload_records::Config;
use offload_test_fixture::FreshDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_offload-records");
const BOUND: Duration = Duration::from_secs(15);

/// Sends `request` and reads until the server closes (or `bound` passes).
async fn exchange(addr: SocketAddr, request: &[u8], bound: Duration) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        Some(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(bound, exchange).await.ok().flatten()
}

const STATS: &[u8] = b"GET /stats HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

/// Retries GET /stats until it answers 200, for at most `bound`.
async fn answers_within(addr: SocketAddr, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if exchange(addr, STATS, left)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_past_the_open_file_limit_leave_the_service_answering() {
    let db = FreshDatabase::postgres().await;
    let port = offload_test_fixture::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The default connection cap, derived from this limit, does the work;
    // only the header timeout is shortened, to keep the test quick, but kept
    // longer than opening 1,100 connections takes on a busy machine, so that
    // the first ones are still held when the last arrive.
    let mut service = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\"", BIN])
        .env("DATABASE_URL", db.url())
        .env("LISTEN", addr.to_string())
        .env("HEADER_READ_TIMEOUT_SECS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("offload-records starts");
    assert!(
        answers_within(addr, Duration::from_secs(30)).await,
        "did not start"
    );

    let mut slow = Vec::new();
    let opening = Instant::now();
    for _ in 0..1100 {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = stream.write_all(b"GET /stats HTTP/1.1\r\nHost: te").await;
        slow.push(stream);
    }
    let opened = opening.elapsed();
    let started = Instant::now();
    assert!(
        answers_within(addr, BOUND).await,
        "no answer within {BOUND:?} while {} slow clients stay connected",
        slow.len()
    );
    let waited = started.elapsed();

    let metrics = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        BOUND,
    )
    .await
    .expect("metrics");
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let shed = counter("offload_http_connections_shed_total ");
    let timed_out = counter("offload_http_timeouts_total{phase=\"headers\"} ");
    // 1,100 against the default cap of 768 under 1,024 open files.
    assert!(
        shed >= 300.0,
        "shed {shed}; opened in {opened:?}, answered after {waited:?}"
    );
    // The slots came back by the header timeout.
    assert!(timed_out >= 1.0, "{metrics}");
    drop(slow);
    service.kill().await.unwrap();
    let mut stderr = String::new();
    service
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}

#[tokio::test]
async fn slow_body_gets_408_from_the_flag_configured_timeout() {
    let db = FreshDatabase::postgres().await;
    let config = Config::try_parse_from([
        "offload-records",
        "--database-url",
        db.url(),
        "--body-read-timeout-secs",
        "1",
        "--header-read-timeout-secs",
        "1",
    ])
    .expect("flags parse");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(offload_records::server::serve::<sqlx::Postgres>(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    assert!(
        answers_within(addr, Duration::from_secs(30)).await,
        "did not start"
    );

    let started = Instant::now();
    let slow_body = b"POST /records HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                      Content-Length: 100\r\n\r\n{\"title\":";
    let answer = exchange(addr, slow_body, Duration::from_secs(5))
        .await
        .expect("still open after 5 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(500), "{answer}");

    let silent = exchange(addr, b"", Duration::from_secs(5)).await;
    assert_eq!(silent.as_deref(), Some(""), "silent client not closed");

    let _ = stop.send(());
    tokio::time::timeout(BOUND, task)
        .await
        .expect("graceful shutdown in time")
        .unwrap()
        .unwrap();
}
