//! The whole service on a real socket: it serves, processes records in the
//! same process, shuts down gracefully, and after a restart finishes every
//! record it acknowledged.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use offload_records::store::RecordStore;
use offload_test_fixture::{FreshBackend, FreshDatabase};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{shut_down, Running};

/// One HTTP/1.1 exchange on a fresh connection.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let response = support::exchange(addr, method, path, body.unwrap_or_default()).await;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

async fn start<DB: RecordStore>(url: &str, delay_ms: u64) -> Running {
    let delay = delay_ms.to_string();
    let extra = ["--job-delay-ms", &delay, "--worker-concurrency", "2"];
    support::start::<DB>(url, &extra).await
}

async fn wait_done(addr: SocketAddr, id: i64) -> Value {
    for _ in 0..600 {
        let (status, record) = http(addr, "GET", &format!("/records/{id}"), None).await;
        assert_eq!(status, 200);
        if record["status"] == "done" {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("record {id} never reached done");
}

async fn serves_and_processes_in_process<DB: RecordStore>(url: String) {
    let running = start::<DB>(&url, 1).await;
    let (status, created) = http(
        running.addr,
        "POST",
        "/records",
        Some(r#"{"name":"live","payload":"over a socket"}"#),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().expect("id");
    let done = wait_done(running.addr, id).await;
    assert_eq!(
        done["result"],
        offload_records::job::iterated_sha256("over a socket", 3)
    );
    let (status, stats) = http(running.addr, "GET", "/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["records"]["done"], 1);
    shut_down(running).await;
}

async fn acknowledged_records_finish_after_graceful_restart<DB: RecordStore>(url: String) {
    // Slow jobs, two at a time: shutdown comes while most are queued or running.
    let running = start::<DB>(&url, 400).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        let body = format!(r#"{{"name":"r{n}","payload":"p{n}"}}"#);
        let (status, created) = http(running.addr, "POST", "/records", Some(&body)).await;
        assert_eq!(status, 201);
        ids.push(created["id"].as_i64().expect("id"));
    }
    shut_down(running).await;

    let restarted = start::<DB>(&url, 1).await;
    let (_, stats) = http(restarted.addr, "GET", "/stats", None).await;
    assert_eq!(stats["total_records"], 8);
    for id in ids {
        wait_done(restarted.addr, id).await;
    }
    shut_down(restarted).await;
}

async fn oversized_body_is_refused_before_100_continue<DB: RecordStore>(url: String) {
    let running = start::<DB>(&url, 1).await;
    let mut stream = TcpStream::connect(running.addr).await.expect("connect");
    let request = format!(
        "POST /records HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        running.addr,
        100 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut first = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut first))
        .await
        .expect("an answer without the body")
        .expect("read");
    let head = String::from_utf8_lossy(&first[..read]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    drop(stream);
    shut_down(running).await;
}

/// Runs `scenario` with the URL of a fresh database of `DB`'s kind, then
/// drops it.
async fn on_fresh<DB: RecordStore + FreshBackend, F: Future<Output = ()>>(
    scenario: fn(String) -> F,
) {
    let db = FreshDatabase::create::<DB>().await;
    scenario(db.url().to_owned()).await;
    db.cleanup().await;
}

offload_test_fixture::on_both_backends!(on_fresh =>
    serves_and_processes_in_process,
    acknowledged_records_finish_after_graceful_restart,
    oversized_body_is_refused_before_100_continue,
);
