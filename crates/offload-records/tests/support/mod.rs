//! The whole service on a real socket, started and stopped by the tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use offload_records::store::RecordStore;
use offload_records::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A service serving on 127.0.0.1 until [`shut_down`].
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Serves the service on `url` with its quick test settings (few hash
/// rounds, a one-second shutdown timeout) and `extra` flags after them.
pub async fn start<DB: RecordStore>(url: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "offload-records",
        "--database-url",
        url,
        "--hash-rounds",
        "3",
        "--shutdown-timeout-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    let config = Config::parse_from(args);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(offload_records::server::serve::<DB>(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { addr, stop, task }
}

/// Stops the service gracefully and checks it stopped listening.
pub async fn shut_down(running: Running) {
    let _ = running.stop.send(());
    let served = tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("graceful shutdown finishes in time")
        .expect("server task");
    served.expect("server ran cleanly");
    assert!(
        TcpStream::connect(running.addr).await.is_err(),
        "stopped accepting connections"
    );
}

/// One HTTP/1.1 exchange on a fresh connection: the whole response as text.
pub async fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}
