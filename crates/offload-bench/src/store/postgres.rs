//! PostgreSQL: a scratch database per run on the server the URL names, so the
//! bench never touches another database's rows; and the readings of the
//! server's WAL position and of its processes' CPU time that give a
//! measure's cost per job.

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres};

use super::{BenchStore, ServerReading};
use crate::report::ServerCost;

/// Where the server's WAL ends now, as text, for [`WAL_SINCE`]. The
/// position is the server's: WAL that other databases on the same server
/// write meanwhile counts too.
const WAL_POSITION: &str = "SELECT pg_current_wal_lsn()::text";

/// WAL bytes written since the position `$1` (from [`WAL_POSITION`]).
const WAL_SINCE: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8";

/// The server processes serving the scratch database: the pool's
/// connections, the worker's listener, autovacuum workers while they run.
const BACKENDS: &str = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()";

/// Clock ticks per second of `utime` and `stime` in `/proc/<pid>/stat`
/// (`USER_HZ`, 100 on every Linux architecture the bench runs on).
const TICKS_PER_SEC: u64 = 100;

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

    async fn server_reading(pool: &PgPool) -> sqlx::Result<Option<ServerReading>> {
        let mut conn = pool.acquire().await?;
        let wal_position: String = sqlx::query_scalar(WAL_POSITION)
            .fetch_one(&mut *conn)
            .await?;
        let pids: Vec<i32> = sqlx::query_scalar(BACKENDS).fetch_all(&mut *conn).await?;
        Ok(Some(ServerReading {
            wal_position,
            cpu_ticks: cpu_ticks(&pids),
        }))
    }

    async fn server_cost(
        pool: &PgPool,
        before: Option<ServerReading>,
        jobs: u64,
    ) -> sqlx::Result<Option<ServerCost>> {
        let Some(before) = before else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await?;
        let wal: i64 = sqlx::query_scalar(WAL_SINCE)
            .bind(&before.wal_position)
            .fetch_one(&mut *conn)
            .await?;
        let pids: Vec<i32> = sqlx::query_scalar(BACKENDS).fetch_all(&mut *conn).await?;
        let ticks = match (before.cpu_ticks, cpu_ticks(&pids)) {
            (Some(before), Some(after)) => Some(ticks_since(&before, &after)),
            _ => None,
        };
        let jobs = jobs.max(1) as f64;
        Ok(Some(ServerCost {
            wal_bytes_per_job: wal as f64 / jobs,
            cpu_us_per_job: ticks.map(|t| (t * 1_000_000 / TICKS_PER_SEC) as f64 / jobs),
        }))
    }
}

/// CPU ticks (`utime + stime`) of each of `pids`, from `/proc/<pid>/stat`.
/// A process that has exited since it was listed is left out; `None` when
/// any other could not be read or is not a `postgres` process (a server on
/// another machine, a `/proc` mounted with `hidepid`), or none was read.
fn cpu_ticks(pids: &[i32]) -> Option<HashMap<i32, u64>> {
    let mut ticks = HashMap::with_capacity(pids.len());
    for &pid in pids {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                ticks.insert(pid, postgres_ticks(&stat)?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    (!ticks.is_empty()).then_some(ticks)
}

/// `utime + stime` from the text of a `postgres` process's
/// `/proc/<pid>/stat`; `None` for another command or an unexpected format.
fn postgres_ticks(stat: &str) -> Option<u64> {
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, command) = head.split_once('(')?;
    if command != "postgres" {
        return None;
    }
    // After the command: state, ppid, ..., utime and stime are the 12th
    // and 13th fields (fields 14 and 15 of the whole line).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks spent between two readings by the processes of `after`; one that
/// started in between counts from zero. One that exited in between is not
/// in `after` and so is missed.
fn ticks_since(before: &HashMap<i32, u64>, after: &HashMap<i32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{postgres_ticks, with_database};

    #[test]
    fn ticks_come_from_utime_and_stime_of_postgres_only() {
        let stat = "2241 (postgres) S 2236 2241 2241 0 -1 4194368 238 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(postgres_ticks(stat), Some(12));
        let other = "2241 (bash) S 2236 2241 2241 0 -1 4194368 238 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(postgres_ticks(other), None);
        assert_eq!(postgres_ticks("garbage"), None);
    }

    #[test]
    fn scratch_url_keeps_credentials_and_parameters() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
