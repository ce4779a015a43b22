//! APISIX's HTTP router, with lua-resty-radixtree semantics for the three `apisix.router.http` modes.
//!
//! A [`Router`] is compiled once per config change and then only read. Within one path index the order
//! is the one APISIX users rely on:
//!
//! 1. Exact paths (no `*`, and no `:` with parameters on) are looked up in a hash map first.
//! 2. Then prefix routes, found by walking the request path once down a byte trie, are tried from the
//!    longest matching prefix to the shortest. A route that fails on method, host, remote address or
//!    `vars` does not stop the search: the next candidate, possibly on a shorter prefix, is tried.
//! 3. Routes on the same path string are ordered by priority, then by longer original uri, then by
//!    insertion order.
//!
//! In host mode (the default) every route host gets its own path index, and all of them are searched
//! before the index of host-less routes, so any matching host-bound route beats every host-less one.
//! Neither the hash map nor the trie walk depends on how many routes there are.

mod expr;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::net::IpAddr;

use regex::Regex;
use rustc_hash::FxHashMap;
use serde_json::Value;

use self::expr::IpMatcher;
pub(crate) use self::expr::{Expr, ExprError};

/// Which APISIX router is used (`apisix.router.http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RouterMode {
    /// `radixtree_host_uri`: host-bound routes are searched before host-less ones.
    #[default]
    HostUri,
    /// `radixtree_uri`: hosts are one more condition of each route.
    Uri,
    /// `radixtree_uri_with_parameter`: like `Uri`, and `/:name` segments capture one path segment.
    UriWithParameter,
}

impl RouterMode {
    /// Parses the APISIX name of a router (`radixtree_host_uri`, `radixtree_uri`,
    /// `radixtree_uri_with_parameter`).
    pub(crate) fn from_apisix_name(name: &str) -> Option<Self> {
        match name {
            "radixtree_host_uri" => Some(Self::HostUri),
            "radixtree_uri" => Some(Self::Uri),
            "radixtree_uri_with_parameter" => Some(Self::UriWithParameter),
            _ => None,
        }
    }
}

/// One route as the router sees it. `hosts` is already resolved by the caller: the route's
/// `host`/`hosts`, or its service's `hosts` when the route has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RouteSpec {
    /// `uri` or `uris`.
    pub(crate) uris: Vec<String>,
    /// `host`/`hosts`; empty means any host.
    pub(crate) hosts: Vec<String>,
    /// `methods`; empty means any method.
    pub(crate) methods: Vec<String>,
    /// `remote_addr`/`remote_addrs` (addresses or CIDRs); empty means any client.
    pub(crate) remote_addrs: Vec<String>,
    /// `vars`, a lua-resty-expr expression.
    pub(crate) vars: Option<Value>,
    /// `priority`; higher first among routes on the same uri.
    pub(crate) priority: i64,
}

/// Request variables as APISIX's `ctx.var` exposes them (`uri`, `host`, `arg_name`, `http_x_foo`,
/// `cookie_x`, `remote_addr`, …). Implemented by the caller.
pub(crate) trait Vars {
    /// The variable's value, or `None` when the request does not have it.
    fn var(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// What the router needs from a request.
#[derive(Clone, Copy)]
pub(crate) struct MatchInput<'a> {
    /// The normalized, decoded path (`$uri`), matched as given.
    pub(crate) path: &'a str,
    /// The Host header without port, lower-cased (`$host`).
    pub(crate) host: Option<&'a str>,
    /// The Host header with its port (`$http_host`), for route hosts that name a port.
    pub(crate) host_with_port: Option<&'a str>,
    /// The request method.
    pub(crate) method: &'a str,
    /// The client address.
    pub(crate) remote_addr: IpAddr,
    /// Variables for `vars` expressions.
    pub(crate) vars: &'a dyn Vars,
}

/// A matched route and what its uri captured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteMatch<'r, T> {
    /// The value the route was registered with.
    pub(crate) value: &'r T,
    /// The tail captured by a bare `*` segment (APISIX `:ext`): `/aws/*` on `/aws/a/b` gives `a/b`.
    pub(crate) ext: Option<String>,
    /// `:name` segments (parameter mode only) and `*name` captures, in uri order.
    pub(crate) params: Vec<(String, String)>,
    /// The uri pattern that matched (APISIX `_path`).
    pub(crate) matched_uri: std::sync::Arc<str>,
}

/// Why a set of routes could not be compiled. `route` is the index in the list given to
/// [`Router::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouterError {
    /// The route has no uri.
    #[error("route #{route}: no uri")]
    NoUri {
        /// Index of the route.
        route: usize,
    },
    /// An empty uri.
    #[error("route #{route}: invalid uri '{uri}'")]
    InvalidUri {
        /// Index of the route.
        route: usize,
        /// The uri.
        uri: String,
    },
    /// An empty host, or a `*` anywhere but at the start.
    #[error("route #{route}: invalid host '{host}'")]
    InvalidHost {
        /// Index of the route.
        route: usize,
        /// The host.
        host: String,
    },
    /// A method APISIX does not route on.
    #[error("route #{route}: invalid method '{method}'")]
    InvalidMethod {
        /// Index of the route.
        route: usize,
        /// The method.
        method: String,
    },
    /// A remote address that is neither an IP address nor a CIDR.
    #[error("route #{route}: invalid remote_addr '{addr}'")]
    InvalidRemoteAddr {
        /// Index of the route.
        route: usize,
        /// The address.
        addr: String,
    },
    /// The `vars` expression does not compile.
    #[error("route #{route}: failed to validate the 'vars' expression: {source}")]
    InvalidVars {
        /// Index of the route.
        route: usize,
        /// What lua-resty-expr would have said.
        source: ExprError,
    },
}

/// A compiled set of routes.
pub(crate) struct Router<T> {
    routes: Vec<CompiledRoute<T>>,
    uris: Vec<UriPattern>,
    layout: Layout,
}

impl<T> Router<T> {
    /// Compiles the routes. Fails on an invalid `vars` expression, remote address, host, method or uri.
    pub(crate) fn new<S: std::borrow::Borrow<RouteSpec>>(
        specs: Vec<(S, T)>,
        mode: RouterMode,
    ) -> Result<Self, RouterError> {
        let params = mode == RouterMode::UriWithParameter;
        let mut routes = Vec::with_capacity(specs.len());
        let mut uris = Vec::new();
        let mut layout = match mode {
            RouterMode::HostUri => Layout::Hosts(Box::default()),
            RouterMode::Uri | RouterMode::UriWithParameter => Layout::Flat(PathIndex::default()),
        };
        for (index, (spec, value)) in specs.into_iter().enumerate() {
            let spec = spec.borrow();
            let route = CompiledRoute::compile(index, spec, value)?;
            if spec.uris.is_empty() {
                return Err(RouterError::NoUri { route: index });
            }
            let mut candidates = Vec::with_capacity(spec.uris.len());
            for uri in &spec.uris {
                let pattern =
                    UriPattern::compile(uri, params).ok_or_else(|| RouterError::InvalidUri {
                        route: index,
                        uri: uri.clone(),
                    })?;
                candidates.push(Candidate {
                    route: index,
                    uri: uris.len(),
                    priority: spec.priority,
                    uri_len: uri.len(),
                });
                uris.push(pattern);
            }
            match &mut layout {
                Layout::Flat(paths) => paths.insert_all(&candidates, &uris),
                Layout::Hosts(hosts) if route.hosts.is_empty() => {
                    hosts.hostless.insert_all(&candidates, &uris)
                }
                Layout::Hosts(hosts) => {
                    for host in &route.hosts {
                        hosts.index_mut(host).insert_all(&candidates, &uris);
                    }
                }
            }
            routes.push(route);
        }
        layout.finish();
        Ok(Self {
            routes,
            uris,
            layout,
        })
    }

    /// Finds the route for a request.
    pub(crate) fn find(&self, input: &MatchInput<'_>) -> Option<RouteMatch<'_, T>> {
        self.find_with(input, |_| true)
    }

    /// Like [`find`](Self::find), with one more condition checked last on each candidate that passed
    /// all others (APISIX `filter_func`). A candidate it rejects falls back like any other.
    pub(crate) fn find_with(
        &self,
        input: &MatchInput<'_>,
        mut filter: impl FnMut(&T) -> bool,
    ) -> Option<RouteMatch<'_, T>> {
        let request = Request::new(input);
        match &self.layout {
            Layout::Flat(paths) => self.search(paths, &request, true, &mut filter),
            Layout::Hosts(hosts) => hosts
                .candidates(&request)
                .find_map(|paths| self.search(paths, &request, false, &mut filter))
                .or_else(|| self.search(&hosts.hostless, &request, false, &mut filter)),
        }
    }

    /// The number of routes.
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    fn search(
        &self,
        paths: &PathIndex,
        request: &Request<'_>,
        check_hosts: bool,
        filter: &mut impl FnMut(&T) -> bool,
    ) -> Option<RouteMatch<'_, T>> {
        let exact = paths.exact.get(request.path).into_iter().flatten();
        let prefixed = paths.prefix.longest_first(request.path.bytes()).flatten();
        exact.chain(prefixed).find_map(|candidate| {
            let route = self.routes.get(candidate.route)?;
            let uri = self.uris.get(candidate.uri)?;
            if !route.accepts(request, check_hosts) {
                return None;
            }
            let (ext, params) = uri.capture(request.path)?;
            if !filter(&route.value) {
                return None;
            }
            Some(RouteMatch {
                value: &route.value,
                ext,
                params,
                matched_uri: uri.raw.clone(),
            })
        })
    }
}

/// The request fields every candidate check needs, normalized once.
struct Request<'a> {
    path: &'a str,
    host: Cow<'a, str>,
    host_with_port: Cow<'a, str>,
    method: u16,
    remote_addr: IpAddr,
    vars: &'a dyn Vars,
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl<'a> Request<'a> {
    fn new(input: &MatchInput<'a>) -> Self {
        // nginx's `$host` is never empty; an absent host still reaches `*` routes.
        let host = lowercase(input.host.unwrap_or(""));
        let host_with_port = input.host_with_port.map_or_else(|| host.clone(), lowercase);
        Self {
            path: input.path,
            host,
            host_with_port,
            method: method_bit(input.method).unwrap_or(0),
            remote_addr: input.remote_addr,
            vars: input.vars,
        }
    }
}

/// The methods a route may list, as in APISIX's route schema.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

fn method_bit(method: &str) -> Option<u16> {
    METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
}

struct CompiledRoute<T> {
    value: T,
    /// Bitmask over [`METHODS`]; 0 means any method.
    methods: u16,
    hosts: Vec<HostPattern>,
    remote_addrs: Option<IpMatcher>,
    vars: Option<Expr>,
}

impl<T> CompiledRoute<T> {
    fn compile(route: usize, spec: &RouteSpec, value: T) -> Result<Self, RouterError> {
        let mut methods = 0;
        for method in &spec.methods {
            methods |= method_bit(method).ok_or_else(|| RouterError::InvalidMethod {
                route,
                method: method.clone(),
            })?;
        }
        let hosts = spec
            .hosts
            .iter()
            .map(|host| {
                HostPattern::parse(host).ok_or_else(|| RouterError::InvalidHost {
                    route,
                    host: host.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let remote_addrs = if spec.remote_addrs.is_empty() {
            None
        } else {
            let matcher = IpMatcher::new(spec.remote_addrs.iter().map(String::as_str))
                .map_err(|addr| RouterError::InvalidRemoteAddr { route, addr })?;
            Some(matcher)
        };
        let vars = spec
            .vars
            .as_ref()
            .filter(|vars| !vars.is_null())
            .map(Expr::compile)
            .transpose()
            .map_err(|source| RouterError::InvalidVars { route, source })?;
        Ok(Self {
            value,
            methods,
            hosts,
            remote_addrs,
            vars,
        })
    }

    /// Every condition except the uri. `vars` goes last: it is the only one that reads request
    /// variables, which may be computed on demand.
    fn accepts(&self, request: &Request<'_>, check_hosts: bool) -> bool {
        (self.methods == 0 || self.methods & request.method != 0)
            && (!check_hosts
                || self.hosts.is_empty()
                || self
                    .hosts
                    .iter()
                    .any(|host| host.matches(&request.host, &request.host_with_port)))
            && self
                .remote_addrs
                .as_ref()
                .is_none_or(|matcher| matcher.contains(request.remote_addr))
            && self
                .vars
                .as_ref()
                .is_none_or(|vars| vars.eval(request.vars))
    }
}

/// A route host: exact, or a `*` suffix wildcard (`*.foo.com` matches `a.foo.com` and `b.a.foo.com`,
/// not `foo.com`; a lone `*` matches any host). A host with a `:` names a port and is compared with
/// the Host header including its port.
#[derive(Debug, Clone)]
struct HostPattern {
    /// The host, or for a wildcard the suffix after `*`.
    text: Box<str>,
    wildcard: bool,
    with_port: bool,
}

impl HostPattern {
    fn parse(host: &str) -> Option<Self> {
        let host = host.to_ascii_lowercase();
        let (text, wildcard) = match host.strip_prefix('*') {
            Some(suffix) => (suffix, true),
            None if host.is_empty() => return None,
            None => (host.as_str(), false),
        };
        if text.contains('*') {
            return None;
        }
        Some(Self {
            text: text.into(),
            wildcard,
            // `[::1]` is an address, `[::1]:8080` and `foo.com:8080` name a port.
            with_port: match text.strip_prefix('[') {
                Some(bracketed) => bracketed.contains("]:"),
                None => text.contains(':'),
            },
        })
    }

    fn matches(&self, host: &str, host_with_port: &str) -> bool {
        let target = if self.with_port { host_with_port } else { host };
        if self.wildcard {
            target.ends_with(&*self.text)
        } else {
            target == &*self.text
        }
    }
}

/// One uri of a route.
struct UriPattern {
    /// Shared with each match's `matched_uri`.
    raw: std::sync::Arc<str>,
    kind: UriKind,
}

enum UriKind {
    Exact,
    /// Matched by its prefix (everything before the first `*`, or `:` with parameters on), then by
    /// its tail.
    Prefix {
        prefix_len: usize,
        tail: Tail,
    },
}

/// What a prefix route checks after its prefix matched.
enum Tail {
    /// Nothing captured, so the prefix is enough: radixtree compares the full uri only when it has
    /// captures, which is why `/aws*` matches `/awsx`.
    Any,
    /// A last segment `*` or `*name` right at the prefix end (`/aws/*`): the rest of the path.
    Rest(Capture),
    /// Anything else with captures, checked against the whole path.
    Pattern {
        regex: Regex,
        captures: Vec<Capture>,
    },
}

enum Capture {
    Ext,
    Param(Box<str>),
}

impl Capture {
    fn named(name: &str) -> Self {
        if name.is_empty() {
            Self::Ext
        } else {
            Self::Param(name.into())
        }
    }
}

/// The characters radixtree lets a `:param` segment match (RFC 1738's URL characters, ASCII only).
const PARAM_SEGMENT: &str = r"([0-9A-Za-z_\-;:@\&=!',%\$\.\+\*]+)";

type Captured = (Option<String>, Vec<(String, String)>);

impl UriPattern {
    fn compile(raw: &str, params: bool) -> Option<Self> {
        if raw.is_empty() {
            return None;
        }
        let star = raw.find('*');
        // Only a `:` opening a segment starts a parameter. radixtree cuts the prefix at any `:`, which
        // made `/v1/models/m:predict` match every path starting with `/v1/models/m`.
        let colon = if params {
            raw.match_indices(':')
                .map(|(i, _)| i)
                .find(|&i| i == 0 || raw.as_bytes().get(i - 1) == Some(&b'/'))
        } else {
            None
        };
        let prefix_len = match (star, colon) {
            (None, None) => {
                return Some(Self {
                    raw: raw.into(),
                    kind: UriKind::Exact,
                });
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        Some(Self {
            raw: raw.into(),
            kind: UriKind::Prefix {
                prefix_len,
                tail: Tail::compile(raw, prefix_len, params)?,
            },
        })
    }

    fn capture(&self, path: &str) -> Option<Captured> {
        let (prefix_len, tail) = match &self.kind {
            UriKind::Exact => return Some((None, Vec::new())),
            UriKind::Prefix { prefix_len, tail } => (*prefix_len, tail),
        };
        match tail {
            Tail::Any => Some((None, Vec::new())),
            Tail::Rest(capture) => {
                let rest = path.get(prefix_len..)?.to_owned();
                Some(match capture {
                    Capture::Ext => (Some(rest), Vec::new()),
                    Capture::Param(name) => (None, vec![(name.to_string(), rest)]),
                })
            }
            Tail::Pattern { regex, captures } => {
                let found = regex.captures(path)?;
                let mut ext = None;
                let mut params = Vec::new();
                for (i, capture) in captures.iter().enumerate() {
                    let Some(value) = found.get(i + 1) else {
                        continue;
                    };
                    match capture {
                        Capture::Ext => ext = Some(value.as_str().to_owned()),
                        Capture::Param(name) => {
                            params.push((name.to_string(), value.as_str().to_owned()))
                        }
                    }
                }
                Some((ext, params))
            }
        }
    }
}

impl Tail {
    fn compile(raw: &str, prefix_len: usize, params: bool) -> Option<Self> {
        let is_capture =
            |segment: &str| segment.starts_with('*') || (params && segment.starts_with(':'));
        if !raw.split('/').any(is_capture) {
            return Some(Self::Any);
        }
        let rest = raw.get(prefix_len..)?;
        let at_segment_start = prefix_len == 0 || raw.as_bytes().get(prefix_len - 1) == Some(&b'/');
        if let Some(name) = rest.strip_prefix('*')
            && at_segment_start
            && !rest.contains('/')
        {
            return Some(Self::Rest(Capture::named(name)));
        }
        // radixtree builds the same regex (segments joined by `/`), except that it leaves literal
        // segments unescaped; here they are literal.
        let mut pattern = String::from("(?s)^");
        let mut captures = Vec::new();
        for (i, segment) in raw.split('/').enumerate() {
            if i > 0 {
                pattern.push('/');
            }
            if let Some(name) = segment.strip_prefix('*') {
                pattern.push_str("(.*)");
                captures.push(Capture::named(name));
            } else if let Some(name) = segment.strip_prefix(':')
                && params
            {
                pattern.push_str(PARAM_SEGMENT);
                captures.push(Capture::Param(name.into()));
            } else {
                pattern.push_str(&regex::escape(segment));
            }
        }
        pattern.push('$');
        let regex = Regex::new(&pattern).ok()?;
        Some(Self::Pattern { regex, captures })
    }
}

/// A route and one of its uris, in the order candidates on the same path are tried.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    route: usize,
    uri: usize,
    priority: i64,
    uri_len: usize,
}

/// The exact paths and prefixes of one set of routes (all host-less routes, or those of one host).
///
/// The maps here hash with FxHash rather than SipHash: their keys are the configured paths and
/// hosts, and a request only looks up, so it cannot pile keys into one bucket.
#[derive(Default)]
struct PathIndex {
    exact: FxHashMap<Box<str>, Vec<Candidate>>,
    prefix: ByteTrie<Vec<Candidate>>,
}

impl PathIndex {
    fn insert_all(&mut self, candidates: &[Candidate], uris: &[UriPattern]) {
        for candidate in candidates {
            let Some(uri) = uris.get(candidate.uri) else {
                continue;
            };
            let list = match uri.kind {
                UriKind::Exact => self.exact.entry(Box::from(&*uri.raw)).or_default(),
                UriKind::Prefix { prefix_len, .. } => {
                    self.prefix.value_mut(uri.raw.bytes().take(prefix_len))
                }
            };
            list.push(*candidate);
        }
    }

    fn finish(&mut self) {
        // Stable, so insertion order breaks the remaining ties, as radixtree's ordered insert does.
        let order = |c: &Candidate| (Reverse(c.priority), Reverse(c.uri_len));
        for list in self.exact.values_mut() {
            list.sort_by_key(order);
        }
        for list in self.prefix.values_mut() {
            list.sort_by_key(order);
        }
        self.prefix.finish();
    }
}

enum Layout {
    Flat(PathIndex),
    Hosts(Box<HostIndex>),
}

impl Layout {
    fn finish(&mut self) {
        match self {
            Self::Flat(paths) => paths.finish(),
            Self::Hosts(hosts) => hosts.finish(),
        }
    }
}

/// Host mode: one path index per route host. Wildcard hosts live in tries keyed on the reversed
/// suffix, so walking the reversed request host yields them longest suffix first.
#[derive(Default)]
struct HostIndex {
    exact: FxHashMap<Box<str>, PathIndex>,
    exact_with_port: FxHashMap<Box<str>, PathIndex>,
    wildcard: ByteTrie<PathIndex>,
    wildcard_with_port: ByteTrie<PathIndex>,
    hostless: PathIndex,
}

impl HostIndex {
    fn index_mut(&mut self, host: &HostPattern) -> &mut PathIndex {
        match (host.wildcard, host.with_port) {
            (false, false) => self.exact.entry(host.text.clone()).or_default(),
            (false, true) => self.exact_with_port.entry(host.text.clone()).or_default(),
            (true, false) => self.wildcard.value_mut(host.text.bytes().rev()),
            (true, true) => self.wildcard_with_port.value_mut(host.text.bytes().rev()),
        }
    }

    /// The host-bound path indexes for a request, most specific first: exact before wildcard, a host
    /// naming the port before one without.
    fn candidates<'s>(&'s self, request: &'s Request<'_>) -> impl Iterator<Item = &'s PathIndex> {
        let host = &*request.host;
        let host_with_port = &*request.host_with_port;
        self.exact_with_port
            .get(host_with_port)
            .into_iter()
            .chain(self.exact.get(host))
            .chain(
                self.wildcard_with_port
                    .longest_first(host_with_port.bytes().rev()),
            )
            .chain(self.wildcard.longest_first(host.bytes().rev()))
    }

    fn finish(&mut self) {
        let maps = self
            .exact
            .values_mut()
            .chain(self.exact_with_port.values_mut());
        let tries = self
            .wildcard
            .values_mut()
            .chain(self.wildcard_with_port.values_mut());
        for paths in maps.chain(tries) {
            paths.finish();
        }
        self.wildcard.finish();
        self.wildcard_with_port.finish();
        self.hostless.finish();
    }
}

const NO_NODE: u32 = u32::MAX;

/// A byte trie whose lookups yield the values stored on every prefix of a key, longest first.
struct ByteTrie<V> {
    nodes: Vec<TrieNode>,
    values: Vec<V>,
}

struct TrieNode {
    /// Child edge bytes, sorted, parallel to `children`.
    labels: Vec<u8>,
    children: Vec<u32>,
    parent: u32,
    value: u32,
    /// The nearest strict ancestor holding a value, set by `finish`.
    up: u32,
}

impl TrieNode {
    fn new(parent: u32) -> Self {
        Self {
            labels: Vec::new(),
            children: Vec::new(),
            parent,
            value: NO_NODE,
            up: NO_NODE,
        }
    }

    fn child(&self, byte: u8) -> Option<u32> {
        let i = self.labels.binary_search(&byte).ok()?;
        self.children.get(i).copied()
    }
}

impl<V> Default for ByteTrie<V> {
    fn default() -> Self {
        Self {
            nodes: vec![TrieNode::new(NO_NODE)],
            values: Vec::new(),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    // More than 4 billion trie nodes would not fit in memory anyway.
    u32::try_from(n).unwrap_or(NO_NODE)
}

impl<V: Default> ByteTrie<V> {
    fn value_mut(&mut self, key: impl IntoIterator<Item = u8>) -> &mut V {
        let mut node = 0usize;
        for byte in key {
            let next_id = to_u32(self.nodes.len());
            let current = &mut self.nodes[node];
            node = match current.labels.binary_search(&byte) {
                Ok(i) => current.children[i] as usize,
                Err(i) => {
                    current.labels.insert(i, byte);
                    current.children.insert(i, next_id);
                    self.nodes.push(TrieNode::new(to_u32(node)));
                    next_id as usize
                }
            };
        }
        if self.nodes[node].value == NO_NODE {
            self.nodes[node].value = to_u32(self.values.len());
            self.values.push(V::default());
        }
        let value = self.nodes[node].value as usize;
        &mut self.values[value]
    }
}

impl<V> ByteTrie<V> {
    fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut()
    }

    /// Links every node to its nearest valued ancestor. A parent is always created before its
    /// children, so one pass in creation order sees each parent finished.
    fn finish(&mut self) {
        for i in 1..self.nodes.len() {
            let parent = self.nodes[i].parent as usize;
            let up = match self.nodes.get(parent) {
                Some(p) if p.value != NO_NODE => to_u32(parent),
                Some(p) => p.up,
                None => NO_NODE,
            };
            self.nodes[i].up = up;
        }
    }

    /// The values on every prefix of `key` (including the empty one and `key` itself), longest first.
    fn longest_first(&self, key: impl IntoIterator<Item = u8>) -> LongestFirst<'_, V> {
        let mut node = 0u32;
        let mut deepest = match self.nodes.first() {
            Some(root) if root.value != NO_NODE => 0,
            _ => NO_NODE,
        };
        for byte in key {
            let Some(next) = self.nodes.get(node as usize).and_then(|n| n.child(byte)) else {
                break;
            };
            node = next;
            if self
                .nodes
                .get(node as usize)
                .is_some_and(|n| n.value != NO_NODE)
            {
                deepest = node;
            }
        }
        LongestFirst {
            trie: self,
            node: deepest,
        }
    }
}

struct LongestFirst<'t, V> {
    trie: &'t ByteTrie<V>,
    node: u32,
}

impl<'t, V> Iterator for LongestFirst<'t, V> {
    type Item = &'t V;

    fn next(&mut self) -> Option<&'t V> {
        let node = self.trie.nodes.get(self.node as usize)?;
        self.node = node.up;
        self.trie.values.get(node.value as usize)
    }
}
