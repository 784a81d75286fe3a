//! Serving a [`Router`] on a TCP listener, safe against slow and numerous
//! clients: `axum::serve` has no header, body or idle timeout and no
//! connection cap, so a thousand stalled sockets exhaust the open-file
//! limit and the service stops answering anyone.
//!
//! [`serve`] bounds how long a client may take to send its headers (which
//! also bounds idle keep-alive connections) and its body, and how long it
//! may leave its response unread; it caps the
//! connections open at once (answering 503 to the newest beyond it), and
//! pauses briefly when `accept` fails, as with EMFILE, instead of for a
//! second. It keeps what `axum::serve` gives: graceful shutdown and the
//! peer address as [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo).
//!
//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade:
//! [`HTTP_CONNECTIONS_OPEN`], [`HTTP_CONNECTIONS_SHED_TOTAL`] and
//! [`HTTP_TIMEOUTS_TOTAL`].

#[cfg(feature = "clap")]
mod args;
mod body;
mod limits;
mod shed;
mod stall;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

#[cfg(feature = "clap")]
pub use args::LimitsArgs;
pub use limits::{
    default_max_connections, ServerLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT, FD_HEADROOM, MAX_DEFAULT_MAX_CONNECTIONS, MIN_DEFAULT_MAX_CONNECTIONS,
};

use body::BodyDeadline;
use shed::{shed, AcceptPause, ThrottledWarn};
use stall::WriteStall;

/// Gauge of HTTP connections open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "offload_http_connections_open";
/// Counter of connections closed at once because
/// [`ServerLimits::max_connections`] were already open.
pub const HTTP_CONNECTIONS_SHED_TOTAL: &str = "offload_http_connections_shed_total";
/// Counter of connections closed for being slow, labelled `phase`:
/// `headers` (the header-read timeout, idle keep-alive included), `body` or
/// `write` (the client stopped reading its response).
pub const HTTP_TIMEOUTS_TOTAL: &str = "offload_http_timeouts_total";

/// Serves `router` on `listener` over HTTP/1.1 within `limits` until
/// `shutdown` resolves; then it stops accepting, lets in-flight requests
/// finish (idle connections close at once) and returns.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use offload_axum::serve::{serve, ServerLimits};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// serve(listener, app, ServerLimits::default(), async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await;
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.get_max_connections()));
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // hyper runs this clock from the moment a connection waits for a
    // request, so it closes idle keep-alive connections too.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.get_header_read_timeout());
    let mut accept_pause = AcceptPause::new();
    let mut full = ThrottledWarn::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                accept_pause.accepted();
                accepted
            }
            Err(error) => {
                let pause = accept_pause.after(&error);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // The newest is shed: connections already open keep their slots.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shed(stream);
            if let Some(count) = full.ready() {
                tracing::warn!(
                    max_connections = limits.get_max_connections(),
                    shed = count,
                    "connection limit reached; closing new connections with 503"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            let body_timeout = limits.get_body_read_timeout();
            move |request| handle(router.clone(), peer, body_timeout, request)
        });
        let connection = connections.watch(http.serve_connection(
            TokioIo::new(WriteStall::new(stream, limits.get_write_timeout())),
            service,
        ));
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenConnection::count();
            if let Err(error) = connection.await {
                if error.is_timeout() {
                    metrics::counter!(HTTP_TIMEOUTS_TOTAL, "phase" => "headers").increment(1);
                } else {
                    tracing::debug!(%error, %peer, "HTTP connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

async fn handle(
    router: Router,
    peer: SocketAddr,
    body_timeout: Duration,
    mut request: Request<Incoming>,
) -> Result<axum::response::Response, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let (request, deadline) = BodyDeadline::arm(request, body_timeout);
    let response = router.oneshot(request).await?;
    Ok(deadline.settle(response))
}

/// Keeps [`HTTP_CONNECTIONS_OPEN`] while it lives.
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).increment(1.0);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).decrement(1.0);
    }
}
