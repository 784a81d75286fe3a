//! SQLite: a scratch file per run, removed at the end with its WAL files.

use std::path::{Path, PathBuf};

use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::{BenchStore, ServerReading};
use crate::report::ServerCost;

/// A database file created for one run, removed by [`ScratchFile::remove`].
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
    url: String,
}

impl ScratchFile {
    /// `offload_bench_<pid>.db` in the directory of the file `url` names, or
    /// in the temp directory when `url` is `None`. Never an existing file.
    pub fn new(url: Option<&str>) -> std::io::Result<Self> {
        let dir = match url.map(sqlite_path) {
            Some(path) => path
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            None => std::env::temp_dir(),
        };
        let path = dir.join(format!("offload_bench_{}.db", std::process::id()));
        if path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; remove it or pick another directory",
                    path.display()
                ),
            ));
        }
        let url = format!("sqlite://{}", path.display());
        Ok(Self { path, url })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A URL for the file.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Removes the file and its `-wal` and `-shm` companions.
    pub fn remove(self) -> std::io::Result<()> {
        for suffix in ["-wal", "-shm"] {
            let mut companion = self.path.clone().into_os_string();
            companion.push(suffix);
            let _ = std::fs::remove_file(companion);
        }
        std::fs::remove_file(&self.path)
    }
}

/// The file path in `sqlite://path?params` or `sqlite:path`.
pub(crate) fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

impl BenchStore for Sqlite {
    /// SQLite runs in the bench's own process: no server to read.
    async fn server_reading(_pool: &SqlitePool) -> sqlx::Result<Option<ServerReading>> {
        Ok(None)
    }

    async fn server_cost(
        _pool: &SqlitePool,
        _before: Option<ServerReading>,
        _jobs: u64,
    ) -> sqlx::Result<Option<ServerCost>> {
        Ok(None)
    }

    async fn clear_jobs(pool: &SqlitePool) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM offload_jobs")
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn reset_counters(pool: &SqlitePool, rows: i64) -> sqlx::Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_counters (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL)",
        )
        .execute(pool)
        .await?;
        sqlx::query("DELETE FROM bench_counters")
            .execute(pool)
            .await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
             INSERT INTO bench_counters (id, hits) SELECT i, 0 FROM n",
        )
        .bind(rows)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn bump_counter(conn: &mut SqliteConnection, id: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE bench_counters SET hits = hits + 1 WHERE id = ?1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn counter_total(pool: &SqlitePool) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(sum(hits), 0) FROM bench_counters")
            .fetch_one(pool)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_file_sits_beside_the_named_file() {
        let scratch = ScratchFile::new(Some("sqlite://data/app.db?mode=rwc")).unwrap();
        assert_eq!(scratch.path().parent(), Some(Path::new("data")));
        let bare = ScratchFile::new(Some("sqlite:app.db")).unwrap();
        assert_eq!(bare.path().parent(), Some(Path::new(".")));
    }
}
