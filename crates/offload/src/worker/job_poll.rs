//! Each poll of a job's future: timed for the watchdog (a poll that does
//! not return is a blocked thread), and marked so that the panic hook stays
//! silent for a panic the executor catches and records as the attempt's
//! error (with one log line), instead of also printing it to stderr.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::watchdog::Watched;
use crate::quiet_panic::InJob;

/// A job's future, polled inside the mark and timed.
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

/// Sets the mark for one poll and clears it after, even on unwind.
struct Mark<'a> {
    _in_job: InJob,
    watched: Option<&'a Watched>,
}

impl<'a> Mark<'a> {
    fn enter(watched: Option<&'a Watched>) -> Self {
        if let Some(watched) = watched {
            watched.poll_started();
        }
        Self {
            _in_job: InJob::enter(),
            watched,
        }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if let Some(watched) = self.watched {
            watched.poll_ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quiet_panic::quiet;

    #[test]
    fn only_a_jobs_poll_is_quiet() {
        assert!(!quiet());
        let mut polled = JobPoll::new(Box::pin(async { quiet() }), None);
        let waker = futures::task::noop_waker();
        let poll = Pin::new(&mut polled).poll(&mut Context::from_waker(&waker));
        assert_eq!(poll, Poll::Ready(true));
        assert!(!quiet());
    }
}
