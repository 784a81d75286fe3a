//! The admin JSON API under `/api`, described by [`ApiDoc`].

mod types;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use offload::{
    admin::{
        ActionOutcome, AdminError, BulkTarget, FilterParams, JobAction, JobPage, Overview,
        QueueSummary, ThroughputPoint,
    },
    Backend, JobRecord, JobState,
};
use utoipa::OpenApi;

use crate::state::AppState;
pub use types::*;

/// The OpenAPI document of the admin API, served at `/api/openapi.json`.
///
/// ```
/// use utoipa::OpenApi;
/// let doc = offload_dashboard::ApiDoc::openapi();
/// assert!(doc.paths.paths.contains_key("/api/jobs"));
/// ```
#[derive(OpenApi)]
#[openapi(
    info(
        title = "offload admin API",
        description = "List, inspect, retry, cancel and delete offload jobs; summarize and pause queues."
    ),
    paths(
        list_jobs,
        get_job,
        job_action,
        bulk_action,
        overview,
        list_queues,
        queue_action,
        set_queue_limits,
        throughput,
        openapi_json
    ),
    // Path parameters' schemas are not collected by themselves.
    components(schemas(QueueActionName)),
    tags(
        (name = "jobs", description = "Jobs and actions on them"),
        (name = "queues", description = "Queue summaries, pause switches and limits"),
    )
)]
pub struct ApiDoc;

pub(crate) fn routes<DB: Backend>() -> Router<AppState<DB>> {
    Router::new()
        .route("/api/jobs", get(list_jobs::<DB>))
        .route("/api/jobs/bulk", post(bulk_action::<DB>))
        .route("/api/jobs/{id}", get(get_job::<DB>))
        .route("/api/jobs/{id}/{action}", post(job_action::<DB>))
        .route("/api/overview", get(overview::<DB>))
        .route("/api/queues", get(list_queues::<DB>))
        .route("/api/queues/{name}/{action}", post(queue_action::<DB>))
        .route("/api/queues/{name}/limits", put(set_queue_limits::<DB>))
        .route("/api/throughput", get(throughput::<DB>))
        .route("/api/openapi.json", get(openapi_json))
}

/// An API failure, sent as `application/problem+json`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    /// Seconds to wait before trying again, sent as `Retry-After`.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title: title.to_owned(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::Filter(e) => {
                Self::new(StatusCode::BAD_REQUEST, "Invalid filter", e.to_string())
            }
            AdminError::JobNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "Not found", error.to_string())
            }
            AdminError::BadQueueName(_) | AdminError::BadLimit(_) => {
                Self::bad_request(error.to_string())
            }
            AdminError::BulkNeedsFilter(_) => {
                Self::bad_request(format!("{error}: send \"all\": true to act on all of them"))
            }
            // The one mapping of offload's errors to HTTP (503 and 507 with
            // `Retry-After`, else 500), which logs the cause; the client
            // never sees it.
            AdminError::Offload(e) => Self::from(offload_axum::Problem::from(e)),
        }
    }
}

impl From<offload_axum::Problem> for ApiError {
    fn from(problem: offload_axum::Problem) -> Self {
        let status = problem.status();
        Self {
            status,
            title: problem.title,
            detail: problem
                .detail
                .unwrap_or_else(|| "the database failed; see the server log".to_owned()),
            retry_after: problem.retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank".to_owned(),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("job id must be a positive whole number"))
}

pub(crate) fn parse_action(raw: &str) -> Result<JobAction, ApiError> {
    raw.parse::<JobAction>().map_err(ApiError::bad_request)
}

fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

/// Lists jobs matching the filters, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(FilterParams),
    responses(
        (status = 200, description = "One page of jobs", body = JobPage),
        (status = 400, description = "A filter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_jobs<DB: Backend>(
    State(state): State<AppState<DB>>,
    query: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (filter, page) = query.parse().map_err(AdminError::from)?;
    Ok(Json(state.admin.list(&filter, page).await?))
}

/// A job with its args, every attempt's error and its timestamps.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 400, description = "The id is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_job<DB: Backend>(
    State(state): State<AppState<DB>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobRecord>, ApiError> {
    let Path(raw) = path.map_err(path_error)?;
    let id = parse_id(&raw)?;
    Ok(Json(state.admin.job(id).await?))
}

/// Retries, cancels or deletes one job.
///
/// Retry applies to every job that is not running: it becomes available
/// now (the attempt count is kept; one more attempt is granted if none is
/// left; a finished job whose unique key another job holds now is left
/// alone). Cancel
/// applies to scheduled, available, retryable and running jobs (a running
/// job's transaction rolls back). Delete applies to jobs that are not
/// running.
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/{action}",
    tag = "jobs",
    params(
        ("id" = i64, Path, description = "Job id"),
        ("action" = JobAction, Path, description = "retry, cancel or delete"),
    ),
    responses(
        (status = 200, description = "Done", body = JobActionBody),
        (status = 400, description = "Unknown action or bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job's state does not allow the action", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Actions need `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn job_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<JobActionBody>, ApiError> {
    let Path((raw_id, raw_action)) = path.map_err(path_error)?;
    let id = parse_id(&raw_id)?;
    let action = parse_action(&raw_action)?;
    if !state.admin.act_on_job(action, id).await? {
        let job = state.admin.job(id).await?;
        return Err(not_applicable(action, job.state, id));
    }
    let job = match action {
        JobAction::Delete => None,
        _ => Some(state.admin.job(id).await?),
    };
    Ok(Json(JobActionBody { action, job }))
}

pub(crate) fn not_applicable(action: JobAction, state: JobState, id: i64) -> ApiError {
    let allowed = match action {
        JobAction::Retry => "not running",
        JobAction::Cancel => "scheduled, available, retryable or running",
        JobAction::Delete => "not running",
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "Action not allowed in this state",
        format!(
            "job {id} is {state}; {} applies to jobs that are {allowed}",
            action.as_str()
        ),
    )
}

/// Retries, cancels or deletes every job matching a filter.
#[utoipa::path(
    post,
    path = "/api/jobs/bulk",
    tag = "jobs",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "Done", body = ActionOutcome),
        (status = 400, description = "Invalid filter, or an empty filter without `all`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Actions need `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn bulk_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    // offload-axum's extractor: the same JSON rules as the app's own
    // routes (a key repeated anywhere is refused, not silently last-wins).
    body: Result<offload_axum::Json<BulkRequest>, offload_axum::rejection::JsonRejection>,
) -> Result<Json<ActionOutcome>, ApiError> {
    let offload_axum::Json(request) = body.map_err(|rejection| {
        let detail = rejection.to_string();
        ApiError::bad_request(format!("invalid body: {detail}"))
    })?;
    let (filter, _) = request.filter.parse().map_err(AdminError::from)?;
    let target = BulkTarget::new(&filter, request.all);
    let outcome = state.admin.bulk(request.action, target, |_| {}).await?;
    Ok(Json(outcome))
}

/// Counts per state and per queue, with throughput and pause switches.
#[utoipa::path(
    get,
    path = "/api/overview",
    tag = "queues",
    responses((status = 200, description = "The overview", body = Overview))
)]
async fn overview<DB: Backend>(
    State(state): State<AppState<DB>>,
) -> Result<Json<Overview>, ApiError> {
    let window = std::time::Duration::from_secs(u64::from(state.config.throughput_minutes) * 60);
    Ok(Json(state.admin.overview(window).await?))
}

/// Every queue: counts by state, completed per minute, oldest available
/// job's age, paused or not.
#[utoipa::path(
    get,
    path = "/api/queues",
    tag = "queues",
    responses((status = 200, description = "Queues by name", body = Vec<QueueSummary>))
)]
async fn list_queues<DB: Backend>(
    State(state): State<AppState<DB>>,
) -> Result<Json<Vec<QueueSummary>>, ApiError> {
    let window = std::time::Duration::from_secs(u64::from(state.config.throughput_minutes) * 60);
    let overview = state.admin.overview(window).await?;
    Ok(Json(overview.queues))
}

/// Pauses or resumes a queue on every worker. Running jobs finish.
#[utoipa::path(
    post,
    path = "/api/queues/{name}/{action}",
    tag = "queues",
    params(
        ("name" = String, Path, description = "Queue name"),
        ("action" = QueueActionName, Path, description = "pause or resume"),
    ),
    responses(
        (status = 200, description = "Done", body = QueuePausedBody),
        (status = 400, description = "Unknown action or bad name", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Actions need `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn queue_action<DB: Backend>(
    State(state): State<AppState<DB>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<QueuePausedBody>, ApiError> {
    let Path((name, action)) = path.map_err(path_error)?;
    let paused = parse_pause(&action)?;
    if paused {
        state.admin.pause_queue(&name).await?;
    } else {
        state.admin.resume_queue(&name).await?;
    }
    Ok(Json(QueuePausedBody { name, paused }))
}

/// Sets a queue's global and rate limits over all workers; running workers
/// pick them up within seconds. The overview shows each limit's use.
#[utoipa::path(
    put,
    path = "/api/queues/{name}/limits",
    tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    request_body = QueueLimitsBody,
    responses(
        (status = 200, description = "The limits now set", body = QueueLimitsBody),
        (status = 400, description = "Bad name, a limit of 0, a malformed rate, a cap per key of 0 or a malformed rate per key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Needs `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_queue_limits<DB: Backend>(
    State(state): State<AppState<DB>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<offload_axum::Json<QueueLimitsBody>, offload_axum::rejection::JsonRejection>,
) -> Result<Json<QueueLimitsBody>, ApiError> {
    let Path(name) = path.map_err(path_error)?;
    let offload_axum::Json(request) =
        body.map_err(|rejection| ApiError::bad_request(format!("invalid body: {rejection}")))?;
    let rate = request
        .rate_limit
        .as_deref()
        .map(offload::admin::parse_rate_limit)
        .transpose()?
        .flatten();
    let partition = request
        .partition
        .as_ref()
        .map(|body| {
            let partition = match body.per_key_limit {
                None => offload::Partition::new(),
                Some(cap) => offload::Partition::new()
                    .concurrency(cap)
                    .map_err(|error| ApiError::bad_request(error.to_string()))?,
            };
            let rate = body
                .per_key_rate
                .as_deref()
                .map(offload::admin::parse_rate_limit)
                .transpose()?
                .flatten();
            Ok::<_, ApiError>(match rate {
                Some(rate) => partition.rate(rate),
                None => partition,
            })
        })
        .transpose()?;
    state
        .admin
        .set_global_limit(&name, request.global_limit)
        .await?;
    state.admin.set_rate_limit(&name, rate).await?;
    state.admin.set_partition(&name, partition).await?;
    Ok(Json(QueueLimitsBody {
        global_limit: request.global_limit,
        rate_limit: rate.map(|rate| rate.to_string()),
        partition: partition.map(|partition| PartitionBody {
            per_key_limit: partition.concurrency_limit(),
            per_key_rate: partition.rate_limit().map(|rate| rate.to_string()),
        }),
    }))
}

pub(crate) fn parse_pause(action: &str) -> Result<bool, ApiError> {
    match action {
        "pause" => Ok(true),
        "resume" => Ok(false),
        _ => Err(ApiError::bad_request(
            "unknown queue action: expected pause or resume",
        )),
    }
}

/// Completed and discarded jobs per minute, oldest minute first.
#[utoipa::path(
    get,
    path = "/api/throughput",
    tag = "queues",
    params(ThroughputQuery),
    responses(
        (status = 200, description = "One point per minute", body = Vec<ThroughputPoint>),
        (status = 400, description = "Bad parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn throughput<DB: Backend>(
    State(state): State<AppState<DB>>,
    query: Result<Query<ThroughputQuery>, QueryRejection>,
) -> Result<Json<Vec<ThroughputPoint>>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let minutes = match query.minutes.as_deref().map(str::trim) {
        None | Some("") => 60,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|m| (1..=1440).contains(m))
            .ok_or_else(|| {
                ApiError::bad_request("`minutes` must be a whole number from 1 to 1440")
            })?,
    };
    // The admin layer checks the queue like any filter's (trimmed, no NUL).
    let queue = query.queue.as_deref();
    Ok(Json(state.admin.throughput(minutes, queue).await?))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "jobs",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
