//! Everything on PostgreSQL that is not a job row: queue settings,
//! notifications, worker heartbeats, leadership, periodic ticks and the
//! migration table.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row, Transaction, TransactionManager};

use crate::storage::decode::LeaderRow;
use crate::storage::schema::{failed, Migration};
use crate::storage::time::span_secs;
use crate::storage::{Driver, GroupStep, Leader, PoolSettings, Signals, WorkerInfo};
use crate::Result;

/// The channel enqueues notify, with the queue name as payload.
const JOBS_CHANNEL: &str = "offload_jobs";
/// The channel operators' cancels notify, with the job id as payload.
const CANCEL_CHANNEL: &str = "offload_cancel";

/// Whether a connection is outside a transaction block, in the one round
/// trip the pool's liveness ping would cost. Sent as a simple query, whose
/// implicit transaction starts with the statement, so `now()` equals
/// `statement_timestamp()` exactly; inside a block `now()` is the `BEGIN`'s.
const OUTSIDE_TRANSACTION: &str = "SELECT now() = statement_timestamp()";

/// `BEGIN` and the check of [`OUTSIDE_TRANSACTION`] in one simple query:
/// both statements share the message's `statement_timestamp()`, and a
/// transaction begun by this message starts at it too. A transaction left
/// open by a cancelled `BEGIN` started earlier, so the division fails and
/// the caller takes another connection.
const BEGIN_CHECKED: &str = "BEGIN; SELECT 1 / (now() = statement_timestamp())::int";

const TRY_LEAD: &str = r#"
INSERT INTO offload_leader (name, leader_id, elected_at, expires_at)
VALUES ($1, $2, now(), now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id,
    elected_at = CASE WHEN offload_leader.leader_id = excluded.leader_id
                      THEN offload_leader.elected_at ELSE now() END,
    expires_at = excluded.expires_at
WHERE offload_leader.expires_at < now() OR offload_leader.leader_id = excluded.leader_id
RETURNING leader_id
"#;

const ADVANCE_TICK: &str = r#"
INSERT INTO offload_periodic (name, last_tick) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
WHERE offload_periodic.last_tick < excluded.last_tick
RETURNING name
"#;

/// Opens the pool; see `Backend::connect`.
pub(super) async fn connect(url: &str, settings: PoolSettings) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    // A silent (half-open) idle connection costs a caller this much of its
    // wait, then it is closed and another one tried.
    let check_limit = settings.acquire_timeout / 3;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // `before_acquire` checks liveness too, in place of the ping.
        .test_before_acquire(false)
        .before_acquire(move |conn, _| {
            Box::pin(async move {
                tokio::time::timeout(check_limit, close_abandoned_transaction(conn))
                    .await
                    .unwrap_or_else(|_| {
                        Err(sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "an idle connection did not answer its check; closed",
                        )))
                    })
            })
        })
        .connect_with(options)
        .await?)
}

/// Rolls back a transaction left open on a connection about to be handed
/// out. sqlx 0.8's `begin` counts the transaction only when the `BEGIN`'s
/// reply arrives, and its guard rolls back nothing at depth 0: a future
/// dropped while waiting (a request whose client disconnected) returns the
/// connection with the server inside a transaction, where later autocommit
/// writes (a job's completion) would wait for someone's `COMMIT` or be lost
/// to their `ROLLBACK`. sqlx does not expose the server's transaction
/// status, so this asks the server; an error closes the connection.
async fn close_abandoned_transaction(conn: &mut PgConnection) -> sqlx::Result<bool> {
    let outside = match conn.fetch_one(OUTSIDE_TRANSACTION).await {
        Ok(row) => row.try_get::<bool, _>(0)?,
        // A failed transaction block: a `BEGIN_CHECKED` that found one
        // left open.
        Err(error) if is_failed_transaction(&error) => false,
        Err(error) => return Err(error),
    };
    if !outside {
        tracing::warn!("rolling back a transaction whose BEGIN was cancelled");
        conn.execute("ROLLBACK").await?;
    }
    Ok(true)
}

/// Begins a transaction in one round trip: an idle connection taken
/// without `before_acquire` (`try_begin_with`), checked by the `BEGIN`
/// itself. When none is idle (others wait) or the check fails, a checked
/// connection and a plain `BEGIN`.
pub(super) async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    match pool.try_begin_with(BEGIN_CHECKED).await {
        Ok(Some(tx)) => return Ok(tx),
        Ok(None) => {}
        Err(error) => tracing::debug!(%error, "checked BEGIN failed; taking a checked connection"),
    }
    pool.begin().await
}

/// `in_failed_sql_transaction`: the server ignores all but the end of the
/// block.
fn is_failed_transaction(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "25P02")
}

pub(super) async fn group_step(conn: &mut PgConnection, step: GroupStep) -> sqlx::Result<()> {
    type Manager = <Postgres as sqlx::Database>::TransactionManager;
    match step {
        GroupStep::Begin => Manager::begin(conn, None).await,
        GroupStep::Commit => Manager::commit(conn).await,
        GroupStep::Rollback => Manager::rollback(conn).await,
        GroupStep::Savepoint => conn.execute("SAVEPOINT offload_member").await.map(drop),
        GroupStep::Release => conn.execute("RELEASE offload_member").await.map(drop),
        GroupStep::RollbackToSavepoint => {
            conn.execute("ROLLBACK TO offload_member").await.map(drop)
        }
    }
}

/// Wakes listeners of `queues` on every host.
pub(super) async fn notify(pool: &PgPool, queues: &[String]) -> Result<()> {
    if !queues.is_empty() {
        sqlx::query("SELECT pg_notify($1, q) FROM (SELECT DISTINCT unnest($2::text[]) AS q) s")
            .bind(JOBS_CHANNEL)
            .bind(queues)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub(super) async fn listen(pool: &PgPool, signals: Signals) -> Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([JOBS_CHANNEL, CANCEL_CHANNEL]).await?;
    (signals.listening)();
    let identity = Postgres::pool_identity(pool);
    loop {
        // `None`: the connection was lost and sqlx listens again on another.
        let Some(notification) = listener.try_recv().await? else {
            (signals.listening)();
            continue;
        };
        if notification.channel() == CANCEL_CHANNEL {
            if let Ok(id) = notification.payload().parse::<i64>() {
                (signals.cancel)(&identity, &[id]);
            }
        } else {
            (signals.wake)(notification.payload());
        }
    }
}

pub(super) async fn heartbeat(pool: &PgPool, worker: &WorkerInfo) -> Result<()> {
    sqlx::query(
        "INSERT INTO offload_workers (id, host, pid, queues) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(&worker.id)
    .bind(&worker.host)
    .bind(worker.pid)
    .bind(&worker.queues)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn deregister(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM offload_workers WHERE id = $1")
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn delete_expired_workers(pool: &PgPool, lease: Duration) -> Result<u64> {
    let result = sqlx::query(
        "DELETE FROM offload_workers WHERE heartbeat_at < now() - make_interval(secs => $1)",
    )
    .bind(span_secs(lease))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn try_lead(
    pool: &PgPool,
    name: &str,
    candidate: &str,
    ttl: Duration,
) -> Result<bool> {
    let leader: Option<String> = sqlx::query_scalar(TRY_LEAD)
        .bind(name)
        .bind(candidate)
        .bind(span_secs(ttl))
        .fetch_optional(pool)
        .await?;
    Ok(leader.is_some())
}

pub(super) async fn resign(pool: &PgPool, name: &str, leader: &str) -> Result<()> {
    sqlx::query("DELETE FROM offload_leader WHERE name = $1 AND leader_id = $2")
        .bind(name)
        .bind(leader)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn leader(pool: &PgPool, name: &str) -> Result<Option<Leader>> {
    let row: Option<LeaderRow> = sqlx::query_as(
        "SELECT leader_id, elected_at, expires_at FROM offload_leader \
         WHERE name = $1 AND expires_at >= now()",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Leader::from))
}

pub(super) async fn last_tick(pool: &PgPool, name: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(
        sqlx::query_scalar("SELECT last_tick FROM offload_periodic WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

pub(super) async fn advance_tick(
    conn: &mut PgConnection,
    name: &str,
    tick: DateTime<Utc>,
) -> Result<bool> {
    let advanced: Option<String> = sqlx::query_scalar(ADVANCE_TICK)
        .bind(name)
        .bind(tick)
        .fetch_optional(conn)
        .await?;
    Ok(advanced.is_some())
}

pub(super) async fn migration_begin(
    pool: &PgPool,
    table: &'static str,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    // Serializes concurrent migrators of the same table.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(table)
        .execute(&mut *tx)
        .await?;
    (&mut *tx)
        .execute(
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (version bigint PRIMARY KEY, \
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            .as_str(),
        )
        .await?;
    Ok(tx)
}

pub(super) async fn migration_applied(
    conn: &mut PgConnection,
    table: &'static str,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(&format!("SELECT version FROM {table}"))
        .fetch_all(conn)
        .await?)
}

pub(super) async fn migration_apply(
    conn: &mut PgConnection,
    table: &'static str,
    migration: &Migration,
) -> Result<()> {
    conn.execute(migration.sql)
        .await
        .map_err(|source| failed(migration, source))?;
    sqlx::query(&format!(
        "INSERT INTO {table} (version, name) VALUES ($1, $2)"
    ))
    .bind(migration.version)
    .bind(migration.name)
    .execute(conn)
    .await?;
    Ok(())
}
