//! Router construction and matching from arbitrary route sets and requests.
//!
//! Uris, hosts and paths are built from small token tables so that routes and requests collide
//! often (random strings almost never would); every field also has a free-form variant. `vars` is a
//! lua-resty-expr expression built from a template or parsed from arbitrary JSON text.
//!
//! Properties: no panic while compiling or matching; matching is deterministic (the same request
//! twice, and a second router compiled from the same routes, give the same answer); a match is
//! consistent with the route it names (the uri is one of the route's, an exact uri equals the path,
//! a prefix uri's fixed part starts the path, the method is one the route lists); and a route
//! with no condition but an exact uri equal to the path is never missed.

#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moongate::fuzzing::{CompiledRoutes, RequestInput, RouteInput};

const MODES: [&str; 3] = [
    "radixtree_host_uri",
    "radixtree_uri",
    "radixtree_uri_with_parameter",
];
const PATH_TOKENS: &[&str] = &[
    "/", "a", "b", "ab", "*", ":", ":id", "*name", ".", "-", "%", "é", "/a", "/b", "/*", "?",
    "x:y", "~", "//",
];
const HOSTS: &[&str] = &[
    "a.com",
    "A.com",
    "*.a.com",
    "b.a.com",
    "*",
    "a.com:8080",
    "[::1]",
    "[::1]:80",
    "*a",
    "",
    "a*b",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE", "get",
    "",
];
const ADDRS: &[&str] = &[
    "127.0.0.1",
    "10.0.0.0/8",
    "::1",
    "::/0",
    "0.0.0.0/0",
    "1.2.3.4/33",
    "x",
    "fe80::1%eth0",
    "::ffff:127.0.0.1",
];
const VAR_NAMES: &[&str] = &["arg_a", "http_x", "uri", "host", "cookie_c", "remote_addr"];
const VAR_VALUES: &[&str] = &[
    "1",
    "a",
    "",
    "10",
    "1e3",
    "-0",
    "nan",
    "127.0.0.1",
    "a.*",
    "[",
    "/a",
];
const OPS: &[&str] = &[
    "==", "~=", ">", "<", ">=", "<=", "~~", "~*", "in", "has", "ipmatch", "!", "AND", "OR", "=",
];

#[derive(Arbitrary, Debug)]
enum Text {
    Tokens(Vec<u8>),
    Free(String),
}

#[derive(Arbitrary, Debug)]
enum Vars {
    Rule {
        var: u8,
        not: bool,
        op: u8,
        value: u8,
    },
    Json(String),
}

#[derive(Arbitrary, Debug)]
struct Route {
    uris: Vec<Text>,
    hosts: Vec<u8>,
    methods: Vec<u8>,
    remote_addrs: Vec<u8>,
    vars: Option<Vars>,
    priority: i8,
}

#[derive(Arbitrary, Debug)]
struct Request {
    path: Text,
    host: Option<u8>,
    port: Option<u16>,
    method: u8,
    remote_addr: IpAddr,
    vars: Vec<(u8, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    routes: Vec<Route>,
    requests: Vec<Request>,
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn text(t: &Text, tokens: &[&str]) -> String {
    match t {
        Text::Tokens(bytes) => bytes.iter().map(|b| pick(tokens, *b)).collect(),
        Text::Free(s) => s.clone(),
    }
}

fn vars(v: &Vars) -> Option<serde_json::Value> {
    match v {
        Vars::Rule {
            var,
            not,
            op,
            value,
        } => {
            let var = pick(VAR_NAMES, *var);
            let op = pick(OPS, *op);
            let value = match op {
                "in" | "has" | "ipmatch" => serde_json::json!([pick(VAR_VALUES, *value)]),
                _ => serde_json::json!(pick(VAR_VALUES, *value)),
            };
            Some(if *not {
                serde_json::json!([[var, "!", op, value]])
            } else {
                serde_json::json!([[var, op, value]])
            })
        }
        Vars::Json(text) => serde_json::from_str(text).ok(),
    }
}

fuzz_target!(|input: Input| {
    let routes: Vec<RouteInput> = input
        .routes
        .iter()
        .take(64)
        .map(|r| RouteInput {
            uris: r
                .uris
                .iter()
                .take(4)
                .map(|u| text(u, PATH_TOKENS))
                .collect(),
            hosts: r
                .hosts
                .iter()
                .take(4)
                .map(|h| pick(HOSTS, *h).to_owned())
                .collect(),
            methods: r
                .methods
                .iter()
                .take(4)
                .map(|m| pick(METHODS, *m).to_owned())
                .collect(),
            remote_addrs: r
                .remote_addrs
                .iter()
                .take(4)
                .map(|a| pick(ADDRS, *a).to_owned())
                .collect(),
            vars: r.vars.as_ref().and_then(vars),
            priority: i64::from(r.priority),
        })
        .collect();
    let mode = MODES[usize::from(input.mode % 3)];
    let Ok(router) = CompiledRoutes::new(&routes, mode) else {
        return;
    };
    let again = CompiledRoutes::new(&routes, mode).expect("the same routes compile twice");
    for request in input.requests.iter().take(16) {
        let path = text(&request.path, PATH_TOKENS);
        let host = request.host.map(|h| pick(HOSTS, h).to_ascii_lowercase());
        let host_with_port = match (&host, request.port) {
            (Some(host), Some(port)) => Some(format!("{host}:{port}")),
            (host, _) => host.clone(),
        };
        let request_vars: Vec<(String, String)> = request
            .vars
            .iter()
            .map(|(n, v)| {
                (
                    pick(VAR_NAMES, *n).to_owned(),
                    pick(VAR_VALUES, *v).to_owned(),
                )
            })
            .collect();
        let method = pick(METHODS, request.method);
        let req = RequestInput {
            path: &path,
            host: host.as_deref(),
            host_with_port: host_with_port.as_deref(),
            method,
            remote_addr: request.remote_addr,
            vars: &request_vars,
        };
        let found = router.find(&req);
        assert_eq!(found, router.find(&req), "matching is not deterministic");
        assert_eq!(
            found,
            again.find(&req),
            "two compilations of one route set disagree"
        );
        match &found {
            Some(m) => {
                let route = routes.get(m.route).expect("the match names a route");
                assert!(
                    route.uris.contains(&m.matched_uri),
                    "{m:?} is not a uri of {route:?}"
                );
                assert!(
                    route.methods.is_empty() || route.methods.iter().any(|r| r == method),
                    "{method} matched a route for {:?}",
                    route.methods
                );
                let uri = m.matched_uri.as_str();
                if !uri.contains(':') {
                    match uri.find('*') {
                        None => assert_eq!(uri, path, "an exact uri matched another path"),
                        Some(star) => assert!(
                            path.starts_with(&uri[..star]),
                            "{uri} matched {path}, which lacks its prefix"
                        ),
                    }
                }
            }
            None => {
                let unconditional = routes.iter().any(|r| {
                    r.hosts.is_empty()
                        && r.methods.is_empty()
                        && r.remote_addrs.is_empty()
                        && r.vars.is_none()
                        && r.uris
                            .iter()
                            .any(|u| *u == path && !u.contains('*') && !u.contains(':'))
                });
                assert!(!unconditional, "{path} missed a route with no condition");
            }
        }
    }
});
