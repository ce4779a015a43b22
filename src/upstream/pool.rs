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
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri, request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use super::{KeepalivePool, Scheme, h1};
use crate::error::{Classify, ErrorSource};
use crate::timeouts::Timeout;

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
    #[error("request to {endpoint} failed: {source}")]
    Exchange {
        endpoint: String,
        source: h1::H1Error,
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
        let mut cause = match self {
            CallError::Request { source, .. } => std::error::Error::source(source),
            CallError::Exchange {
                source: h1::H1Error::RequestBody(err),
                ..
            } => Some(err.as_ref() as &(dyn std::error::Error + 'static)),
            _ => None,
        };
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

/// One pooled connection.
enum Sender {
    H1(h1::Connection),
    H2(http2::SendRequest<OutBody>),
}

impl Sender {
    /// Whether the connection can take another request now.
    fn is_usable(&mut self) -> bool {
        match self {
            Sender::H1(conn) => conn.is_reusable(),
            Sender::H2(s) => !s.is_closed() && s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(conn) => !conn.is_clean(),
            Sender::H2(s) => s.is_closed(),
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

static HOST: HeaderName = http::header::HOST;

/// The head of a request for an upstream: a request head as it is, with the changes the proxy makes
/// on the way applied as it is written, so that the head itself stays as the client and the plugins
/// left it (the response-side plugins read it afterwards).
#[derive(Clone, Copy)]
pub(crate) struct UpstreamHead<'a> {
    /// Method, version and headers.
    pub(crate) head: &'a request::Parts,
    /// The request target the upstream gets.
    pub(crate) uri: &'a Uri,
    /// A Host replacing the head's (which `omit` then leaves out), written first.
    pub(crate) host: Option<&'a HeaderValue>,
    /// Which of the head's headers are left out.
    pub(crate) omit: &'a dyn Fn(&HeaderName) -> bool,
    /// Headers written after the head's own (never among those left in).
    pub(crate) added: &'a [(HeaderName, HeaderValue)],
}

impl<'a> UpstreamHead<'a> {
    /// `head` as it is, to its own URI.
    pub(crate) fn unchanged(head: &'a request::Parts) -> UpstreamHead<'a> {
        UpstreamHead {
            head,
            uri: &head.uri,
            host: None,
            omit: &|_| false,
            added: &[],
        }
    }

    /// The headers the upstream gets, in order.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        let omit = self.omit;
        let host = self.host.map(|value| (&HOST, value));
        host.into_iter()
            .chain(
                self.head
                    .headers
                    .iter()
                    .filter(move |(name, _)| !omit(name)),
            )
            .chain(self.added.iter().map(|(name, value)| (name, value)))
    }

    /// The first value of `name` the upstream gets.
    pub(crate) fn header(&self, name: &HeaderName) -> Option<&'a HeaderValue> {
        if *name == HOST && self.host.is_some() {
            return self.host;
        }
        match self.head.headers.get(name) {
            Some(value) if !(self.omit)(name) => Some(value),
            _ => self
                .added
                .iter()
                .find_map(|(n, v)| (n == name).then_some(v)),
        }
    }

    /// An owned request of this head and `body` (for the HTTP/2 client).
    fn to_request(self, body: OutBody) -> Request<OutBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.head.method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        for (name, value) in self.headers() {
            headers.append(name.clone(), value.clone());
        }
        request
    }
}

/// Sends one request and returns the response with a body that streams from the upstream.
///
/// On `Err` the request was not answered. When [`CallError::before_request`] holds, the body is
/// handed back so the caller may retry the request elsewhere.
pub(crate) async fn call(
    endpoint: &Endpoint,
    request: UpstreamHead<'_>,
    mut body: OutBody,
    options: &CallOptions,
) -> Result<Response<UpstreamBody>, (CallError, Option<OutBody>)> {
    // A pooled connection the upstream closed as it was taken fails without an answer; the request
    // then goes on the next one, or on a new connection.
    while let Some(idle) = take_idle(endpoint, options.keepalive) {
        match exchange(endpoint, idle, request, body, options, true).await {
            Ok(response) => return Ok(response),
            Err(Failed::Stale(_, returned)) => body = returned,
            Err(Failed::Error(err)) => return Err((err, None)),
        }
    }
    // Boxed: a new connection is the rare case, and its future (TLS and HTTP/2 handshakes) is
    // large; kept inline it would be copied with every request's future.
    let connecting = Box::pin(connect(endpoint, options.connect_timeout));
    let sender = match connecting.await {
        Ok(sender) => sender,
        Err(err) => return Err((err, Some(body))),
    };
    let idle = Idle {
        sender,
        since: Instant::now(),
        served: 0,
    };
    exchange(endpoint, idle, request, body, options, false)
        .await
        .map_err(|failed| match failed {
            Failed::Stale(err, _) | Failed::Error(err) => (err, None),
        })
}

/// How an exchange on one connection failed.
enum Failed {
    /// The connection turned out closed before anything was sent or answered: the body comes back
    /// intact for another connection.
    Stale(CallError, OutBody),
    Error(CallError),
}

async fn exchange(
    endpoint: &Endpoint,
    idle: Idle,
    request: UpstreamHead<'_>,
    body: OutBody,
    options: &CallOptions,
    reused: bool,
) -> Result<Response<UpstreamBody>, Failed> {
    let Idle { sender, served, .. } = idle;
    match sender {
        Sender::H1(conn) => {
            exchange_h1(endpoint, conn, served, request, body, options, reused).await
        }
        // Boxed: HTTP/2 upstreams are the rare case.
        Sender::H2(sender) => {
            Box::pin(exchange_h2(
                endpoint,
                sender,
                served,
                request.to_request(body),
                options,
                reused,
            ))
            .await
        }
    }
}

/// Writes the request on `conn` and reads the response head, from this task.
async fn exchange_h1(
    endpoint: &Endpoint,
    mut conn: h1::Connection,
    served: u64,
    request: UpstreamHead<'_>,
    mut body: OutBody,
    options: &CallOptions,
    reused: bool,
) -> Result<Response<UpstreamBody>, Failed> {
    let bodyless = body.is_end_stream();
    // One timer for the whole exchange: the send timeout, then the read timeout for the head, then
    // for each wait for the body.
    let mut timer = Timeout::after(options.send_timeout);
    let head = match within(&mut timer, conn.send(request, &mut body)).await {
        None => Err(Expired::Send),
        Some(Err(err)) => Ok(Err(err)),
        Some(Ok(())) => {
            timer.reset_after(options.read_timeout);
            match within(&mut timer, conn.read_head(&request.head.method)).await {
                None => Err(Expired::Read),
                Some(head) => Ok(head),
            }
        }
    };
    let head = match head {
        Ok(Ok(head)) => head,
        Err(expired) => return Err(Failed::Error(expired.into_call_error(endpoint.to_string()))),
        Ok(Err(source)) => {
            let stale = reused && bodyless && source.is_stale_connection();
            let err = CallError::Exchange {
                endpoint: endpoint.to_string(),
                source,
            };
            return Err(if stale {
                Failed::Stale(err, body)
            } else {
                Failed::Error(err)
            });
        }
    };
    let h1::Head {
        parts: head,
        mut decoder,
        keep_alive,
    } = head;
    let served = served + 1;
    let reuse = options
        .keepalive
        .filter(|pool| keep_alive && served < pool.requests && pool.size > 0);
    let body = match conn.take_whole(&mut decoder) {
        Some(data) => {
            if let Some(pool) = reuse {
                release(endpoint, Sender::H1(conn), served, pool);
            }
            UpstreamBody::whole(data)
        }
        None => UpstreamBody::streaming(
            Source::H1 {
                conn,
                served,
                decoder,
                reuse,
            },
            endpoint,
            options.read_timeout,
            timer,
        ),
    };
    Ok(Response::from_parts(head, body))
}

/// Runs `fut` until `timer` fires; `None` when the timer came first.
async fn within<F: Future>(timer: &mut Timeout, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        Pin::new(&mut *timer).poll(cx).map(|()| None)
    })
    .await
}

async fn exchange_h2(
    endpoint: &Endpoint,
    mut sender: http2::SendRequest<OutBody>,
    served: u64,
    mut request: Request<OutBody>,
    options: &CallOptions,
    reused: bool,
) -> Result<Response<UpstreamBody>, Failed> {
    let ep = || endpoint.to_string();
    let mut sent = body_sent_signal(&mut request);
    let response = {
        let sending = std::pin::pin!(sender.try_send_request(h2_form(request)));
        await_head(sending, &mut sent, *options).await
    };
    match response {
        Err(expired) => Err(Failed::Error(expired.into_call_error(ep()))),
        Ok(Ok(response)) => {
            // The connection stays in the pool while it carries requests (see take_idle).
            if let Some(pool) = options.keepalive {
                release(endpoint, Sender::H2(sender), served + 1, pool);
            }
            let deadline = Timeout::after(options.read_timeout);
            Ok(response.map(|body| {
                UpstreamBody::streaming(Source::H2(body), endpoint, options.read_timeout, deadline)
            }))
        }
        Ok(Err(mut failed)) => {
            let returned = failed.take_message();
            let err = CallError::Request {
                endpoint: ep(),
                source: failed.into_error(),
            };
            Err(match returned {
                Some(request) if reused => Failed::Stale(err, request.into_body()),
                _ => Failed::Error(err),
            })
        }
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

fn take_idle(endpoint: &Endpoint, keepalive: Option<KeepalivePool>) -> Option<Idle> {
    let pool = keepalive?;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let queue = p.get_mut(endpoint)?;
        let now = Instant::now();
        // The newest first: the most likely to be still open.
        while let Some(mut idle) = queue.pop_back() {
            if now.duration_since(idle.since) < pool.idle_timeout && idle.sender.is_usable() {
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

fn release(endpoint: &Endpoint, sender: Sender, served: u64, pool: KeepalivePool) {
    if sender.is_closed() {
        return;
    }
    let now = Instant::now();
    let idle = Idle {
        sender,
        since: now,
        served,
    };
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
    if endpoint.scheme == Scheme::Http {
        return Ok(Sender::H1(h1::Connection::new(h1::Io::Tcp(tcp))));
    }
    let connector =
        tls_connector(endpoint.tls_verify, endpoint.h2).map_err(|source| CallError::Tls {
            endpoint: ep(),
            source,
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
    if !negotiated_h2 {
        return Ok(Sender::H1(h1::Connection::new(h1::Io::Tls(Box::new(tls)))));
    }
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|source| CallError::Handshake {
            endpoint: ep(),
            source,
        })?;
    tokio::spawn(async move {
        // The connection ends when the peer closes it or the last sender is dropped.
        let _ = conn.await;
    });
    Ok(Sender::H2(sender))
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

/// A response body from an upstream: whole when it came with its head (the connection is then
/// already back in the pool), or streaming from the connection, each wait for more bounded by the
/// read timeout.
pub(crate) struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    Whole(Option<Bytes>),
    Streaming(Box<Streaming>),
}

struct Streaming {
    source: Source,
    endpoint: Endpoint,
    read_timeout: Duration,
    deadline: Timeout,
    /// Whether `deadline` bounds the wait in progress.
    armed: bool,
}

enum Source {
    /// An HTTP/1.1 connection, back to the pool (with `reuse`) once the body has been read to its
    /// end.
    H1 {
        conn: h1::Connection,
        served: u64,
        decoder: h1::Decoder,
        reuse: Option<KeepalivePool>,
    },
    H2(Incoming),
    Finished,
}

impl UpstreamBody {
    fn whole(data: Bytes) -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Whole((!data.is_empty()).then_some(data)),
        }
    }

    fn streaming(
        source: Source,
        endpoint: &Endpoint,
        read_timeout: Duration,
        deadline: Timeout,
    ) -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Streaming(Box::new(Streaming {
                source,
                endpoint: endpoint.clone(),
                read_timeout,
                deadline,
                armed: false,
            })),
        }
    }
}

impl Streaming {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.source {
            Source::H1 { conn, decoder, .. } => conn.poll_body(cx, decoder).map(|frame| {
                frame.map(|data| {
                    data.map(Frame::data).map_err(|source| {
                        Box::new(CallError::Exchange {
                            endpoint: self.endpoint.to_string(),
                            source,
                        }) as BoxError
                    })
                })
            }),
            Source::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
            Source::Finished => Poll::Ready(None),
        };
        let Poll::Ready(frame) = polled else {
            if !self.armed {
                self.deadline.reset_after(self.read_timeout);
                self.armed = true;
            }
            ready!(Pin::new(&mut self.deadline).poll(cx));
            self.source = Source::Finished;
            return Poll::Ready(Some(Err(Box::new(CallError::ReadTimeout {
                endpoint: self.endpoint.to_string(),
            }))));
        };
        self.armed = false;
        match &frame {
            Some(Err(_)) => self.source = Source::Finished,
            // With a known length the server stops polling at the last byte, so the end of the
            // body is noticed here rather than by a final `None`.
            None | Some(Ok(_)) if self.is_end_stream() => self.release(),
            _ => {}
        }
        Poll::Ready(frame)
    }

    /// The body has been read to its end: the connection goes back to the pool.
    fn release(&mut self) {
        if let Source::H1 {
            conn,
            served,
            reuse: Some(pool),
            ..
        } = std::mem::replace(&mut self.source, Source::Finished)
        {
            release(&self.endpoint, Sender::H1(conn), served, pool);
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::H1 { decoder, .. } => decoder.is_done(),
            Source::H2(body) => body.is_end_stream(),
            Source::Finished => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::H1 { decoder, .. } => decoder
                .remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Source::H2(body) => body.size_hint(),
            Source::Finished => SizeHint::with_exact(0),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Whole(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            Inner::Streaming(streaming) => streaming.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Whole(data) => data.is_none(),
            Inner::Streaming(streaming) => streaming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Whole(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Streaming(streaming) => streaming.size_hint(),
        }
    }
}
