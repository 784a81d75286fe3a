//! Every way an extractor of this crate can fail, each its own type with a
//! status code and a problem-details body for the client.

use axum::extract::rejection as axum_rejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::Problem;

/// Why a [`Tx`](crate::Tx) could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxRejection {
    /// The router has no [`TxLayer`](crate::TxLayer) for this backend: a
    /// wiring bug, answered with 500.
    #[error("no TxLayer is installed for this route")]
    MissingLayer,
    /// The handler asked for the transaction twice at once.
    #[error("the request transaction is already extracted")]
    AlreadyExtracted,
    /// The database did not start a transaction (unreachable, pool
    /// exhausted): answered with 503 (507 when its disk is full).
    #[error("could not begin the request transaction: {0}")]
    Begin(#[source] sqlx::Error),
}

impl TxRejection {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            TxRejection::MissingLayer | TxRejection::AlreadyExtracted => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            TxRejection::Begin(error) if crate::problem::storage_full(error) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            TxRejection::Begin(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<TxRejection> for Problem {
    fn from(rejection: TxRejection) -> Self {
        // The cause is for the logs; the client gets a generic problem.
        tracing::error!(error = %rejection, "request transaction unavailable");
        match rejection {
            TxRejection::Begin(error) if crate::problem::storage_full(&error) => {
                Problem::storage_full()
            }
            TxRejection::Begin(_) => Problem::unavailable(),
            _ => Problem::internal(),
        }
    }
}

impl IntoResponse for TxRejection {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// Why a [`Json`](crate::Json) body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonRejection {
    /// 415: the `Content-Type` is not `application/json`.
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// 400: the body is not valid JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 422: valid JSON, but not the expected shape.
    #[error("the body does not match the expected shape: {detail}")]
    InvalidBody {
        /// Path of the field at fault (`name`, `items[2].id`), when known.
        field: Option<String>,
        /// serde's message.
        detail: String,
    },
    /// 413: the body is larger than the route's limit.
    #[error("the body is larger than the limit")]
    PayloadTooLarge,
    /// 400: the body could not be read.
    #[error("the body could not be read")]
    BodyUnreadable,
}

impl JsonRejection {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            JsonRejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::MalformedJson(_) | JsonRejection::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            JsonRejection::InvalidBody { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            JsonRejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// The innermost error's message: serde's own words ("missing field `name`
/// at line 1 column 2"), without axum's prefix.
fn serde_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let problem = Problem::new(rejection.status());
        match rejection {
            JsonRejection::MalformedJson(detail) => problem.with_detail(detail),
            JsonRejection::InvalidBody {
                field: Some(field),
                detail,
            } => problem.with_field(field).with_detail(detail),
            JsonRejection::InvalidBody {
                field: None,
                detail,
            } => problem.with_detail(detail),
            other => problem.with_detail(other.to_string()),
        }
    }
}

impl IntoResponse for JsonRejection {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// 400: the query string does not match the expected parameters.
#[derive(Debug, thiserror::Error)]
#[error("invalid query string: {detail}")]
pub struct QueryRejection {
    detail: String,
}

impl From<axum_rejection::QueryRejection> for QueryRejection {
    fn from(rejection: axum_rejection::QueryRejection) -> Self {
        Self {
            detail: serde_message(&rejection),
        }
    }
}

impl IntoResponse for QueryRejection {
    fn into_response(self) -> Response {
        Problem::new(StatusCode::BAD_REQUEST)
            .with_detail(self.to_string())
            .into_response()
    }
}

/// 400: a path parameter does not parse (for example `/records/abc` where
/// an id is expected).
#[derive(Debug, thiserror::Error)]
#[error("invalid path parameter: {detail}")]
pub struct PathRejection {
    detail: String,
    status: StatusCode,
}

impl From<axum_rejection::PathRejection> for PathRejection {
    fn from(rejection: axum_rejection::PathRejection) -> Self {
        let status = match rejection.status() {
            // A missing route parameter is a routing bug, not the client's.
            status if status.is_server_error() => status,
            _ => StatusCode::BAD_REQUEST,
        };
        let detail = match &rejection {
            axum_rejection::PathRejection::FailedToDeserializePathParams(error) => {
                error.body_text()
            }
            _ => "the path does not match".to_owned(),
        };
        Self { detail, status }
    }
}

impl IntoResponse for PathRejection {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self, "path extraction failed");
            return Problem::internal().into_response();
        }
        Problem::new(self.status)
            .with_detail(self.to_string())
            .into_response()
    }
}
