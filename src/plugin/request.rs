//! The state of one request as plugins see it, and how native functions find it.
//!
//! A worker polls one task at a time and Lua only runs while a request's future is polled, so the
//! request being served is kept in a thread-local that [`Scoped`] sets around every poll. Native
//! functions read it with [`with_current`]; no per-request Lua userdata or scope is created.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use rustc_hash::FxHashMap;

use super::Phase;
use crate::proxy::{ClientBody, ConnInfo, Matched};
use crate::store::{RouteEntry, Snapshot};

/// The client request body, before or after a plugin read it.
#[derive(Debug)]
pub(crate) enum ReqBody {
    /// Not read yet: it will stream to the upstream.
    Stream(ClientBody),
    /// Read whole by a plugin (`core.request.get_body`) or replaced (`ngx.req.set_body_data`).
    Buffered(Bytes),
    /// The body is being read right now.
    Reading,
}

/// What plugins have decided about the response so far.
#[derive(Default)]
pub(crate) struct RespState {
    /// `ngx.status`: set by a plugin or from the upstream response.
    pub(crate) status: Option<u16>,
    pub(crate) headers: HeaderMap,
    /// Headers went out: later header changes raise an error.
    pub(crate) sent: bool,
    /// Text printed with `ngx.say`/`ngx.print`/`core.response.say`.
    pub(crate) out: BytesMut,
    /// The code passed to `ngx.exit` (through `core.response.exit` or a `return code, body`).
    pub(crate) exit: Option<u16>,
    /// A body a plugin's outbound call handed over to stream to the client as it arrives
    /// (`stream_response` in `native.http_request`); sent instead of `out` when the request exits.
    pub(crate) stream: Option<crate::upstream::pool::UpstreamBody>,
}

/// One request on its way through the plugin phases.
pub(crate) struct RequestState {
    pub(crate) conn: ConnInfo,
    /// Method, URI, version and headers as plugins may have changed them.
    pub(crate) parts: RefCell<http::request::Parts>,
    /// The normalized path (`$uri`), which `ngx.req.set_uri` changes.
    pub(crate) path: RefCell<String>,
    pub(crate) body: RefCell<ReqBody>,
    pub(crate) resp: RefCell<RespState>,
    /// Variables set by plugins (`ctx.var.upstream_uri = ...`).
    pub(crate) vars: RefCell<FxHashMap<String, String>>,
    pub(crate) phase: Cell<Phase>,
    /// `ngx.ctx`, created on first use.
    pub(crate) ngx_ctx: RefCell<Option<mlua::Table>>,
    /// Seconds since the epoch when the request arrived (`ngx.req.start_time`).
    pub(crate) start_time: f64,
    pub(crate) max_body: Option<u64>,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) route: Arc<RouteEntry>,
    /// What the router matched (`ctx.curr_req_matched`).
    pub(crate) matched: Matched,
}

/// Where a request came from and what it matched.
pub(crate) struct Arrival {
    pub(crate) conn: ConnInfo,
    pub(crate) parts: http::request::Parts,
    pub(crate) body: ReqBody,
    /// The normalized path.
    pub(crate) path: String,
    pub(crate) matched: Matched,
    /// Seconds since the epoch when the request arrived (see [`epoch_now`]).
    pub(crate) start_time: f64,
}

/// Seconds since the epoch, now: a request's arrival time for `ngx.req.start_time`.
pub(crate) fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl RequestState {
    /// Creates the state of a matched request.
    pub(crate) fn new(
        arrival: Arrival,
        snapshot: Arc<Snapshot>,
        route: Arc<RouteEntry>,
        max_body: Option<u64>,
    ) -> RequestState {
        let Arrival {
            conn,
            parts,
            body,
            path,
            matched,
            start_time,
        } = arrival;
        RequestState {
            conn,
            parts: RefCell::new(parts),
            path: RefCell::new(path),
            body: RefCell::new(body),
            resp: RefCell::new(RespState::default()),
            vars: RefCell::new(FxHashMap::default()),
            phase: Cell::new(Phase::Rewrite),
            ngx_ctx: RefCell::new(None),
            start_time,
            max_body,
            snapshot,
            route,
            matched,
        }
    }
}

impl RequestState {
    /// The request's Content-Length, when it declares one.
    pub(crate) fn declared_length(&self) -> Option<u64> {
        self.parts
            .borrow()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    }

    /// The most body bytes a plugin may read or send on: `max`, never above `client_max_body_size`.
    pub(crate) fn body_limit(&self, max: Option<u64>) -> Option<u64> {
        match (max, self.max_body) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RequestState>>> = const { RefCell::new(None) };
}

/// Runs `f` with the request being served on this thread, or `None` outside any request.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Rc<RequestState>>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// Makes `state` the current request for the duration of `f` (synchronous calls into Lua).
pub(crate) fn enter<R>(state: &Rc<RequestState>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(Some(state.clone())));
    let result = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    result
}

pin_project_lite::pin_project! {
    /// A future polled with its request current, so Lua natives called from it see that request even
    /// when other requests' coroutines run between its polls.
    pub(crate) struct Scoped<F> {
        state: Rc<RequestState>,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        enter(this.state, || this.inner.poll(cx))
    }
}

/// Wraps a future so it runs with `state` current.
pub(crate) fn scoped<F: Future>(state: &Rc<RequestState>, inner: F) -> Scoped<F> {
    Scoped {
        state: state.clone(),
        inner,
    }
}
