//! The limits as command-line flags (feature `clap`), so every binary
//! names, documents and defaults them the same way.

use std::time::Duration;

use super::{
    ServerLimits, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};

/// [`ServerLimits`] as flags, each with an environment-variable fallback;
/// `#[command(flatten)]` it into a binary's arguments.
///
/// ```
/// use clap::Parser;
/// use offload_axum::serve::LimitsArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     limits: LimitsArgs,
/// }
///
/// let cli = Cli::parse_from(["app", "--header-read-timeout-secs", "5", "--max-http-connections", "64"]);
/// let limits = cli.limits.limits();
/// assert_eq!(limits.get_header_read_timeout().as_secs(), 5);
/// assert_eq!(limits.get_body_read_timeout().as_secs(), 30);
/// assert_eq!(limits.get_max_connections(), 64);
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// Seconds a client has to send a request's headers, counted from
    /// connecting or from its previous response (so also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS",
          default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Seconds a request has to send its whole body, counted from its
    /// headers; past it the answer is 408 and the connection closes.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS",
          default_value_t = DEFAULT_BODY_READ_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
    /// Seconds the server's writes may stay blocked by a client that reads
    /// nothing of its response; past it the connection closes.
    #[arg(long, env = "WRITE_TIMEOUT_SECS",
          default_value_t = DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_secs: u64,
    /// HTTP connections open at once; newer ones get 503 and are closed.
    /// Default: the open-file limit less 256 (768 under the common 1,024),
    /// between 16 and 8,192.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_http_connections: Option<u64>,
}

impl LimitsArgs {
    /// The limits these flags ask for.
    pub fn limits(&self) -> ServerLimits {
        let limits = ServerLimits::default()
            .header_read_timeout(Duration::from_secs(self.header_read_timeout_secs))
            .body_read_timeout(Duration::from_secs(self.body_read_timeout_secs))
            .write_timeout(Duration::from_secs(self.write_timeout_secs));
        match self.max_http_connections {
            Some(max) => limits.max_connections(usize::try_from(max).unwrap_or(usize::MAX)),
            None => limits,
        }
    }
}
