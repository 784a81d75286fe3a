//! Storage: the only layer that speaks SQL. A sealed [`Driver`] holds every
//! statement, implemented once per backend (`postgres/`, `sqlite/`); rows
//! decode through one type each (`decode.rs`, with [`DbTime`] hiding how
//! each backend stores time); orchestration that is the same on both
//! backends is written once (`ops.rs`) over the driver's primitives.
//!
//! Applications see only [`Backend`]: connect, migrate, begin a write
//! transaction.

mod decode;
mod driver;
pub(crate) mod group;
mod group_step;
mod limits;
pub mod migrate;
pub mod ops;
mod pool;
mod portable;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod rows;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod time;
mod transient;

use std::future::Future;
use std::time::Duration;

use sqlx::{Pool, Transaction};

pub use driver::{Driver, Signals};
pub use group_step::GroupStep;
pub use limits::{Claimed, LimitChange, PartitionUse, QueueLimits, QueueSettings, Throttle};
pub(crate) use limits::{KeyLoad, KeyUse, KeyWalk, LimitColumns, LimitUse, PARTITION_USE};
pub use pool::{PoolSettings, DEFAULT_ACQUIRE_TIMEOUT, INTERACTIVE_ACQUIRE_TIMEOUT};
pub use portable::{
    BackendTx, FromPgRow, FromSqliteRow, PortableRow, PortableSql, Sql, SqlTarget, SqlValue,
};
pub use query::{JobFilter, Page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use rows::{
    clean_error, Attempt, AttemptError, ClaimedJob, Enqueued, JobRecord, JobSummary, Leader,
    NewJob, Outcome, StateChange, WorkerInfo, ARGS_PREVIEW_LEN,
};
pub use time::DbTime;

use crate::{Error, Result};

/// A database that can hold offload's jobs: [`sqlx::Postgres`] (feature
/// `postgres`) and [`sqlx::Sqlite`] (feature `sqlite`). Sealed.
///
/// Application code names the backend as a type parameter
/// (`Client<Postgres>`, `JobContext<Sqlite>`), or stays generic over
/// `DB: Backend` to run one binary on either.
///
/// ```no_run
/// use offload::Backend;
/// # async fn example() -> offload::Result<()> {
/// let pool = sqlx::Sqlite::connect("sqlite://app.db", 8).await?;
/// sqlx::Sqlite::migrate(&pool).await?;
/// let mut tx = sqlx::Sqlite::begin_write(&pool).await?;
/// sqlx::query("CREATE TABLE IF NOT EXISTS notes (body TEXT)").execute(&mut *tx).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub trait Backend: Driver + PortableSql {
    /// The default of [`WorkerConfig::database_timeout`](crate::WorkerConfig::database_timeout):
    /// 15 s on PostgreSQL, none on SQLite.
    const DEFAULT_DATABASE_TIMEOUT: Option<Duration>;

    /// Opens a pool with the settings offload relies on, and that never
    /// hands out a connection left inside a transaction by a cancelled
    /// `BEGIN` (an sqlx 0.8 gap). On SQLite: WAL, a busy timeout, and a
    /// release hook that rolls such a transaction back, which would
    /// otherwise make every later `BEGIN IMMEDIATE` on that connection
    /// fail. On PostgreSQL: an acquire check, in place of sqlx's liveness
    /// ping, that rolls it back, which would otherwise swallow later
    /// autocommit writes such as a job's completion. Pools built otherwise
    /// lack these guards.
    fn connect(url: &str, max_connections: u32) -> impl Future<Output = Result<Pool<Self>>> + Send {
        Self::pool_connect(url, PoolSettings::new(max_connections))
    }

    /// [`connect`](Self::connect) with its size and acquire timeout set.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use offload::{Backend, PoolSettings};
    /// # async fn example() -> offload::Result<()> {
    /// let settings = PoolSettings::new(8).acquire_timeout(Duration::from_secs(3));
    /// let pool = sqlx::Sqlite::connect_with("sqlite://app.db", settings).await?;
    /// # Ok(()) }
    /// ```
    fn connect_with(
        url: &str,
        settings: PoolSettings,
    ) -> impl Future<Output = Result<Pool<Self>>> + Send {
        Self::pool_connect(url, settings)
    }

    /// Applies offload's migrations that have not run yet.
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<()>> + Send {
        migrate::run(pool, migrate::OFFLOAD_TABLE, Self::MIGRATIONS)
    }

    /// Begins a transaction that will write: a request's, or a job's. On
    /// SQLite it takes the write lock first (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads and then writes can fail with `SQLITE_BUSY`
    /// instead of waiting.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send {
        Self::tx_begin_write(pool)
    }
}

/// Which backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl BackendKind {
    /// Reads the scheme of `url`. The error names only the scheme, never
    /// the rest of the URL (which may hold a password).
    ///
    /// ```
    /// use offload::BackendKind;
    /// assert_eq!(BackendKind::from_url("postgres://u:secret@db/app").unwrap(), BackendKind::Postgres);
    /// assert_eq!(BackendKind::from_url("sqlite://jobs.db").unwrap(), BackendKind::Sqlite);
    /// assert!(BackendKind::from_url("mysql://u:secret@db").unwrap_err().to_string().contains("mysql"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(BackendKind::Postgres),
            "sqlite" => Ok(BackendKind::Sqlite),
            _ => Err(Error::UnsupportedUrl(scheme)),
        }
    }
}
