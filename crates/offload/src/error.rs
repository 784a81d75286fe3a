//! Library errors.

use crate::queue_name::InvalidQueueName;

/// Everything that can go wrong in offload's own operations.
///
/// Errors raised *by a job* are [`JobError`](crate::JobError)s instead: they are
/// recorded on the job row and never surface here.
///
/// ```
/// use offload::Error;
///
/// /// What a handler tells its caller.
/// fn status(error: &Error) -> u16 {
///     match error {
///         // Unreachable database, pool timed out: try again later.
///         Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => 503,
///         Error::InvalidQueueName(_) | Error::Config(_) => 500,
///         _ => 500,
///     }
/// }
/// let error = Error::from(offload::check_queue_name("has space").unwrap_err());
/// assert!(error.to_string().starts_with("invalid queue name \"has space\""));
/// assert_eq!(status(&error), 500);
/// ```
///
/// `offload-axum` maps it to an HTTP problem (`503` with `Retry-After` when
/// the database is unavailable) with `From<offload::Error> for Problem`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database rejected a statement or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A job's args could not be serialized to JSON.
    #[error("could not encode args of job kind `{kind}`: {source}")]
    EncodeArgs {
        /// The job kind whose args failed to encode.
        kind: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A job's queue has a name no queue can have; nothing was inserted.
    /// See [`check_queue_name`](crate::check_queue_name).
    #[error(transparent)]
    InvalidQueueName(#[from] InvalidQueueName),
    /// A job's args, tags or kind hold a NUL character: PostgreSQL cannot
    /// store one, so no backend takes it (a job that runs on SQLite in
    /// development must not fail on PostgreSQL in production).
    #[error("{field} of job kind `{kind}` contain a NUL character (\\u0000), which PostgreSQL cannot store; remove it or encode the bytes (base64, say)")]
    ContainsNul {
        /// The job kind.
        kind: String,
        /// `args`, `tags`, `kind` or `partition key`.
        field: &'static str,
    },
    /// The database URL names no supported backend.
    #[error("unsupported database URL scheme `{0}`: expected `postgres://` or `sqlite:`")]
    UnsupportedUrl(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A row read back from offload's tables holds a value offload never
    /// writes (a state name, say): the table was changed by hand.
    #[error("corrupt row in {table}: {detail}")]
    CorruptRow {
        /// The table read.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An insert returned fewer ids than rows it was given.
    #[error("the database returned no id for an inserted job")]
    MissingInsertId,
    /// A unique key changed hands on every try: each time the insert found
    /// the key held, the holder had finished before it could be read.
    #[error("unique key `{key}` kept changing hands; try the enqueue again")]
    UniqueKeyContended {
        /// The contended key.
        key: String,
    },
    /// No job has this id (an action on one job, such as
    /// [`Client::cancel`](crate::Client::cancel)).
    #[error("job {0} not found")]
    JobNotFound(i64),
    /// A migration failed; the schema was left at the previous version.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
}

/// Why a failed operation may succeed if tried again later.
///
/// ```
/// use offload::Transient;
/// let error = offload::Error::Database(sqlx::Error::PoolTimedOut);
/// assert_eq!(error.transient(), Some(Transient::Unavailable));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transient {
    /// Unreachable, restarting, out of connections or locked: an HTTP
    /// service answers 503 with `Retry-After`.
    Unavailable,
    /// The database's disk (or SQLite's page limit) is full: 507 until
    /// space is freed.
    StorageFull,
}

/// `Result` with offload's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
