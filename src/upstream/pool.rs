//! The outbound HTTP/1.1 client: one pool of keep-alive connections per worker thread.
//!
//! Each worker owns its pool (a thread-local), like nginx's per-worker upstream keepalive: no locks on
//! the hot path. A connection goes back to the pool only when its response body has been read to the
//! end, so a half-read connection is never reused.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use super::{KeepalivePool, Scheme};
use crate::error::{Classify, ErrorSource};

/// Error type carried by bodies that cross the proxy.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of requests sent upstream.
pub(crate) type OutBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where a request goes and how the connection is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    pub(crate) host: std::sync::Arc<str>,
    pub(crate) port: u16,
    /// Verify the peer certificate and name (https only).
    pub(crate) tls_verify: bool,
    /// Offer HTTP/2 through ALPN (https only) and use it when the server picks it; HTTP/1.1
    /// otherwise. An HTTP/2 connection carries concurrent requests and stays pooled while in use.
    pub(crate) h2: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallOptions {
    pub(crate) connect_timeout: Duration,
    /// Bounds the wait for response headers once the request is sent, then each wait for a body
    /// chunk.
    pub(crate) read_timeout: Duration,
    /// Bounds sending the request body to the upstream.
    pub(crate) send_timeout: Duration,
    /// `None` disables keep-alive: the connection is closed after the response.
    pub(crate) keepalive: Option<KeepalivePool>,
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("failed to connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("timed out connecting to {endpoint}")]
    ConnectTimeout { endpoint: String },
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        endpoint: String,
        source: native_tls::Error,
    },
    #[error("HTTP handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: String,
        source: hyper::Error,
    },
    #[error("timed out waiting for {endpoint} to respond")]
    ReadTimeout { endpoint: String },
    #[error("timed out sending the request to {endpoint}")]
    SendTimeout { endpoint: String },
    #[error("request to {endpoint} failed: {source}")]
    Request {
        endpoint: String,
        source: hyper::Error,
    },
}

impl CallError {
    /// True when nothing reached the upstream, so another node may be tried with the same request.
    pub(crate) fn before_request(&self) -> bool {
        matches!(
            self,
            CallError::Connect { .. }
                | CallError::ConnectTimeout { .. }
                | CallError::Tls { .. }
                | CallError::Handshake { .. }
        )
    }

    /// The request body's own error, when sending failed because reading the client body failed.
    pub(crate) fn body_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let CallError::Request { source, .. } = self else {
            return None;
        };
        let mut cause = std::error::Error::source(source);
        while let Some(err) = cause {
            if err.is::<http_body_util::LengthLimitError>() {
                return Some(err);
            }
            cause = err.source();
        }
        None
    }
}

impl Classify for CallError {
    fn source(&self) -> ErrorSource {
        if self.body_error().is_some() {
            ErrorSource::Client
        } else {
            ErrorSource::Upstream
        }
    }

    fn is_timeout(&self) -> bool {
        matches!(
            self,
            CallError::ConnectTimeout { .. }
                | CallError::ReadTimeout { .. }
                | CallError::SendTimeout { .. }
        )
    }

    fn client_status(&self) -> http::StatusCode {
        http::StatusCode::PAYLOAD_TOO_LARGE
    }
}

/// One connection's request handle.
enum Sender {
    H1(http1::SendRequest<OutBody>),
    H2(http2::SendRequest<OutBody>),
}

type TrySend = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<OutBody>>>;

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    async fn try_send(&mut self, request: Request<OutBody>) -> TrySend {
        match self {
            Sender::H1(s) => s.try_send_request(request).await,
            Sender::H2(s) => s.try_send_request(h2_form(request)).await,
        }
    }

    async fn send(&mut self, request: Request<OutBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(h2_form(request)).await,
        }
    }
}

/// HTTP/2 carries the target as `:scheme` and `:authority`: the URI becomes absolute, with the
/// Host header as its authority.
fn h2_form(mut request: Request<OutBody>) -> Request<OutBody> {
    let authority = request
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned));
    let mut parts = request.uri().clone().into_parts();
    if parts.authority.is_none() {
        parts.authority = authority.and_then(|a| a.parse().ok());
    }
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
    request
}

struct Idle {
    sender: Sender,
    since: Instant,
    served: u64,
}

thread_local! {
    static POOL: RefCell<FxHashMap<Endpoint, VecDeque<Idle>>> = RefCell::new(FxHashMap::default());
    static TLS: RefCell<HashMap<(bool, bool), tokio_native_tls::TlsConnector>> =
        RefCell::new(HashMap::new());
}

/// Sends one request and returns the response with a body that streams from the upstream.
///
/// On `Err` the request was not answered. When [`CallError::before_request`] holds, the request is
/// handed back so the caller may retry it elsewhere.
pub(crate) async fn call(
    endpoint: &Endpoint,
    mut request: Request<OutBody>,
    options: CallOptions,
) -> Result<Response<UpstreamBody>, (CallError, Option<Request<OutBody>>)> {
    // Formatted only when an error needs it: this is the hot path.
    let ep = || endpoint.to_string();
    let mut sent = body_sent_signal(&mut request);
    // Idle connections may have been closed by the peer; hyper hands the request back in that case.
    while let Some(mut idle) = take_idle(endpoint, options.keepalive) {
        let response = {
            let sending = std::pin::pin!(idle.sender.try_send(request));
            await_head(sending, &mut sent, options).await
        };
        match response {
            Err(err) => return Err((err.into_call_error(ep()), None)),
            Ok(Ok(response)) => {
                idle.served += 1;
                return Ok(finish(response, endpoint, idle, options));
            }
            Ok(Err(mut err)) => match err.take_message() {
                Some(req) => request = req,
                None => {
                    return Err((
                        CallError::Request {
                            endpoint: ep(),
                            source: err.into_error(),
                        },
                        None,
                    ));
                }
            },
        }
    }
    // Boxed: a new connection is the rare case, and its future (TLS and HTTP handshakes) is
    // large; kept inline it would be copied with every request's future.
    let connecting = Box::pin(connect(endpoint, options.connect_timeout));
    let mut sender = match connecting.await {
        Ok(sender) => sender,
        Err(err) => return Err((err, Some(request))),
    };
    let response = {
        let sending = std::pin::pin!(sender.send(request));
        await_head(sending, &mut sent, options).await
    };
    match response {
        Ok(Ok(response)) => Ok(finish(
            response,
            endpoint,
            Idle {
                sender,
                since: Instant::now(),
                served: 1,
            },
            options,
        )),
        Ok(Err(source)) => Err((
            CallError::Request {
                endpoint: ep(),
                source,
            },
            None,
        )),
        Err(err) => Err((err.into_call_error(ep()), None)),
    }
}

/// Which phase of an exchange ran out of time.
enum Expired {
    Send,
    Read,
}

impl Expired {
    fn into_call_error(self, endpoint: String) -> CallError {
        match self {
            Expired::Send => CallError::SendTimeout { endpoint },
            Expired::Read => CallError::ReadTimeout { endpoint },
        }
    }
}

/// Replaces a request body that has data to send with one that reports when it has all been sent.
/// `None` for an empty body: the request is sent with its head.
fn body_sent_signal(request: &mut Request<OutBody>) -> Option<tokio::sync::oneshot::Receiver<()>> {
    if request.body().is_end_stream() {
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = UnsyncBoxBody::new(SignalsEnd {
        inner: body,
        sent: Some(tx),
    });
    Some(rx)
}

/// Waits for the response head as nginx does: `send_timeout` bounds sending the request body,
/// then `read_timeout` bounds the wait for the head once the request has been sent. The exchange is
/// pinned by the caller, so that this future does not hold (and move) a copy of it.
async fn await_head<F: Future>(
    mut response: Pin<&mut F>,
    sent: &mut Option<tokio::sync::oneshot::Receiver<()>>,
    options: CallOptions,
) -> Result<F::Output, Expired> {
    if let Some(body_sent) = sent.as_mut() {
        tokio::select! {
            biased;
            output = &mut response => return Ok(output),
            // Sent, or the body was dropped: either way the response settles the exchange.
            _ = body_sent => *sent = None,
            () = tokio::time::sleep(options.send_timeout) => return Err(Expired::Send),
        }
    }
    tokio::time::timeout(options.read_timeout, response)
        .await
        .map_err(|_| Expired::Read)
}

pin_project_lite::pin_project! {
    /// A request body that fires `sent` once its last frame has been handed to the connection.
    struct SignalsEnd {
        #[pin]
        inner: OutBody,
        sent: Option<tokio::sync::oneshot::Sender<()>>,
    }
}

impl Body for SignalsEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if (frame.is_none() || this.inner.is_end_stream())
            && let Some(sent) = this.sent.take()
        {
            let _ = sent.send(());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn finish(
    response: Response<Incoming>,
    endpoint: &Endpoint,
    idle: Idle,
    options: CallOptions,
) -> Response<UpstreamBody> {
    // An HTTP/2 connection stays in the pool while it carries requests (see take_idle).
    let h2 = matches!(idle.sender, Sender::H2(_));
    if h2 && let Some(pool) = options.keepalive {
        release(endpoint, idle, pool);
        return response.map(|body| UpstreamBody {
            inner: body,
            read_timeout: options.read_timeout,
            deadline: Box::pin(tokio::time::sleep(options.read_timeout)),
            endpoint: endpoint.clone(),
            release: None,
        });
    }
    let mut reusable = options.keepalive.filter(|pool| {
        !h2 && idle.served < pool.requests && pool.size > 0 && !wants_close(response.headers())
    });
    // A body known to be empty is never polled by the server side, so release the connection now.
    let mut idle = Some(idle);
    if response.body().is_end_stream()
        && let (Some(pool), Some(idle)) = (reusable.take(), idle.take())
    {
        release(endpoint, idle, pool);
    }
    response.map(|body| UpstreamBody {
        inner: body,
        read_timeout: options.read_timeout,
        deadline: Box::pin(tokio::time::sleep(options.read_timeout)),
        endpoint: endpoint.clone(),
        release: reusable
            .zip(idle)
            .map(|(pool, idle)| (endpoint.clone(), idle, pool)),
    })
}

fn wants_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

fn take_idle(endpoint: &Endpoint, keepalive: Option<KeepalivePool>) -> Option<Idle> {
    let pool = keepalive?;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let queue = p.get_mut(endpoint)?;
        let now = Instant::now();
        // The newest first: the most likely to be still open.
        while let Some(idle) = queue.pop_back() {
            if now.duration_since(idle.since) < pool.idle_timeout
                && !idle.sender.is_closed()
                && idle.sender.is_ready()
            {
                if let Sender::H2(sender) = &idle.sender {
                    // Shared: a clone goes out, the connection stays for concurrent requests.
                    let shared = Idle {
                        sender: Sender::H2(sender.clone()),
                        since: idle.since,
                        served: idle.served,
                    };
                    queue.push_back(idle);
                    return Some(shared);
                }
                return Some(idle);
            }
        }
        None
    })
}

fn release(endpoint: &Endpoint, mut idle: Idle, pool: KeepalivePool) {
    if idle.sender.is_closed() {
        return;
    }
    let now = Instant::now();
    idle.since = now;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let queue = match p.get_mut(endpoint) {
            Some(queue) => queue,
            None => p.entry(endpoint.clone()).or_default(),
        };
        // Oldest at the front: drop those past the idle timeout, or closed, from there.
        while queue.front().is_some_and(|i| {
            i.sender.is_closed() || now.duration_since(i.since) >= pool.idle_timeout
        }) {
            queue.pop_front();
        }
        if matches!(idle.sender, Sender::H2(_))
            && queue.iter().any(|i| matches!(i.sender, Sender::H2(_)))
        {
            // One HTTP/2 connection per endpoint is enough: it is already pooled.
            return;
        }
        if queue.len() >= pool.size {
            queue.pop_front();
        }
        queue.push_back(idle);
    });
}

async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Sender, CallError> {
    let ep = || endpoint.to_string();
    let tcp = tokio::time::timeout(
        timeout,
        TcpStream::connect((&*endpoint.host, endpoint.port)),
    )
    .await
    .map_err(|_| CallError::ConnectTimeout { endpoint: ep() })?
    .map_err(|source| CallError::Connect {
        endpoint: ep(),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    match endpoint.scheme {
        Scheme::Http => handshake(TokioIo::new(tcp), endpoint).await.map(Sender::H1),
        Scheme::Https => {
            let connector = tls_connector(endpoint.tls_verify, endpoint.h2).map_err(|source| {
                CallError::Tls {
                    endpoint: ep(),
                    source,
                }
            })?;
            let tls = tokio::time::timeout(timeout, connector.connect(&endpoint.host, tcp))
                .await
                .map_err(|_| CallError::ConnectTimeout { endpoint: ep() })?
                .map_err(|source| CallError::Tls {
                    endpoint: ep(),
                    source,
                })?;
            let negotiated_h2 =
                endpoint.h2 && matches!(tls.get_ref().negotiated_alpn(), Ok(Some(p)) if p == b"h2");
            if negotiated_h2 {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|source| CallError::Handshake {
                        endpoint: ep(),
                        source,
                    })?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Ok(Sender::H2(sender));
            }
            handshake(TokioIo::new(tls), endpoint).await.map(Sender::H1)
        }
    }
}

async fn handshake<T>(
    io: TokioIo<T>,
    endpoint: &Endpoint,
) -> Result<http1::SendRequest<OutBody>, CallError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|source| CallError::Handshake {
            endpoint: endpoint.to_string(),
            source,
        })?;
    tokio::spawn(async move {
        // The connection ends when the peer closes it or the last sender is dropped.
        let _ = conn.await;
    });
    Ok(sender)
}

fn tls_connector(
    verify: bool,
    h2: bool,
) -> Result<tokio_native_tls::TlsConnector, native_tls::Error> {
    TLS.with(|cache| {
        if let Some(c) = cache.borrow().get(&(verify, h2)) {
            return Ok(c.clone());
        }
        let alpn: &[&str] = if h2 {
            &["h2", "http/1.1"]
        } else {
            &["http/1.1"]
        };
        let connector = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(!verify)
            .danger_accept_invalid_hostnames(!verify)
            .request_alpns(alpn)
            .build()?;
        let connector = tokio_native_tls::TlsConnector::from(connector);
        cache.borrow_mut().insert((verify, h2), connector.clone());
        Ok(connector)
    })
}

pin_project_lite::pin_project! {
    /// A response body streaming from the upstream: bounds each wait for data by the read timeout and
    /// returns the connection to the pool once the body has been read to its end.
    pub(crate) struct UpstreamBody {
        #[pin]
        inner: Incoming,
        read_timeout: Duration,
        deadline: Pin<Box<tokio::time::Sleep>>,
        endpoint: Endpoint,
        release: Option<(Endpoint, Idle, KeepalivePool)>,
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + *this.read_timeout;
                this.deadline.as_mut().reset(deadline);
                match frame {
                    None => {
                        if let Some((endpoint, idle, pool)) = this.release.take() {
                            release(&endpoint, idle, pool);
                        }
                        Poll::Ready(None)
                    }
                    Some(Err(err)) => {
                        this.release.take();
                        Poll::Ready(Some(Err(err.into())))
                    }
                    Some(Ok(frame)) => {
                        // With a known length the server stops polling at the last byte, so the end of
                        // the body is noticed here rather than by a final `None`.
                        if this.inner.is_end_stream()
                            && let Some((endpoint, idle, pool)) = this.release.take()
                        {
                            release(&endpoint, idle, pool);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                this.release.take();
                Poll::Ready(Some(Err(Box::new(CallError::ReadTimeout {
                    endpoint: this.endpoint.to_string(),
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
