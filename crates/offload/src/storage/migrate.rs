//! One migration runner for offload's schema and for applications that
//! keep theirs the same way (the reference service does).
//!
//! Each schema keeps its own version table instead of sqlx's
//! `_sqlx_migrations`, so that the application's own sqlx migrator never
//! sees versions it does not know. Concurrent migrators serialize: an
//! advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite.

use sqlx::Pool;

pub use super::schema::Migration;
use super::Driver;
use crate::{Error, Result};

/// offload's own version table.
pub const OFFLOAD_TABLE: &str = "offload_migrations";

/// Applies the migrations of `migrations` not yet recorded in version table
/// `table`, in one transaction: all of them or none.
///
/// ```no_run
/// use offload::migrate::{self, Migration};
/// const RECORDS: &[Migration] = &[Migration::new(1, "records", "CREATE TABLE records (id INTEGER PRIMARY KEY)")];
/// # async fn example(pool: sqlx::SqlitePool) -> offload::Result<()> {
/// migrate::run(&pool, "app_migrations", RECORDS).await?;
/// # Ok(()) }
/// ```
pub async fn run<DB: Driver>(
    pool: &Pool<DB>,
    table: &'static str,
    migrations: &[Migration],
) -> Result<()> {
    check_table_name(table)?;
    let mut tx = DB::migration_begin(pool, table).await?;
    let applied = DB::migration_applied(&mut tx, table).await?;
    for migration in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        DB::migration_apply(&mut tx, table, migration).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The version table's name goes into SQL as an identifier.
fn check_table_name(table: &str) -> Result<()> {
    let mut chars = table.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && table.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "migration table `{table}` must be a lower-case SQL identifier of at most 63 characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_must_be_identifiers() {
        assert!(check_table_name("offload_migrations").is_ok());
        assert!(check_table_name("x; DROP TABLE jobs").is_err());
        assert!(check_table_name("").is_err());
        assert!(check_table_name("Upper").is_err());
    }
}
