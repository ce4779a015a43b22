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
