//! RFC 9457 problem details: the body of every error response, and how
//! offload's errors become one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of a problem-details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response as RFC 9457 problem details
/// (`application/problem+json`).
///
/// `type` defaults to `about:blank` and `title` to the status code's reason
/// phrase, as the RFC recommends. The body says what the client did wrong;
/// it never carries SQL, stack traces or other internals: log those instead.
///
/// ```
/// use axum::http::StatusCode;
/// use axum::response::IntoResponse;
/// use offload_axum::Problem;
///
/// let problem = Problem::invalid_field("name", "must not be empty");
/// assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// let response = problem.into_response();
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field that failed validation, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Further members (RFC 9457 "extensions"). Boxed to keep `Problem`
    /// small as the error type of `Result`s.
    #[serde(flatten)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub extensions: Box<Map<String, Value>>,
    /// Seconds the client should wait before trying again, sent as the
    /// `Retry-After` header (not in the body).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

/// How long a client waits before retrying while the database is
/// unavailable: long enough for a restart or a burst to pass.
const UNAVAILABLE_RETRY_SECS: u32 = 5;
/// How long a client waits before retrying while the disk is full: freeing
/// space takes an operator.
const STORAGE_FULL_RETRY_SECS: u32 = 60;

impl Problem {
    /// A problem with `status`, titled by its reason phrase.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// let problem = offload_axum::Problem::new(StatusCode::NOT_FOUND);
    /// assert_eq!(problem.title, "Not Found");
    /// assert_eq!(problem.kind, "about:blank");
    /// ```
    pub fn new(status: StatusCode) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            field: None,
            extensions: Box::default(),
            retry_after: None,
        }
    }

    /// 422 for a request field that failed validation.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_field(field)
            .with_detail(detail)
    }

    /// 404 with `detail`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    /// 500 with a generic detail. Log the cause before returning this: the
    /// client never sees it.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR)
            .with_detail("the server could not complete the request")
    }

    /// 503: a dependency (usually the database) is unavailable. Asks the
    /// client to retry in 5 seconds (`Retry-After`).
    ///
    /// ```
    /// use axum::response::IntoResponse;
    /// let response = offload_axum::Problem::unavailable().into_response();
    /// assert_eq!(response.status(), 503);
    /// assert_eq!(response.headers()["retry-after"], "5");
    /// ```
    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_detail("the service is temporarily unable to handle the request")
            .with_retry_after(UNAVAILABLE_RETRY_SECS)
    }

    /// 507: the database's disk is full. Nothing was written; asks the
    /// client to retry in a minute (`Retry-After`), when space may be freed.
    ///
    /// ```
    /// use axum::response::IntoResponse;
    /// let response = offload_axum::Problem::storage_full().into_response();
    /// assert_eq!(response.status(), 507);
    /// assert_eq!(response.headers()["retry-after"], "60");
    /// ```
    pub fn storage_full() -> Self {
        Self::new(StatusCode::INSUFFICIENT_STORAGE)
            .with_detail("the database is out of space; nothing was written")
            .with_retry_after(STORAGE_FULL_RETRY_SECS)
    }

    /// Asks the client to wait `seconds` before trying again
    /// (`Retry-After`), as for a 503 or a 429.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Sets the human-readable detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the `type` URI.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds an extension member. Reserved names (`type`, `title`, `status`,
    /// `detail`, `field`) are ignored so they cannot be overwritten.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !matches!(
            name.as_str(),
            "type" | "title" | "status" | "detail" | "field"
        ) {
            self.extensions.insert(name, value.into());
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| {
            // Serializing a string map cannot fail; keep a valid body anyway.
            br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#.to_vec()
        });
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An offload error in a handler, so `client.enqueue_tx(..).await?` needs
/// no `map_err`. The cause is logged; the body never carries it.
///
/// * 503 with `Retry-After` when the database cannot serve now but may
///   soon: unreachable, connection lost, pool exhausted or closed,
///   PostgreSQL shutting down, out of connections or resources, a
///   serialization failure, deadlock, lock or statement timeout, SQLite
///   busy or locked; and a unique key that kept changing hands (retry in
///   1 second: the enqueue itself says to try again).
/// * 500 for everything else. That includes args that do not encode and a
///   bad queue name: both come from the server's code, not the request. A
///   handler that takes a queue name from the request checks it first with
///   [`offload::check_queue_name`] and answers 422 itself.
///
/// ```
/// use axum::extract::State;
/// use axum::http::StatusCode;
/// use axum::{routing::post, Router};
/// use offload::{Client, EnqueueOptions, Job, JobContext, JobError};
/// use offload_axum::{Path, Problem, Tx};
/// use serde::{Deserialize, Serialize};
/// use sqlx::Sqlite;
///
/// #[derive(Serialize, Deserialize)]
/// struct Export { report_id: i64 }
///
/// impl Job<Sqlite> for Export {
///     const KIND: &'static str = "export";
///     async fn run(self, _ctx: &mut JobContext<Sqlite>) -> Result<(), JobError> { Ok(()) }
/// }
///
/// async fn export(
///     State(client): State<Client<Sqlite>>,
///     Path((report_id, queue)): Path<(i64, String)>,
///     mut tx: Tx<Sqlite>,
/// ) -> Result<StatusCode, Problem> {
///     // The request named the queue, so a bad one is the client's fault.
///     offload::check_queue_name(&queue)
///         .map_err(|error| Problem::invalid_field("queue", error.to_string()))?;
///     let options = EnqueueOptions::new().queue(queue);
///     // Any other failure answers 503 or 500, and is logged.
///     client.enqueue_tx_with(&mut *tx, Export { report_id }, options).await?;
///     Ok(StatusCode::ACCEPTED)
/// }
///
/// let _routes: Router<Client<Sqlite>> =
///     Router::new().route("/reports/{id}/export/{queue}", post(export));
///
/// let problem = Problem::from(offload::Error::UniqueKeyContended { key: "k".into() });
/// assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(problem.retry_after, Some(1));
/// let problem = Problem::from(offload::Error::Database(sqlx::Error::PoolTimedOut));
/// assert_eq!((problem.status, problem.retry_after), (503, Some(5)));
/// let problem = Problem::from(offload::Error::Config("secret internals".into()));
/// assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(!problem.to_string().contains("secret"));
/// ```
impl From<offload::Error> for Problem {
    fn from(error: offload::Error) -> Self {
        match (&error, error.transient()) {
            (offload::Error::UniqueKeyContended { .. }, _) => {
                tracing::warn!(%error, "unique key contended");
                Problem::unavailable().with_retry_after(1)
            }
            (_, Some(offload::Transient::Unavailable)) => {
                tracing::warn!(%error, "database unavailable");
                Problem::unavailable()
            }
            (_, Some(offload::Transient::StorageFull)) => {
                tracing::error!(%error, "database storage full");
                Problem::storage_full()
            }
            _ => {
                tracing::error!(%error, "offload failed");
                Problem::internal()
            }
        }
    }
}

/// Whether a bare sqlx error (a commit's, a `BEGIN`'s) says the disk is full.
pub(crate) fn storage_full(error: &sqlx::Error) -> bool {
    offload::Transient::of(error) == Some(offload::Transient::StorageFull)
}
