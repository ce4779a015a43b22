//! One request through the data plane, in order: admin short-cut, match, pick an upstream node,
//! forward, stream the response back, access log.
//!
//! The body size is checked before any upstream is contacted, and the snapshot is loaded once so the
//! whole request sees one configuration.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Limited;

use super::body::{
    ProxyBody, boxed, connection_named, error_page, is_hop_by_hop, json_error, outbound,
    strip_hop_by_hop,
};
use super::client_body::ClientBody;
use super::plugins::PluginRun;
use super::uri::{encode_path, normalize};
use crate::admin::{self, Admin};
use crate::error::status_for;
use crate::plugin::{
    Arrival, Chain, Phase, PluginError, PluginHost, ReqBody, RequestState, Vm, epoch_now,
};
use crate::router::{MatchInput, Vars};
use crate::store::{RouteEntry, Snapshot, Store};
use crate::upstream::pool::{self, CallOptions, Endpoint, OutBody, UpstreamHead};
use crate::upstream::{HashOn, Node, PassHost, Upstream};

/// What every worker shares to serve requests.
pub(crate) struct DataPlane {
    pub(crate) store: Arc<Store>,
    /// The Admin API, served here to loopback clients only (APISIX 2.x compatibility).
    pub(crate) admin: Option<Arc<Admin>>,
    /// `client_max_body_size`; `None` is unlimited.
    pub(crate) max_body: Option<u64>,
    /// The Lua plugin host; `None` runs routes without plugins.
    pub(crate) plugins: Option<Arc<PluginHost>>,
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) tls: bool,
}

/// The forwarding header values that depend only on the connection, built once per connection.
pub(crate) struct PeerHeaders {
    /// The client address, for `X-Real-IP` and `X-Forwarded-For`.
    ip: HeaderValue,
    /// The port the client connected to, for `X-Forwarded-Port`.
    port: HeaderValue,
}

impl PeerHeaders {
    pub(crate) fn new(conn: &ConnInfo) -> PeerHeaders {
        let value = |text: String| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        PeerHeaders {
            ip: value(admin::canonical(conn.peer.ip()).to_string()),
            port: value(conn.local.port().to_string()),
        }
    }
}

/// Serves one request; never fails (errors become responses). It is the connection's service
/// future itself, so that hyper moves no wrapper around it.
pub(crate) async fn handle(
    dp: Arc<DataPlane>,
    req: Request<hyper::body::Incoming>,
    conn: ConnInfo,
    peer: Rc<PeerHeaders>,
) -> Result<Response<ProxyBody>, Infallible> {
    // What the access log needs is kept only when it is on.
    let logged = tracing::enabled!(target: "access", tracing::Level::INFO).then(|| {
        (
            Instant::now(),
            req.method().clone(),
            req.uri().path().to_owned(),
        )
    });
    let (parts, body) = req.into_parts();
    let http1 = parts.version < http::Version::HTTP_2;
    let (body, body_watch) = ClientBody::watch(body);
    // Boxed, in a statement of its own: hyper moves this future twice before polling it, and the
    // box keeps it small.
    let serving = Box::pin(serve(&dp, parts, body, conn, &peer, logged.is_some()));
    let (mut response, route_id, upstream) = serving.await;
    // The upstream's HTTP version is its own business: the client keeps the version it spoke
    // (hyper answers HTTP/1.0 clients as such and ignores this on HTTP/2).
    *response.version_mut() = http::Version::HTTP_11;
    if http1 && body_watch.left_unread() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let Some((started, method, raw_path)) = logged else {
        return Ok(response);
    };
    tracing::info!(
        target: "access",
        client = %conn.peer.ip(),
        method = %method,
        path = %raw_path,
        status = response.status().as_u16(),
        route_id = route_id.as_deref().unwrap_or(""),
        upstream = upstream.as_deref().unwrap_or(""),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(response)
}

async fn serve(
    dp: &DataPlane,
    parts: http::request::Parts,
    body: ClientBody,
    conn: ConnInfo,
    peer: &PeerHeaders,
    log: bool,
) -> (Response<ProxyBody>, Option<String>, Option<String>) {
    if let Some(admin) = &dp.admin
        && parts.uri.path().starts_with(admin::PREFIX)
        && admin::canonical(conn.peer.ip()).is_loopback()
    {
        // Boxed for the same reason as the plugin pipeline below, and in a statement of its own:
        // a temporary in the awaiting statement would be kept in this future after all.
        let admin_call = Box::pin(admin.handle(Request::from_parts(parts, body), conn.peer.ip()));
        let resp = admin_call.await;
        return (resp.map(boxed), None, None);
    }
    let path = match normalize(parts.uri.path()) {
        Ok(path) => path,
        Err(err) => {
            tracing::debug!(error = %err, "bad request path");
            return (error_page(StatusCode::BAD_REQUEST), None, None);
        }
    };
    let mut host_headers = parts.headers.get_all(header::HOST).iter();
    let host_header = host_headers.next();
    // Two Host headers make the target ambiguous: refused, as nginx does.
    if host_headers.next().is_some() {
        return (error_page(StatusCode::BAD_REQUEST), None, None);
    }
    let snapshot = dp.store.snapshot();
    // Lower-cased only when it has to be: the usual Host header is already.
    let host_with_port = request_host(&parts.uri, host_header).map(|h| {
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(h.to_ascii_lowercase())
        } else {
            Cow::Borrowed(h)
        }
    });
    // nginx's `$host`: no port, and no trailing dot of a fully qualified name.
    let host = host_with_port
        .as_deref()
        .map(|h| strip_port(h).trim_end_matches('.'));
    let vars = RequestVars::new(&parts, &path, conn);
    let input = MatchInput {
        path: &path,
        host,
        host_with_port: host_with_port.as_deref(),
        method: parts.method.as_str(),
        remote_addr: admin::canonical(conn.peer.ip()),
        vars: &vars,
    };
    let Some(found) = snapshot.router.find(&input) else {
        return (
            json_error(StatusCode::NOT_FOUND, "404 Route Not Found"),
            None,
            None,
        );
    };
    let route: Arc<RouteEntry> = found.value.clone();
    let matched = Matched {
        ext: found.ext,
        params: found.params,
        uri: found.matched_uri,
    };
    // The body size is checked before any plugin or upstream sees the request.
    if let (Some(limit), Some(len)) = (dp.max_body, content_length(&parts, &body))
        && len > limit
    {
        return (
            error_page(StatusCode::PAYLOAD_TOO_LARGE),
            log.then(|| route.id.clone()),
            None,
        );
    }
    // The route and node are named only for the access log.
    let route_id = log.then(|| route.id.clone());
    let plugins = dp
        .plugins
        .as_ref()
        .filter(|_| !route.plugins.is_empty() || !snapshot.global_plugins.is_empty());
    let chain = match plugins.map(|host| start_chain(host, &snapshot, &route)) {
        None => None,
        Some(Ok(started)) => Some(started),
        Some(Err(status)) => return (error_page(status), route_id, None),
    };
    let mut after = After::Nothing;
    let outbound = match chain {
        Some((vm, chain)) if chain.has_request_side() => {
            let request = Arrival {
                parts,
                body: ReqBody::Stream(body),
                path,
                conn,
                matched,
                start_time: epoch_now(),
            };
            let state = Rc::new(RequestState::new(
                request,
                snapshot,
                route.clone(),
                dp.max_body,
            ));
            let run = PluginRun {
                vm,
                chain,
                ctx: None,
                state,
            };
            // Boxed, in a statement of its own: the phases' futures would otherwise be part of
            // every request's future, plain requests included.
            let phases = Box::pin(request_phases(run));
            let (run, upstream, attempts) = match phases.await {
                Ok(ready) => ready,
                Err(answered) => return (answered, route_id, None),
            };
            let (run, outbound) = plugin_outbound(dp, run, upstream, attempts);
            after = After::Run(run);
            outbound
        }
        // No plugins, or only response-side phases (a header or a log plugin, the usual case): the
        // request goes out as the client sent it. The plugins' view of it is made from its head
        // when the response is back.
        chain => {
            let Some(upstream) = route.upstream.clone() else {
                let response = no_upstream(&route);
                let Some((vm, chain)) = chain else {
                    return (response, route_id, None);
                };
                let later = ResponseSide::new(vm, chain, path, matched, snapshot);
                let run = later.start(parts, conn, &route, dp);
                return (run.finish(response), route_id, None);
            };
            let attempts = attempt_order(&upstream, &RequestVars::new(&parts, &path, conn));
            let uri = upstream_uri(&path, &parts.uri);
            if let Some((vm, chain)) = chain {
                after = After::Start(ResponseSide::new(vm, chain, path, matched, snapshot));
            }
            Outbound {
                parts,
                body: limit_body(dp, body),
                uri,
                upstream,
                attempts,
                host_override: None,
            }
        }
    };
    // Boxed, in a statement of its own: kept inline, the forwarding future (the upstream exchange
    // with its timers) would make every enclosing future larger, and each of them is moved once
    // per request.
    let forwarding = Box::pin(forward(outbound, &route, (conn, peer), log));
    let (resp, node, head) = forwarding.await;
    let resp = match after {
        After::Nothing => resp,
        After::Run(run) => {
            run.return_head(head);
            run.finish(resp)
        }
        After::Start(later) => later.start(head, conn, &route, dp).finish(resp),
    };
    (resp, route_id, node)
}

/// What runs once the upstream answered.
enum After {
    /// Nothing: the route has no plugins.
    Nothing,
    /// The response-side phases of a run that already ran request-side phases.
    Run(PluginRun),
    /// The response-side phases of a chain without request-side phases.
    Start(ResponseSide),
}

/// A chain with response-side phases only, waiting for the response, and what the plugins' view
/// of the request is made of besides its head.
struct ResponseSide {
    vm: Rc<Vm>,
    chain: Rc<Chain>,
    path: String,
    matched: Matched,
    snapshot: Arc<Snapshot>,
    /// When the request arrived (the plugins' state is made only after forwarding).
    start_time: f64,
}

impl ResponseSide {
    /// Made when the request arrives, before forwarding: the plugins see that as its start time.
    fn new(
        vm: Rc<Vm>,
        chain: Rc<Chain>,
        path: String,
        matched: Matched,
        snapshot: Arc<Snapshot>,
    ) -> ResponseSide {
        ResponseSide {
            vm,
            chain,
            path,
            matched,
            snapshot,
            start_time: epoch_now(),
        }
    }

    /// The plugin run on the request head that went upstream; the body went with it.
    fn start(
        self,
        parts: http::request::Parts,
        conn: ConnInfo,
        route: &Arc<RouteEntry>,
        dp: &DataPlane,
    ) -> PluginRun {
        let request = Arrival {
            parts,
            body: ReqBody::Reading,
            path: self.path,
            conn,
            matched: self.matched,
            start_time: self.start_time,
        };
        let state = RequestState::new(request, self.snapshot, route.clone(), dp.max_body);
        PluginRun {
            vm: self.vm,
            chain: self.chain,
            ctx: None,
            state: Rc::new(state),
        }
    }
}

/// Where the router matched a request: the wildcard tail and `:param` captures.
pub(crate) struct Matched {
    pub(crate) ext: Option<String>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) uri: Arc<str>,
}

fn no_upstream(route: &RouteEntry) -> Response<ProxyBody> {
    tracing::error!(route_id = %route.id, "missing upstream configuration in Route or Service");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "missing upstream configuration in Route or Service",
    )
}

fn attempt_order(upstream: &Upstream, vars: &RequestVars<'_>) -> Vec<Node> {
    let hash_key = upstream
        .balancer
        .hash_on()
        .and_then(|on| hash_key(on, vars));
    upstream.attempt_order(hash_key.as_deref().map(str::as_bytes))
}

fn limit_body<B>(dp: &DataPlane, body: B) -> OutBody
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::upstream::pool::BoxError>,
{
    match dp.max_body {
        Some(limit) => outbound(Limited::new(
            body,
            usize::try_from(limit).unwrap_or(usize::MAX),
        )),
        None => outbound(body),
    }
}

/// The worker's VM and the route's chain on it. A failure is logged and answered with the status it
/// gives.
fn start_chain(
    host: &PluginHost,
    snapshot: &Snapshot,
    route: &RouteEntry,
) -> Result<(Rc<Vm>, Rc<Chain>), StatusCode> {
    let failed = |err: PluginError| {
        tracing::error!(route_id = %route.id, error = %err, "plugin failed");
        status_for(&err)
    };
    let vm = host.worker_vm().map_err(failed)?;
    let chain = vm.chain(snapshot, route).map_err(failed)?;
    Ok((vm, chain))
}

/// The request side of the plugin pipeline, in APISIX's phase order: rewrite and access, the node
/// pick, then before_proxy. Returns the request to forward, or the response when a plugin ended
/// the request (header_filter, body_filter and log still run on it, as in APISIX). The response
/// side is [`PluginRun::finish`].
async fn request_phases(
    mut run: PluginRun,
) -> Result<(PluginRun, Arc<Upstream>, Vec<Node>), Response<ProxyBody>> {
    match run.rewrite_and_access().await {
        Ok(false) => {}
        Ok(true) => return Err(run.exit_response()),
        Err(err) => return Err(run.error_response(err)),
    }
    let Some((upstream, attempts)) = pick_nodes(&run) else {
        return Err(without_upstream(run));
    };
    match run.phase(Phase::BeforeProxy).await {
        Ok(false) => Ok((run, upstream, attempts)),
        Ok(true) => Err(run.exit_response()),
        Err(err) => Err(run.error_response(err)),
    }
}

/// The route's upstream and the nodes to try, for the request as the plugins left it; `None` when
/// the route has no upstream.
fn pick_nodes(run: &PluginRun) -> Option<(Arc<Upstream>, Vec<Node>)> {
    let upstream = run.state.route.upstream.clone()?;
    let attempts = {
        let parts = run.state.parts.borrow();
        let path = run.state.path.borrow();
        attempt_order(&upstream, &RequestVars::new(&parts, &path, run.state.conn))
    };
    Some((upstream, attempts))
}

/// The answer for a route without an upstream, after the response-side phases.
fn without_upstream(run: PluginRun) -> Response<ProxyBody> {
    let response = no_upstream(&run.state.route);
    run.finish(response)
}

/// Takes the request, as the plugins left it, out of the run for forwarding.
fn plugin_outbound(
    dp: &DataPlane,
    run: PluginRun,
    upstream: Arc<Upstream>,
    attempts: Vec<Node>,
) -> (PluginRun, Outbound) {
    let (parts, body) = run.take_request();
    let uri = match run.state.vars.borrow().get("upstream_uri") {
        Some(upstream_uri) => {
            Uri::try_from(upstream_uri.as_str()).unwrap_or_else(|_| Uri::from_static("/"))
        }
        None => upstream_uri(&run.state.path.borrow(), &parts.uri),
    };
    let body = match body {
        ReqBody::Stream(incoming) => limit_body(dp, incoming),
        ReqBody::Buffered(bytes) => outbound(http_body_util::Full::new(bytes)),
        ReqBody::Reading => outbound(http_body_util::Empty::new()),
    };
    // `ctx.var.upstream_host` (proxy-rewrite's `host`) replaces the Host the upstream gets.
    let host_override = run.state.vars.borrow().get("upstream_host").cloned();
    let forwarding = Outbound {
        parts,
        body,
        uri,
        upstream,
        attempts,
        host_override,
    };
    (run, forwarding)
}

/// A request ready to go upstream.
struct Outbound {
    parts: http::request::Parts,
    body: OutBody,
    /// The path and query sent upstream.
    uri: Uri,
    upstream: Arc<Upstream>,
    /// Nodes in the order to try them.
    attempts: Vec<Node>,
    /// A Host set by a plugin, replacing what `pass_host` would send.
    host_override: Option<String>,
}

/// Sends the request to the first node that accepts a connection, retrying others on connect failure.
/// The node's address is returned when `name_node` is set (for the access log), and the request
/// head as it was (the response-side plugins read it). `out`'s fields are used in place: moved into
/// locals, they would be kept twice in this future.
async fn forward(
    mut out: Outbound,
    route: &RouteEntry,
    (conn, peer): (ConnInfo, &PeerHeaders),
    name_node: bool,
) -> (Response<ProxyBody>, Option<String>, http::request::Parts) {
    let named = |node: &Node| name_node.then(|| node.authority());
    let Some(first) = out.attempts.first() else {
        tracing::error!(route_id = %route.id, "no valid upstream node");
        return (error_page(StatusCode::BAD_GATEWAY), None, out.parts);
    };
    // Looked up once: the upstream's Host and X-Forwarded-Host both start from it.
    let host_header = out.parts.headers.get(header::HOST);
    let client_host = request_host(&out.parts.uri, host_header);
    // The headers a `Connection` header names are hop-by-hop too; most requests name none.
    let named_in_connection = connection_named(&out.parts.headers);
    let (added, count) =
        forwarding_headers(&out.parts.headers, conn, peer, host_header, client_host);
    let added = &added[..count];
    let options = CallOptions {
        connect_timeout: route.timeouts.connect,
        send_timeout: route.timeouts.send,
        read_timeout: route.timeouts.read,
        keepalive: Some(out.upstream.keepalive),
    };
    let deadline = out.upstream.retry_timeout.map(|t| Instant::now() + t);
    let mut node = first;
    let mut tried = 0usize;
    loop {
        let host = upstream_host(
            host_header,
            &out.upstream,
            node,
            client_host,
            out.host_override.as_deref(),
        );
        let omit = |name: &HeaderName| {
            is_hop_by_hop(name)
                || is_forwarding_header(name)
                || (*name == header::HOST && host.replaces())
                || named_in_connection.contains(name)
        };
        let head = UpstreamHead {
            head: &out.parts,
            uri: &out.uri,
            host: host.value(),
            omit: &omit,
            added,
        };
        let endpoint = Endpoint {
            scheme: out.upstream.scheme,
            host: node.host.clone(),
            port: node.port,
            tls_verify: out.upstream.tls_verify,
            h2: false,
        };
        match pool::call(&endpoint, head, out.body, &options).await {
            Ok(response) => {
                let mut response = response.map(boxed);
                strip_hop_by_hop(response.headers_mut());
                return (response, named(node), out.parts);
            }
            Err((err, returned)) => {
                tried += 1;
                let retry = returned.filter(|_| err.before_request());
                let next = out.attempts.get(tried);
                let in_time = deadline.is_none_or(|d| Instant::now() < d);
                match (retry, next) {
                    (Some(returned), Some(next_node)) if in_time => {
                        tracing::warn!(route_id = %route.id, upstream = %node.authority(), error = %err, "upstream failed, trying next node");
                        out.body = returned;
                        node = next_node;
                    }
                    _ => {
                        let status = status_for(&err);
                        if status == StatusCode::PAYLOAD_TOO_LARGE {
                            tracing::info!(route_id = %route.id, "request body larger than client_max_body_size");
                        } else {
                            tracing::error!(
                                route_id = %route.id,
                                upstream_id = out.upstream.id.as_deref().unwrap_or(""),
                                upstream = %node.authority(),
                                error = %err,
                                "upstream request failed"
                            );
                        }
                        return (error_page(status), named(node), out.parts);
                    }
                }
            }
        }
    }
}

/// The path and query sent upstream: the normalized path, re-encoded, and the client's query. The
/// client's request target is reused when it is just that already (most requests).
fn upstream_uri(path: &str, client: &Uri) -> Uri {
    let encoded = encode_path(path);
    if client.scheme().is_none() && client.path() == encoded {
        return client.clone();
    }
    let pq = match client.query() {
        Some(q) => format!("{encoded}?{q}"),
        None => encoded.into_owned(),
    };
    Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"))
}

/// What becomes of the client's Host on the way to the upstream.
enum HostChange {
    Keep,
    Replace(HeaderValue),
    Remove,
}

impl HostChange {
    fn replaces(&self) -> bool {
        !matches!(self, HostChange::Keep)
    }

    fn value(&self) -> Option<&HeaderValue> {
        match self {
            HostChange::Replace(value) => Some(value),
            _ => None,
        }
    }
}

/// The Host the upstream gets: a plugin's (`ctx.var.upstream_host`), else what `pass_host` says.
fn upstream_host(
    host_header: Option<&HeaderValue>,
    upstream: &Upstream,
    node: &Node,
    client_host: Option<&str>,
    plugin_host: Option<&str>,
) -> HostChange {
    if let Some(host) = plugin_host {
        return HeaderValue::from_str(host).map_or(HostChange::Keep, HostChange::Replace);
    }
    // `pass_host: pass` with the client's own Host header: it stays as it is.
    if matches!(upstream.pass_host, PassHost::Pass)
        && let (Some(client), Some(current)) = (client_host, host_header)
        && current.as_bytes() == client.as_bytes()
    {
        return HostChange::Keep;
    }
    match upstream
        .host_header(node, client_host)
        .and_then(|h| HeaderValue::from_str(&h).ok())
    {
        Some(value) => HostChange::Replace(value),
        None => HostChange::Remove,
    }
}

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The headers the proxy adds for the upstream, as APISIX sets them: `X-Real-IP` and
/// `X-Forwarded-For/-Proto/-Port/-Host`, the last only when the client named a host. They replace
/// those the client sent; its `X-Forwarded-For` is extended. They are written after the request's
/// own headers rather than inserted into its map: five inserts into a map that hyper filled were a
/// twentieth of a plain request's cost.
fn forwarding_headers(
    headers: &http::HeaderMap,
    conn: ConnInfo,
    peer: &PeerHeaders,
    host_header: Option<&HeaderValue>,
    client_host: Option<&str>,
) -> ([(HeaderName, HeaderValue); 5], usize) {
    let mut xff = peer.ip.clone();
    // A scan of the few names costs less than hashing one for a lookup.
    if headers.keys().any(|name| name == X_FORWARDED_FOR) {
        let mut joined = Vec::new();
        for prev in headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter(|v| !v.is_empty())
        {
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
        }
        if !joined.is_empty() {
            joined.extend_from_slice(peer.ip.as_bytes());
            xff = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
                .unwrap_or_else(|_| peer.ip.clone());
        }
    }
    let proto = HeaderValue::from_static(if conn.tls { "https" } else { "http" });
    // Usually the Host header itself: shared, not copied.
    let host = client_host
        .map(strip_port)
        .and_then(|host| match host_header {
            Some(value) if value.as_bytes() == host.as_bytes() => Some(value.clone()),
            _ => HeaderValue::from_str(host).ok(),
        });
    let count = if host.is_some() { 5 } else { 4 };
    let added = [
        (X_REAL_IP, peer.ip.clone()),
        (X_FORWARDED_FOR, xff),
        (X_FORWARDED_PROTO, proto.clone()),
        (X_FORWARDED_PORT, peer.port.clone()),
        (X_FORWARDED_HOST, host.unwrap_or(proto)),
    ];
    (added, count)
}

fn is_forwarding_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-real-ip"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-host"
    )
}

fn content_length<B: Body>(parts: &http::request::Parts, body: &B) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| body.size_hint().exact())
}

/// The request's host as nginx's `$host` takes it: the host of an absolute-form request target (and
/// HTTP/2's `:authority`) first, else the Host header.
fn parts_host(parts: &http::request::Parts) -> Option<&str> {
    request_host(&parts.uri, parts.headers.get(header::HOST))
}

/// [`parts_host`] with the Host header already looked up.
fn request_host<'a>(uri: &'a Uri, host_header: Option<&'a HeaderValue>) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default())
        .or_else(|| host_header.and_then(|v| v.to_str().ok()))
}

fn strip_port(host: &str) -> &str {
    // Byte searches: the separators are ASCII, and `str`'s char searchers cost tenfold here.
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        return bytes
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[1..end]);
    }
    bytes
        .iter()
        .rposition(|&b| b == b':')
        .map_or(host, |colon| &host[..colon])
}

fn hash_key(on: &HashOn, vars: &RequestVars<'_>) -> Option<String> {
    match on {
        HashOn::Vars(name) => vars.var(name).map(Cow::into_owned),
        HashOn::Header(name) => vars
            .var(&format!(
                "http_{}",
                name.to_ascii_lowercase().replace('-', "_")
            ))
            .map(Cow::into_owned),
        HashOn::Cookie(name) => vars.var(&format!("cookie_{name}")).map(Cow::into_owned),
        HashOn::Consumer => None,
        HashOn::VarsCombinations(template) => Some(resolve_template(template, vars)),
    }
}

/// Substitutes `$name` and `${name}` with request variables (missing ones become empty).
fn resolve_template(template: &str, vars: &RequestVars<'_>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = rest.strip_prefix('{') {
            braced.split_once('}').unwrap_or((braced, ""))
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest.split_at(end)
        };
        if let Some(v) = vars.var(name) {
            out.push_str(&v);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// APISIX's `ctx.var` over one request, computed on demand.
pub(crate) struct RequestVars<'a> {
    req: &'a http::request::Parts,
    path: &'a str,
    conn: ConnInfo,
}

impl<'a> RequestVars<'a> {
    /// Variables of a request head, its normalized path and its connection.
    pub(crate) fn new(req: &'a http::request::Parts, path: &'a str, conn: ConnInfo) -> Self {
        RequestVars { req, path, conn }
    }
}

impl Vars for RequestVars<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(header_name) = name.strip_prefix("http_") {
            let wanted = header_name.replace('_', "-");
            return self
                .req
                .headers
                .get(wanted.as_str())
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed);
        }
        if let Some(arg) = name.strip_prefix("arg_") {
            let query = self.req.uri.query()?;
            return admin::form_pairs(query)
                .find(|(k, _)| k == arg)
                .map(|(_, v)| Cow::Owned(v));
        }
        if let Some(cookie) = name.strip_prefix("cookie_") {
            return self
                .req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == cookie).then(|| Cow::Owned(v.to_owned()))
                });
        }
        let value: Cow<'_, str> = match name {
            "uri" => Cow::Borrowed(self.path),
            "request_uri" => {
                Cow::Borrowed(self.req.uri.path_and_query().map_or("/", |pq| pq.as_str()))
            }
            "args" | "query_string" => Cow::Borrowed(self.req.uri.query()?),
            "host" => Cow::Owned(strip_port(parts_host(self.req)?).to_ascii_lowercase()),
            "request_method" => Cow::Borrowed(self.req.method.as_str()),
            "remote_addr" => Cow::Owned(admin::canonical(self.conn.peer.ip()).to_string()),
            "remote_port" => Cow::Owned(self.conn.peer.port().to_string()),
            "server_addr" => Cow::Owned(self.conn.local.ip().to_string()),
            "server_port" => Cow::Owned(self.conn.local.port().to_string()),
            "scheme" => Cow::Borrowed(if self.conn.tls { "https" } else { "http" }),
            "server_protocol" => Cow::Borrowed(match self.req.version {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            }),
            _ => return None,
        };
        Some(value)
    }
}
