//! Requests sent straight into an axum [`Router`], without a socket.

use axum::body::{Body, Bytes};
use axum::http::header::{self, AsHeaderName};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A response, read whole.
///
/// ```
/// use axum::http::{header, StatusCode};
/// use axum::routing::get;
/// use axum::{Json, Router};
/// use offload_test_fixture::send;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new().route("/n", get(|| async { Json(serde_json::json!({"n": 1})) }));
/// let reply = send(&app, offload_test_fixture::get("/n")).await;
/// assert_eq!(reply.status, StatusCode::OK);
/// assert_eq!(reply.content_type(), "application/json");
/// assert_eq!(reply.header(header::CONTENT_LENGTH), Some("7"));
/// assert_eq!(reply.json()["n"], 1);
/// assert_eq!(reply.text(), r#"{"n":1}"#);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response's status.
    pub status: StatusCode,
    /// All of its headers.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text, any invalid UTF-8 replaced by `U+FFFD`.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON; the message shows the body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Content-Type` header, or `""` without one.
    pub fn content_type(&self) -> &str {
        self.header(header::CONTENT_TYPE).unwrap_or_default()
    }
}

/// Sends `request` to (a clone of) `router` with
/// [`oneshot`](tower::ServiceExt::oneshot) and reads the whole response.
///
/// ```
/// use axum::routing::post;
/// use axum::{Json, Router};
/// use offload_test_fixture::{post_json, send};
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let echo = Router::new().route("/echo", post(|Json(v): Json<Value>| async { Json(v) }));
/// let reply = send(&echo, post_json("/echo", json!({"a": [1, 2]}))).await;
/// assert_eq!(reply.json(), json!({"a": [1, 2]}));
/// # }
/// ```
///
/// # Panics
///
/// If the body cannot be read (axum's routers never fail otherwise).
pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("a Router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read the response body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A `GET uri` request with an empty body.
///
/// ```
/// let request = offload_test_fixture::get("/jobs?state=running");
/// assert_eq!(request.method(), "GET");
/// assert_eq!(request.uri(), "/jobs?state=running");
/// ```
///
/// # Panics
///
/// If `uri` is not a valid URI.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("GET request")
}

/// A `POST uri` request with `body` and the given `Content-Type`, which may
/// be anything (tests of rejected media types need that).
///
/// ```
/// use axum::http::header;
///
/// let request = offload_test_fixture::post("/records", "text/plain", "hello");
/// assert_eq!(request.method(), "POST");
/// assert_eq!(request.headers()[header::CONTENT_TYPE], "text/plain");
/// ```
///
/// # Panics
///
/// If `uri` is not a valid URI or `content_type` not a valid header value.
pub fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("POST request")
}

/// A `POST uri` request with `value` as its JSON body (`application/json`).
///
/// ```
/// use axum::http::header;
/// use serde_json::json;
///
/// let request = offload_test_fixture::post_json("/api/jobs/bulk", json!({"action": "delete"}));
/// assert_eq!(request.headers()[header::CONTENT_TYPE], "application/json");
/// ```
///
/// # Panics
///
/// If `uri` is not a valid URI.
pub fn post_json(uri: &str, value: serde_json::Value) -> Request<Body> {
    post(uri, "application/json", value.to_string())
}
