//! Everything on SQLite that is not a job row: the pool, queue settings,
//! worker heartbeats, leadership, periodic ticks and the migration table.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{
    Connection, Database, Executor, Sqlite, SqliteConnection, SqlitePool, Transaction,
    TransactionManager,
};

use crate::storage::decode::LeaderRow;
use crate::storage::schema::{failed, Migration};
use crate::storage::time::{duration_micros, from_micros, micros, now_micros};
use crate::storage::{GroupStep, Leader, PoolSettings, WorkerInfo};
use crate::Result;

const TRY_LEAD: &str = r#"
INSERT INTO offload_leader (name, leader_id, elected_at, expires_at)
VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id,
    elected_at = CASE WHEN offload_leader.leader_id = excluded.leader_id
                      THEN offload_leader.elected_at ELSE excluded.elected_at END,
    expires_at = excluded.expires_at
WHERE offload_leader.expires_at < excluded.elected_at
   OR offload_leader.leader_id = excluded.leader_id
RETURNING leader_id
"#;

const ADVANCE_TICK: &str = r#"
INSERT INTO offload_periodic (name, last_tick) VALUES (?1, ?2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
WHERE offload_periodic.last_tick < excluded.last_tick
RETURNING name
"#;

pub(super) async fn connect(url: &str, settings: PoolSettings) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true);
    Ok(SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .after_release(|conn, _| Box::pin(close_abandoned_transaction(conn)))
        .connect_with(options)
        .await?)
}

/// Rolls back a transaction left open on a connection going back to the
/// pool. sqlx 0.8's `begin_with` counts the transaction as begun and then
/// awaits the connection's handle; when its future is dropped there (a
/// request cancelled by a disconnecting client), no `Transaction` exists to
/// roll it back, and every later `BEGIN IMMEDIATE` on the connection fails.
async fn close_abandoned_transaction(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    type Manager = <Sqlite as Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A dropped `Transaction` queues its rollback; let it run first.
    conn.ping().await?;
    if Manager::get_transaction_depth(conn) > 0 {
        tracing::warn!("rolling back a transaction whose BEGIN was cancelled");
        while Manager::get_transaction_depth(conn) > 0 {
            Manager::rollback(conn).await?;
        }
    }
    Ok(true)
}

pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

pub(super) async fn group_step(
    conn: &mut SqliteConnection,
    step: GroupStep,
) -> Result<(), sqlx::Error> {
    type Manager = <Sqlite as Database>::TransactionManager;
    match step {
        GroupStep::Begin => Manager::begin(conn, Some("BEGIN IMMEDIATE".into())).await,
        GroupStep::Commit => Manager::commit(conn).await,
        GroupStep::Rollback => Manager::rollback(conn).await,
        GroupStep::Savepoint => conn.execute("SAVEPOINT offload_member").await.map(drop),
        GroupStep::Release => conn.execute("RELEASE offload_member").await.map(drop),
        GroupStep::RollbackToSavepoint => {
            conn.execute("ROLLBACK TO offload_member").await.map(drop)
        }
    }
}

pub(super) async fn heartbeat(pool: &SqlitePool, worker: &WorkerInfo) -> Result<()> {
    sqlx::query(
        "INSERT INTO offload_workers (id, host, pid, queues, started_at, heartbeat_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO UPDATE SET heartbeat_at = ?5",
    )
    .bind(&worker.id)
    .bind(&worker.host)
    .bind(worker.pid)
    .bind(&worker.queues)
    .bind(now_micros())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn deregister(pool: &SqlitePool, worker_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM offload_workers WHERE id = ?1")
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn delete_expired_workers(pool: &SqlitePool, lease: Duration) -> Result<u64> {
    let result = sqlx::query("DELETE FROM offload_workers WHERE heartbeat_at < ?1")
        .bind(now_micros() - duration_micros(lease))
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

pub(super) async fn try_lead(
    pool: &SqlitePool,
    name: &str,
    candidate: &str,
    ttl: Duration,
) -> Result<bool> {
    let now = now_micros();
    let leader: Option<String> = sqlx::query_scalar(TRY_LEAD)
        .bind(name)
        .bind(candidate)
        .bind(now)
        .bind(now.saturating_add(duration_micros(ttl)))
        .fetch_optional(pool)
        .await?;
    Ok(leader.is_some())
}

pub(super) async fn resign(pool: &SqlitePool, name: &str, leader: &str) -> Result<()> {
    sqlx::query("DELETE FROM offload_leader WHERE name = ?1 AND leader_id = ?2")
        .bind(name)
        .bind(leader)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn leader(pool: &SqlitePool, name: &str) -> Result<Option<Leader>> {
    let row: Option<LeaderRow> = sqlx::query_as(
        "SELECT leader_id, elected_at, expires_at FROM offload_leader \
         WHERE name = ?1 AND expires_at >= ?2",
    )
    .bind(name)
    .bind(now_micros())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Leader::from))
}

pub(super) async fn last_tick(pool: &SqlitePool, name: &str) -> Result<Option<DateTime<Utc>>> {
    let tick: Option<i64> =
        sqlx::query_scalar("SELECT last_tick FROM offload_periodic WHERE name = ?1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(tick.map(from_micros))
}

pub(super) async fn advance_tick(
    conn: &mut SqliteConnection,
    name: &str,
    tick: DateTime<Utc>,
) -> Result<bool> {
    let advanced: Option<String> = sqlx::query_scalar(ADVANCE_TICK)
        .bind(name)
        .bind(micros(tick))
        .fetch_optional(conn)
        .await?;
    Ok(advanced.is_some())
}

pub(super) async fn migration_begin(
    pool: &SqlitePool,
    table: &'static str,
) -> Result<Transaction<'static, Sqlite>> {
    // IMMEDIATE takes the write lock first, so concurrent migrators queue up.
    let mut tx = begin_write(pool).await?;
    (&mut *tx)
        .execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            .as_str(),
        )
        .await?;
    Ok(tx)
}

pub(super) async fn migration_applied(
    conn: &mut SqliteConnection,
    table: &'static str,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(&format!("SELECT version FROM {table}"))
        .fetch_all(conn)
        .await?)
}

pub(super) async fn migration_apply(
    conn: &mut SqliteConnection,
    table: &'static str,
    migration: &Migration,
) -> Result<()> {
    conn.execute(migration.sql)
        .await
        .map_err(|source| failed(migration, source))?;
    sqlx::query(&format!(
        "INSERT INTO {table} (version, name, applied_at) VALUES (?1, ?2, ?3)"
    ))
    .bind(migration.version)
    .bind(migration.name)
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}
