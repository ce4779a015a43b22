use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::expr::lua_tonumber;
use super::*;

struct TestVars(Vec<(String, String)>);

impl Vars for TestVars {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| Cow::Borrowed(value.as_str()))
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn route(uris: &[&str]) -> RouteSpec {
    RouteSpec {
        uris: strings(uris),
        ..RouteSpec::default()
    }
}

impl RouteSpec {
    fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = strings(hosts);
        self
    }

    fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = strings(methods);
        self
    }

    fn remote_addrs(mut self, addrs: &[&str]) -> Self {
        self.remote_addrs = strings(addrs);
        self
    }

    fn vars(mut self, vars: Value) -> Self {
        self.vars = Some(vars);
        self
    }

    fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }
}

fn router(mode: RouterMode, routes: Vec<(RouteSpec, &'static str)>) -> Router<&'static str> {
    match Router::new(routes, mode) {
        Ok(router) => router,
        Err(err) => panic!("routes should compile: {err}"),
    }
}

fn host_router(routes: Vec<(RouteSpec, &'static str)>) -> Router<&'static str> {
    router(RouterMode::HostUri, routes)
}

struct Req {
    path: String,
    host: Option<String>,
    host_with_port: Option<String>,
    method: String,
    remote_addr: IpAddr,
    vars: TestVars,
}

fn get(path: &str) -> Req {
    Req {
        path: path.to_owned(),
        host: None,
        host_with_port: None,
        method: "GET".to_owned(),
        remote_addr: IpAddr::from([127, 0, 0, 1]),
        vars: TestVars(Vec::new()),
    }
}

impl Req {
    fn host(mut self, host_with_port: &str) -> Self {
        let host = match host_with_port.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => host_with_port,
        };
        self.host = Some(host.to_ascii_lowercase());
        self.host_with_port = Some(host_with_port.to_owned());
        self
    }

    fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    fn from(mut self, addr: &str) -> Self {
        self.remote_addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad test address {addr}"));
        self
    }

    fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.0.push((name.to_owned(), value.to_owned()));
        self
    }

    fn input(&self) -> MatchInput<'_> {
        MatchInput {
            path: &self.path,
            host: self.host.as_deref(),
            host_with_port: self.host_with_port.as_deref(),
            method: &self.method,
            remote_addr: self.remote_addr,
            vars: &self.vars,
        }
    }

    fn matched<'r>(
        &self,
        router: &'r Router<&'static str>,
    ) -> Option<RouteMatch<'r, &'static str>> {
        router.find(&self.input())
    }

    fn route(&self, router: &Router<&'static str>) -> Option<&'static str> {
        self.matched(router).map(|m| *m.value)
    }
}

// ---- paths -------------------------------------------------------------------------------------

#[test]
fn exact_beats_prefix() {
    let r = host_router(vec![
        (route(&["/a/*"]), "prefix"),
        (route(&["/a/b"]), "exact"),
    ]);
    assert_eq!(get("/a/b").route(&r), Some("exact"));
    assert_eq!(get("/a/c").route(&r), Some("prefix"));
}

#[test]
fn exact_falls_back_to_prefix_when_its_conditions_fail() {
    let r = host_router(vec![
        (route(&["/a/*"]), "prefix"),
        (route(&["/a/b"]).methods(&["POST"]), "exact"),
    ]);
    assert_eq!(get("/a/b").route(&r), Some("prefix"));
    assert_eq!(get("/a/b").method("POST").route(&r), Some("exact"));
}

#[test]
fn exact_path_does_not_match_longer_or_shorter_paths() {
    let r = host_router(vec![(route(&["/a/b"]), "exact")]);
    assert_eq!(get("/a/b/").route(&r), None);
    assert_eq!(get("/a").route(&r), None);
}

#[test]
fn longer_prefix_tried_first_then_falls_back_when_method_fails() {
    let r = host_router(vec![
        (route(&["/blog/*"]), "short"),
        (route(&["/blog/foo/*"]).methods(&["POST"]), "long"),
    ]);
    assert_eq!(get("/blog/foo/x").method("POST").route(&r), Some("long"));
    assert_eq!(get("/blog/foo/x").route(&r), Some("short"));
}

#[test]
fn longest_of_three_prefixes_wins() {
    let r = host_router(vec![
        (route(&["/blog/*"]), "blog"),
        (route(&["/blog/foo/a/*"]), "foo-a"),
        (route(&["/blog/foo/*"]), "foo"),
    ]);
    assert_eq!(get("/blog/foo/a/b/c").route(&r), Some("foo-a"));
    assert_eq!(get("/blog/foo/b").route(&r), Some("foo"));
    assert_eq!(get("/blog/x").route(&r), Some("blog"));
}

#[test]
fn falls_back_to_shorter_prefix_when_vars_or_remote_addr_fail() {
    let r = host_router(vec![
        (route(&["/*"]), "root"),
        (route(&["/api/*"]).vars(json!([["arg_v", "==", "2"]])), "v2"),
        (
            route(&["/api/v1/*"]).remote_addrs(&["10.0.0.0/8"]),
            "internal",
        ),
    ]);
    assert_eq!(
        get("/api/v1/x").from("10.1.2.3").route(&r),
        Some("internal")
    );
    assert_eq!(get("/api/v1/x").var("arg_v", "2").route(&r), Some("v2"));
    assert_eq!(get("/api/v1/x").route(&r), Some("root"));
}

#[test]
fn aws_star_does_not_match_aws() {
    let r = host_router(vec![(route(&["/aws/*"]), "aws")]);
    assert_eq!(get("/aws").route(&r), None);
    let m = get("/aws/").matched(&r);
    assert_eq!(
        m.map(|m| (*m.value, m.ext)),
        Some(("aws", Some(String::new())))
    );
}

#[test]
fn star_right_after_a_word_matches_any_continuation() {
    let r = host_router(vec![(route(&["/aws*"]), "aws")]);
    for path in ["/aws", "/awsx", "/aws/y"] {
        let m = get(path).matched(&r);
        assert_eq!(m.map(|m| (*m.value, m.ext)), Some(("aws", None)), "{path}");
    }
    assert_eq!(get("/aw").route(&r), None);
}

#[test]
fn ext_capture() {
    let r = host_router(vec![(route(&["/aws/*"]), "aws")]);
    let m = get("/aws/a/b").matched(&r);
    assert_eq!(m.as_ref().and_then(|m| m.ext.as_deref()), Some("a/b"));
    assert_eq!(m.map(|m| m.params), Some(Vec::new()));
}

#[test]
fn named_star_captures_into_params() {
    let r = host_router(vec![(route(&["/files/*path"]), "files")]);
    let m = get("/files/a/b.txt").matched(&r);
    assert_eq!(m.as_ref().and_then(|m| m.ext.clone()), None);
    assert_eq!(
        m.map(|m| m.params),
        Some(vec![("path".to_owned(), "a/b.txt".to_owned())])
    );
}

#[test]
fn star_segment_in_the_middle_must_match_the_rest_of_the_uri() {
    let r = host_router(vec![(route(&["/files/*path/meta"]), "meta")]);
    let m = get("/files/a/b/meta").matched(&r);
    assert_eq!(
        m.map(|m| m.params),
        Some(vec![("path".to_owned(), "a/b".to_owned())])
    );
    assert_eq!(get("/files/a/b").route(&r), None);
}

#[test]
fn lone_star_matches_every_path() {
    let r = host_router(vec![(route(&["*"]), "all")]);
    let m = get("/x/y").matched(&r);
    assert_eq!(
        m.map(|m| (*m.value, m.ext)),
        Some(("all", Some("/x/y".to_owned())))
    );
}

#[test]
fn matched_uri_is_the_pattern_that_matched() {
    let r = host_router(vec![(route(&["/a", "/b/*"]), "both")]);
    assert_eq!(
        get("/a").matched(&r).map(|m| m.matched_uri.to_string()),
        Some("/a".to_owned())
    );
    assert_eq!(
        get("/b/c").matched(&r).map(|m| m.matched_uri.to_string()),
        Some("/b/*".to_owned())
    );
}

#[test]
fn colon_is_literal_without_parameter_mode() {
    for mode in [RouterMode::HostUri, RouterMode::Uri] {
        let r = router(mode, vec![(route(&["/user/:id/profile"]), "profile")]);
        assert_eq!(get("/user/42/profile").route(&r), None);
        assert_eq!(get("/user/:id/profile").route(&r), Some("profile"));
    }
}

#[test]
fn param_capture_only_in_uri_with_parameter_mode() {
    let r = router(
        RouterMode::UriWithParameter,
        vec![(route(&["/user/:id/profile"]), "profile")],
    );
    let m = get("/user/42/profile").matched(&r);
    assert_eq!(
        m.map(|m| m.params),
        Some(vec![("id".to_owned(), "42".to_owned())])
    );
    assert_eq!(get("/user/42/profile/x").route(&r), None);
    assert_eq!(
        get("/user/a/b/profile").route(&r),
        None,
        "a parameter is one segment"
    );
    assert_eq!(
        get("/user//profile").route(&r),
        None,
        "a parameter is not empty"
    );
}

#[test]
fn param_and_star_capture_together() {
    let r = router(
        RouterMode::UriWithParameter,
        vec![(route(&["/user/:id/*"]), "user")],
    );
    let m = get("/user/7/a/b").matched(&r);
    assert_eq!(
        m.map(|m| (m.params, m.ext)),
        Some((
            vec![("id".to_owned(), "7".to_owned())],
            Some("a/b".to_owned())
        ))
    );
}

#[test]
fn exact_path_beats_param_route_in_parameter_mode() {
    let r = router(
        RouterMode::UriWithParameter,
        vec![
            (route(&["/user/:id"]), "param"),
            (route(&["/user/me"]), "me"),
        ],
    );
    assert_eq!(get("/user/me").route(&r), Some("me"));
    assert_eq!(get("/user/you").route(&r), Some("param"));
}

#[test]
fn colon_inside_a_segment_is_literal_in_parameter_mode() {
    let r = router(
        RouterMode::UriWithParameter,
        vec![(route(&["/v1/models/m:predict"]), "predict")],
    );
    assert_eq!(get("/v1/models/m:predict").route(&r), Some("predict"));
    assert_eq!(get("/v1/models/m:delete").route(&r), None);
}

// ---- priority ----------------------------------------------------------------------------------

#[test]
fn priority_orders_routes_on_same_path() {
    let r = host_router(vec![
        (route(&["/p"]), "low"),
        (route(&["/p"]).priority(10), "high"),
        (route(&["/q/*"]), "low-prefix"),
        (route(&["/q/*"]).priority(10), "high-prefix"),
    ]);
    assert_eq!(get("/p").route(&r), Some("high"));
    assert_eq!(get("/q/x").route(&r), Some("high-prefix"));
}

#[test]
fn same_priority_keeps_insertion_order() {
    let r = host_router(vec![(route(&["/p"]), "first"), (route(&["/p"]), "second")]);
    assert_eq!(get("/p").route(&r), Some("first"));
}

#[test]
fn priority_does_not_beat_a_longer_prefix() {
    let r = host_router(vec![
        (route(&["/a/*"]).priority(100), "short"),
        (route(&["/a/b/*"]), "long"),
    ]);
    assert_eq!(get("/a/b/c").route(&r), Some("long"));
}

#[test]
fn longer_uri_first_among_equal_priority_on_same_prefix() {
    let r = host_router(vec![
        (route(&["/a/*"]), "bare"),
        (route(&["/a/*rest"]), "named"),
    ]);
    assert_eq!(get("/a/x").route(&r), Some("named"));
}

// ---- hosts -------------------------------------------------------------------------------------

#[test]
fn host_bound_route_beats_hostless() {
    let r = host_router(vec![
        (route(&["/api/v1/users"]), "hostless-exact"),
        (route(&["/*"]).hosts(&["foo.com"]), "foo-catch-all"),
    ]);
    assert_eq!(
        get("/api/v1/users").host("foo.com").route(&r),
        Some("foo-catch-all")
    );
    assert_eq!(
        get("/api/v1/users").host("bar.com").route(&r),
        Some("hostless-exact")
    );
}

#[test]
fn hostless_routes_tried_when_no_host_route_matches() {
    let r = host_router(vec![
        (route(&["/*"]), "hostless"),
        (
            route(&["/*"]).hosts(&["foo.com"]).methods(&["POST"]),
            "foo-post",
        ),
    ]);
    assert_eq!(get("/x").host("foo.com").route(&r), Some("hostless"));
    assert_eq!(
        get("/x").host("foo.com").method("POST").route(&r),
        Some("foo-post")
    );
}

#[test]
fn exact_host_tried_before_wildcard_hosts_longest_first() {
    let r = host_router(vec![
        (route(&["/*"]).hosts(&["*.com"]), "any-com"),
        (route(&["/*"]).hosts(&["*.foo.com"]), "any-foo"),
        (
            route(&["/*"]).hosts(&["a.foo.com"]).methods(&["POST"]),
            "a-foo",
        ),
    ]);
    assert_eq!(
        get("/").host("a.foo.com").method("POST").route(&r),
        Some("a-foo")
    );
    assert_eq!(get("/").host("a.foo.com").route(&r), Some("any-foo"));
    assert_eq!(get("/").host("bar.com").route(&r), Some("any-com"));
}

#[test]
fn wildcard_host_matches_subdomains_only() {
    for mode in [RouterMode::HostUri, RouterMode::Uri] {
        let r = router(mode, vec![(route(&["/*"]).hosts(&["*.foo.com"]), "wild")]);
        assert_eq!(
            get("/").host("a.foo.com").route(&r),
            Some("wild"),
            "{mode:?}"
        );
        assert_eq!(
            get("/").host("b.a.foo.com").route(&r),
            Some("wild"),
            "{mode:?}"
        );
        assert_eq!(get("/").host("foo.com").route(&r), None, "{mode:?}");
        assert_eq!(get("/").host("afoo.com").route(&r), None, "{mode:?}");
    }
}

#[test]
fn star_host_matches_any_host_and_still_beats_hostless() {
    let r = host_router(vec![
        (route(&["/*"]), "hostless"),
        (route(&["/*"]).hosts(&["*"]), "star"),
    ]);
    assert_eq!(get("/").host("anything.example").route(&r), Some("star"));
}

#[test]
fn hosts_are_case_insensitive() {
    for mode in [RouterMode::HostUri, RouterMode::Uri] {
        let r = router(mode, vec![(route(&["/"]).hosts(&["Foo.COM"]), "foo")]);
        assert_eq!(get("/").host("FOO.com").route(&r), Some("foo"), "{mode:?}");
    }
}

#[test]
fn host_with_port_is_compared_with_the_port() {
    for mode in [RouterMode::HostUri, RouterMode::Uri] {
        let r = router(mode, vec![(route(&["/"]).hosts(&["foo.com:8080"]), "port")]);
        assert_eq!(
            get("/").host("foo.com:8080").route(&r),
            Some("port"),
            "{mode:?}"
        );
        assert_eq!(get("/").host("foo.com:9090").route(&r), None, "{mode:?}");
        assert_eq!(get("/").host("foo.com").route(&r), None, "{mode:?}");
    }
}

#[test]
fn ipv6_literal_host_without_port_ignores_the_port() {
    let r = host_router(vec![(route(&["/"]).hosts(&["[::1]"]), "v6")]);
    let req = Req {
        host: Some("[::1]".to_owned()),
        host_with_port: Some("[::1]:9080".to_owned()),
        ..get("/")
    };
    assert_eq!(req.route(&r), Some("v6"));
}

#[test]
fn uri_mode_treats_hosts_as_a_plain_condition() {
    let r = router(
        RouterMode::Uri,
        vec![
            (route(&["/a/b/*"]), "hostless-long"),
            (route(&["/a/*"]).hosts(&["foo.com"]), "foo-short"),
        ],
    );
    assert_eq!(
        get("/a/b/c").host("foo.com").route(&r),
        Some("hostless-long")
    );
    assert_eq!(get("/a/x").host("foo.com").route(&r), Some("foo-short"));
    assert_eq!(get("/a/x").host("bar.com").route(&r), None);
}

#[test]
fn route_host_requires_a_request_host() {
    let r = host_router(vec![(route(&["/"]).hosts(&["foo.com"]), "foo")]);
    assert_eq!(get("/").route(&r), None);
}

// ---- other conditions --------------------------------------------------------------------------

#[test]
fn methods_empty_means_any_and_unknown_methods_match_only_that() {
    let r = host_router(vec![
        (route(&["/m"]).methods(&["GET", "PUT"]), "get-put"),
        (route(&["/m"]), "any"),
    ]);
    assert_eq!(get("/m").method("PUT").route(&r), Some("get-put"));
    assert_eq!(get("/m").method("DELETE").route(&r), Some("any"));
    assert_eq!(get("/m").method("BREW").route(&r), Some("any"));
}

#[test]
fn remote_addrs_cidr() {
    let r = host_router(vec![(
        route(&["/"]).remote_addrs(&["10.0.0.0/8", "192.168.1.1", "::1", "fd00::/8"]),
        "internal",
    )]);
    assert_eq!(get("/").from("10.200.3.4").route(&r), Some("internal"));
    assert_eq!(get("/").from("192.168.1.1").route(&r), Some("internal"));
    assert_eq!(get("/").from("192.168.1.2").route(&r), None);
    assert_eq!(get("/").from("::1").route(&r), Some("internal"));
    assert_eq!(get("/").from("fd12::5").route(&r), Some("internal"));
    assert_eq!(get("/").from("11.0.0.1").route(&r), None);
    assert_eq!(
        get("/").from("::ffff:10.1.1.1").route(&r),
        Some("internal"),
        "v4-mapped"
    );
}

#[test]
fn vars_condition_selects_between_routes_on_same_path() {
    let r = host_router(vec![
        (
            route(&["/v"]).vars(json!([["http_x_canary", "==", "1"]])),
            "canary",
        ),
        (route(&["/v"]), "stable"),
    ]);
    assert_eq!(
        get("/v").var("http_x_canary", "1").route(&r),
        Some("canary")
    );
    assert_eq!(get("/v").route(&r), Some("stable"));
}

#[test]
fn filter_rejection_falls_back_like_other_conditions() {
    let r = host_router(vec![
        (route(&["/a/*"]), "short"),
        (route(&["/a/b/*"]), "long"),
    ]);
    let req = get("/a/b/c");
    let found = r.find_with(&req.input(), |value| *value != "long");
    assert_eq!(found.map(|m| *m.value), Some("short"));
}

#[test]
fn route_with_several_uris_matches_each() {
    let r = host_router(vec![(route(&["/one", "/two/*"]), "multi")]);
    assert_eq!(get("/one").route(&r), Some("multi"));
    assert_eq!(get("/two/x").route(&r), Some("multi"));
    assert_eq!(get("/three").route(&r), None);
}

#[test]
fn route_with_several_hosts_matches_each() {
    let r = host_router(vec![(route(&["/"]).hosts(&["a.com", "*.b.com"]), "multi")]);
    assert_eq!(get("/").host("a.com").route(&r), Some("multi"));
    assert_eq!(get("/").host("x.b.com").route(&r), Some("multi"));
    assert_eq!(get("/").host("c.com").route(&r), None);
}

#[test]
fn many_routes_still_match_the_right_one() {
    let mut routes = Vec::new();
    let names: Vec<&'static str> = (0..10_000)
        .map(|i| &*Box::leak(format!("r{i}").into_boxed_str()))
        .collect();
    for (i, name) in names.iter().enumerate() {
        routes.push((route(&[&format!("/r{i}/*")]), *name));
        routes.push((route(&[&format!("/exact/{i}")]), *name));
    }
    let r = host_router(routes);
    assert_eq!(r.len(), 20_000);
    assert_eq!(get("/r5000/x").route(&r), Some("r5000"));
    assert_eq!(get("/r50/x").route(&r), Some("r50"));
    assert_eq!(get("/exact/9999").route(&r), Some("r9999"));
    assert_eq!(get("/r5000").route(&r), None);
}

#[test]
fn empty_router_matches_nothing() {
    let r = host_router(Vec::new());
    assert_eq!(r.len(), 0);
    assert_eq!(get("/").host("a.com").route(&r), None);
}

#[test]
fn router_mode_from_apisix_name() {
    assert_eq!(
        RouterMode::from_apisix_name("radixtree_host_uri"),
        Some(RouterMode::HostUri)
    );
    assert_eq!(
        RouterMode::from_apisix_name("radixtree_uri"),
        Some(RouterMode::Uri)
    );
    assert_eq!(
        RouterMode::from_apisix_name("radixtree_uri_with_parameter"),
        Some(RouterMode::UriWithParameter)
    );
    assert_eq!(RouterMode::from_apisix_name("radixtree"), None);
    assert_eq!(RouterMode::default(), RouterMode::HostUri);
}

// ---- invalid routes ----------------------------------------------------------------------------

fn build_error(spec: RouteSpec) -> RouterError {
    match Router::new(vec![(route(&["/ok"]), ()), (spec, ())], RouterMode::HostUri) {
        Ok(_) => panic!("route should be rejected"),
        Err(err) => err,
    }
}

#[test]
fn invalid_routes_are_rejected_with_their_index() {
    assert_eq!(build_error(route(&[])), RouterError::NoUri { route: 1 });
    assert_eq!(
        build_error(route(&[""])),
        RouterError::InvalidUri {
            route: 1,
            uri: String::new()
        }
    );
    assert_eq!(
        build_error(route(&["/"]).remote_addrs(&["10.0.0.0/33"])),
        RouterError::InvalidRemoteAddr {
            route: 1,
            addr: "10.0.0.0/33".to_owned()
        }
    );
    assert_eq!(
        build_error(route(&["/"]).methods(&["get"])),
        RouterError::InvalidMethod {
            route: 1,
            method: "get".to_owned()
        }
    );
    assert_eq!(
        build_error(route(&["/"]).hosts(&["a.*.com"])),
        RouterError::InvalidHost {
            route: 1,
            host: "a.*.com".to_owned()
        }
    );
}

#[test]
fn invalid_vars_rejected_with_apisix_message() {
    let err = build_error(route(&["/"]).vars(json!([["arg_a", "xx", "1"]])));
    assert_eq!(
        err.to_string(),
        "route #1: failed to validate the 'vars' expression: invalid operator 'xx'"
    );
}

#[test]
fn null_vars_means_no_condition() {
    let r = host_router(vec![(route(&["/"]).vars(Value::Null), "any")]);
    assert_eq!(get("/").route(&r), Some("any"));
}

// ---- vars expressions --------------------------------------------------------------------------

fn expr(value: Value) -> Expr {
    match Expr::compile(&value) {
        Ok(expr) => expr,
        Err(err) => panic!("{value} should compile: {err}"),
    }
}

fn eval(value: Value, vars: &[(&str, &str)]) -> bool {
    let vars = TestVars(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    expr(value).eval(&vars)
}

fn compile_error(value: Value) -> String {
    match Expr::compile(&value) {
        Ok(_) => panic!("{value} should be rejected"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn expr_eq_and_ne_compare_strings() {
    assert!(eval(json!([["arg_a", "==", "1"]]), &[("arg_a", "1")]));
    assert!(!eval(json!([["arg_a", "==", "1"]]), &[("arg_a", "2")]));
    assert!(eval(json!([["arg_a", "~=", "1"]]), &[("arg_a", "2")]));
    assert!(!eval(json!([["arg_a", "~=", "1"]]), &[("arg_a", "1")]));
}

#[test]
fn expr_missing_variable_is_nil() {
    assert!(!eval(json!([["arg_a", "==", "1"]]), &[]));
    assert!(eval(json!([["arg_a", "~=", "1"]]), &[]));
    assert!(eval(json!([["arg_a", "==", null]]), &[]));
    assert!(
        eval(json!([["arg_a", "=="]]), &[]),
        "an omitted value is nil"
    );
    assert!(!eval(json!([["arg_a", "==", null]]), &[("arg_a", "")]));
    assert!(eval(json!([["arg_a", "~=", null]]), &[("arg_a", "x")]));
}

#[test]
fn expr_eq_with_a_number_compares_numerically() {
    assert!(eval(json!([["arg_a", "==", 1]]), &[("arg_a", "1.0")]));
    assert!(!eval(json!([["arg_a", "==", 1]]), &[("arg_a", "one")]));
    assert!(eval(json!([["arg_a", "~=", 1]]), &[("arg_a", "one")]));
    assert!(
        !eval(json!([["arg_a", "==", "1"]]), &[("arg_a", "1.0")]),
        "a string value compares as string"
    );
}

#[test]
fn expr_ordering_operators_compare_numbers() {
    let age = |op: &str, value: Value, var: &str| {
        eval(json!([["arg_age", op, value]]), &[("arg_age", var)])
    };
    assert!(age(">", json!(18), "20"));
    assert!(!age(">", json!(18), "18"));
    assert!(age(">=", json!(18), "18"));
    assert!(age("<", json!("18"), "9"), "numeric, not lexical");
    assert!(age("<=", json!(1.5), "1.5"));
    assert!(!age(">", json!(18), "old"));
    assert!(!eval(json!([["arg_age", ">", 18]]), &[]));
}

#[test]
fn expr_regex_match_is_unanchored_and_case_sensitive() {
    assert!(eval(
        json!([["http_ua", "~~", "curl/[0-9]+"]]),
        &[("http_ua", "x curl/8 y")]
    ));
    assert!(!eval(
        json!([["http_ua", "~~", "curl"]]),
        &[("http_ua", "CURL")]
    ));
    assert!(!eval(json!([["http_ua", "~~", ".*"]]), &[]));
}

#[test]
fn expr_case_insensitive_regex() {
    assert!(eval(
        json!([["http_ua", "~*", "^curl"]]),
        &[("http_ua", "CURL/8")]
    ));
    assert!(!eval(
        json!([["http_ua", "~*", "^curl"]]),
        &[("http_ua", "wget")]
    ));
}

#[test]
fn expr_in_checks_membership() {
    assert!(eval(
        json!([["arg_a", "in", ["x", "y"]]]),
        &[("arg_a", "y")]
    ));
    assert!(!eval(
        json!([["arg_a", "in", ["x", "y"]]]),
        &[("arg_a", "z")]
    ));
    assert!(eval(json!([["arg_a", "in", [1, 2]]]), &[("arg_a", "2")]));
    assert!(!eval(json!([["arg_a", "in", ["x"]]]), &[]));
}

#[test]
fn expr_has_checks_a_comma_list() {
    assert!(eval(
        json!([["http_x", "has", "b"]]),
        &[("http_x", "a, b,c")]
    ));
    assert!(eval(json!([["http_x", "has", "a"]]), &[("http_x", "a")]));
    assert!(!eval(
        json!([["http_x", "has", "d"]]),
        &[("http_x", "a,b,c")]
    ));
    assert!(!eval(json!([["http_x", "has", "a"]]), &[]));
}

#[test]
fn expr_ipmatch_accepts_a_cidr_or_a_list() {
    assert!(eval(
        json!([["remote_addr", "ipmatch", "10.0.0.0/8"]]),
        &[("remote_addr", "10.1.1.1")]
    ));
    let list = json!([["remote_addr", "ipmatch", ["127.0.0.1", "fe80::/10"]]]);
    assert!(eval(list.clone(), &[("remote_addr", "fe80::1")]));
    assert!(eval(list.clone(), &[("remote_addr", "127.0.0.1")]));
    assert!(!eval(list.clone(), &[("remote_addr", "127.0.0.2")]));
    assert!(!eval(list, &[("remote_addr", "not-an-ip")]));
}

#[test]
fn expr_not_negates_a_rule() {
    assert!(eval(json!([["arg_a", "!", "==", "1"]]), &[("arg_a", "2")]));
    assert!(!eval(json!([["arg_a", "!", "==", "1"]]), &[("arg_a", "1")]));
    assert!(
        eval(json!([["arg_a", "!", "~~", "x"]]), &[]),
        "a missing variable fails ~~, so ! passes"
    );
}

#[test]
fn expr_rules_are_anded_by_default() {
    let both = json!([["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
    assert!(eval(both.clone(), &[("arg_a", "1"), ("arg_b", "2")]));
    assert!(!eval(both, &[("arg_a", "1")]));
}

#[test]
fn expr_logical_operators_and_nesting() {
    let either = json!(["OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
    assert!(eval(either.clone(), &[("arg_b", "2")]));
    assert!(!eval(either, &[]));
    let not_both = json!(["!AND", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
    assert!(eval(not_both.clone(), &[("arg_a", "1")]));
    assert!(!eval(not_both, &[("arg_a", "1"), ("arg_b", "2")]));
    let neither = json!(["!OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
    assert!(eval(neither.clone(), &[]));
    assert!(!eval(neither, &[("arg_a", "1")]));
    let nested = json!([
        ["arg_k", "==", "v"],
        [
            "OR",
            ["arg_a", "==", "1"],
            ["AND", ["arg_b", "==", "2"], ["arg_c", "==", "3"]]
        ],
        [["arg_d", "~=", "x"]]
    ]);
    assert!(eval(
        nested.clone(),
        &[("arg_k", "v"), ("arg_b", "2"), ("arg_c", "3")]
    ));
    assert!(!eval(nested.clone(), &[("arg_k", "v"), ("arg_b", "2")]));
    assert!(!eval(
        nested,
        &[("arg_k", "v"), ("arg_a", "1"), ("arg_d", "x")]
    ));
}

#[test]
fn expr_invalid_expressions_rejected() {
    assert_eq!(compile_error(json!([])), "rule too short");
    assert_eq!(compile_error(json!(["OR"])), "rule too short");
    assert_eq!(compile_error(json!([["arg_a"]])), "rule too short");
    assert_eq!(
        compile_error(json!([["arg_a", "xx", "1"]])),
        "invalid operator 'xx'"
    );
    assert_eq!(
        compile_error(json!([["arg_a", 1, "1"]])),
        "invalid operator '1'"
    );
    assert_eq!(
        compile_error(json!(["arg_a", "==", "1"])),
        "rule should be wrapped inside brackets"
    );
    assert_eq!(
        compile_error(json!({"arg_a": "1"})),
        "rule should be wrapped inside brackets"
    );
    assert_eq!(
        compile_error(json!([["arg_a", "not", "==", "1"]])),
        "bad 'not' expression"
    );
    assert_eq!(
        compile_error(json!([["arg_a", "!", "==", "1", "x"]])),
        "rule too long"
    );
    assert_eq!(
        compile_error(json!([["arg_a", "==", "1"], "x"])),
        "invalid rule: \"x\""
    );
    assert_eq!(
        compile_error(json!([[1, "==", "1"]])),
        "invalid variable name: 1"
    );
    assert!(
        compile_error(json!([["arg_a", "~~", "("]])).starts_with("failed to compile regex '('")
    );
    assert_eq!(
        compile_error(json!([["remote_addr", "ipmatch", "10.0.0.300"]])),
        "failed to create ip matcher: invalid ip address: 10.0.0.300"
    );
    assert_eq!(
        compile_error(json!([["arg_a", "in", "x"]])),
        "invalid value for operator 'in': \"x\""
    );
    assert_eq!(
        compile_error(json!([["arg_a", ">", "x"]])),
        "invalid value for operator '>': \"x\""
    );
    assert_eq!(
        compile_error(json!([["arg_a", "==", ["x"]]])),
        "invalid value for operator '==': [\"x\"]"
    );
}

#[test]
fn lua_tonumber_follows_lua() {
    assert_eq!(lua_tonumber("12"), Some(12.0));
    assert_eq!(lua_tonumber(" 1.5 "), Some(1.5));
    assert_eq!(lua_tonumber("1e3"), Some(1000.0));
    assert_eq!(lua_tonumber("0x10"), Some(16.0));
    assert_eq!(lua_tonumber("-0x10"), Some(-16.0));
    assert_eq!(lua_tonumber("inf"), None);
    assert_eq!(lua_tonumber("nan"), None);
    assert_eq!(lua_tonumber(""), None);
    assert_eq!(lua_tonumber("1a"), None);
}
