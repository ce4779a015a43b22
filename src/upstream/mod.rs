//! Upstreams: the parsed APISIX upstream object, node selection, and the pooled client that reaches them.
//!
//! Parsing and balancing happen when a config snapshot is built; only `pool` touches sockets.

mod balancer;
mod h1;
pub(crate) mod pool;

use std::time::Duration;

use serde_json::Value;

pub(crate) use balancer::{Balancer, HashOn};

/// An upstream node, as listed in `nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Hostname or IP literal (IPv6 without brackets); shared with the connection pool's keys.
    pub(crate) host: std::sync::Arc<str>,
    pub(crate) port: u16,
    pub(crate) weight: u32,
    pub(crate) priority: i64,
}

impl Node {
    /// `host:port`, bracketing IPv6 literals, as used in `Host` headers and logs.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// What the `Host` header sent upstream is (APISIX `pass_host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PassHost {
    /// The client's Host.
    Pass,
    /// The picked node's host (with its port when not the scheme's default).
    Node,
    /// A fixed value (`upstream_host`).
    Rewrite(String),
}

/// Connect, send and read timeouts (APISIX `timeout`, seconds in JSON).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) send: Duration,
    pub(crate) read: Duration,
}

impl Default for Timeouts {
    /// nginx's `proxy_*_timeout` defaults, which APISIX keeps.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(60),
            send: Duration::from_secs(60),
            read: Duration::from_secs(60),
        }
    }
}

/// A duration in seconds from configuration or Lua, capped at about 300 years: beyond that a
/// `Duration` (and the deadlines computed from it) would overflow, and no timeout means more.
pub(crate) fn seconds(secs: f64) -> Duration {
    const MAX_SECS: f64 = 1e10;
    Duration::from_secs_f64(secs.clamp(0.0, MAX_SECS))
}

impl Timeouts {
    /// Reads `{connect, send, read}` in seconds; a missing field keeps `base`'s value.
    pub(crate) fn from_json(value: &Value, base: Timeouts) -> Timeouts {
        let secs = |name: &str, dflt: Duration| {
            value
                .get(name)
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(dflt, seconds)
        };
        Timeouts {
            connect: secs("connect", base.connect),
            send: secs("send", base.send),
            read: secs("read", base.read),
        }
    }
}

/// Upstream keep-alive pool settings (`keepalive_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeepalivePool {
    /// Idle connections kept per (scheme, host, port) on each worker.
    pub(crate) size: usize,
    pub(crate) idle_timeout: Duration,
    /// Requests served by one connection before it is closed.
    pub(crate) requests: u64,
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000,
        }
    }
}

/// A parsed upstream, ready to pick nodes from. Built once per config snapshot.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The upstream's id when it is a stored object, `None` when inline in a route or service.
    pub(crate) id: Option<String>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) balancer: Balancer,
    pub(crate) scheme: Scheme,
    pub(crate) pass_host: PassHost,
    pub(crate) timeouts: Timeouts,
    /// Extra attempts after the first; APISIX's default is one per remaining node.
    pub(crate) retries: usize,
    pub(crate) retry_timeout: Option<Duration>,
    pub(crate) keepalive: KeepalivePool,
    pub(crate) tls_verify: bool,
}

/// Why an upstream object cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("invalid upstream node \"{node}\": {reason}")]
    BadNode { node: String, reason: &'static str },
    #[error("unsupported upstream scheme \"{0}\"")]
    UnsupportedScheme(String),
    #[error("missing upstream_host when pass_host is rewrite")]
    MissingUpstreamHost,
}

impl Upstream {
    /// Parses an upstream object that already passed the schema.
    pub(crate) fn from_json(id: Option<String>, value: &Value) -> Result<Upstream, UpstreamError> {
        let scheme = match value
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or("http")
        {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(UpstreamError::UnsupportedScheme(other.to_owned())),
        };
        let nodes = parse_nodes(value.get("nodes"), scheme)?;
        let pass_host = match value
            .get("pass_host")
            .and_then(Value::as_str)
            .unwrap_or("pass")
        {
            "node" => PassHost::Node,
            "rewrite" => PassHost::Rewrite(
                value
                    .get("upstream_host")
                    .and_then(Value::as_str)
                    .ok_or(UpstreamError::MissingUpstreamHost)?
                    .to_owned(),
            ),
            _ => PassHost::Pass,
        };
        let timeouts = value.get("timeout").map_or_else(Timeouts::default, |t| {
            Timeouts::from_json(t, Timeouts::default())
        });
        let usable = nodes.iter().filter(|n| n.weight > 0).count();
        let retries = value
            .get("retries")
            .and_then(Value::as_u64)
            .map_or(usable.saturating_sub(1), |r| r as usize);
        let retry_timeout = value
            .get("retry_timeout")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(seconds);
        let mut keepalive = KeepalivePool::default();
        if let Some(pool) = value.get("keepalive_pool") {
            if let Some(size) = pool.get("size").and_then(Value::as_u64) {
                keepalive.size = size as usize;
            }
            if let Some(idle) = pool.get("idle_timeout").and_then(Value::as_f64) {
                keepalive.idle_timeout = seconds(idle);
            }
            if let Some(requests) = pool.get("requests").and_then(Value::as_u64) {
                keepalive.requests = requests.max(1);
            }
        }
        let tls_verify = value
            .pointer("/tls/verify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let balancer = Balancer::new(value, &nodes);
        Ok(Upstream {
            id,
            nodes,
            balancer,
            scheme,
            pass_host,
            timeouts,
            retries,
            retry_timeout,
            keepalive,
            tls_verify,
        })
    }

    /// The nodes to try for one request, in order: the balancer's pick first, then the other nodes of
    /// the same priority, then lower priorities (APISIX tries lower priorities only after failures).
    pub(crate) fn attempt_order(&self, hash_key: Option<&[u8]>) -> Vec<Node> {
        let Some(first) = self.balancer.pick(hash_key) else {
            return Vec::new();
        };
        let others = self.retries.min(self.nodes.len() - 1);
        let mut order = Vec::with_capacity(1 + others);
        order.push(self.nodes[first].clone());
        if others == 0 {
            return order;
        }
        let mut rest: Vec<(usize, &Node)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != first && n.weight > 0)
            .collect();
        // Rotate by the first pick so retries spread over the remaining nodes.
        rest.sort_by_key(|(i, n)| {
            (
                std::cmp::Reverse(n.priority),
                (*i + self.nodes.len() - first) % self.nodes.len(),
            )
        });
        order.extend(rest.into_iter().map(|(_, n)| n.clone()).take(self.retries));
        order
    }

    /// The `Host` header for a request to `node`, given the client's Host.
    pub(crate) fn host_header(&self, node: &Node, client_host: Option<&str>) -> Option<String> {
        match &self.pass_host {
            PassHost::Pass => client_host.map(str::to_owned),
            PassHost::Rewrite(host) => Some(host.clone()),
            PassHost::Node => Some(if node.port == self.scheme.default_port() {
                node.host.to_string()
            } else {
                node.authority()
            }),
        }
    }
}

fn parse_nodes(nodes: Option<&Value>, scheme: Scheme) -> Result<Vec<Node>, UpstreamError> {
    let mut out = Vec::new();
    match nodes {
        Some(Value::Object(map)) => {
            for (addr, weight) in map {
                let (host, port) = split_host_port(addr, scheme)?;
                out.push(Node {
                    host: host.into(),
                    port,
                    weight: weight.as_u64().unwrap_or(1).min(u32::MAX as u64) as u32,
                    priority: 0,
                });
            }
        }
        Some(Value::Array(list)) => {
            for node in list {
                let host = node.get("host").and_then(Value::as_str).unwrap_or_default();
                let (host, parsed_port) = split_host_port(host, scheme)?;
                let port = match node.get("port").and_then(Value::as_u64) {
                    Some(p) => u16::try_from(p).map_err(|_| UpstreamError::BadNode {
                        node: host.clone(),
                        reason: "port out of range",
                    })?,
                    None => parsed_port,
                };
                out.push(Node {
                    host: host.into(),
                    port,
                    weight: node
                        .get("weight")
                        .and_then(Value::as_u64)
                        .unwrap_or(1)
                        .min(u32::MAX as u64) as u32,
                    priority: node.get("priority").and_then(Value::as_i64).unwrap_or(0),
                });
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Splits `host:port`, `[v6]:port`, `host` (scheme's default port).
fn split_host_port(addr: &str, scheme: Scheme) -> Result<(String, u16), UpstreamError> {
    let bad = |reason| UpstreamError::BadNode {
        node: addr.to_owned(),
        reason,
    };
    if addr.is_empty() {
        return Err(bad("empty host"));
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None if tail.is_empty() => scheme.default_port(),
            None => return Err(bad("invalid port")),
        };
        return Ok((host.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((host, _)) if host.contains(':') => Ok((addr.to_owned(), scheme.default_port())),
        Some((host, port)) => Ok((
            host.to_owned(),
            port.parse().map_err(|_| bad("invalid port"))?,
        )),
        None => Ok((addr.to_owned(), scheme.default_port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upstream(v: Value) -> Upstream {
        Upstream::from_json(None, &v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn nodes_in_object_and_array_form() {
        let a = upstream(json!({"nodes": {"127.0.0.1:1980": 2, "[::1]:81": 1, "example.com": 1}}));
        assert_eq!(a.nodes.len(), 3);
        assert!(a.nodes.iter().any(|n| &*n.host == "::1" && n.port == 81));
        assert!(
            a.nodes
                .iter()
                .any(|n| &*n.host == "example.com" && n.port == 80)
        );
        let b = upstream(
            json!({"scheme": "https", "nodes": [{"host": "a.com", "port": 8443, "weight": 3, "priority": -1}, {"host": "b.com", "weight": 1}]}),
        );
        assert_eq!(b.nodes[0].port, 8443);
        assert_eq!(b.nodes[1].port, 443);
        assert_eq!(b.nodes[0].priority, -1);
    }

    #[test]
    fn default_retries_cover_every_other_node() {
        let u = upstream(json!({"nodes": {"a:1": 1, "b:1": 1, "c:1": 1}}));
        assert_eq!(u.retries, 2);
        assert_eq!(u.attempt_order(None).len(), 3);
        let u = upstream(json!({"retries": 0, "nodes": {"a:1": 1, "b:1": 1}}));
        assert_eq!(u.attempt_order(None).len(), 1);
    }

    #[test]
    fn lower_priority_nodes_come_last() {
        let u = upstream(
            json!({"nodes": [{"host": "backup", "port": 1, "weight": 1, "priority": -1}, {"host": "main", "port": 1, "weight": 1}]}),
        );
        for _ in 0..4 {
            let order = u.attempt_order(None);
            assert_eq!(&*order[0].host, "main");
            assert_eq!(&*order[1].host, "backup");
        }
    }

    #[test]
    fn pass_host_modes() {
        let node = Node {
            host: "10.0.0.1".into(),
            port: 8080,
            weight: 1,
            priority: 0,
        };
        let pass = upstream(json!({"nodes": {}}));
        assert_eq!(
            pass.host_header(&node, Some("client.com")).as_deref(),
            Some("client.com")
        );
        let by_node = upstream(json!({"pass_host": "node", "nodes": {}}));
        assert_eq!(
            by_node.host_header(&node, Some("client.com")).as_deref(),
            Some("10.0.0.1:8080")
        );
        let rewrite =
            upstream(json!({"pass_host": "rewrite", "upstream_host": "api.internal", "nodes": {}}));
        assert_eq!(
            rewrite.host_header(&node, Some("client.com")).as_deref(),
            Some("api.internal")
        );
    }

    #[test]
    fn timeouts_in_seconds_with_defaults() {
        let u = upstream(json!({"timeout": {"connect": 0.5, "read": 3}, "nodes": {}}));
        assert_eq!(u.timeouts.connect, Duration::from_millis(500));
        assert_eq!(u.timeouts.read, Duration::from_secs(3));
        assert_eq!(u.timeouts.send, Duration::from_secs(60));
    }
}
