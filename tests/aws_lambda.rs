//! The `aws-lambda` plugin: API keys, SigV4 (IAM) checked by an independent verifier, forwarding of
//! path, query, headers and body, the response handed back, and transport failures. Ports APISIX's
//! `t/plugin/aws-lambda.t` (apisix.md §6.1) plus the defects of §5 / aws.md §11 that must not occur.
//!
//! The stand-in function behaves like API Gateway: a wrong or missing `x-api-key` gets 403
//! `{"message":"Forbidden"}`, and a request whose SigV4 signature the `aws-sigv4` crate does not
//! reproduce gets 403 with AWS's mismatch message. Otherwise it echoes what it received as JSON.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::sigv4::{Iam, SIGNATURE_MISMATCH, parse_amz_date, verify_sigv4};
use common::{ADMIN_KEY, MockUpstream, TestGateway, self_signed};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "AKIDEXAMPLEMOONGATE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEMoon/gate+token==";

// ---------------------------------------------------------------------------------------------
// The stand-in function

/// What the function demands of callers.
#[derive(Clone, Default)]
struct Expect {
    api_key: Option<&'static str>,
    iam: Option<Iam>,
}

impl Iam {
    fn api_gateway() -> Iam {
        Iam {
            access: ACCESS_KEY,
            secret: SECRET_KEY,
            token: None,
            region: "us-east-1",
            service: "execute-api",
        }
    }
}

struct MockFunction {
    addr: SocketAddr,
    tls: bool,
    connections: Arc<AtomicUsize>,
}

impl MockFunction {
    async fn start(expect: Expect) -> MockFunction {
        Self::spawn(expect, None).await
    }

    /// HTTPS with a self-signed certificate for `localhost` / `127.0.0.1`.
    async fn start_tls(expect: Expect) -> MockFunction {
        Self::spawn(
            expect,
            Some(common::tls_acceptor(&["localhost", "127.0.0.1"])),
        )
        .await
    }

    async fn spawn(expect: Expect, tls: Option<tokio_rustls::TlsAcceptor>) -> MockFunction {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind function");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let expect = Arc::new(expect);
        let is_tls = tls.is_some();
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let expect = expect.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(expect.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        MockFunction {
            addr,
            tls: is_tls,
            connections,
        }
    }

    fn uri(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
}

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", content_type.parse().expect("static"));
    resp
}

fn aws_error(kind: &str, message: &str) -> Response<Full<Bytes>> {
    let mut resp = reply(
        403,
        "application/json",
        json!({ "message": message }).to_string(),
    );
    resp.headers_mut()
        .insert("x-amzn-errortype", kind.parse().expect("ascii kind"));
    resp
}

async fn handle(
    expect: Arc<Expect>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if let Some(ms) = path
        .strip_prefix("/sleep/")
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/httptrigger" {
        let mut resp = reply(200, "text/plain", "aws lambda invoked\n");
        resp.headers_mut()
            .insert("connection", "Keep-Alive".parse().expect("static"));
        return Ok(resp);
    }
    if let Some(key) = expect.api_key {
        let sent = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if sent != Some(key) {
            return Ok(aws_error("ForbiddenException", "Forbidden"));
        }
    }
    if let Some(iam) = &expect.iam
        && let Err((kind, message)) = verify_sigv4(iam, &parts, &body)
    {
        return Ok(aws_error(kind, &message));
    }
    let status: u16 = path
        .rsplit_once("/status/")
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(200);
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.to_string(), Value::String(values.join(", ")));
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": if body.len() <= 64 * 1024 { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
        "body_len": body.len(),
        "body_sha256": hex::encode(Sha256::digest(&body)),
    });
    let mut resp = reply(status, "application/json", echo.to_string());
    let h = resp.headers_mut();
    h.insert("x-extra-header", "MUST".parse().expect("static"));
    h.append("set-cookie", "a=1; Path=/".parse().expect("static"));
    h.append("set-cookie", "b=2; Path=/".parse().expect("static"));
    h.insert(
        "x-amz-log-result",
        "U0VDUkVUIGZ1bmN0aW9uIGxvZ3M=".parse().expect("static"),
    );
    h.insert("keep-alive", "timeout=5".parse().expect("static"));
    h.insert("connection", "keep-alive".parse().expect("static"));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn lambda_route(uri: &str, conf: Value) -> Value {
    json!({"uri": uri, "plugins": {"aws-lambda": conf}})
}

fn iam_conf(extra: Value) -> Value {
    let mut iam = json!({"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY});
    if let (Some(iam), Some(extra)) = (iam.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            iam.insert(k.clone(), v.clone());
        }
    }
    json!({ "iam": iam })
}

/// The `SignedHeaders` list of an `Authorization` header.
fn signed_headers(authorization: &str) -> &str {
    authorization
        .split(", ")
        .find_map(|f| f.strip_prefix("SignedHeaders="))
        .unwrap_or_default()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Schema (APISIX cases 1, 2, 10)

#[tokio::test]
async fn schema_errors_match_apisix_through_the_admin_api() {
    let gw = TestGateway::start().await;
    let put = |conf: Value| {
        let gw = &gw;
        async move {
            gw.admin("PUT", "/routes/1", Some(lambda_route("/aws", conf)))
                .await
        }
    };

    let (status, body) = put(json!({
        "function_uri": "https://api.amazonaws.com",
        "authorization": {"iam": {"accesskey": "key1", "secretkey": "key2"}}
    }))
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");

    let (status, body) = put(json!({
        "function_uri": "https://api.amazonaws.com",
        "authorization": {"iam": {"secretkey": "key2"}}
    }))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin aws-lambda err: property \"authorization\" validation failed: property \"iam\" validation failed: property \"accesskey\" is required"
    );

    let (status, body) = put(json!({
        "function_uri": "https://api.amazonaws.com",
        "authorization": {"iam": {"accesskey": "key1", "secret_key": "key2"}}
    }))
    .await;
    assert!(
        status == 200 || status == 201,
        "secret_key is accepted as an alias: {status} {body}"
    );

    let (status, body) = put(json!({
        "function_uri": "https://api.amazonaws.com",
        "authorization": {"iam": {"accesskey": "key1"}}
    }))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin aws-lambda err: property \"authorization\" validation failed: property \"iam\" validation failed: property \"secretkey\" is required"
    );

    let (status, body) = put(json!({"authorization": {"apikey": "k"}})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin aws-lambda err: property \"function_uri\" is required"
    );

    let (status, body) = put(json!({"function_uri": "http://x", "timeout": 50})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_msg"],
        "failed to check the configuration of plugin aws-lambda err: property \"timeout\" validation failed: expected 50 to be greater than 100"
    );

    // Case 10: only function_uri.
    let (status, body) = put(json!({"function_uri": "http://localhost:8765/generic"})).await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

#[tokio::test]
async fn the_plugin_schema_has_apisix_defaults() {
    let gw = TestGateway::start().await;
    let (status, schema) = gw.admin("GET", "/schema/plugins/aws-lambda", None).await;
    assert_eq!(status, 200, "{schema}");
    let props = &schema["properties"];
    assert_eq!(props["timeout"]["default"], 3000);
    assert_eq!(props["timeout"]["minimum"], 100);
    assert_eq!(props["ssl_verify"]["default"], true);
    assert_eq!(props["keepalive"]["default"], true);
    assert_eq!(props["keepalive_timeout"]["default"], 60000);
    assert_eq!(props["keepalive_pool"]["default"], 5);
    assert_eq!(props["max_req_body_size"]["default"], 67108864);
    let iam = &props["authorization"]["properties"]["iam"]["properties"];
    assert_eq!(iam["aws_region"]["default"], "us-east-1");
    assert_eq!(iam["service"]["default"], "execute-api");
    assert_eq!(schema["required"], json!(["function_uri"]));
}

// ---------------------------------------------------------------------------------------------
// API key (APISIX cases 3, 4, 5)

#[tokio::test]
async fn upstream_headers_and_body_are_handed_back() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/httptrigger"), "authorization": {"apikey": "testkey"}}),
        ),
    )
    .await;
    let resp = gw.get("/aws").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), Some("19"));
    assert_eq!(header(&resp, "content-type"), Some("text/plain"));
    assert!(header(&resp, "connection").is_none());
    assert_eq!(resp.text().await.expect("body"), "aws lambda invoked\n");
}

#[tokio::test]
async fn apikey_is_sent_as_x_api_key_and_a_wrong_one_gets_apigateway_403() {
    let f = MockFunction::start(Expect {
        api_key: Some("test_key"),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": {"apikey": "test_key"}}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/wrong",
            json!({"function_uri": f.uri("/default/generic"), "authorization": {"apikey": "nope"}}),
        ),
    )
    .await;
    gw.put(
        "/routes/3",
        lambda_route("/none", json!({"function_uri": f.uri("/default/generic")})),
    )
    .await;

    let (status, echo) = json_of(gw.get("/aws").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-api-key"], "test_key");
    assert_eq!(echo["path"], "/default/generic");

    let resp = gw.get("/wrong").await;
    assert_eq!(
        header(&resp, "x-amzn-errortype"),
        Some("ForbiddenException")
    );
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"message": "Forbidden"}));

    let (status, body) = json_of(gw.get("/none").await).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"message": "Forbidden"}));

    // As APISIX: a key the client sends is kept.
    let resp = gw
        .client
        .get(gw.url("/wrong"))
        .header("x-api-key", "test_key")
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-api-key"], "test_key");
}

// ---------------------------------------------------------------------------------------------
// IAM (APISIX cases 6, 9, 11)

#[tokio::test]
async fn iam_signs_with_the_default_region_and_service() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let resp = gw
        .client
        .get(gw.url("/aws"))
        .header("x-custom", "  spaced   value  ")
        .header("accept", "a/b")
        .header("accept", "c/d")
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    let authorization = echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")),
        "{authorization}"
    );
    assert!(
        authorization.contains("/us-east-1/execute-api/aws4_request"),
        "{authorization}"
    );
    assert_eq!(
        signed_headers(authorization),
        "host;x-amz-date",
        "only host and the signer's headers are signed"
    );
    let amz_date = echo["headers"]["x-amz-date"].as_str().unwrap_or_default();
    assert!(parse_amz_date(amz_date).is_some(), "{amz_date}");
    assert_eq!(
        echo["headers"]["host"],
        f.addr.to_string(),
        "host keeps its port"
    );
    assert_eq!(echo["headers"]["x-custom"], "  spaced   value  ".trim());
    assert_eq!(echo["headers"]["accept"], "a/b, c/d");
}

#[tokio::test]
async fn the_verifier_refuses_a_signature_made_with_another_secret() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"),
                   "authorization": iam_conf(json!({"secretkey": "not-the-secret"}))}),
        ),
    )
    .await;
    let resp = gw.get("/aws").await;
    assert_eq!(
        header(&resp, "x-amzn-errortype"),
        Some("InvalidSignatureException")
    );
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 403);
    assert_eq!(body["message"], SIGNATURE_MISMATCH);
}

#[tokio::test]
async fn iam_query_is_canonicalized_signed_and_sent_as_signed() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let (status, echo) = json_of(
        gw.get("/aws?with%20space=a%2Fb%20c&multi=m2&multi=m1&flag&a=*&a-=x")
            .await,
    )
    .await;
    assert_eq!(status, 200, "signature verified: {echo}");
    assert_eq!(
        echo["query"],
        "a=%2A&a-=x&flag=&multi=m1&multi=m2&with%20space=a%2Fb%20c"
    );
    // A literal plus, an encoded plus and a raw '+' (a space to AWS).
    let (status, echo) = json_of(gw.get("/aws?p=1%2B1&q=x+y&r=@:").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["query"], "p=1%2B1&q=x%20y&r=%40%3A");
}

#[tokio::test]
async fn chunked_request_body_is_reframed_with_content_length_and_signed() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let chunks = futures_util::stream::iter(
        ["hello", " ", "world"].map(|s| Ok::<_, std::io::Error>(s.as_bytes().to_vec())),
    );
    let resp = gw
        .client
        .post(gw.url("/aws"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "hello world");
    assert_eq!(echo["headers"]["content-length"], "11");
    assert!(echo["headers"].get("transfer-encoding").is_none(), "{echo}");
}

#[tokio::test]
async fn session_token_is_sent_and_signed() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam {
            token: Some(SESSION_TOKEN),
            ..Iam::api_gateway()
        }),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"),
                   "authorization": iam_conf(json!({"session_token": SESSION_TOKEN}))}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/no-token",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let (status, echo) = json_of(gw.get("/aws").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-amz-security-token"], SESSION_TOKEN);
    let authorization = echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        signed_headers(authorization),
        "host;x-amz-date;x-amz-security-token"
    );

    let (status, body) = json_of(gw.get("/no-token").await).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "The security token included in the request is invalid."
    );
}

#[tokio::test]
async fn function_url_is_signed_for_service_lambda_and_its_region() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam {
            region: "eu-west-1",
            service: "lambda",
            ..Iam::api_gateway()
        }),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/url",
            // `secret_key`, the spelling published guides use.
            json!({"function_uri": f.uri("/"),
                   "authorization": {"iam": {"accesskey": ACCESS_KEY, "secret_key": SECRET_KEY,
                                             "service": "lambda", "aws_region": "eu-west-1"}}}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/wrong-service",
            json!({"function_uri": f.uri("/"), "authorization": iam_conf(json!({"aws_region": "eu-west-1"}))}),
        ),
    )
    .await;
    let resp = gw
        .client
        .post(gw.url("/url?x=1"))
        .body(r#"{"hello":"lambda"}"#)
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    let authorization = echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        authorization.contains("/eu-west-1/lambda/aws4_request"),
        "{authorization}"
    );
    assert_eq!(echo["body"], r#"{"hello":"lambda"}"#);

    let (status, body) = json_of(gw.get("/wrong-service").await).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "Credential should be scoped to correct service: 'lambda'. "
    );
}

#[tokio::test]
async fn client_auth_headers_neither_disable_nor_break_signing() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let resp = gw
        .client
        .get(gw.url("/aws"))
        .header("authorization", "Bearer a.jwt.for-another-plugin")
        .header("x-amz-date", "19990101T000000Z")
        .header("x-amz-security-token", "forged")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    let authorization = echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 "),
        "{authorization}"
    );
    assert_ne!(echo["headers"]["x-amz-date"], "19990101T000000Z");
    assert!(
        echo["headers"].get("x-amz-security-token").is_none(),
        "{echo}"
    );
    assert!(
        echo["headers"].get("x-amz-content-sha256").is_none(),
        "{echo}"
    );
}

// ---------------------------------------------------------------------------------------------
// The task's walkthrough: the Admin API on the data-plane port, HTTP/1.1, h2c and TLS, then disable

#[tokio::test]
async fn the_documented_curl_works_verbatim_over_h1_h2c_and_tls_then_disable_proxies() {
    let f = MockFunction::start_tls(Expect {
        api_key: Some("KEY"),
        ..Expect::default()
    })
    .await;
    let up = MockUpstream::start("plain").await;
    let gw = TestGateway::start().await;
    let (cert, key) = self_signed(&["test.com"]);
    gw.put(
        "/ssls/1",
        json!({"cert": cert, "key": key, "snis": ["test.com"]}),
    )
    .await;

    let body = format!(
        r#"{{"plugins":{{"aws-lambda":{{"function_uri":"https://{}/default/test-apisix","authorization":{{"apikey":"KEY"}},"ssl_verify":false}}}},"uri":"/aws"}}"#,
        f.addr
    );
    let resp = gw
        .client
        .put(gw.url("/apisix/admin/routes/1"))
        .header("X-API-KEY", ADMIN_KEY)
        .body(body)
        .send()
        .await
        .expect("admin on the data-plane port");
    assert!(
        resp.status() == 200 || resp.status() == 201,
        "{}",
        resp.status()
    );

    let check = |resp: reqwest::Response, version: reqwest::Version| async move {
        assert_eq!(resp.version(), version);
        assert_eq!(header(&resp, "x-extra-header"), Some("MUST"));
        assert_eq!(header(&resp, "content-type"), Some("application/json"));
        let (status, echo) = json_of(resp).await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(echo["path"], "/default/test-apisix");
        assert_eq!(echo["query"], "name=APISIX");
        assert_eq!(echo["headers"]["x-api-key"], "KEY");
    };

    let h1 = gw.get("/aws?name=APISIX").await;
    check(h1, reqwest::Version::HTTP_11).await;

    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");
    let resp = h2c
        .get(gw.url("/aws?name=APISIX"))
        .send()
        .await
        .expect("h2c");
    check(resp, reqwest::Version::HTTP_2).await;

    let tls_addr = gw.tls.expect("tls listener");
    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .resolve("test.com", tls_addr)
        .build()
        .expect("tls client");
    let resp = tls
        .get(format!(
            "https://test.com:{}/aws?name=APISIX",
            tls_addr.port()
        ))
        .send()
        .await
        .expect("tls");
    check(resp, reqwest::Version::HTTP_11).await;

    // Disable: no plugins and an upstream, so the route proxies plainly.
    let body = format!(
        r#"{{"plugins":{{}},"uri":"/aws","upstream":{{"type":"roundrobin","nodes":{{"{}":1}}}}}}"#,
        up.node()
    );
    let resp = gw
        .client
        .put(gw.url("/apisix/admin/routes/1"))
        .header("X-API-KEY", ADMIN_KEY)
        .body(body)
        .send()
        .await
        .expect("disable");
    assert_eq!(resp.status(), 200);
    let (status, echo) = json_of(gw.get("/aws?name=APISIX").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["upstream"], "plain");
    assert_eq!(echo["uri"], "/aws?name=APISIX");
}

// ---------------------------------------------------------------------------------------------
// Forwarding details

#[tokio::test]
async fn response_keeps_repeated_headers_and_drops_hop_by_hop_and_log_result() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route("/aws", json!({"function_uri": f.uri("/default/generic")})),
    )
    .await;
    let resp = gw.get("/aws").await;
    assert_eq!(resp.status(), 200);
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
    assert!(header(&resp, "x-amz-log-result").is_none());
    assert!(header(&resp, "keep-alive").is_none());
    assert!(header(&resp, "connection").is_none());
    assert_eq!(header(&resp, "x-extra-header"), Some("MUST"));
    let len: usize = header(&resp, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert_eq!(resp.bytes().await.expect("body").len(), len);
}

#[tokio::test]
async fn request_headers_are_forwarded_except_hop_by_hop_and_host_is_the_function() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route("/aws", json!({"function_uri": f.uri("/default/generic")})),
    )
    .await;
    let resp = gw
        .client
        .get(gw.url("/aws?raw=a+b%20c&x"))
        .header("x-one", "1")
        .header("x-two", "2")
        .header("connection", "x-two")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("proxy-connection", "keep-alive")
        .header("host", "client.example")
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    let headers = &echo["headers"];
    assert_eq!(headers["x-one"], "1");
    assert_eq!(headers["host"], f.addr.to_string());
    for name in [
        "x-two",
        "te",
        "upgrade",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(headers.get(name).is_none(), "{name} forwarded: {echo}");
    }
    assert_eq!(
        echo["query"], "raw=a+b%20c&x",
        "the query goes out as received"
    );
    assert_eq!(echo["method"], "GET");
}

#[tokio::test]
async fn a_function_uri_without_path_requests_slash() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route("/aws", json!({"function_uri": f.uri("")})),
    )
    .await;
    let (status, echo) = json_of(gw.get("/aws").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/");
}

#[tokio::test]
async fn wildcard_tail_with_spaces_and_unicode_is_encoded_and_signed() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws/*",
            json!({"function_uri": f.uri("/default/fn"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let (status, echo) = json_of(gw.get("/aws/a%20b/%C3%A9t%C3%A9/x@y:z").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/default/fn/a%20b/%C3%A9t%C3%A9/x@y:z");

    let (status, echo) = json_of(gw.get("/aws//deep//./trail/").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/default/fn/deep/trail/");

    let (status, echo) = json_of(gw.get("/aws/100%25%3Fnot-a-query").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/default/fn/100%25%3Fnot-a-query");
    assert_eq!(echo["query"], Value::Null);
}

#[tokio::test]
async fn a_one_mib_body_is_forwarded_and_signed_and_a_larger_one_is_413() {
    let f = MockFunction::start(Expect {
        iam: Some(Iam::api_gateway()),
        ..Expect::default()
    })
    .await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/generic"), "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/small",
            json!({"function_uri": f.uri("/default/generic"), "max_req_body_size": 1024,
                   "authorization": iam_conf(json!({}))}),
        ),
    )
    .await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    let resp = gw
        .client
        .put(gw.url("/aws"))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    let (status, echo) = json_of(resp).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_len"], 1024 * 1024);
    assert_eq!(echo["body_sha256"], digest);

    let before = f.connections.load(Ordering::SeqCst);
    let resp = gw
        .client
        .post(gw.url("/small"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let resp = gw
        .client
        .post(gw.url("/small"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413, "chunked bodies are capped as well");
    assert_eq!(
        f.connections.load(Ordering::SeqCst),
        before,
        "the function is not contacted"
    );
}

#[tokio::test]
async fn a_function_error_status_and_body_pass_through() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/default/status/502")}),
        ),
    )
    .await;
    let (status, echo) = json_of(gw.get("/aws").await).await;
    assert_eq!(status, 502);
    assert_eq!(
        echo["path"], "/default/status/502",
        "the function's own body"
    );
}

// ---------------------------------------------------------------------------------------------
// Transport: timeouts, refused connections, TLS verification, keep-alive

#[tokio::test]
async fn a_slow_function_is_504() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": f.uri("/sleep/1500"), "timeout": 200}),
        ),
    )
    .await;
    let resp = gw.get("/aws").await;
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    let port = closed_port();
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route(
            "/aws",
            json!({"function_uri": format!("http://127.0.0.1:{port}/default/fn"),
                   "authorization": {"apikey": "secret-api-key"}}),
        ),
    )
    .await;
    assert_eq!(gw.get("/aws").await.status(), 502);
}

#[tokio::test]
async fn ssl_verify_refuses_a_self_signed_function_unless_disabled() {
    let f = MockFunction::start_tls(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route("/verify", json!({"function_uri": f.uri("/default/fn")})),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/noverify",
            json!({"function_uri": f.uri("/default/fn"), "ssl_verify": false}),
        ),
    )
    .await;
    assert_eq!(gw.get("/verify").await.status(), 502);
    let (status, echo) = json_of(gw.get("/noverify").await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/default/fn");
}

#[tokio::test]
async fn keepalive_reuses_connections_to_the_function() {
    let f = MockFunction::start(Expect::default()).await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        lambda_route("/aws", json!({"function_uri": f.uri("/default/fn")})),
    )
    .await;
    gw.put(
        "/routes/2",
        lambda_route(
            "/nokeep",
            json!({"function_uri": f.uri("/default/fn"), "keepalive": false}),
        ),
    )
    .await;
    for _ in 0..20 {
        let resp = gw.get("/aws").await;
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    }
    let used = f.connections.load(Ordering::SeqCst);
    assert!(used <= 4, "20 requests used {used} connections (2 workers)");

    let before = f.connections.load(Ordering::SeqCst);
    for _ in 0..3 {
        let resp = gw.get("/nokeep").await;
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    }
    assert_eq!(f.connections.load(Ordering::SeqCst) - before, 3);
}
