//! `serve` against misbehaving clients on real sockets: each scenario
//! configures short limits and proves the server closes, sheds or answers
//! within a bound. With `axum::serve` (no limits) in its place every
//! scenario fails (hangs past its bound, or is served instead of shed)
//! except three that guard what it already did: a prompt body is served,
//! graceful shutdown, and the peer address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use offload_axum::serve::{serve, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longer than any limit a scenario sets, shorter than a hang.
const BOUND: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(60);
/// More than loopback's socket buffers hold, so its writes block.
const BIG: usize = 32 << 20;

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(limits: ServerLimits) -> Server {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/big", get(|| async { vec![b'x'; BIG] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

fn limits() -> ServerLimits {
    ServerLimits::default()
        .header_read_timeout(LONG)
        .body_read_timeout(LONG)
        .write_timeout(LONG)
        .max_connections(1024)
}

/// Reads until the server closes; `None` if it is still open after `bound`.
async fn read_to_close(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

/// One response on a kept-alive connection: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let response = tokio::time::timeout(BOUND, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    let status = head[9..12].parse().unwrap();
                    return (status, body.to_owned());
                }
            }
        }
    })
    .await;
    response.expect("no response in time")
}

async fn get_ok(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

#[tokio::test]
async fn slow_header_client_is_closed_after_the_header_timeout() {
    let server = start(limits().header_read_timeout(SHORT)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HT").await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut slow, BOUND).await;
    assert_eq!(answer.as_deref(), Some(""), "still open after {BOUND:?}");
    assert!(started.elapsed() >= SHORT / 2, "closed before the timeout");
    // Others are still served.
    assert_eq!(get_ok(server.addr, "/").await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn silent_client_is_closed_after_the_header_timeout() {
    let server = start(limits().header_read_timeout(SHORT)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent, BOUND).await.as_deref(), Some(""));
}

#[tokio::test]
async fn slow_body_client_gets_408_after_the_body_timeout() {
    let server = start(limits().body_read_timeout(SHORT)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut slow, BOUND).await.expect("still open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(started.elapsed() >= SHORT / 2, "timed out too early");
}

#[tokio::test]
async fn trickled_body_is_timed_out_as_a_whole_not_per_chunk() {
    let server = start(limits().body_read_timeout(SHORT)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = async {
        // A byte every 50 ms: each chunk is quick, the whole body is not.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(SHORT * 2, trickle).await;
    let answer = read_to_close(&mut slow, BOUND).await.expect("still open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn complete_body_within_the_timeout_is_served() {
    let server = start(limits().body_read_timeout(SHORT)).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(read_response(&mut client).await, (200, "5".to_owned()));
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_timeout() {
    let server = start(limits().header_read_timeout(SHORT)).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        // Kept alive between requests sent in time.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut client).await, (200, "ok".to_owned()));
    }
    let idle_since = Instant::now();
    assert_eq!(read_to_close(&mut client, BOUND).await.as_deref(), Some(""));
    assert!(
        idle_since.elapsed() >= SHORT / 2,
        "closed before the timeout"
    );
}

#[tokio::test]
async fn connection_over_the_cap_is_shed_while_the_first_are_served() {
    let server = start(limits().max_connections(4)).await;
    // Three slow clients and one kept-alive client hold the four slots.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET / HT").await.unwrap();
        slow.push(stream);
    }
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await, (200, "ok".to_owned()));

    let mut newest = TcpStream::connect(server.addr).await.unwrap();
    let _ = newest
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let answer = read_to_close(&mut newest, BOUND)
        .await
        .expect("newest not shed");
    // A reset can beat the 503 to the client; either way it is closed.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert!(!answer.contains(" 200 "), "{answer}");

    kept.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await, (200, "ok".to_owned()));
    // A freed slot is taken again.
    drop(kept);
    tokio::time::timeout(BOUND, answered_once(server.addr))
        .await
        .expect("freed slot not reused");
    drop(slow);
}

#[tokio::test]
async fn client_reading_nothing_of_its_response_is_closed_after_the_write_timeout() {
    let server = start(limits().write_timeout(SHORT).max_connections(1)).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(SHORT * 3).await;
    // Its slot is free again...
    let (status, _) = get_ok(server.addr, "/").await;
    assert_eq!(status, 200, "the stalled client still holds the only slot");
    // ...and it gets only what the socket buffers held, then the close.
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(BOUND, async {
        while let Ok(n @ 1..) = stalled.read(&mut buf).await {
            received += n;
        }
    })
    .await;
    assert!(drained.is_ok(), "still open");
    assert!(received < BIG, "the whole response was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_slow_clients_leaves_the_server_answering() {
    const SLOW: usize = 1100;
    let server = start(limits().max_connections(64).header_read_timeout(SHORT)).await;
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: te").await;
        slow.push(stream);
    }
    let closed: Vec<_> = slow
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move { read_to_close(&mut stream, BOUND).await.is_some() })
        })
        .collect();
    // Within one header timeout of the flood the server answers again.
    tokio::time::timeout(BOUND, answered_once(server.addr))
        .await
        .expect("not answering after the flood");
    let mut open = 0;
    for task in closed {
        if !task.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "slow connections still open after {BOUND:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let server = start(limits()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let in_flight = tokio::spawn(get_ok(server.addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), (200, "done".to_owned()));
    assert_eq!(read_to_close(&mut idle, BOUND).await.as_deref(), Some(""));
    tokio::time::timeout(BOUND, server.task)
        .await
        .expect("serve did not return")
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let server = start(limits()).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let local = client.local_addr().unwrap();
    client
        .write_all(b"GET /peer HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut client).await, (200, local.to_string()));
}

/// Sends a plain request on fresh connections until one is answered 200.
async fn answered_once(addr: SocketAddr) {
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await;
        if read_to_close(&mut stream, BOUND)
            .await
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
