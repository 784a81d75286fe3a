//! `/stats`: records by status and the processing queue's depth.

use std::collections::BTreeMap;

use axum::extract::State;
use offload::JobState;
use offload_axum::{Json, Problem};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{database_problem, AppState};
use crate::job::RECORDS_QUEUE;
use crate::store::{RecordStatus, RecordStore};

/// Counts for the whole service.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Records in each status (every status present, zero included).
    pub records: BTreeMap<String, i64>,
    /// All records.
    pub total_records: i64,
    /// Jobs of the records queue in each state that has any.
    pub jobs: BTreeMap<String, i64>,
    /// Jobs waiting or running: available, scheduled, retryable and running.
    pub queue_depth: i64,
}

/// Counts of records by status and of processing jobs by state.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    responses((status = 200, body = Stats))
)]
pub async fn stats<DB: RecordStore>(
    State(app): State<AppState<DB>>,
) -> Result<Json<Stats>, Problem> {
    let mut records: BTreeMap<String, i64> = RecordStatus::ALL
        .iter()
        .map(|status| (status.as_str().to_owned(), 0))
        .collect();
    for (status, n) in DB::count_by_status(app.pool())
        .await
        .map_err(database_problem)?
    {
        records.insert(status.as_str().to_owned(), n);
    }
    let job_counts = app
        .client
        .count_by_state(Some(RECORDS_QUEUE))
        .await
        .map_err(database_problem)?;
    let queue_depth = job_counts
        .iter()
        .filter(|(state, _)| {
            matches!(
                state,
                JobState::Available | JobState::Scheduled | JobState::Retryable | JobState::Running
            )
        })
        .map(|(_, n)| n)
        .sum();
    Ok(Json(Stats {
        total_records: records.values().sum(),
        records,
        jobs: job_counts
            .into_iter()
            .map(|(state, n)| (state.to_string(), n))
            .collect(),
        queue_depth,
    }))
}
