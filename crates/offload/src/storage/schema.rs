//! A schema change, as the driver applies it and the runner
//! ([`migrate::run`](super::migrate::run)) orders them.

use crate::Error;

/// One schema change.
///
/// ```
/// use offload::migrate::Migration;
/// const NOTES: &[Migration] = &[Migration::new(1, "notes", "CREATE TABLE notes (body TEXT)")];
/// assert_eq!(NOTES[0].version, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version number; applied in list order, each once.
    pub version: i64,
    /// A short name, stored beside the version.
    pub name: &'static str,
    /// The SQL, one or more statements.
    pub sql: &'static str,
}

impl Migration {
    /// A migration.
    pub const fn new(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self { version, name, sql }
    }
}

/// Wraps a failed migration's error with its version and name.
pub(crate) fn failed(migration: &Migration, source: sqlx::Error) -> Error {
    Error::Migration {
        version: migration.version,
        name: migration.name,
        source,
    }
}
