//! A loopback TCP proxy that breaks connections on command: resets,
//! refusals, stalls and half-open connections between a client (a worker's
//! pool) and its database, without touching the server itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to connections, shared with every connection task.
#[derive(Clone, Debug, Default)]
struct Faults {
    /// Connections opened before the latest reset are reset.
    reset_epoch: u64,
    /// Connections opened before the latest half-open cut go silent.
    half_open_epoch: u64,
    /// Single connections marked by the upstream port the server sees.
    cut_ports: Vec<(u16, Cut)>,
    /// No byte moves in either direction while set.
    stalled: bool,
    /// New connections are refused (the listener is closed) while set.
    refusing: bool,
}

/// How one connection is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Both sides closed at once, the client's with a TCP reset.
    Reset,
    /// The server's side closed (as its keepalive would notice a vanished
    /// peer); the client's stays open and silent forever, so only the
    /// client's own deadline can tell.
    HalfOpen,
}

/// A proxy on a free 127.0.0.1 port in front of `upstream`, stopped when
/// dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use offload_test_fixture::FaultProxy;
///
/// let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let proxy = FaultProxy::start(upstream.local_addr().unwrap()).await;
/// let url = proxy.route("postgres://postgres@127.0.0.1:5432/test");
/// assert!(url.ends_with(&format!("@{}/test", proxy.addr())));
/// proxy.reset_all(); // every open connection gets a TCP reset
/// # }
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    opened: Arc<AtomicU64>,
    upstream_ports: Arc<Mutex<Vec<u16>>>,
    /// The port bound again when a refusal ends, for the accept loop.
    rebound: Arc<Mutex<Option<std::net::TcpListener>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding every connection to `upstream`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (faults, _) = watch::channel(Faults::default());
        let opened = Arc::new(AtomicU64::new(0));
        let upstream_ports = Arc::new(Mutex::new(Vec::new()));
        let rebound = Arc::new(Mutex::new(None));
        let accept = tokio::spawn(accept_loop(
            listener,
            rebound.clone(),
            upstream,
            faults.clone(),
            opened.clone(),
            upstream_ports.clone(),
        ));
        Self {
            addr,
            faults,
            opened,
            upstream_ports,
            rebound,
            accept,
        }
    }

    /// The proxy's address (clients connect here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` (after the `@`, or after `//`) replaced by
    /// the proxy's.
    pub fn route(&self, url: &str) -> String {
        let scheme_end = url.find("//").map_or(0, |at| at + 2);
        let host_start = url[scheme_end..]
            .find('@')
            .map_or(scheme_end, |at| scheme_end + at + 1);
        let host_end = url[host_start..]
            .find(['/', '?'])
            .map_or(url.len(), |at| host_start + at);
        format!("{}{}{}", &url[..host_start], self.addr, &url[host_end..])
    }

    /// Connections accepted so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The local ports of the proxy's open connections to the server:
    /// PostgreSQL's `pg_stat_activity.client_port` for each.
    pub fn upstream_ports(&self) -> Vec<u16> {
        self.upstream_ports.lock().expect("ports").clone()
    }

    /// Resets every open connection; new ones pass.
    pub fn reset_all(&self) {
        self.faults.send_modify(|faults| faults.reset_epoch += 1);
    }

    /// Makes every open connection half-open (see [`Cut::HalfOpen`]); new
    /// ones pass.
    pub fn half_open_all(&self) {
        self.faults
            .send_modify(|faults| faults.half_open_epoch += 1);
    }

    /// Breaks the one connection whose server side has `upstream_port`.
    pub fn cut(&self, upstream_port: u16, how: Cut) {
        self.faults
            .send_modify(|faults| faults.cut_ports.push((upstream_port, how)));
    }

    /// Holds every byte in both directions (connections stay open) until
    /// [`flow`](Self::flow).
    pub fn stall(&self) {
        self.faults.send_modify(|faults| faults.stalled = true);
    }

    /// Ends a [`stall`](Self::stall).
    pub fn flow(&self) {
        self.faults.send_modify(|faults| faults.stalled = false);
    }

    /// Refuses new connections (the port is closed, within a moment) while
    /// `refusing`, and resets the open ones when it starts. When it ends the
    /// port is open again before this returns.
    pub fn refuse(&self, refusing: bool) {
        if !refusing {
            self.reopen();
        }
        self.faults.send_modify(|faults| {
            if refusing && !faults.refusing {
                faults.reset_epoch += 1;
            }
            faults.refusing = refusing;
        });
    }

    /// Ends every fault: traffic flows and new connections are accepted
    /// (connections already broken stay broken).
    pub fn heal(&self) {
        self.reopen();
        self.faults.send_modify(|faults| {
            faults.stalled = false;
            faults.refusing = false;
        });
    }
}

impl FaultProxy {
    /// Binds the port again if a refusal closed it.
    fn reopen(&self) {
        if !self.faults.borrow().refusing {
            return;
        }
        let mut slot = self.rebound.lock().expect("rebound");
        if slot.is_none() {
            *slot = Some(bind_again(self.addr));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connection tasks end when they see the sender gone.
        self.faults.send_modify(|faults| faults.reset_epoch += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    rebound: Arc<Mutex<Option<std::net::TcpListener>>>,
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    opened: Arc<AtomicU64>,
    upstream_ports: Arc<Mutex<Vec<u16>>>,
) {
    let mut control = faults.subscribe();
    let mut listener = Some(listener);
    loop {
        let refusing = control.borrow_and_update().refusing;
        if refusing {
            listener = None;
        }
        if let Some(reopened) = rebound.lock().expect("rebound").take() {
            listener = Some(TcpListener::from_std(reopened).expect("reopened port"));
        }
        let Some(open) = &listener else {
            if control.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                let Ok((client, _)) = accepted else { continue };
                opened.fetch_add(1, Ordering::Relaxed);
                let control = faults.subscribe();
                tokio::spawn(serve(client, upstream, control, upstream_ports.clone()));
            }
            changed = control.changed() => if changed.is_err() { return },
        }
    }
}

/// Binds the proxy's port again after a refusal; its accepted connections
/// may still hold the port in TIME_WAIT, hence SO_REUSEADDR.
fn bind_again(addr: SocketAddr) -> std::net::TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("socket for the proxy");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&addr.into())
        .unwrap_or_else(|error| panic!("the proxy could not bind {addr} again: {error}"));
    socket.listen(1024).expect("listen");
    socket.set_nonblocking(true).expect("non-blocking");
    socket.into()
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut control: watch::Receiver<Faults>,
    upstream_ports: Arc<Mutex<Vec<u16>>>,
) {
    let born = control.borrow_and_update().clone();
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    let port = server.local_addr().map_or(0, |addr| addr.port());
    upstream_ports.lock().expect("ports").push(port);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = tokio::select! {
        _ = pump(&mut client_read, &mut server_write, control.clone()) => None,
        _ = pump(&mut server_read, &mut client_write, control.clone()) => None,
        cut = until_cut(&mut control, &born, port) => Some(cut),
    };
    upstream_ports
        .lock()
        .expect("ports")
        .retain(|open| *open != port);
    match cut {
        Some(Cut::Reset) => reset(client_write.as_ref()),
        Some(Cut::HalfOpen) => {
            drop((server_read, server_write));
            // Swallow whatever the client sends until it gives up.
            let mut sink = vec![0u8; 16 * 1024];
            while let Ok(1..) = client_read.read(&mut sink).await {}
        }
        None => {}
    }
}

/// Copies bytes one way, holding each chunk while the proxy is stalled.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut control: watch::Receiver<Faults>,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        while control.borrow_and_update().stalled {
            if control.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&chunk[..read]).await.is_err() {
            return;
        }
    }
}

async fn until_cut(control: &mut watch::Receiver<Faults>, born: &Faults, port: u16) -> Cut {
    loop {
        {
            let now = control.borrow_and_update();
            if now.reset_epoch != born.reset_epoch {
                return Cut::Reset;
            }
            if now.half_open_epoch != born.half_open_epoch {
                return Cut::HalfOpen;
            }
            if let Some((_, how)) = now.cut_ports.iter().find(|(marked, _)| *marked == port) {
                return *how;
            }
        }
        if control.changed().await.is_err() {
            return Cut::Reset;
        }
    }
}

fn reset(stream: &TcpStream) {
    SockRef::from(stream).set_linger(Some(Duration::ZERO)).ok();
}
