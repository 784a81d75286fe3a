//! `offload dashboard` holds clients to its timeouts and connection cap:
//! before, a client that connected and stalled kept its socket forever.

use std::process::Stdio;
use std::time::{Duration, Instant};

use offload_test_fixture::FreshDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_offload");
const BOUND: Duration = Duration::from_secs(5);

/// Reads until the server closes; `None` if still open after `BOUND`.
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn dashboard_closes_slow_clients_and_sheds_past_its_cap() {
    let db = FreshDatabase::postgres().await;
    let port = offload_test_fixture::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = tokio::process::Command::new(BIN)
        .args(["dashboard", "--listen", &listen])
        // Through the environment, which a build without limits ignores.
        .env("HEADER_READ_TIMEOUT_SECS", "1")
        .env("MAX_HTTP_CONNECTIONS", "2")
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&listen).await.is_err() {
        assert!(Instant::now() < deadline, "dashboard did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probe's connection is closed by its header timeout; wait it out.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut slow = TcpStream::connect(&listen).await.unwrap();
    slow.write_all(b"GET / HT").await.unwrap();
    let mut silent = TcpStream::connect(&listen).await.unwrap();
    let mut newest = TcpStream::connect(&listen).await.unwrap();
    let _ = newest
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let shed = read_to_close(&mut newest).await.expect("third not shed");
    assert!(
        shed.is_empty() || shed.starts_with("HTTP/1.1 503"),
        "{shed}"
    );

    let started = Instant::now();
    assert_eq!(read_to_close(&mut slow).await.as_deref(), Some(""));
    assert_eq!(read_to_close(&mut silent).await.as_deref(), Some(""));
    assert!(started.elapsed() < BOUND);

    // Slots free again: a normal request is answered.
    let mut client = TcpStream::connect(&listen).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut client).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 503"), "{answer}");
}
