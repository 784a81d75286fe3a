//! A body limit that answers before the body is read.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::Problem;

/// Limits request bodies of `router` to `limit` bytes, answering 413 before
/// reading a body whose `Content-Length` is over it. hyper answers
/// `Expect: 100-continue` when the body is first read, so `DefaultBodyLimit`
/// alone would invite a client to send it all first; bodies without a
/// length are still cut off at `limit` by `DefaultBodyLimit`.
///
/// ```
/// use axum::{routing::post, Router};
/// let app: Router = offload_axum::limit_body(Router::new().route("/", post(|| async {})), 64 * 1024);
/// ```
pub fn limit_body(router: Router, limit: usize) -> Router {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| {
            refuse_declared_oversize(limit, request, next)
        }))
}

async fn refuse_declared_oversize(limit: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
            .with_detail(format!("the request body is over the {limit}-byte limit"))
            .into_response();
    }
    next.run(request).await
}
