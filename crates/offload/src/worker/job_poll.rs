//! Each poll of a job's future, timed for the watchdog: a poll that does
//! not return is a blocked thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::watchdog::Watched;

/// A job's future, its polls timed.
pub(crate) struct JobPoll<F> {
    inner: F,
    watched: Option<Arc<Watched>>,
}

impl<F> JobPoll<F> {
    pub fn new(inner: F, watched: Option<Arc<Watched>>) -> Self {
        Self { inner, watched }
    }
}

impl<F: Future + Unpin> Future for JobPoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _mark = Mark::enter(this.watched.as_deref());
        Pin::new(&mut this.inner).poll(cx)
    }
}

/// Marks one poll's start and end, even on unwind.
struct Mark<'a> {
    watched: Option<&'a Watched>,
}

impl<'a> Mark<'a> {
    fn enter(watched: Option<&'a Watched>) -> Self {
        if let Some(watched) = watched {
            watched.poll_started();
        }
        Self { watched }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if let Some(watched) = self.watched {
            watched.poll_ended();
        }
    }
}
