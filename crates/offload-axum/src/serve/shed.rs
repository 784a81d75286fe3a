//! What the accept loop does when it cannot take a connection: over the
//! cap it answers 503 and closes at once; when `accept` itself fails it
//! pauses briefly instead of spinning or stalling.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Sent, best effort, to a connection over the cap before closing it. Not
/// a problem-details body: it is written without reading the request, in
/// one non-blocking write that must fit the socket buffer.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain\r\n\
    retry-after: 1\r\n\
    connection: close\r\n\
    content-length: 38\r\n\
    \r\n\
    too many connections, try again later\n";
/// At most one warning per this long, however fast clients are shed.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// First pause after a failed `accept`; it doubles up to the next.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(5);
/// Longest pause after a failed `accept`. axum sleeps a whole second, and
/// its backlog fills meanwhile; connections usually close sooner than that.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(200);

/// Answers 503 and closes: dropping the socket frees its file descriptor
/// right away, whatever the client does next.
pub(super) fn shed(stream: TcpStream) {
    metrics::counter!(super::HTTP_CONNECTIONS_SHED_TOTAL).increment(1);
    // A full buffer only loses the courtesy answer; the close still happens.
    let _ = stream.try_write(BUSY);
}

/// Logs `warn!` at most every [`WARN_EVERY`], counting what it skipped.
pub(super) struct ThrottledWarn {
    last: Option<Instant>,
    skipped: u64,
}

impl ThrottledWarn {
    pub(super) fn new() -> Self {
        Self {
            last: None,
            skipped: 0,
        }
    }

    /// Whether to log now, and how many events happened since the last log
    /// (this one included).
    pub(super) fn ready(&mut self) -> Option<u64> {
        self.skipped += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Backs off after `accept` errors such as EMFILE, and resets on success.
pub(super) struct AcceptPause {
    next: Duration,
    warn: ThrottledWarn,
}

impl AcceptPause {
    pub(super) fn new() -> Self {
        Self {
            next: ACCEPT_PAUSE_MIN,
            warn: ThrottledWarn::new(),
        }
    }

    pub(super) fn accepted(&mut self) {
        self.next = ACCEPT_PAUSE_MIN;
    }

    /// How long to wait before the next `accept` after `error`: nothing for
    /// a connection that died in the backlog, which only concerns that one.
    pub(super) fn after(&mut self, error: &io::Error) -> Duration {
        if is_connection_error(error) {
            return Duration::ZERO;
        }
        if let Some(failures) = self.warn.ready() {
            tracing::warn!(%error, failures, "accept failed; pausing before the next");
        }
        let pause = self.next;
        self.next = (self.next * 2).min(ACCEPT_PAUSE_MAX);
        pause
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_declares_its_length() {
        let (_, body) = std::str::from_utf8(BUSY)
            .unwrap()
            .split_once("\r\n\r\n")
            .unwrap();
        assert!(std::str::from_utf8(BUSY)
            .unwrap()
            .contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_skipped() {
        let mut warn = ThrottledWarn::new();
        assert_eq!(warn.ready(), Some(1));
        assert_eq!(warn.ready(), None);
        assert_eq!(warn.ready(), None);
        warn.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(warn.ready(), Some(3));
    }

    #[test]
    fn accept_pause_doubles_to_its_ceiling_and_resets() {
        let mut pause = AcceptPause::new();
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(pause.after(&emfile), ACCEPT_PAUSE_MIN);
        assert_eq!(pause.after(&emfile), ACCEPT_PAUSE_MIN * 2);
        for _ in 0..20 {
            pause.after(&emfile);
        }
        assert_eq!(pause.after(&emfile), ACCEPT_PAUSE_MAX);
        pause.accepted();
        assert_eq!(pause.after(&emfile), ACCEPT_PAUSE_MIN);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(pause.after(&reset), Duration::ZERO);
    }
}
