//! SQL written once for both backends: a statement with `$1`, `$2`, …
//! placeholders (PostgreSQL's; SQLite reads them too) and values bound from
//! a fixed set of types, run on any connection of a [`Backend`](crate::Backend).
//!
//! sqlx's own queries are typed by backend, and generic code cannot name
//! the bounds they need (`for<'c> &'c mut DB::Connection: Executor<'c>`,
//! `i64: Encode<DB>`): [`Sql`] carries its values as [`SqlValue`] and each
//! backend binds them itself.

use std::borrow::Cow;
use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::Transaction;

/// A value bound to a [`Sql`] statement. `None` binds a typed `NULL`.
///
/// ```
/// use offload::SqlValue;
/// assert_eq!(SqlValue::from(7_i32), SqlValue::I64(Some(7)));
/// assert_eq!(SqlValue::from(None::<String>), SqlValue::Text(None));
/// assert_eq!(SqlValue::from("hi"), SqlValue::Text(Some("hi".into())));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SqlValue {
    /// `BIGINT` / `INTEGER`.
    I64(Option<i64>),
    /// `DOUBLE PRECISION` / `REAL`.
    F64(Option<f64>),
    /// `BOOLEAN` / `INTEGER` 0 or 1.
    Bool(Option<bool>),
    /// `TEXT`.
    Text(Option<String>),
    /// `BYTEA` / `BLOB`.
    Bytes(Option<Vec<u8>>),
    /// `TIMESTAMPTZ` / RFC 3339 `TEXT`.
    Time(Option<DateTime<Utc>>),
    /// `JSONB` / JSON `TEXT`.
    Json(Option<serde_json::Value>),
}

macro_rules! sql_value_from {
    ($($ty:ty => $variant:ident $(via $conv:expr)?),* $(,)?) => {$(
        impl From<$ty> for SqlValue {
            fn from(value: $ty) -> Self {
                SqlValue::$variant(Some(sql_value_from!(@conv value $(, $conv)?)))
            }
        }
        impl From<Option<$ty>> for SqlValue {
            fn from(value: Option<$ty>) -> Self {
                SqlValue::$variant(value.map(|value| sql_value_from!(@conv value $(, $conv)?)))
            }
        }
    )*};
    (@conv $value:ident) => { $value };
    (@conv $value:ident, $conv:expr) => { ($conv)($value) };
}

sql_value_from! {
    i64 => I64,
    i32 => I64 via i64::from,
    i16 => I64 via i64::from,
    u32 => I64 via i64::from,
    f64 => F64,
    bool => Bool,
    String => Text,
    &str => Text via str::to_owned,
    Vec<u8> => Bytes,
    DateTime<Utc> => Time,
    serde_json::Value => Json,
}

/// A type a [`Sql`] query can return rows as, on every enabled backend:
/// anything that derives [`sqlx::FromRow`] with portable column types
/// (integers, floats, text, bytes, booleans), or a tuple of them.
///
/// ```
/// fn portable<T: offload::PortableRow>() {}
///
/// #[derive(sqlx::FromRow)]
/// struct Ticket { id: i64, title: String, closed: bool }
///
/// portable::<Ticket>();
/// portable::<(i64, Option<String>)>();
/// ```
pub trait PortableRow: FromPgRow + FromSqliteRow + Send + Unpin + 'static {}
impl<T: FromPgRow + FromSqliteRow + Send + Unpin + 'static> PortableRow for T {}

/// A row type for PostgreSQL (any type when the `postgres` feature is off).
#[cfg(feature = "postgres")]
pub trait FromPgRow: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>> FromPgRow for T {}
/// A row type for PostgreSQL (any type when the `postgres` feature is off).
#[cfg(not(feature = "postgres"))]
pub trait FromPgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> FromPgRow for T {}

/// A row type for SQLite (any type when the `sqlite` feature is off).
#[cfg(feature = "sqlite")]
pub trait FromSqliteRow: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>> FromSqliteRow for T {}
/// A row type for SQLite (any type when the `sqlite` feature is off).
#[cfg(not(feature = "sqlite"))]
pub trait FromSqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> FromSqliteRow for T {}

/// A connection of backend `DB` (a [`Backend`](crate::Backend)) a [`Sql`] statement can run on: a
/// [`Transaction`], a [`PoolConnection`], or a job's
/// [`JobContext`](crate::JobContext) (its own transaction).
///
/// ```no_run
/// use offload::{Backend, Sql};
/// # async fn example<DB: Backend>(pool: sqlx::Pool<DB>) -> Result<(), sqlx::Error> {
/// let mut tx = DB::begin_write(&pool).await?;
/// Sql::new("DELETE FROM sessions WHERE user_id = $1").bind(7).execute(&mut tx).await?;
/// tx.commit().await?;
/// let mut conn = pool.acquire().await?;
/// let left: i64 = Sql::new("SELECT count(*) FROM sessions").fetch_scalar(&mut conn).await?;
/// # Ok(()) }
/// ```
pub trait SqlTarget<DB: PortableSql>: Send {
    /// The connection to run on.
    fn connection(
        &mut self,
    ) -> impl Future<Output = Result<&mut DB::Connection, sqlx::Error>> + Send;
}

impl<DB: PortableSql> SqlTarget<DB> for Transaction<'_, DB> {
    async fn connection(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        Ok(&mut **self)
    }
}

impl<DB: PortableSql> SqlTarget<DB> for PoolConnection<DB> {
    async fn connection(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        Ok(&mut **self)
    }
}

/// One statement written for both backends: `$1`, `$2`, … placeholders,
/// values from [`SqlValue`]'s types.
///
/// ```
/// use offload::{Backend, Job, JobContext, JobError, Sql};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct MarkDone { record_id: i64 }
///
/// // One definition; the worker's backend picks the implementation.
/// impl<DB: Backend> Job<DB> for MarkDone {
///     const KIND: &'static str = "mark_done";
///     async fn run(self, ctx: &mut JobContext<DB>) -> Result<(), JobError> {
///         let changed = Sql::new("UPDATE records SET status = 'done' WHERE id = $1 AND status <> 'done'")
///             .bind(self.record_id)
///             .execute(ctx)
///             .await?;
///         if changed == 0 {
///             tracing::info!(record_id = self.record_id, "already done");
///         }
///         Ok(())
///     }
/// }
///
/// # async fn rows(pool: sqlx::SqlitePool) -> Result<(), sqlx::Error> {
/// let mut conn = pool.acquire().await?;
/// let (id, status): (i64, String) = Sql::new("SELECT id, status FROM records WHERE id = $1")
///     .bind(7)
///     .fetch_one(&mut conn)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sql {
    statement: Cow<'static, str>,
    values: Vec<SqlValue>,
}

impl Sql {
    /// The statement `statement`, with no values bound yet.
    pub fn new(statement: impl Into<Cow<'static, str>>) -> Self {
        Self {
            statement: statement.into(),
            values: Vec::new(),
        }
    }

    /// Binds the next placeholder (`$1` first).
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.values.push(value.into());
        self
    }

    /// The statement's text.
    pub fn statement(&self) -> &str {
        &self.statement
    }

    /// The values bound so far, in placeholder order.
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// Runs the statement; returns the number of rows it changed.
    pub async fn execute<DB: PortableSql>(
        &self,
        on: &mut impl SqlTarget<DB>,
    ) -> Result<u64, sqlx::Error> {
        let conn = on.connection().await?;
        DB::sql_execute(conn, &self.statement, &self.values).await
    }

    /// Every row, decoded as `T`.
    pub async fn fetch_all<DB: PortableSql, T: PortableRow>(
        &self,
        on: &mut impl SqlTarget<DB>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let conn = on.connection().await?;
        DB::sql_fetch_all(conn, &self.statement, &self.values).await
    }

    /// The first row, or `None` when there is none.
    pub async fn fetch_optional<DB: PortableSql, T: PortableRow>(
        &self,
        on: &mut impl SqlTarget<DB>,
    ) -> Result<Option<T>, sqlx::Error> {
        let conn = on.connection().await?;
        DB::sql_fetch_optional(conn, &self.statement, &self.values).await
    }

    /// The first row; [`sqlx::Error::RowNotFound`] when there is none.
    pub async fn fetch_one<DB: PortableSql, T: PortableRow>(
        &self,
        on: &mut impl SqlTarget<DB>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of the first row.
    pub async fn fetch_scalar<DB: PortableSql, T>(
        &self,
        on: &mut impl SqlTarget<DB>,
    ) -> Result<T, sqlx::Error>
    where
        (T,): PortableRow,
    {
        let (value,) = self.fetch_one::<DB, (T,)>(on).await?;
        Ok(value)
    }
}

/// A connection as its backend's own type, to write SQL per backend in
/// code generic over `DB` ([`JobContext::backend_tx`](crate::JobContext::backend_tx),
/// or `DB::backend_tx(&mut *tx)` on a request's transaction).
///
/// ```no_run
/// use offload::{Backend, BackendTx};
/// # async fn example<DB: Backend>(pool: sqlx::Pool<DB>) -> Result<(), sqlx::Error> {
/// let mut tx = DB::begin_write(&pool).await?;
/// match DB::backend_tx(&mut *tx) {
///     BackendTx::Postgres(conn) => {
///         sqlx::query("LOCK TABLE reports IN SHARE MODE").execute(conn).await?;
///     }
///     BackendTx::Sqlite(_) => {} // BEGIN IMMEDIATE already holds the write lock.
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub enum BackendTx<'c> {
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(&'c mut sqlx::PgConnection),
    /// A SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut sqlx::SqliteConnection),
}

/// Binds each [`SqlValue`] to a sqlx query of one backend (`Query` or
/// `QueryAs`: both have `bind`).
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                SqlValue::I64(v) => query.bind(*v),
                SqlValue::F64(v) => query.bind(*v),
                SqlValue::Bool(v) => query.bind(*v),
                SqlValue::Text(v) => query.bind(v.as_deref()),
                SqlValue::Bytes(v) => query.bind(v.as_deref()),
                SqlValue::Time(v) => query.bind(*v),
                SqlValue::Json(v) => query.bind(v.as_ref().map(sqlx::types::Json)),
            };
        }
        query
    }};
}

/// Implements [`PortableSql`] for backend `$db`, whose variant of
/// [`BackendTx`] is `$variant`.
macro_rules! portable_sql {
    ($db:ty, $variant:ident) => {
        impl PortableSql for $db {
            async fn sql_execute<'c>(
                conn: &'c mut Self::Connection,
                statement: &'c str,
                values: &'c [SqlValue],
            ) -> Result<u64, sqlx::Error> {
                let query = bind_values!(sqlx::query(statement), values);
                Ok(query.execute(conn).await?.rows_affected())
            }

            async fn sql_fetch_all<'c, T: PortableRow>(
                conn: &'c mut Self::Connection,
                statement: &'c str,
                values: &'c [SqlValue],
            ) -> Result<Vec<T>, sqlx::Error> {
                let query = bind_values!(sqlx::query_as::<_, T>(statement), values);
                query.fetch_all(conn).await
            }

            async fn sql_fetch_optional<'c, T: PortableRow>(
                conn: &'c mut Self::Connection,
                statement: &'c str,
                values: &'c [SqlValue],
            ) -> Result<Option<T>, sqlx::Error> {
                let query = bind_values!(sqlx::query_as::<_, T>(statement), values);
                query.fetch_optional(conn).await
            }

            fn backend_tx(conn: &mut Self::Connection) -> BackendTx<'_> {
                BackendTx::$variant(conn)
            }
        }
    };
}

#[cfg(feature = "postgres")]
portable_sql!(sqlx::Postgres, Postgres);
#[cfg(feature = "sqlite")]
portable_sql!(sqlx::Sqlite, Sqlite);

/// What each backend implements for [`Sql`]; part of
/// [`Backend`](crate::Backend).
pub trait PortableSql: sqlx::Database {
    /// Runs `statement` with `values`; returns rows affected.
    fn sql_execute<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c str,
        values: &'c [SqlValue],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'c;

    /// Runs `statement`; every row as `T`.
    fn sql_fetch_all<'c, T: PortableRow>(
        conn: &'c mut Self::Connection,
        statement: &'c str,
        values: &'c [SqlValue],
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'c;

    /// Runs `statement`; the first row as `T`, if any.
    fn sql_fetch_optional<'c, T: PortableRow>(
        conn: &'c mut Self::Connection,
        statement: &'c str,
        values: &'c [SqlValue],
    ) -> impl Future<Output = Result<Option<T>, sqlx::Error>> + Send + 'c;

    /// The connection as its own type.
    fn backend_tx(conn: &mut Self::Connection) -> BackendTx<'_>;
}
