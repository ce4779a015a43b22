//! Consumers: authentication plugins identify them, and their own plugins join the request.

mod common;

use common::{MockUpstream, TestGateway};
use serde_json::{Value, json};

#[tokio::test]
async fn key_auth_in_front_of_aws_lambda_lets_only_known_consumers_reach_the_function() {
    let function = MockUpstream::start("function").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    )
    .await;
    gw.put(
        "/routes/1",
        json!({
            "uri": "/aws",
            "plugins": {
                "key-auth": {},
                "aws-lambda": {
                    "function_uri": format!("http://{}/default/test-apisix", function.node()),
                    "authorization": {"apikey": "function-key"}
                }
            }
        }),
    )
    .await;
    let resp = gw.get("/aws").await;
    assert_eq!(resp.status(), 401);
    let resp = gw
        .client
        .get(gw.url("/aws"))
        .header("apikey", "wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        function.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let resp = gw
        .client
        .get(gw.url("/aws?name=APISIX"))
        .header("apikey", "auth-one")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["uri"], "/default/test-apisix?name=APISIX");
    assert_eq!(body["headers"]["x-api-key"], "function-key");
}

#[tokio::test]
async fn consumer_plugins_override_route_plugins_after_authentication() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {
            "key-auth": {"key": "jack-key"},
            "response-rewrite": {"headers": {"set": {"x-who": "jack"}}}
        }}),
    )
    .await;
    gw.put(
        "/consumers",
        json!({"username": "rose", "plugins": {"key-auth": {"key": "rose-key"}}}),
    )
    .await;
    gw.put(
        "/routes/1",
        json!({
            "uri": "/who",
            "plugins": {
                "key-auth": {},
                "response-rewrite": {"headers": {"set": {"x-who": "route"}}}
            },
            "upstream": {"nodes": {up.node(): 1}}
        }),
    )
    .await;
    let who = |key: &'static str| {
        let req = gw.client.get(gw.url("/who")).header("apikey", key);
        async move {
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status(), 200);
            resp.headers()["x-who"]
                .to_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(who("jack-key").await, "jack", "the consumer's conf wins");
    assert_eq!(
        who("rose-key").await,
        "route",
        "a consumer without it keeps the route's"
    );
    assert_eq!(who("jack-key").await, "jack");
}

#[tokio::test]
async fn consumer_plugins_run_their_own_phases() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumers",
        json!({"username": "limited", "plugins": {
            "key-auth": {"key": "limited-key"},
            "limit-count": {"count": 1, "time_window": 60, "rejected_code": 429}
        }}),
    )
    .await;
    gw.put(
        "/routes/1",
        json!({"uri": "/limited", "plugins": {"key-auth": {}}, "upstream": {"nodes": {up.node(): 1}}}),
    )
    .await;
    let send = || {
        gw.client
            .get(gw.url("/limited"))
            .header("apikey", "limited-key")
            .send()
    };
    assert_eq!(send().await.expect("send").status(), 200);
    assert_eq!(
        send().await.expect("send").status(),
        429,
        "the consumer's limit-count applies"
    );
}

#[tokio::test]
async fn consumer_group_plugins_apply_below_the_consumer_and_above_the_route() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumer_groups/gold",
        json!({"plugins": {
            "response-rewrite": {"headers": {"set": {"x-who": "group"}}},
            "limit-count": {"count": 1, "time_window": 60, "rejected_code": 429}
        }}),
    )
    .await;
    // In the group, no plugin of its own: the group's apply.
    gw.put(
        "/consumers",
        json!({"username": "member", "group_id": "gold", "plugins": {"key-auth": {"key": "member-key"}}}),
    )
    .await;
    // In the group with its own conf of the same plugin: the consumer's wins.
    gw.put(
        "/consumers",
        json!({"username": "vip", "group_id": "gold", "plugins": {
            "key-auth": {"key": "vip-key"},
            "response-rewrite": {"headers": {"set": {"x-who": "vip"}}}
        }}),
    )
    .await;
    gw.put(
        "/consumers",
        json!({"username": "loner", "plugins": {"key-auth": {"key": "loner-key"}}}),
    )
    .await;
    gw.put(
        "/routes/1",
        json!({
            "uri": "/who",
            "plugins": {
                "key-auth": {},
                "response-rewrite": {"headers": {"set": {"x-who": "route"}}}
            },
            "upstream": {"nodes": {up.node(): 1}}
        }),
    )
    .await;
    let send = |key: &'static str| {
        let req = gw.client.get(gw.url("/who")).header("apikey", key);
        async move {
            let resp = req.send().await.expect("send");
            let who = resp
                .headers()
                .get("x-who")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (resp.status().as_u16(), who)
        }
    };
    assert_eq!(send("member-key").await, (200, "group".to_owned()));
    assert_eq!(send("vip-key").await, (200, "vip".to_owned()));
    assert_eq!(send("loner-key").await, (200, "route".to_owned()));
    // The group's limit-count applies to its member: the second request is refused.
    assert_eq!(send("member-key").await.0, 429);

    // A change to the group applies to its members without touching them.
    gw.put(
        "/consumer_groups/gold",
        json!({"plugins": {"response-rewrite": {"headers": {"set": {"x-who": "group-v2"}}}}}),
    )
    .await;
    assert_eq!(send("member-key").await, (200, "group-v2".to_owned()));
}
