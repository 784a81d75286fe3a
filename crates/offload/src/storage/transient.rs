//! Which database errors mean "try again later": the database is
//! restarting, unreachable, overloaded or locked, or its disk is full.
//! Each backend knows its own codes; callers see one answer.

use crate::error::{Error, Transient};

/// `ENOSPC`: the OS's "no space left on device".
const NO_SPACE_LEFT: i32 = 28;

impl Transient {
    /// What a database error says about trying again, if it is transient.
    ///
    /// ```
    /// use offload::Transient;
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// assert_eq!(Transient::of(&sqlx::Error::Io(refused)), Some(Transient::Unavailable));
    /// assert_eq!(Transient::of(&sqlx::Error::RowNotFound), None);
    /// ```
    pub fn of(error: &sqlx::Error) -> Option<Self> {
        match error {
            sqlx::Error::Io(io) if io.raw_os_error() == Some(NO_SPACE_LEFT) => {
                Some(Transient::StorageFull)
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Some(Transient::Unavailable),
            sqlx::Error::Database(db) => {
                #[cfg(feature = "postgres")]
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    return super::postgres::transient_code(&db.code().unwrap_or_default());
                }
                #[cfg(feature = "sqlite")]
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    let code = db.code().and_then(|code| code.parse::<i32>().ok());
                    return code.and_then(super::sqlite::transient_code);
                }
                None
            }
            _ => None,
        }
    }
}

impl Error {
    /// Whether trying again later may succeed, and why: the database is
    /// unavailable for now, or its disk is full. `None` for errors that
    /// will fail the same way again (bad input, a bug, a corrupt row).
    ///
    /// ```
    /// use offload::{Error, Transient};
    /// assert_eq!(Error::Database(sqlx::Error::PoolClosed).transient(), Some(Transient::Unavailable));
    /// assert_eq!(Error::JobNotFound(7).transient(), None);
    /// ```
    pub fn transient(&self) -> Option<Transient> {
        match self {
            Error::Database(error) | Error::Migration { source: error, .. } => Transient::of(error),
            Error::UniqueKeyContended { .. } => Some(Transient::Unavailable),
            _ => None,
        }
    }
}
