//! RFC 9457 problem details: the body of every error response.

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
}

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

    /// 503: a dependency (usually the database) is unavailable.
    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_detail("the service is temporarily unable to handle the request")
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
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}
