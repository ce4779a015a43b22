//! The bundled APISIX plugins as a user configures them through the Admin API: what the client
//! and the upstream see, and the schema errors a bad conf gets.

mod common;

use common::{MockUpstream, TestGateway};
use serde_json::{Value, json};

/// A route on `uri` to `up` with the given plugins.
fn route(uri: &str, up: &MockUpstream, plugins: Value) -> Value {
    json!({
        "uri": uri,
        "plugins": plugins,
        "upstream": {"type": "roundrobin", "nodes": {up.node(): 1}},
    })
}

/// Status and JSON body of a response.
async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// PUTs a route whose plugin conf must be refused; returns the Admin API's `error_msg`.
async fn refused(gw: &TestGateway, plugins: Value) -> String {
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/refused",
            Some(json!({"uri": "/refused", "plugins": plugins})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    body["error_msg"].as_str().unwrap_or_default().to_owned()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------------------
// key-auth

#[tokio::test]
async fn key_auth_lets_a_consumer_key_through_and_refuses_others() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    )
    .await;
    gw.put("/routes/1", route("/auth", &up, json!({"key-auth": {}})))
        .await;

    let resp = gw
        .client
        .get(gw.url("/auth"))
        .header("apikey", "auth-one")
        .send()
        .await
        .expect("send");
    let (status, echo) = status_json(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["apikey"], "auth-one", "kept by default");
    assert_eq!(echo["headers"]["x-consumer-username"], "jack");

    let (status, echo) = status_json(gw.get("/auth?apikey=auth-one").await).await;
    assert_eq!(status, 200, "the key may come as a query argument: {echo}");

    let resp = gw
        .client
        .get(gw.url("/auth"))
        .header("apikey", "wrong")
        .send()
        .await
        .expect("send");
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "Invalid API key in request"}));

    let (status, body) = status_json(gw.get("/auth").await).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"message": "Missing API key in request"}));
}

#[tokio::test]
async fn key_auth_custom_header_and_hidden_credentials() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/consumers",
        json!({"username": "rose", "plugins": {"key-auth": {"key": "rose-key"}}}),
    )
    .await;
    gw.put(
        "/routes/1",
        route(
            "/hidden",
            &up,
            json!({"key-auth": {"header": "X-Key", "query": "k", "hide_credentials": true}}),
        ),
    )
    .await;

    let resp = gw
        .client
        .get(gw.url("/hidden?keep=1"))
        .header("x-key", "rose-key")
        .send()
        .await
        .expect("send");
    let (status, echo) = status_json(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert!(echo["headers"].get("x-key").is_none(), "{echo}");
    assert_eq!(echo["uri"], "/hidden?keep=1");

    let (status, echo) = status_json(gw.get("/hidden?k=rose-key&keep=1").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["uri"], "/hidden?keep=1", "the query key is removed");

    let resp = gw
        .client
        .get(gw.url("/hidden"))
        .header("apikey", "rose-key")
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        401,
        "the default header name no longer applies"
    );
}

#[tokio::test]
async fn key_auth_consumer_without_key_is_refused() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin(
            "PUT",
            "/consumers",
            Some(json!({"username": "nokey", "plugins": {"key-auth": {}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin key-auth err: property \"key\" is required"
    );
}

// ---------------------------------------------------------------------------------------------
// limit-count

#[tokio::test]
async fn limit_count_rejects_the_request_over_the_count_with_quota_headers() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/limit-count-basic",
        route(
            "/limited",
            &up,
            json!({"limit-count": {"count": 2, "time_window": 60}}),
        ),
    )
    .await;

    let first = gw.get("/limited").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("1"));
    let reset: u64 = header(&first, "x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("numeric X-RateLimit-Reset");
    assert!((1..=60).contains(&reset), "reset {reset}");

    let second = gw.get("/limited").await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-ratelimit-remaining"), Some("0"));

    let third = gw.get("/limited").await;
    assert_eq!(third.status(), 503);
    assert_eq!(header(&third, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&third, "x-ratelimit-remaining"), Some("0"));
    assert!(header(&third, "x-ratelimit-reset").is_some());
}

#[tokio::test]
async fn limit_count_custom_rejection_constant_key_and_no_headers() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/limit-count-custom",
        route(
            "/custom-limit",
            &up,
            json!({"limit-count": {
                "count": 1, "time_window": 60, "key_type": "constant", "key": "all",
                "rejected_code": 429, "rejected_msg": "slow down",
                "show_limit_quota_header": false,
            }}),
        ),
    )
    .await;

    let first = gw.get("/custom-limit").await;
    assert_eq!(first.status(), 200);
    assert!(header(&first, "x-ratelimit-limit").is_none());

    let (status, body) = status_json(gw.get("/custom-limit").await).await;
    assert_eq!(status, 429);
    assert_eq!(body, json!({"error_msg": "slow down"}));
}

#[tokio::test]
async fn limit_count_schema_errors() {
    let gw = TestGateway::start().await;
    let err = refused(&gw, json!({"limit-count": {"count": 2}})).await;
    assert_eq!(
        err,
        "failed to check the configuration of plugin limit-count err: property \"time_window\" is required"
    );
    let err = refused(
        &gw,
        json!({"limit-count": {"count": 2, "time_window": 60, "policy": "redis"}}),
    )
    .await;
    assert!(
        err.starts_with("failed to check the configuration of plugin limit-count err: ")
            && err.contains("only the local policy"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// serverless-pre-function / serverless-post-function

#[tokio::test]
async fn serverless_pre_function_answers_the_request_itself() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/pre",
            &up,
            json!({"serverless-pre-function": {
                "phase": "rewrite",
                "functions": [
                    "return function(conf, ctx) ctx.seen_by_first = true end",
                    "return function(conf, ctx) local core = require('apisix.core'); \
                     core.response.set_header('X-Phase', conf.phase); \
                     if ctx.seen_by_first then return 418, {tea = ctx.var.arg_kind} end end",
                ],
            }}),
        ),
    )
    .await;
    let resp = gw.get("/pre?kind=earl-grey").await;
    assert_eq!(header(&resp, "x-phase"), Some("rewrite"));
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 418);
    assert_eq!(body, json!({"tea": "earl-grey"}));
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream is never called"
    );
}

#[tokio::test]
async fn serverless_post_function_runs_in_header_filter() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/post",
            &up,
            json!({"serverless-post-function": {
                "phase": "header_filter",
                "functions": [
                    "return function(conf, ctx) ngx.header['X-Upstream-Status'] = ngx.status end",
                ],
            }}),
        ),
    )
    .await;
    let resp = gw.get("/post").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-upstream-status"), Some("200"));
}

#[tokio::test]
async fn serverless_functions_must_return_a_function() {
    let gw = TestGateway::start().await;
    let err = refused(
        &gw,
        json!({"serverless-pre-function": {"functions": ["return 1"]}}),
    )
    .await;
    assert_eq!(
        err,
        "failed to check the configuration of plugin serverless-pre-function err: \
         only accept Lua function, the input code type is number"
    );
    let err = refused(
        &gw,
        json!({"serverless-post-function": {"functions": ["return function( end"]}}),
    )
    .await;
    assert!(
        err.starts_with(
            "failed to check the configuration of plugin serverless-post-function err: failed to loadstring: "
        ),
        "{err}"
    );
    let err = refused(
        &gw,
        json!({"serverless-pre-function": {"phase": "balancer", "functions": ["return function() end"]}}),
    )
    .await;
    assert!(
        err.contains("property \"phase\" validation failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// proxy-rewrite

#[tokio::test]
async fn proxy_rewrite_uri_host_method_and_headers_reach_the_upstream() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/old/*",
            &up,
            json!({"proxy-rewrite": {
                "uri": "/new/$arg_name",
                "host": "rewritten.example",
                "method": "POST",
                "headers": {
                    "set": {"X-Set": "from-$remote_addr", "X-Replaced": "new"},
                    "add": {"X-Added": "1"},
                    "remove": ["X-Drop"],
                },
            }}),
        ),
    )
    .await;
    let resp = gw
        .client
        .get(gw.url("/old/thing?name=bob"))
        .header("x-replaced", "old")
        .header("x-drop", "gone")
        .send()
        .await
        .expect("send");
    let (status, echo) = status_json(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["uri"], "/new/bob?name=bob", "args are appended");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["headers"]["host"], "rewritten.example");
    assert_eq!(echo["headers"]["x-set"], "from-127.0.0.1");
    assert_eq!(echo["headers"]["x-replaced"], "new");
    assert_eq!(echo["headers"]["x-added"], "1");
    assert!(echo["headers"].get("x-drop").is_none(), "{echo}");
}

#[tokio::test]
async fn proxy_rewrite_regex_uri_and_flat_headers() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/api/*",
            &up,
            json!({"proxy-rewrite": {
                "regex_uri": ["^/api/(.*)/(.*)", "/v2/$2/$1"],
                "headers": {"X-Version": "v2"},
            }}),
        ),
    )
    .await;
    let (status, echo) = status_json(gw.get("/api/users/42?x=1").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["uri"], "/v2/42/users?x=1");
    assert_eq!(echo["headers"]["x-version"], "v2");

    let (status, echo) = status_json(gw.get("/api/flat").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        echo["uri"], "/api/flat",
        "no regex match leaves the uri alone"
    );
}

#[tokio::test]
async fn proxy_rewrite_schema_errors() {
    let gw = TestGateway::start().await;
    let err = refused(
        &gw,
        json!({"proxy-rewrite": {"regex_uri": ["^/a", "/b", "^/c"]}}),
    )
    .await;
    assert_eq!(
        err,
        "failed to check the configuration of plugin proxy-rewrite err: \
         The length of regex_uri should be an even number"
    );
    let err = refused(&gw, json!({"proxy-rewrite": {"uri": "relative"}})).await;
    assert!(
        err.starts_with("failed to check the configuration of plugin proxy-rewrite err: "),
        "{err}"
    );
    let err = refused(&gw, json!({"proxy-rewrite": {"method": "FETCH"}})).await;
    assert!(
        err.contains("property \"method\" validation failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// response-rewrite

#[tokio::test]
async fn response_rewrite_replaces_status_headers_and_body() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/rr",
            &up,
            json!({"response-rewrite": {
                "status_code": 201,
                "body": "{\"code\":\"ok\"}\n",
                "headers": {
                    "set": {"X-Server-Id": "3", "X-Route": "$route_id"},
                    "add": ["X-Extra: one"],
                    "remove": ["X-Upstream"],
                },
            }}),
        ),
    )
    .await;
    let resp = gw.get("/rr").await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "x-server-id"), Some("3"));
    assert_eq!(header(&resp, "x-route"), Some("1"));
    assert_eq!(header(&resp, "x-extra"), Some("one"));
    assert!(header(&resp, "x-upstream").is_none());
    assert_eq!(resp.text().await.expect("body"), "{\"code\":\"ok\"}\n");
}

#[tokio::test]
async fn response_rewrite_filters_and_vars() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/filtered",
            &up,
            json!({"response-rewrite": {
                "filters": [
                    {"regex": "\"upstream\":\"u\"", "replace": "\"upstream\":\"hidden\""},
                    {"regex": "GET", "replace": "VERB", "scope": "global"},
                ],
            }}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        route(
            "/conditional",
            &up,
            json!({"response-rewrite": {
                "body": "rewritten",
                "vars": [["arg_rewrite", "==", "yes"]],
            }}),
        ),
    )
    .await;

    let (status, echo) = status_json(gw.get("/filtered").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["upstream"], "hidden");
    assert_eq!(echo["method"], "VERB");

    let resp = gw.get("/conditional?rewrite=yes").await;
    assert_eq!(resp.text().await.expect("body"), "rewritten");
    let (status, echo) = status_json(gw.get("/conditional?rewrite=no").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        echo["upstream"], "u",
        "unmatched vars leave the response alone"
    );
}

#[tokio::test]
async fn response_rewrite_handles_a_body_streamed_in_chunks() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/stream/replaced",
            &up,
            json!({"response-rewrite": {"body": "short"}}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        route(
            "/stream/filtered",
            &up,
            json!({"response-rewrite": {"filters": [{"regex": "x+", "replace": "y"}]}}),
        ),
    )
    .await;

    let resp = gw.get("/stream/replaced?chunks=3").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "short");

    let resp = gw.get("/stream/filtered?chunks=3").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        "y",
        "the filters see the whole body at once"
    );
}

#[tokio::test]
async fn serverless_function_that_raises_fails_only_its_request() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/raises",
            &up,
            json!({"serverless-pre-function": {
                "functions": ["return function(conf, ctx) if ctx.var.arg_boom then error('boom') end end"],
            }}),
        ),
    )
    .await;
    assert_eq!(gw.get("/raises?boom=1").await.status(), 500);
    let (status, echo) = status_json(gw.get("/raises").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["uri"], "/raises");
}

#[tokio::test]
async fn a_runaway_serverless_function_is_stopped_and_the_worker_serves_again() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder().workers(1).start().await;
    gw.put(
        "/routes/1",
        route(
            "/spin",
            &up,
            json!({"serverless-pre-function": {
                "functions": ["return function() while true do end end"],
            }}),
        ),
    )
    .await;
    gw.put("/routes/2", route("/plain", &up, json!({}))).await;
    // The test gateways stop Lua after 2 s.
    let resp = tokio::time::timeout(std::time::Duration::from_secs(20), gw.get("/spin"))
        .await
        .expect("the runaway function was not stopped");
    assert_eq!(resp.status(), 500);
    assert_eq!(gw.get("/plain").await.status(), 200);
}

#[tokio::test]
async fn response_rewrite_schema_errors() {
    let gw = TestGateway::start().await;
    let err = refused(&gw, json!({"response-rewrite": {"status_code": 100}})).await;
    assert!(
        err.starts_with(
            "failed to check the configuration of plugin response-rewrite err: property \"status_code\" validation failed"
        ),
        "{err}"
    );
    let err = refused(
        &gw,
        json!({"response-rewrite": {"body": "x", "filters": [{"regex": "a", "replace": "b"}]}}),
    )
    .await;
    assert!(
        err.starts_with("failed to check the configuration of plugin response-rewrite err: "),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// request-id

#[tokio::test]
async fn request_id_is_sent_upstream_and_returned() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/rid", &up, json!({"request-id": {}})))
        .await;
    gw.put(
        "/routes/2",
        route(
            "/nano",
            &up,
            json!({"request-id": {"header_name": "X-Trace", "algorithm": "nanoid", "include_in_response": false}}),
        ),
    )
    .await;

    let resp = gw.get("/rid").await;
    let returned = header(&resp, "x-request-id")
        .expect("id in response")
        .to_owned();
    let (_, echo) = status_json(resp).await;
    assert_eq!(echo["headers"]["x-request-id"], returned.as_str());
    assert_eq!(returned.len(), 36, "a UUID: {returned}");
    assert_eq!(&returned[14..15], "4", "version 4: {returned}");

    let other = gw.get("/rid").await;
    assert_ne!(header(&other, "x-request-id"), Some(returned.as_str()));

    let resp = gw
        .client
        .get(gw.url("/rid"))
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .expect("send");
    assert_eq!(header(&resp, "x-request-id"), Some("client-chosen"));
    let (_, echo) = status_json(resp).await;
    assert_eq!(echo["headers"]["x-request-id"], "client-chosen");

    let resp = gw.get("/nano").await;
    assert!(header(&resp, "x-trace").is_none());
    let (_, echo) = status_json(resp).await;
    assert_eq!(echo["headers"]["x-trace"].as_str().map(str::len), Some(21));
}

// ---------------------------------------------------------------------------------------------
// cors

#[tokio::test]
async fn cors_answers_preflight_and_decorates_allowed_origins() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/cors",
            &up,
            json!({"cors": {
                "allow_origins": "http://a.example,http://b.example",
                "allow_methods": "GET,POST",
                "allow_headers": "X-Custom",
                "expose_headers": "X-Upstream",
                "max_age": 600,
                "allow_credential": true,
            }}),
        ),
    )
    .await;

    let preflight = gw
        .client
        .request(reqwest::Method::OPTIONS, gw.url("/cors"))
        .header("origin", "http://b.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("send");
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("http://b.example")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers"),
        Some("X-Custom")
    );
    assert_eq!(header(&preflight, "access-control-max-age"), Some("600"));
    assert_eq!(
        header(&preflight, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a preflight never reaches the upstream"
    );

    let simple = gw
        .client
        .get(gw.url("/cors"))
        .header("origin", "http://a.example")
        .send()
        .await
        .expect("send");
    assert_eq!(simple.status(), 200);
    assert_eq!(
        header(&simple, "access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(
        header(&simple, "access-control-expose-headers"),
        Some("X-Upstream")
    );

    let stranger = gw
        .client
        .get(gw.url("/cors"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(stranger.status(), 200);
    assert!(header(&stranger, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_defaults_and_origin_regex() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route("/open", &up, json!({"cors": {}})))
        .await;
    gw.put(
        "/routes/2",
        route(
            "/regex",
            &up,
            json!({"cors": {"allow_origins_by_regex": ["^http://.*\\.test\\.com$"]}}),
        ),
    )
    .await;

    let resp = gw
        .client
        .get(gw.url("/open"))
        .header("origin", "http://any.example")
        .send()
        .await
        .expect("send");
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&resp, "access-control-allow-methods"), Some("*"));
    assert_eq!(header(&resp, "access-control-allow-headers"), Some("*"));
    assert_eq!(header(&resp, "access-control-max-age"), Some("5"));
    assert!(header(&resp, "access-control-allow-credentials").is_none());

    let resp = gw
        .client
        .get(gw.url("/regex"))
        .header("origin", "http://a.test.com")
        .send()
        .await
        .expect("send");
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("http://a.test.com")
    );
    let resp = gw
        .client
        .get(gw.url("/regex"))
        .header("origin", "http://a.other.com")
        .send()
        .await
        .expect("send");
    assert!(header(&resp, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_refuses_wildcards_with_credentials() {
    let gw = TestGateway::start().await;
    let err = refused(&gw, json!({"cors": {"allow_credential": true}})).await;
    assert_eq!(
        err,
        "failed to check the configuration of plugin cors err: \
         you can not set '*' for other option when 'allow_credential' is true"
    );
}

// ---------------------------------------------------------------------------------------------
// ip-restriction

#[tokio::test]
async fn ip_restriction_allows_and_denies_by_client_address() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        route(
            "/allowed",
            &up,
            json!({"ip-restriction": {"whitelist": ["127.0.0.1", "10.0.0.0/8"]}}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        route(
            "/denied",
            &up,
            json!({"ip-restriction": {"blacklist": ["127.0.0.0/24"]}}),
        ),
    )
    .await;
    gw.put(
        "/routes/3",
        route(
            "/not-listed",
            &up,
            json!({"ip-restriction": {"whitelist": ["192.168.1.0/24"], "message": "go away"}}),
        ),
    )
    .await;

    assert_eq!(gw.get("/allowed").await.status(), 200);

    let (status, body) = status_json(gw.get("/denied").await).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"message": "Your IP address is not allowed"}));

    let (status, body) = status_json(gw.get("/not-listed").await).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"message": "go away"}));
}

#[tokio::test]
async fn ip_restriction_schema_errors() {
    let gw = TestGateway::start().await;
    let err = refused(
        &gw,
        json!({"ip-restriction": {"whitelist": ["127.0.0.1"], "blacklist": ["10.0.0.1"]}}),
    )
    .await;
    assert!(
        err.starts_with("failed to check the configuration of plugin ip-restriction err: "),
        "{err}"
    );
    let err = refused(&gw, json!({"ip-restriction": {"whitelist": ["300.0.0.1"]}})).await;
    assert!(
        err.starts_with("failed to check the configuration of plugin ip-restriction err: "),
        "{err}"
    );
}
