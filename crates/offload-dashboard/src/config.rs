//! What the dashboard is told by the app or binary that serves it.

use std::net::SocketAddr;
use std::time::Duration;

/// Dashboard settings. Start from [`DashboardConfig::new`].
///
/// ```
/// use offload_dashboard::DashboardConfig;
/// let config = DashboardConfig::new()
///     .title("Billing jobs")
///     .token("s3cret-token-value")
///     .refresh(std::time::Duration::from_secs(5));
/// assert!(config.has_token());
/// ```
#[derive(Clone)]
pub struct DashboardConfig {
    pub(crate) title: String,
    pub(crate) token: Option<String>,
    pub(crate) require_token: bool,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) database: Option<String>,
    pub(crate) refresh: Duration,
    pub(crate) throughput_minutes: u32,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("title", &self.title)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("require_token", &self.require_token)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("database", &self.database)
            .field("refresh", &self.refresh)
            .field("throughput_minutes", &self.throughput_minutes)
            .finish()
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A configuration that would expose the dashboard without protection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Listening beyond loopback without a token.
    #[error("listening on {0} makes the dashboard reachable from other hosts: set a token (--token or OFFLOAD_DASHBOARD_TOKEN)")]
    TokenRequired(SocketAddr),
    /// A token too short to resist guessing.
    #[error("the dashboard token must be at least {min} characters long", min = MIN_TOKEN_LEN)]
    TokenTooShort,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 12;

impl DashboardConfig {
    /// No token, title "offload", refresh every 5 seconds, one hour of
    /// throughput.
    pub fn new() -> Self {
        Self {
            title: "offload".to_owned(),
            token: None,
            require_token: false,
            allowed_hosts: Vec::new(),
            database: None,
            refresh: Duration::from_secs(5),
            throughput_minutes: 60,
        }
    }

    /// The name shown in the header.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Requires this token: as `Authorization: Bearer <token>` on API
    /// calls, or entered once on the login page (kept in a cookie).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Refuses every request unless a token is set. The `offload` binary
    /// sets this when it listens beyond loopback, so that a missing token
    /// fails closed.
    pub fn require_token(mut self, required: bool) -> Self {
        self.require_token = required;
        self
    }

    /// Also answers, without a token, to requests whose `Host` is `name`
    /// (any port): for a dashboard behind a proxy that authenticates on
    /// its own. Without a token the dashboard otherwise answers only to
    /// loopback names (`localhost`, `127.0.0.1`, `[::1]`), so a page on a
    /// name that DNS rebinds to 127.0.0.1 cannot drive it. With a token,
    /// every `Host` is served.
    ///
    /// ```
    /// use offload_dashboard::DashboardConfig;
    /// let config = DashboardConfig::new().allow_host("jobs.internal");
    /// assert!(format!("{config:?}").contains("jobs.internal"));
    /// ```
    pub fn allow_host(mut self, name: impl Into<String>) -> Self {
        self.allowed_hosts.push(name.into().to_ascii_lowercase());
        self
    }

    /// Checks this configuration for serving on `addr`: a non-loopback
    /// address needs a token. Sets [`require_token`](Self::require_token)
    /// accordingly.
    ///
    /// ```
    /// use offload_dashboard::DashboardConfig;
    /// let public = "0.0.0.0:8080".parse().unwrap();
    /// assert!(DashboardConfig::new().for_listener(public).is_err());
    /// assert!(DashboardConfig::new().token("long-enough-token").for_listener(public).is_ok());
    /// assert!(DashboardConfig::new().for_listener("127.0.0.1:8080".parse().unwrap()).is_ok());
    /// ```
    pub fn for_listener(self, addr: SocketAddr) -> Result<Self, ConfigError> {
        if let Some(token) = &self.token {
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(ConfigError::TokenTooShort);
            }
        }
        let exposed = !addr.ip().is_loopback();
        if exposed && self.token.is_none() {
            return Err(ConfigError::TokenRequired(addr));
        }
        Ok(self.require_token(exposed))
    }

    /// A description of the database shown in the footer. Any password in
    /// it is removed first.
    ///
    /// ```
    /// use offload_dashboard::DashboardConfig;
    /// let config = DashboardConfig::new().database("postgres://app:hunter2@db:5432/app");
    /// assert!(!format!("{config:?}").contains("hunter2"));
    /// ```
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(redact_url(url));
        self
    }

    /// How often pages refresh themselves (at least one second).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_secs(1));
        self
    }

    /// Minutes of history in the throughput chart (1 to 1440).
    pub fn throughput_minutes(mut self, minutes: u32) -> Self {
        self.throughput_minutes = minutes.clamp(1, 1440);
        self
    }
}

/// `url` without its password (and without query parameters, which may
/// hold one too).
///
/// ```
/// assert_eq!(
///     offload_dashboard::redact_url("postgres://app:hunter2@db:5432/app?password=x"),
///     "postgres://app:***@db:5432/app"
/// );
/// assert_eq!(offload_dashboard::redact_url("sqlite://jobs.db"), "sqlite://jobs.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => without_query.to_owned(),
    }
}
