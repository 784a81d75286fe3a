//! PostgreSQL: a scratch database per run on the server the URL names, so the
//! bench never touches another database's rows.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres};

use super::BenchStore;

/// A database created for one run, dropped by [`ScratchDatabase::drop`].
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates `offload_bench_<pid>` on the server of `server_url`, going
    /// through the server's `postgres` database. With `async_commit`, its
    /// sessions default to `synchronous_commit = off`.
    pub async fn create(server_url: &str, async_commit: bool) -> sqlx::Result<Self> {
        let admin = PgConnectOptions::from_str(server_url)?
            .database("postgres")
            .disable_statement_logging();
        let name = format!("offload_bench_{}", std::process::id());
        let mut conn = PgConnection::connect_with(&admin).await?;
        // A leftover of a killed run with the same pid would make CREATE fail.
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        if async_commit {
            // Commits return before their WAL is flushed: a crash can lose
            // the last few, but never half of one.
            sqlx::query(&format!(
                "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
            ))
            .execute(&mut conn)
            .await?;
        }
        conn.close().await?;
        let url = with_database(server_url, &name);
        Ok(Self { admin, name, url })
    }

    /// The scratch database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the scratch database, with the server URL's credentials
    /// and parameters.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, closing any connection still open on it.
    pub async fn drop(self) -> sqlx::Result<()> {
        let mut conn = PgConnection::connect_with(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await
    }
}

/// `url` with its path (the database name) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, Some(params)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut rewritten = format!("{}/{database}", &base[..authority_end]);
    if let Some(params) = params {
        rewritten.push('?');
        rewritten.push_str(params);
    }
    rewritten
}

impl BenchStore for Postgres {
    async fn clear_jobs(pool: &PgPool) -> sqlx::Result<()> {
        sqlx::query("TRUNCATE offload_jobs").execute(pool).await?;
        Ok(())
    }

    async fn reset_counters(pool: &PgPool, rows: i64) -> sqlx::Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_counters (id bigint PRIMARY KEY, hits bigint NOT NULL)",
        )
        .execute(pool)
        .await?;
        sqlx::query("TRUNCATE bench_counters").execute(pool).await?;
        sqlx::query("INSERT INTO bench_counters (id, hits) SELECT i, 0 FROM generate_series(0, $1 - 1) AS i")
            .bind(rows)
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn bump_counter(conn: &mut PgConnection, id: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE bench_counters SET hits = hits + 1 WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn counter_total(pool: &PgPool) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(sum(hits), 0)::int8 FROM bench_counters")
            .fetch_one(pool)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn scratch_url_keeps_credentials_and_parameters() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
