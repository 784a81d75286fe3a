//! One decoder per row type, shared by both backends: each backend's SQL
//! names its columns alike and stores times as [`DbTime`], so the same
//! `FromRow` works on PostgreSQL and SQLite.

use super::rows::{AttemptError, ClaimedJob, JobRecord, JobSummary, Leader};
use super::time::DbTime;
use crate::state::JobState;
use crate::{Error, Result};

/// Reads a state name written by offload.
pub(crate) fn parse_state(raw: &str) -> Result<JobState> {
    raw.parse()
        .map_err(|error: crate::UnknownState| Error::CorruptRow {
            table: "offload_jobs",
            detail: error.to_string(),
        })
}

fn decode_errors(raw: &str) -> Vec<AttemptError> {
    serde_json::from_str(raw).unwrap_or_default()
}

fn decode_tags(raw: &str) -> Vec<String> {
    serde_json::from_str(raw).unwrap_or_default()
}

/// A whole job row.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    kind: String,
    queue: String,
    state: String,
    args: String,
    priority: i16,
    attempt: i32,
    max_attempts: i32,
    errors: String,
    tags: String,
    created_at: DbTime,
    run_at: DbTime,
    attempted_at: Option<DbTime>,
    finalized_at: Option<DbTime>,
    worker_id: Option<String>,
    partition_key: String,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = Error;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(JobRecord {
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            state: parse_state(&row.state)?,
            args: serde_json::from_str(&row.args).unwrap_or(serde_json::Value::String(row.args)),
            priority: row.priority,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            errors: decode_errors(&row.errors),
            tags: decode_tags(&row.tags),
            created_at: row.created_at.into(),
            run_at: row.run_at.into(),
            attempted_at: row.attempted_at.map(Into::into),
            finalized_at: row.finalized_at.map(Into::into),
            worker_id: row.worker_id,
            partition_key: row.partition_key,
        })
    }
}

/// A job as lists show it.
#[derive(sqlx::FromRow)]
pub(crate) struct SummaryRow {
    id: i64,
    kind: String,
    queue: String,
    state: String,
    priority: i16,
    attempt: i32,
    max_attempts: i32,
    tags: String,
    args_preview: String,
    last_error: Option<String>,
    created_at: DbTime,
    run_at: DbTime,
    attempted_at: Option<DbTime>,
    finalized_at: Option<DbTime>,
}

impl TryFrom<SummaryRow> for JobSummary {
    type Error = Error;

    fn try_from(row: SummaryRow) -> Result<Self> {
        Ok(JobSummary {
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            state: parse_state(&row.state)?,
            priority: row.priority,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            tags: decode_tags(&row.tags),
            args_preview: row.args_preview,
            last_error: row.last_error,
            created_at: row.created_at.into(),
            run_at: row.run_at.into(),
            attempted_at: row.attempted_at.map(Into::into),
            finalized_at: row.finalized_at.map(Into::into),
        })
    }
}

/// A job as a claim returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    id: i64,
    kind: String,
    queue: String,
    args: String,
    attempt: i32,
    max_attempts: i32,
    run_at: DbTime,
}

impl From<ClaimRow> for ClaimedJob {
    fn from(row: ClaimRow) -> Self {
        ClaimedJob {
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            args: row.args,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            run_at: row.run_at.into(),
        }
    }
}

/// A leadership row.
#[derive(sqlx::FromRow)]
pub(crate) struct LeaderRow {
    leader_id: String,
    elected_at: DbTime,
    expires_at: DbTime,
}

impl From<LeaderRow> for Leader {
    fn from(row: LeaderRow) -> Self {
        Leader {
            leader_id: row.leader_id,
            elected_at: row.elected_at.into(),
            expires_at: row.expires_at.into(),
        }
    }
}

/// Decodes every row of `rows` into `T`.
pub(crate) fn all<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = Error>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// `(state, count)` pairs with known states.
pub(crate) fn state_counts(rows: Vec<(String, i64)>) -> Result<Vec<(JobState, i64)>> {
    rows.into_iter()
        .map(|(state, n)| Ok((parse_state(&state)?, n)))
        .collect()
}

/// A whole job row with the unique key it carries, for the testing kit.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyedJobRow {
    #[sqlx(flatten)]
    job: JobRow,
    unique_key: Option<String>,
}

impl KeyedJobRow {
    /// The job and its unique key, if it has one.
    pub(crate) fn into_parts(self) -> Result<(JobRecord, Option<String>)> {
        Ok((JobRecord::try_from(self.job)?, self.unique_key))
    }
}
