//! The `azure-functions` plugin: function keys from the route or the plugin metadata, path
//! forwarding with the route's wildcard tail, and responses over HTTP/1.1 and HTTP/2. Ports APISIX's
//! `t/plugin/azure-functions.t` (apisix.md §6.2).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::TestGateway;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};

/// The stand-in Azure Function app, as the APISIX test's mock server:
/// `/httptrigger` answers `faas invoked\n` with extra headers, `/api...` answers
/// `invocation <path> successful`, and anything else echoes the request headers as JSON.
async fn start_function() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind function");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        headers.insert(
            name.to_string(),
            Value::String(value.to_str().unwrap_or_default().to_owned()),
        );
    }
    let _ = req.into_body().collect().await;
    let mut resp = if path == "/httptrigger" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"faas invoked\n")));
        let h = resp.headers_mut();
        h.insert("content-type", "text/plain".parse().expect("static"));
        h.insert("x-extra-header", "MUST".parse().expect("static"));
        h.insert("connection", "Keep-Alive".parse().expect("static"));
        h.insert("keep-alive", "timeout=5".parse().expect("static"));
        resp
    } else if path.starts_with("/api") {
        Response::new(Full::new(Bytes::from(format!(
            "invocation {path} successful\n"
        ))))
    } else {
        let echo = json!({"path": path, "headers": headers});
        Response::new(Full::new(Bytes::from(echo.to_string())))
    };
    resp.headers_mut()
        .entry("content-type")
        .or_insert("application/json".parse().expect("static"));
    Ok(resp)
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn azure_route(uri: &str, conf: Value) -> Value {
    // A dummy upstream, as the APISIX test has: the plugin answers before it is used.
    json!({
        "uri": uri,
        "plugins": {"azure-functions": conf},
        "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}}
    })
}

fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client")
}

async fn echoed_headers(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json echo");
    body["headers"].clone()
}

#[tokio::test]
async fn schema_requires_function_uri() {
    let gw = TestGateway::start().await;
    let (status, body) = gw
        .admin("PUT", "/routes/1", Some(azure_route("/azure", json!({}))))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin azure-functions err: property \"function_uri\" is required"
    );
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(azure_route(
                "/azure",
                json!({"function_uri": "http://some-url.com"}),
            )),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

#[tokio::test]
async fn function_response_is_handed_back_over_http1_and_h2() {
    let f = start_function().await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        azure_route(
            "/azure",
            json!({"function_uri": format!("http://{f}/httptrigger")}),
        ),
    )
    .await;

    let resp = gw.get("/azure").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), Some("13"));
    assert_eq!(header(&resp, "x-extra-header"), Some("MUST"));
    assert!(header(&resp, "connection").is_none());
    assert!(header(&resp, "keep-alive").is_none());
    assert_eq!(resp.text().await.expect("body"), "faas invoked\n");

    let resp = h2c().get(gw.url("/azure")).send().await.expect("h2c get");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.expect("body"), "faas invoked\n");
}

#[tokio::test]
async fn h2_head_has_no_connection_specific_headers() {
    let f = start_function().await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        azure_route(
            "/azure",
            json!({"function_uri": format!("http://{f}/httptrigger")}),
        ),
    )
    .await;
    let resp = h2c().head(gw.url("/azure")).send().await.expect("h2c head");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    for name in ["connection", "upgrade", "keep-alive", "transfer-encoding"] {
        assert!(header(&resp, name).is_none(), "{name} sent over h2");
    }
    assert_eq!(header(&resp, "content-type"), Some("text/plain"));
    assert_eq!(header(&resp, "x-extra-header"), Some("MUST"));
    assert_eq!(header(&resp, "content-length"), Some("13"));
    assert!(resp.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn route_key_is_sent_unless_the_client_sent_one() {
    let f = start_function().await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        azure_route(
            "/azure",
            json!({"function_uri": format!("http://{f}/azure-demo"),
                   "authorization": {"apikey": "test_key", "clientid": "test_client_id"}}),
        ),
    )
    .await;

    let headers = echoed_headers(gw.get("/azure").await).await;
    assert_eq!(headers["x-functions-key"], "test_key");
    assert_eq!(headers["x-functions-clientid"], "test_client_id");

    let resp = gw
        .client
        .get(gw.url("/azure"))
        .header("x-functions-key", "must_not_be_overrided")
        .send()
        .await
        .expect("send");
    let headers = echoed_headers(resp).await;
    assert_eq!(headers["x-functions-key"], "must_not_be_overrided");
    assert!(
        headers.get("x-functions-clientid").is_none(),
        "a client key keeps the route's keys out: {headers}"
    );
}

#[tokio::test]
async fn metadata_master_key_is_the_fallback() {
    let f = start_function().await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        azure_route(
            "/azure",
            json!({"function_uri": format!("http://{f}/azure-demo")}),
        ),
    )
    .await;
    let headers = echoed_headers(gw.get("/azure").await).await;
    assert!(headers.get("x-functions-key").is_none(), "{headers}");

    gw.put(
        "/plugin_metadata/azure-functions",
        json!({"master_apikey": "metadata_key"}),
    )
    .await;
    let headers = echoed_headers(gw.get("/azure").await).await;
    assert_eq!(headers["x-functions-key"], "metadata_key");
    assert!(
        headers.get("x-functions-clientid").is_none(),
        "an empty master_clientid is not sent: {headers}"
    );

    let (status, body) = gw
        .admin(
            "PUT",
            "/plugin_metadata/azure-functions",
            Some(json!({"master_apikey": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn wildcard_tail_is_appended_to_the_function_path() {
    let f = start_function().await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        azure_route(
            "/azure/*",
            json!({"function_uri": format!("http://{f}/api")}),
        ),
    )
    .await;
    for (path, forwarded) in [
        ("/azure/httptrigger", "/api/httptrigger"),
        ("/azure/http/trigger", "/api/http/trigger"),
        ("/azure///http////trigger", "/api/http/trigger"),
        ("/azure/", "/api/"),
    ] {
        let resp = gw.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.text().await.expect("body"),
            format!("invocation {forwarded} successful\n"),
            "{path}"
        );
    }
}
