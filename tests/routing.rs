//! APISIX router rules, observed through the real server.

mod common;

use common::{MockUpstream, TestGateway};
use serde_json::{Value, json};

async fn upstream_of(_gw: &TestGateway, req: reqwest::RequestBuilder) -> String {
    let resp = req.send().await.expect("send");
    if resp.status() != 200 {
        return resp.status().as_u16().to_string();
    }
    let body: Value = resp.json().await.expect("json");
    body["upstream"].as_str().unwrap_or_default().to_owned()
}

fn route(uri: &str, node: &str, extra: Value) -> Value {
    let mut r = json!({"uri": uri, "upstream": {"nodes": {node: 1}}});
    if let (Value::Object(r), Value::Object(extra)) = (&mut r, extra) {
        r.extend(extra);
    }
    r
}

#[tokio::test]
async fn exact_beats_prefix_and_longest_prefix_wins() {
    let (a, b, c) = (
        MockUpstream::start("exact").await,
        MockUpstream::start("short").await,
        MockUpstream::start("long").await,
    );
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/blog/foo", &a.node(), json!({})))
        .await;
    gw.put("/routes/2", route("/blog/*", &b.node(), json!({})))
        .await;
    gw.put("/routes/3", route("/blog/foo/*", &c.node(), json!({})))
        .await;
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/blog/foo"))).await,
        "exact"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/blog/foo/a/b"))).await,
        "long"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/blog/bar"))).await,
        "short"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/blog"))).await,
        "404",
        "/blog/* does not match /blog"
    );
}

#[tokio::test]
async fn shorter_prefix_is_tried_when_method_fails_on_a_longer_one() {
    let (a, b) = (
        MockUpstream::start("post-only").await,
        MockUpstream::start("fallback").await,
    );
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route("/api/v1/*", &a.node(), json!({"methods": ["POST"]})),
    )
    .await;
    gw.put("/routes/2", route("/api/*", &b.node(), json!({})))
        .await;
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/api/v1/x"))).await,
        "fallback"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.post(gw.url("/api/v1/x"))).await,
        "post-only"
    );
}

#[tokio::test]
async fn host_bound_routes_beat_hostless_ones_and_wildcards_match_subdomains() {
    let (a, b, c) = (
        MockUpstream::start("hostless").await,
        MockUpstream::start("exact-host").await,
        MockUpstream::start("wild").await,
    );
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/*", &a.node(), json!({}))).await;
    gw.put(
        "/routes/2",
        route("/*", &b.node(), json!({"host": "api.test"})),
    )
    .await;
    gw.put(
        "/routes/3",
        route("/*", &c.node(), json!({"hosts": ["*.wild.test"]})),
    )
    .await;
    let get = |host: &str| gw.client.get(gw.url("/x")).header("host", host);
    assert_eq!(upstream_of(&gw, get("api.test")).await, "exact-host");
    assert_eq!(upstream_of(&gw, get("a.wild.test")).await, "wild");
    assert_eq!(upstream_of(&gw, get("wild.test")).await, "hostless");
    assert_eq!(upstream_of(&gw, get("other.test")).await, "hostless");
}

#[tokio::test]
async fn priority_orders_routes_on_the_same_path() {
    let (a, b) = (
        MockUpstream::start("low").await,
        MockUpstream::start("high").await,
    );
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/p", &a.node(), json!({"priority": 1})))
        .await;
    gw.put("/routes/2", route("/p", &b.node(), json!({"priority": 10})))
        .await;
    assert_eq!(upstream_of(&gw, gw.client.get(gw.url("/p"))).await, "high");
}

#[tokio::test]
async fn vars_and_remote_addrs_conditions() {
    let (a, b, c) = (
        MockUpstream::start("v2").await,
        MockUpstream::start("default").await,
        MockUpstream::start("never").await,
    );
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/v",
            &a.node(),
            json!({"vars": [["arg_version", "==", "v2"]], "priority": 5}),
        ),
    )
    .await;
    gw.put("/routes/2", route("/v", &b.node(), json!({}))).await;
    gw.put(
        "/routes/3",
        route("/lan", &c.node(), json!({"remote_addrs": ["10.0.0.0/8"]})),
    )
    .await;
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/v?version=v2"))).await,
        "v2"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/v?version=v1"))).await,
        "default"
    );
    assert_eq!(upstream_of(&gw, gw.client.get(gw.url("/lan"))).await, "404");
}

#[tokio::test]
async fn service_hosts_apply_to_routes_without_hosts() {
    let a = MockUpstream::start("svc").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/services/s",
        json!({"hosts": ["svc.test"], "upstream": {"nodes": {a.node(): 1}}}),
    )
    .await;
    gw.put("/routes/1", json!({"uri": "/s", "service_id": "s"}))
        .await;
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/s")).header("host", "svc.test")).await,
        "svc"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/s")).header("host", "x.test")).await,
        "404"
    );
}

#[tokio::test]
async fn disabled_routes_do_not_match() {
    let a = MockUpstream::start("a").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/off", &a.node(), json!({"status": 0})))
        .await;
    assert_eq!(upstream_of(&gw, gw.client.get(gw.url("/off"))).await, "404");
}

#[tokio::test]
async fn router_and_upstream_see_the_same_normalized_path() {
    let a = MockUpstream::start("a").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/public/*", &a.node(), json!({})))
        .await;
    // `/public/../admin` must not match `/public/*` (normalized to `/admin`).
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/public/%2e%2e/admin"))).await,
        "404"
    );
    let resp = gw
        .client
        .get(gw.url("/public//a/./b"))
        .send()
        .await
        .expect("send");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["uri"], "/public/a/b");
}

#[tokio::test]
async fn uris_list_matches_any() {
    let a = MockUpstream::start("a").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uris": ["/one", "/two/*"], "upstream": {"nodes": {a.node(): 1}}}),
    )
    .await;
    assert_eq!(upstream_of(&gw, gw.client.get(gw.url("/one"))).await, "a");
    assert_eq!(upstream_of(&gw, gw.client.get(gw.url("/two/x"))).await, "a");
}

#[tokio::test]
async fn uri_parameters_match_with_radixtree_uri_with_parameter() {
    let a = MockUpstream::start("param").await;
    let gw = TestGateway::builder()
        .router("radixtree_uri_with_parameter")
        .start()
        .await;
    gw.put(
        "/routes/1",
        route("/user/:id/profile", &a.node(), json!({})),
    )
    .await;
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/user/42/profile"))).await,
        "param"
    );
    assert_eq!(
        upstream_of(&gw, gw.client.get(gw.url("/user/42/other"))).await,
        "404"
    );
}
