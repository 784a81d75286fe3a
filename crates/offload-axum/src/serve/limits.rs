//! How long a client may take and how many may be connected at once. The
//! defaults live here and nowhere else; the binaries' flags read them.

use std::time::Duration;

/// Default for [`ServerLimits::header_read_timeout`]: long enough for a
/// phone on a bad network, short enough that idle sockets do not pile up.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ServerLimits::body_read_timeout`]: a 1 MiB body at about
/// 35 KiB/s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ServerLimits::write_timeout`]: as long as the body gets.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Open files kept out of the default connection cap: database
/// connections, SQLite files, logs, the listener and sockets being shed.
pub const FD_HEADROOM: u64 = 256;
/// The default connection cap never goes below this, even under a tiny
/// open-file limit.
pub const MIN_DEFAULT_MAX_CONNECTIONS: usize = 16;
/// The default connection cap never goes above this, whatever the
/// open-file limit: past it memory, not file descriptors, runs out first.
pub const MAX_DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// The open-file limit assumed where it cannot be read.
const ASSUMED_FD_LIMIT: u64 = 1024;

/// Limits on slow and numerous clients, for [`serve`](super::serve).
///
/// ```
/// use std::time::Duration;
/// use offload_axum::serve::ServerLimits;
///
/// let limits = ServerLimits::default()
///     .header_read_timeout(Duration::from_secs(5))
///     .max_connections(256);
/// assert_eq!(limits.get_header_read_timeout(), Duration::from_secs(5));
/// assert_eq!(limits.get_body_read_timeout(), Duration::from_secs(30));
/// assert_eq!(limits.get_write_timeout(), Duration::from_secs(30));
/// assert_eq!(limits.get_max_connections(), 256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
}

impl Default for ServerLimits {
    /// The `DEFAULT_*` timeouts and [`default_max_connections`].
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

impl ServerLimits {
    /// Time a connection has to send a request's headers, counted from when
    /// it opens or from the end of its previous response. So it is also the
    /// keep-alive idle timeout: hyper starts this clock as soon as a
    /// connection waits for its next request. Past it the connection is
    /// closed without an answer.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Time a request has to send its whole body, counted from the end of
    /// its headers. Past it the reader gets an error, the client a 408 and
    /// the connection is closed. A handler that never reads the body is
    /// not limited.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Time the server's writes may stay blocked because the client reads
    /// nothing of its response; the clock restarts whenever the client
    /// takes some bytes. Past it the connection is closed.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Connections open at once. A connection accepted beyond it gets a
    /// 503 with `Retry-After` and is closed at once, so the listen backlog
    /// keeps moving and the open-file limit is never reached. At least 1.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// See [`header_read_timeout`](Self::header_read_timeout).
    pub fn get_header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// See [`body_read_timeout`](Self::body_read_timeout).
    pub fn get_body_read_timeout(&self) -> Duration {
        self.body_read_timeout
    }

    /// See [`write_timeout`](Self::write_timeout).
    pub fn get_write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// See [`max_connections`](Self::max_connections).
    pub fn get_max_connections(&self) -> usize {
        self.max_connections
    }
}

/// The default connection cap: the process's open-file limit less
/// [`FD_HEADROOM`], kept between [`MIN_DEFAULT_MAX_CONNECTIONS`] and
/// [`MAX_DEFAULT_MAX_CONNECTIONS`]. Under the common limit of 1,024 that
/// is 768.
///
/// ```
/// let max = offload_axum::serve::default_max_connections();
/// assert!((16..=8192).contains(&max));
/// ```
pub fn default_max_connections() -> usize {
    cap_for_fd_limit(fd_limit())
}

fn cap_for_fd_limit(limit: u64) -> usize {
    let room = usize::try_from(limit.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX);
    room.clamp(MIN_DEFAULT_MAX_CONNECTIONS, MAX_DEFAULT_MAX_CONNECTIONS)
}

#[cfg(unix)]
fn fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    // The soft limit is the one `accept` fails at.
    getrlimit(Resource::RLIMIT_NOFILE).map_or(ASSUMED_FD_LIMIT, |(soft, _)| soft)
}

#[cfg(not(unix))]
fn fd_limit() -> u64 {
    ASSUMED_FD_LIMIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_headroom_under_the_fd_limit() {
        assert_eq!(cap_for_fd_limit(1024), 768);
        assert_eq!(cap_for_fd_limit(100), MIN_DEFAULT_MAX_CONNECTIONS);
        assert_eq!(cap_for_fd_limit(1 << 20), MAX_DEFAULT_MAX_CONNECTIONS);
        assert_eq!(cap_for_fd_limit(u64::MAX), MAX_DEFAULT_MAX_CONNECTIONS);
    }
}
