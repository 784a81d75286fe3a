//! `/records`: create, read and list.

use axum::extract::{FromRequest, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use offload_axum::{BeginTx, Json, Path, Problem, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{database_problem, AppState};
use crate::job::ProcessRecord;
use crate::store::{ListFilter, NewRecord, Record, RecordStatus, RecordStore};

/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Default page size of `GET /records`.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page size of `GET /records`.
pub const MAX_PAGE: i64 = 500;

/// Body of `POST /records`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecord {
    /// A label: 1 to 200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "invoice-42",
        required = true,
        nullable = false,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    #[serde(default)]
    pub name: Option<String>,
    /// The data to process: any text without NUL characters.
    // Optional in Rust only so a missing field gets this API's own 422.
    #[schema(
        example = "hello world",
        required = true,
        nullable = false,
        pattern = r"^[^\x00]*$"
    )]
    #[serde(default)]
    pub payload: Option<String>,
}

impl CreateRecord {
    /// Checks every field; the first failure names its field.
    pub fn validate(self) -> Result<NewRecord, Problem> {
        let name = self
            .name
            .ok_or_else(|| Problem::invalid_field("name", "is required"))?;
        if name.trim().is_empty() {
            return Err(Problem::invalid_field("name", "must not be blank"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(Problem::invalid_field(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Problem::invalid_field(
                "name",
                "must not contain control characters",
            ));
        }
        let payload = self
            .payload
            .ok_or_else(|| Problem::invalid_field("payload", "is required"))?;
        // PostgreSQL text cannot hold U+0000; refuse it on both backends
        // so the API behaves the same on each.
        if payload.contains('\0') {
            return Err(Problem::invalid_field(
                "payload",
                "must not contain NUL (U+0000) characters",
            ));
        }
        Ok(NewRecord { name, payload })
    }
}

/// Decodes and validates a `POST /records` body exactly as the handler
/// does (the same [`Json`] extractor, then [`CreateRecord::validate`]),
/// without HTTP or a database: for fuzzing and tests. The body-size limit
/// is applied by the router, not here.
///
/// ```
/// use offload_records::api::records::parse_new_record;
/// let record = parse_new_record(br#"{"name": "invoice-42", "payload": "hi"}"#).unwrap();
/// assert_eq!(record.name, "invoice-42");
/// assert_eq!(parse_new_record(b"{").unwrap_err().status(), 400);
/// assert_eq!(parse_new_record(br#"{"name": ""}"#).unwrap_err().status(), 422);
/// ```
pub fn parse_new_record(body: &[u8]) -> Result<NewRecord, Problem> {
    let request = axum::http::Request::post("/records")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST))?;
    // A body already in memory: the extractor completes without waiting,
    // so no runtime is needed.
    let Json(create) =
        futures::executor::block_on(Json::<CreateRecord>::from_request(request, &()))?;
    create.validate()
}

/// Creates a record and enqueues its processing job in the same
/// transaction: both exist, or neither. The 201 is sent only after that
/// transaction committed.
#[utoipa::path(
    post,
    path = "/records",
    tag = "records",
    request_body = CreateRecord,
    responses(
        (status = 201, description = "Created; processing is queued", body = Record,
         headers(("Location" = String, description = "URL of the new record"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field failed validation; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_record<DB: RecordStore>(
    State(app): State<AppState<DB>>,
    begin: BeginTx<DB>,
    Json(body): Json<CreateRecord>,
) -> Result<Response, Problem> {
    let new = body.validate()?;
    let record = match &app.intake {
        Some(intake) => intake.submit(new).await?,
        None => insert_in_request_tx(&app, begin, new).await?,
    };
    let location = format!("/records/{}", record.id);
    // Per-request mode: TxLayer commits after this 201 is built, before it
    // is sent. Group commit: the record is already committed.
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// The record and its job on the request's own transaction ([`BeginTx`]),
/// committed by `TxLayer` when the handler returns 201.
async fn insert_in_request_tx<DB: RecordStore>(
    app: &AppState<DB>,
    begin: BeginTx<DB>,
    new: NewRecord,
) -> Result<Record, Problem> {
    // Begun only now: the body is read and valid, so the transaction is
    // held just for the writes.
    let mut tx = begin.begin().await?;
    let mut record = DB::insert_record(&mut tx, &new)
        .await
        .map_err(database_problem)?;
    let job = ProcessRecord {
        record_id: record.id,
        hash_rounds: app.jobs.hash_rounds,
        delay_ms: app.jobs.delay_ms,
    };
    let job_id = app.client.enqueue_tx(&mut *tx, job).await?.id;
    DB::attach_job(&mut tx, record.id, job_id)
        .await
        .map_err(database_problem)?;
    record.job_id = Some(job_id);
    Ok(record)
}

/// A record with the state of its processing job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordDetail {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Its job, while the job row is kept (completed jobs are pruned after
    /// the retention period).
    pub job: Option<JobSummary>,
}

/// Where a record's processing job stands; failures show here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    /// Job state: available, running, retryable, completed, discarded, ...
    pub state: String,
    /// Attempts made.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The latest failure's message, if any.
    pub last_error: Option<String>,
}

/// One record, with its job's state.
#[utoipa::path(
    get,
    path = "/records/{id}",
    tag = "records",
    params(("id" = i64, Path, description = "Record id")),
    responses(
        (status = 200, body = RecordDetail),
        (status = 400, description = "The id is not an integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such record", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_record<DB: RecordStore>(
    State(app): State<AppState<DB>>,
    Path(id): Path<i64>,
) -> Result<Json<RecordDetail>, Problem> {
    let record = DB::get_record(app.pool(), id)
        .await
        .map_err(database_problem)?
        .ok_or_else(|| Problem::not_found(format!("record {id} does not exist")))?;
    let job = match record.job_id {
        Some(job_id) => app
            .client
            .job(job_id)
            .await
            .map_err(database_problem)?
            .map(|job| JobSummary {
                state: job.state.to_string(),
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                last_error: job.errors.last().map(|e| e.error.clone()),
            }),
        None => None,
    };
    Ok(Json(RecordDetail { record, job }))
}

/// Query of `GET /records`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only records in this status: `pending` or `done`.
    pub status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: only records with a smaller id (pass the previous page's `next_before`).
    pub before: Option<i64>,
}

/// A page of records, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordPage {
    /// The records.
    pub records: Vec<Record>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Lists records, newest first, with keyset pagination.
#[utoipa::path(
    get,
    path = "/records",
    tag = "records",
    params(ListParams),
    responses(
        (status = 200, body = RecordPage),
        (status = 400, description = "Unparsable query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is out of range; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_records<DB: RecordStore>(
    State(app): State<AppState<DB>>,
    Query(params): Query<ListParams>,
) -> Result<Json<RecordPage>, Problem> {
    let status = params
        .status
        .map(|raw| {
            raw.parse::<RecordStatus>()
                .map_err(|_| Problem::invalid_field("status", "must be `pending` or `done`"))
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let filter = ListFilter {
        status,
        before: params.before,
        limit,
    };
    let records = DB::list_records(app.pool(), &filter)
        .await
        .map_err(database_problem)?;
    let next_before = if records.len() as i64 == limit {
        records.last().map(|record| record.id)
    } else {
        None
    };
    Ok(Json(RecordPage {
        records,
        next_before,
    }))
}
