//! How offload's pools are sized and how long a caller waits for one of
//! their connections.

use std::time::Duration;

/// The default wait for a pooled connection: long enough for a burst to
/// pass, as sqlx's own default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A wait for pools that serve people (HTTP requests, a CLI): a fast
/// restart of the server still gets through, and while the database is
/// down callers hear so in seconds (sqlx retries a refused connection
/// until the timeout passes).
pub const INTERACTIVE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Pool settings for [`Backend::connect_with`](crate::Backend::connect_with).
///
/// ```
/// use std::time::Duration;
/// use offload::PoolSettings;
/// // A web service that answers 503 within 3 s while the database is down,
/// // instead of holding each request for 30 s.
/// let settings = PoolSettings::new(16).acquire_timeout(Duration::from_secs(3));
/// assert_eq!(settings.max_connections, 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Connections the pool may open.
    pub max_connections: u32,
    /// How long a caller waits for a connection (while every connection
    /// is busy, or while the database refuses new ones) before getting
    /// `sqlx::Error::PoolTimedOut`.
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    /// `max_connections` connections and [`DEFAULT_ACQUIRE_TIMEOUT`].
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    /// Sets how long a caller waits for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
}
