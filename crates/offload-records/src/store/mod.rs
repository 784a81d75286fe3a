//! The records table. All of its SQL lives in [`postgres`] and [`sqlite`],
//! behind [`RecordStore`]; the API and the job are generic over it.

pub mod postgres;
pub mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};
use offload::migrate::Migration;
use offload::Backend;
use serde::{Deserialize, Serialize};
use sqlx::Pool;
use utoipa::ToSchema;

/// Where this crate records which of its migrations ran; distinct from
/// offload's `offload_migrations`.
pub const MIGRATIONS_TABLE: &str = "offload_records_migrations";

/// A record's processing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// Accepted; its processing job has not finished.
    Pending,
    /// Processed: `result` is set.
    Done,
}

impl RecordStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Pending => "pending",
            RecordStatus::Done => "done",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [RecordStatus; 2] = [RecordStatus::Pending, RecordStatus::Done];
}

impl std::str::FromStr for RecordStatus {
    type Err = UnknownStatus;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "pending" => Ok(RecordStatus::Pending),
            "done" => Ok(RecordStatus::Done),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A status name that is not one of [`RecordStatus`].
#[derive(Debug, thiserror::Error)]
#[error("unknown record status `{0}`")]
pub struct UnknownStatus(pub String);

/// A stored record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Record {
    /// Its id.
    pub id: i64,
    /// A label chosen by the client.
    pub name: String,
    /// The data to process.
    pub payload: String,
    /// `pending` until its job has run.
    pub status: RecordStatus,
    /// Hex SHA-256 of the payload, iterated; set when `done`.
    pub result: Option<String>,
    /// The offload job that processes it.
    pub job_id: Option<i64>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its job finished.
    pub processed_at: Option<DateTime<Utc>>,
}

/// A validated record to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// See [`Record::name`].
    pub name: String,
    /// See [`Record::payload`].
    pub payload: String,
}

/// Which records to list: newest first, keyset-paginated by id.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<RecordStatus>,
    /// Only ids below this one (the previous page's last id).
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// The records table on one database: implemented for [`sqlx::Postgres`]
/// and [`sqlx::Sqlite`].
pub trait RecordStore: Backend {
    /// Applies this crate's migrations that have not run yet, tracked in
    /// [`MIGRATIONS_TABLE`].
    /// This table's schema versions on this backend.
    const RECORD_MIGRATIONS: &'static [Migration];

    /// Applies the records migrations that have not run yet, tracked in
    /// [`MIGRATIONS_TABLE`] by offload's migration runner.
    fn migrate_records(pool: &Pool<Self>) -> impl Future<Output = offload::Result<()>> + Send {
        offload::migrate::run(pool, MIGRATIONS_TABLE, Self::RECORD_MIGRATIONS)
    }

    /// Inserts a `pending` record on `conn` (the request's transaction).
    fn insert_record(
        conn: &mut Self::Connection,
        record: &NewRecord,
    ) -> impl Future<Output = Result<Record, sqlx::Error>> + Send;

    /// Inserts `pending` records in one statement on `conn`. Returns them
    /// in input order.
    fn insert_records(
        conn: &mut Self::Connection,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Vec<Record>, sqlx::Error>> + Send;

    /// Links records to their jobs in one statement: `(record_id, job_id)` pairs.
    fn attach_jobs(
        conn: &mut Self::Connection,
        links: &[(i64, i64)],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Links a record to the job that processes it.
    fn attach_job(
        conn: &mut Self::Connection,
        record_id: i64,
        job_id: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// One record.
    fn get_record(
        pool: &Pool<Self>,
        id: i64,
    ) -> impl Future<Output = Result<Option<Record>, sqlx::Error>> + Send;

    /// A page of records, newest first.
    fn list_records(
        pool: &Pool<Self>,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<Vec<Record>, sqlx::Error>> + Send;

    /// Number of records in each status that has any.
    fn count_by_status(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Vec<(RecordStatus, i64)>, sqlx::Error>> + Send;

    /// A record's payload, for its job.
    fn record_payload(
        pool: &Pool<Self>,
        id: i64,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send;

    /// Marks a pending record `done` with `result` on `conn` (the job's
    /// transaction). Returns `false` if it was not pending.
    fn finish_record(
        conn: &mut Self::Connection,
        id: i64,
        result: &str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
}

fn parse_status(raw: &str) -> Result<RecordStatus, sqlx::Error> {
    raw.parse()
        .map_err(|error: UnknownStatus| sqlx::Error::Decode(Box::new(error)))
}
