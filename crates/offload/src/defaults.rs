//! The defaults every layer agrees on.

/// The queue jobs go to unless they name another.
pub const DEFAULT_QUEUE: &str = "default";

/// Attempts a job gets unless it asks for another number.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;

/// The SQLite file used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://offload.db";

/// Longest error message kept on a job row, in bytes.
pub const MAX_ERROR_LEN: usize = 8 * 1024;

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`] when it is unset or empty.
///
/// ```
/// let url = offload::database_url_from_env();
/// assert!(!url.is_empty());
/// ```
pub fn database_url_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}
