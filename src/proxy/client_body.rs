//! The client's request body, watched to its end.
//!
//! A response can go out before the request body was read: a plugin refused the request, the body
//! was over its limit, the route does not exist. hyper then closes the connection once the
//! response is written, and a client that pooled the connection meanwhile sends its next request
//! into a closed socket. So such a response says `Connection: close`, unless what is left of the
//! body is small enough to be read and dropped in the background (nginx's lingering discard), in
//! which case the connection stays open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The most body bytes left over that are read and dropped to keep the connection open.
const DISCARD_MAX: u64 = 64 * 1024;
/// How long the left-over body may take to arrive.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// A request body that notes when it was read to its end, or will be.
#[derive(Debug)]
pub(crate) struct ClientBody {
    /// `None` once handed to the discarding task.
    inner: Option<Incoming>,
    /// Absent when the body was empty from the start.
    done: Option<Arc<AtomicBool>>,
}

/// Tells whether the request body of a response's request was read to its end.
#[derive(Debug)]
pub(crate) struct BodyWatch(Option<Arc<AtomicBool>>);

impl BodyWatch {
    /// Whether the body is neither read whole nor being discarded: the connection cannot be
    /// reused.
    pub(crate) fn left_unread(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|done| !done.load(Ordering::Acquire))
    }
}

impl ClientBody {
    /// Wraps the body of an arriving request.
    pub(crate) fn watch(body: Incoming) -> (ClientBody, BodyWatch) {
        let done = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        let watch = BodyWatch(done.clone());
        let body = ClientBody {
            inner: Some(body),
            done,
        };
        (body, watch)
    }

    fn mark_done(&self) {
        if let Some(done) = &self.done {
            done.store(true, Ordering::Release);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.as_ref().is_some_and(Body::is_end_stream),
            _ => false,
        };
        if ended {
            self.mark_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.inner.as_ref().is_none_or(Body::is_end_stream);
        if ended {
            self.mark_done();
        }
        ended
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(done) = &self.done else {
            return;
        };
        if done.load(Ordering::Acquire) {
            return;
        }
        let small = |body: &Incoming| body.size_hint().exact().is_some_and(|n| n <= DISCARD_MAX);
        if !self.inner.as_ref().is_some_and(small) {
            return;
        }
        let (Some(mut inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        done.store(true, Ordering::Release);
        runtime.spawn(async move {
            let discard = async { while let Some(Ok(_)) = inner.frame().await {} };
            let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
        });
    }
}
