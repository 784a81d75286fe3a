//! The body-read timeout: one deadline for the whole body, not per chunk,
//! so a client trickling a byte at a time cannot hold the request open.
//! (tower-http's `RequestBodyTimeout` restarts its clock on every frame.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::Problem;

/// What a body reader sees past the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub(super) struct BodyTimedOut(Duration);

/// Remembers whether a request's body ran out of time, to answer 408
/// whatever the handler made of the read error.
#[derive(Clone, Default)]
pub(super) struct BodyDeadline(Arc<AtomicBool>);

impl BodyDeadline {
    /// Gives `request` a body that fails `timeout` from now.
    pub(super) fn arm<B>(request: Request<B>, timeout: Duration) -> (Request<Body>, Self)
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let deadline = Self::default();
        let request = request.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                timeout,
                deadline: Instant::now() + timeout,
                sleep: None,
                expired: deadline.0.clone(),
            })
        });
        (request, deadline)
    }

    /// `response`, or a 408 that closes the connection if the body timed
    /// out: the rest of the body is unread, so the connection is unusable.
    pub(super) fn settle(&self, response: Response<Body>) -> Response<Body> {
        if !self.0.load(Ordering::Acquire) {
            return response;
        }
        metrics::counter!(super::HTTP_TIMEOUTS_TOTAL, "phase" => "body").increment(1);
        let mut timeout = Problem::new(StatusCode::REQUEST_TIMEOUT)
            .with_detail("the request body was not received in time")
            .into_response();
        timeout
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        timeout
    }
}

struct DeadlineBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Instant,
    /// Made on the first wait only: most bodies are empty or already here.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(BodyTimedOut(this.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
