//! The `aws-lambda` plugin in Lambda Invoke mode (aws.md §4-§6, §9): `function_uri` given as a
//! `lambda.REGION.amazonaws.com/2015-03-31/functions/NAME/invocations` URL or an ARN, sent to a mock
//! Invoke service on loopback through `aws_endpoint`. The mock re-signs every request with the
//! `aws-sigv4` crate (service `lambda`), records it, and answers per function name; a mock STS
//! serves AssumeRole. Also: `aws_endpoint` in plain HTTP mode and credentials from a profile file.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use common::TestGateway;
use common::sigv4::{Iam, verify_sigv4};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

const ACCESS_KEY: &str = "AKIDINVOKEMOONGATE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYINVOKEKEY";
const FILE_ACCESS_KEY: &str = "AKIDFROMPROFILEFILE";
const FILE_SECRET_KEY: &str = "profile/secret+key=";
const FILE_TOKEN: &str = "FwoGZXIvYXdzEProfile/Token+==";
const STS_ACCESS_KEY: &str = "ASIAASSUMEDROLEKEY";
const STS_SECRET_KEY: &str = "assumed/role+secret";
const STS_TOKEN: &str = "IQoJb3JpZ2luX2VjEAssumed/Role+Token==";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/moongate-invoker";

fn lambda_iam(region: &'static str) -> Iam {
    Iam {
        access: ACCESS_KEY,
        secret: SECRET_KEY,
        token: None,
        region,
        service: "lambda",
    }
}

/// One request the mock received.
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn signed_headers(&self) -> String {
        self.header("authorization")
            .unwrap_or_default()
            .split(", ")
            .find_map(|f| f.strip_prefix("SignedHeaders="))
            .unwrap_or_default()
            .to_owned()
    }
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("event is JSON")
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Lambda,
    Sts,
    /// STS whose credentials expire in 2 minutes (inside the 5-minute refresh margin).
    StsShortLived,
}

struct Mock {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
}

impl Mock {
    async fn start(iam: Iam, kind: Kind) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let iam = Arc::new(iam);
        let (seen2, hits2) = (seen.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (iam, seen, hits) = (iam.clone(), seen2.clone(), hits2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(iam.clone(), kind, seen.clone(), hits.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Mock { addr, seen, hits }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn last(&self) -> Recorded {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the mock was called")
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    resp
}

fn aws_error(status: u16, kind: &str, body: Value) -> Response<Full<Bytes>> {
    let mut resp = reply(status, body.to_string());
    resp.headers_mut()
        .insert("x-amzn-errortype", kind.parse().expect("ascii kind"));
    resp.headers_mut()
        .insert("x-amzn-requestid", "req-1".parse().expect("static"));
    resp
}

/// The function's short name from a decoded FunctionName (name, name:alias or ARN).
fn short_name(function_name: &str) -> &str {
    if function_name.starts_with("arn:") {
        function_name.split(':').nth(6).unwrap_or_default()
    } else {
        function_name.split(':').next().unwrap_or_default()
    }
}

async fn handle(
    iam: Arc<Iam>,
    kind: Kind,
    seen: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Err((kind, message)) = verify_sigv4(&iam, &parts, &body) {
        return Ok(aws_error(403, kind, json!({ "message": message })));
    }
    let path = parts.uri.path().to_owned();
    seen.lock().expect("lock").push(Recorded {
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if kind == Kind::Sts || kind == Kind::StsShortLived {
        let form = String::from_utf8_lossy(&body).into_owned();
        if !form.contains("Action=AssumeRole") || !form.contains("RoleArn=arn%3Aaws%3Aiam") {
            return Ok(reply(400, "bad form"));
        }
        let lifetime = if kind == Kind::Sts {
            time::Duration::hours(1)
        } else {
            time::Duration::minutes(2)
        };
        let expiration = time::OffsetDateTime::now_utc() + lifetime;
        let xml = format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
             <Credentials><AccessKeyId>{STS_ACCESS_KEY}</AccessKeyId><SecretAccessKey>{STS_SECRET_KEY}</SecretAccessKey>\
             <SessionToken>{STS_TOKEN}</SessionToken><Expiration>{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z</Expiration></Credentials>\
             </AssumeRoleResult></AssumeRoleResponse>",
            expiration.year(),
            u8::from(expiration.month()),
            expiration.day(),
            expiration.hour(),
            expiration.minute(),
            expiration.second()
        );
        let mut resp = reply(200, xml);
        resp.headers_mut()
            .insert("content-type", "text/xml".parse().expect("static"));
        return Ok(resp);
    }
    let Some(encoded) = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|p| p.strip_suffix("/invocations"))
    else {
        // Plain HTTP mode (Function URL style): echo the request line.
        return Ok(reply(
            200,
            json!({"path": path, "query": parts.uri.query(), "host": parts.headers.get("host").and_then(|v| v.to_str().ok())}).to_string(),
        ));
    };
    let name = percent_encoding::percent_decode_str(encoded)
        .decode_utf8_lossy()
        .into_owned();
    let invocation_type = parts
        .headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    let mut resp = match invocation_type {
        "Event" => reply(202, Bytes::new()),
        "DryRun" => reply(204, Bytes::new()),
        _ => match short_name(&name) {
            "echo" => reply(
                200,
                json!({"statusCode": 200, "headers": {"content-type": "application/json"},
                       "body": String::from_utf8_lossy(&body)})
                .to_string(),
            ),
            "cookies" => reply(
                200,
                json!({"statusCode": "201", "headers": {"x-a": "1", "x-m": "single"},
                       "multiValueHeaders": {"x-m": ["a", "b"]},
                       "cookies": ["c1=1; Path=/", "c2=2"], "body": "ok"})
                .to_string(),
            ),
            "binary" => reply(
                200,
                json!({"statusCode": 200, "isBase64Encoded": true,
                       "headers": {"content-type": "application/octet-stream"},
                       "body": base64::engine::general_purpose::STANDARD.encode([0u8, 255, 1, 2])})
                .to_string(),
            ),
            "infer" => reply(200, r#"{"hello": "world", "n": [1, 2]}"#),
            "malformed" => reply(200, "not json{"),
            "badstatus" => reply(200, r#"{"statusCode": "abc", "body": "x"}"#),
            "crash" => {
                let mut r = reply(
                    200,
                    r#"{"errorMessage":"boom","errorType":"Error","stackTrace":[]}"#,
                );
                r.headers_mut()
                    .insert("x-amz-function-error", "Unhandled".parse().expect("static"));
                r
            }
            "throttled" => {
                let mut r = aws_error(
                    429,
                    "TooManyRequestsException",
                    json!({"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "message": "Rate Exceeded."}),
                );
                r.headers_mut()
                    .insert("retry-after", "1".parse().expect("static"));
                r
            }
            _ => aws_error(
                404,
                "ResourceNotFoundException",
                json!({"Type": "User", "Message": format!("Function not found: {name}")}),
            ),
        },
    };
    let h = resp.headers_mut();
    h.insert(
        "x-amz-log-result",
        "U0VDUkVUIGxvZ3M=".parse().expect("static"),
    );
    h.insert("x-amz-executed-version", "$LATEST".parse().expect("static"));
    h.insert("x-amzn-requestid", "0f0e-request".parse().expect("static"));
    h.insert("x-amzn-trace-id", "Root=1-abc".parse().expect("static"));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Helpers

const NAME_URI: &str =
    "https://lambda.us-west-2.amazonaws.com/2015-03-31/functions/echo/invocations";

fn uri_for(name: &str) -> String {
    format!("https://lambda.us-west-2.amazonaws.com/2015-03-31/functions/{name}/invocations")
}

fn keys() -> Value {
    json!({"iam": {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY}})
}

/// Starts a gateway whose route `/fn/*` runs aws-lambda with `conf` plus `aws_endpoint` = the mock.
async fn gateway(mock: &Mock, mut conf: Value) -> TestGateway {
    conf["aws_endpoint"] = Value::String(mock.url());
    if conf.get("authorization").is_none() {
        conf["authorization"] = keys();
    }
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/fn/*", "plugins": {"aws-lambda": conf}}),
    )
    .await;
    gw
}

async fn text_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn assert_no_amz_headers(resp: &reqwest::Response) {
    for name in resp.headers().keys() {
        assert!(
            !name.as_str().starts_with("x-amz"),
            "{name} must not reach the client"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn invoke_by_name_sends_a_signed_2_0_event() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": NAME_URI})).await;
    let resp = gw
        .client
        .get(gw.url("/fn/a%20b?x=1&x=2&y=z%2Bw"))
        .header("cookie", "a=1; b=2")
        .header("x-dup", "1")
        .header("x-dup", "2")
        .header("X-Mixed-Case", "v")
        .header("user-agent", "moon-test/1")
        .header("authorization", "Bearer client")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_no_amz_headers(&resp);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let event: Value = resp.json().await.expect("event echoed back");

    let seen = mock.last();
    assert_eq!(seen.path, "/2015-03-31/functions/echo/invocations");
    assert_eq!(seen.query, None);
    assert_eq!(
        seen.header("x-amz-invocation-type"),
        Some("RequestResponse")
    );
    assert_eq!(seen.header("x-amz-log-type"), Some("None"));
    assert_eq!(
        seen.signed_headers(),
        "host;x-amz-date;x-amz-invocation-type;x-amz-log-type"
    );
    assert!(
        seen.header("authorization")
            .unwrap_or_default()
            .contains("/us-west-2/lambda/aws4_request")
    );
    assert_eq!(seen.event(), event, "the function saw what it echoed");

    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/fn/a%20b");
    assert_eq!(event["rawQueryString"], "x=1&x=2&y=z%2Bw");
    assert_eq!(
        event["queryStringParameters"],
        json!({"x": "1,2", "y": "z+w"})
    );
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    let headers = &event["headers"];
    assert_eq!(headers["x-dup"], "1,2");
    assert_eq!(headers["x-mixed-case"], "v");
    assert_eq!(headers["authorization"], "Bearer client");
    assert!(headers.get("cookie").is_none(), "{headers}");
    assert_eq!(event["isBase64Encoded"], false);
    assert!(event.get("body").is_none() || event["body"].is_null());
    let rc = &event["requestContext"];
    assert_eq!(rc["http"]["method"], "GET");
    assert_eq!(rc["http"]["path"], "/fn/a%20b");
    assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["http"]["userAgent"], "moon-test/1");
    assert!(!rc["requestId"].as_str().unwrap_or_default().is_empty());
    assert!(rc["timeEpoch"].as_u64().unwrap_or_default() > 1_700_000_000_000);
    assert!(rc["time"].as_str().unwrap_or_default().ends_with(" +0000"));
}

#[tokio::test]
async fn invoke_by_arn_with_qualifier_sends_a_1_0_event() {
    let mock = Mock::start(lambda_iam("eu-central-1"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": "arn:aws:lambda:eu-central-1:123456789012:function:echo",
               "qualifier": "$LATEST", "payload_version": "1.0", "log_type": "Tail"}),
    )
    .await;
    let resp = gw
        .client
        .post(gw.url("/fn/items"))
        .header("x-dup", "1")
        .header("x-dup", "2")
        .body("hello")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_no_amz_headers(&resp);
    let event: Value = resp.json().await.expect("event");
    let seen = mock.last();
    assert_eq!(
        seen.path,
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-central-1%3A123456789012%3Afunction%3Aecho/invocations"
    );
    assert_eq!(seen.query.as_deref(), Some("Qualifier=%24LATEST"));
    assert_eq!(seen.header("x-amz-log-type"), Some("Tail"));
    assert_eq!(event["version"], "1.0");
    assert_eq!(event["httpMethod"], "POST");
    assert_eq!(event["path"], "/fn/items");
    assert_eq!(event["body"], "hello");
    assert_eq!(event["isBase64Encoded"], false);
    assert!(event["queryStringParameters"].is_null());
    assert!(event["multiValueQueryStringParameters"].is_null());
    assert_eq!(event["headers"]["x-dup"], "2");
    assert_eq!(event["multiValueHeaders"]["x-dup"], json!(["1", "2"]));
    assert_eq!(event["requestContext"]["httpMethod"], "POST");
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");

    let resp = gw
        .client
        .get(gw.url("/fn/items?a=1&a=2&b="))
        .send()
        .await
        .expect("send");
    let event: Value = resp.json().await.expect("event");
    assert_eq!(event["queryStringParameters"], json!({"a": "2", "b": ""}));
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"a": ["1", "2"], "b": [""]})
    );
    assert!(event["body"].is_null());
}

#[tokio::test]
async fn an_arn_with_alias_and_a_name_with_qualifier_are_signed_and_accepted() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": "arn:aws:lambda:us-west-2:123456789012:function:echo:live"}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/x")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        mock.last().path,
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A123456789012%3Afunction%3Aecho%3Alive/invocations"
    );

    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI, "qualifier": "prod-2"}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/x")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(mock.last().query.as_deref(), Some("Qualifier=prod-2"));
}

#[tokio::test]
async fn a_binary_request_body_is_base64_in_the_event() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": NAME_URI})).await;
    let raw = vec![0xffu8, 0xfe, 0x00, 0x01, b'a'];
    let resp = gw
        .client
        .post(gw.url("/fn/upload"))
        .body(raw.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let event: Value = resp.json().await.expect("event");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(
        event["body"],
        base64::engine::general_purpose::STANDARD.encode(&raw)
    );
    // UTF-8 text stays text.
    let resp = gw
        .client
        .post(gw.url("/fn/upload"))
        .body("héllo ☃")
        .send()
        .await
        .expect("send");
    let event: Value = resp.json().await.expect("event");
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["body"], "héllo ☃");
}

#[tokio::test]
async fn proxy_responses_are_unwrapped_with_cookies_and_multi_value_headers() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("cookies")})).await;
    let resp = gw.client.get(gw.url("/fn/c")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 201, "numeric string statusCode");
    assert_no_amz_headers(&resp);
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, vec!["c1=1; Path=/", "c2=2"]);
    assert_eq!(resp.headers()["x-a"], "1");
    assert_eq!(
        resp.headers()["x-m"],
        "single",
        "2.0 ignores multiValueHeaders"
    );
    assert_eq!(resp.text().await.expect("body"), "ok");

    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": uri_for("cookies"), "payload_version": "1.0"}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/c")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 201);
    let multi: Vec<&str> = resp
        .headers()
        .get_all("x-m")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, vec!["a", "b"], "multiValueHeaders win in 1.0");
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "no cookies in 1.0"
    );
}

#[tokio::test]
async fn a_base64_response_body_is_decoded() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("binary")})).await;
    let resp = gw.client.get(gw.url("/fn/b")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        resp.bytes().await.expect("body").as_ref(),
        &[0u8, 255, 1, 2]
    );
}

#[tokio::test]
async fn payload_2_0_infers_a_response_and_1_0_does_not() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("infer")})).await;
    let resp = gw.client.get(gw.url("/fn/i")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.text().await.expect("body"),
        r#"{"hello": "world", "n": [1, 2]}"#
    );

    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": uri_for("infer"), "payload_version": "1.0"}),
    )
    .await;
    let (status, body) = text_of(gw.client.get(gw.url("/fn/i")).send().await.expect("send")).await;
    assert_eq!(status, 502);
    assert_eq!(body, r#"{"message":"Internal server error"}"#);
}

#[tokio::test]
async fn malformed_output_is_502() {
    for name in ["malformed", "badstatus"] {
        let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
        let gw = gateway(&mock, json!({"function_uri": uri_for(name)})).await;
        let resp = gw.client.get(gw.url("/fn/m")).send().await.expect("send");
        assert_no_amz_headers(&resp);
        let (status, body) = text_of(resp).await;
        assert_eq!(status, 502, "{name}");
        assert_eq!(body, r#"{"message":"Internal server error"}"#, "{name}");
    }
}

#[tokio::test]
async fn a_function_error_maps_to_unhandled_status() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("crash")})).await;
    let resp = gw.client.get(gw.url("/fn/e")).send().await.expect("send");
    assert_no_amz_headers(&resp);
    let (status, body) = text_of(resp).await;
    assert_eq!(status, 502);
    assert!(body.contains("\"errorMessage\":\"boom\""), "{body}");

    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": uri_for("crash"), "unhandled_status": 500}),
    )
    .await;
    let (status, _) = text_of(gw.client.get(gw.url("/fn/e")).send().await.expect("send")).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn event_is_202_and_dry_run_is_204() {
    for (kind, expected) in [("Event", 202u16), ("DryRun", 204)] {
        let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
        let gw = gateway(
            &mock,
            json!({"function_uri": NAME_URI, "invocation_type": kind}),
        )
        .await;
        let resp = gw
            .client
            .post(gw.url("/fn/async"))
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_no_amz_headers(&resp);
        let (status, body) = text_of(resp).await;
        assert_eq!(status, expected, "{kind}");
        assert_eq!(body, "", "{kind}");
        let seen = mock.last();
        assert_eq!(seen.header("x-amz-invocation-type"), Some(kind));
    }
}

#[tokio::test]
async fn lambda_service_errors_are_502_except_throttling() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("throttled")})).await;
    let resp = gw.client.get(gw.url("/fn/t")).send().await.expect("send");
    assert_no_amz_headers(&resp);
    assert_eq!(resp.status().as_u16(), 429);

    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(&mock, json!({"function_uri": uri_for("nosuchfn")})).await;
    let resp = gw.client.get(gw.url("/fn/t")).send().await.expect("send");
    assert_no_amz_headers(&resp);
    let (status, body) = text_of(resp).await;
    assert_eq!(status, 502);
    assert!(!body.contains("Function not found"), "{body}");

    // A signature the verifier refuses (wrong secret): 403 from AWS, 502 to the client.
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI,
               "authorization": {"iam": {"accesskey": ACCESS_KEY, "secretkey": "wrong"}}}),
    )
    .await;
    let (status, body) = text_of(gw.client.get(gw.url("/fn/t")).send().await.expect("send")).await;
    assert_eq!(status, 502);
    assert!(!body.contains("signature"), "{body}");
}

#[tokio::test]
async fn credentials_come_from_a_profile_in_a_credentials_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = AKIDWRONGDEFAULT\naws_secret_access_key = nope\n\n\
             # comment\n[moon]\naws_access_key_id = {FILE_ACCESS_KEY}\n\
             aws_secret_access_key={FILE_SECRET_KEY}\naws_session_token = {FILE_TOKEN}\n"
        ),
    )
    .expect("write credentials");
    let mock = Mock::start(
        Iam {
            access: FILE_ACCESS_KEY,
            secret: FILE_SECRET_KEY,
            token: Some(FILE_TOKEN),
            region: "us-west-2",
            service: "lambda",
        },
        Kind::Lambda,
    )
    .await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI, "authorization": {"iam": {
            "credentials_file": path.to_string_lossy(), "profile": "moon"}}}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/p")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let seen = mock.last();
    assert_eq!(seen.header("x-amz-security-token"), Some(FILE_TOKEN));
    assert!(seen.signed_headers().contains("x-amz-security-token"));
}

#[tokio::test]
async fn assume_role_credentials_are_fetched_from_sts_once_and_cached() {
    let sts = Mock::start(
        Iam {
            access: ACCESS_KEY,
            secret: SECRET_KEY,
            token: None,
            region: "us-east-1",
            service: "sts",
        },
        Kind::Sts,
    )
    .await;
    let mock = Mock::start(
        Iam {
            access: STS_ACCESS_KEY,
            secret: STS_SECRET_KEY,
            token: Some(STS_TOKEN),
            region: "us-west-2",
            service: "lambda",
        },
        Kind::Lambda,
    )
    .await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI, "authorization": {"iam": {
            "accesskey": ACCESS_KEY, "secretkey": SECRET_KEY,
            "assume_role_arn": ROLE_ARN, "sts_endpoint": sts.url()}}}),
    )
    .await;
    for _ in 0..3 {
        let resp = gw.client.get(gw.url("/fn/r")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }
    // One STS call per worker VM at most (the test gateway runs 2 workers).
    let sts_calls = sts.hits.load(Ordering::SeqCst);
    assert!((1..=2).contains(&sts_calls), "{sts_calls}");
    let form = String::from_utf8_lossy(&sts.last().body).into_owned();
    assert!(form.contains("RoleSessionName=moongate"), "{form}");
    assert_eq!(mock.last().header("x-amz-security-token"), Some(STS_TOKEN));
}

#[tokio::test]
async fn aws_endpoint_redirects_plain_http_mode_and_chain_mode_schema_is_accepted() {
    let mock = Mock::start(lambda_iam("us-east-1"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": "https://abcdef.lambda-url.us-east-1.on.aws/hello?q=1",
               "authorization": {"iam": {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY,
                                         "service": "lambda"}}}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/x")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let echo: Value = resp.json().await.expect("echo");
    assert_eq!(
        echo["path"], "/hello/x",
        "function_uri path plus the wildcard tail"
    );
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo["host"], mock.addr.to_string());

    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/2",
            Some(json!({"uri": "/c", "plugins": {"aws-lambda": {
                "function_uri": NAME_URI, "authorization": {"iam": {"profile": "x"}}}}})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/3",
            Some(json!({"uri": "/c", "plugins": {"aws-lambda": {
                "function_uri": NAME_URI, "invocation_type": "Later"}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_without_calling_lambda() {
    let mock = Mock::start(lambda_iam("us-west-2"), Kind::Lambda).await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI, "max_req_body_size": 16}),
    )
    .await;
    let resp = gw
        .client
        .post(gw.url("/fn/big"))
        .body(vec![b'x'; 64])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(mock.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn plain_http_mode_signs_with_credentials_from_a_profile_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        format!(
            "[profile moon]\naws_access_key_id = {FILE_ACCESS_KEY}\n\
             aws_secret_access_key = {FILE_SECRET_KEY}\naws_session_token = {FILE_TOKEN}\n"
        ),
    )
    .expect("write credentials");
    let mock = Mock::start(
        Iam {
            access: FILE_ACCESS_KEY,
            secret: FILE_SECRET_KEY,
            token: Some(FILE_TOKEN),
            region: "eu-west-1",
            service: "lambda",
        },
        Kind::Lambda,
    )
    .await;
    let gw = gateway(
        &mock,
        json!({"function_uri": "https://abcdef.lambda-url.eu-west-1.on.aws/",
               "authorization": {"iam": {"credentials_file": path.to_string_lossy(),
                   "profile": "moon", "service": "lambda", "aws_region": "eu-west-1"}}}),
    )
    .await;
    let resp = gw.client.get(gw.url("/fn/y")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(mock.last().header("x-amz-security-token"), Some(FILE_TOKEN));

    // A profile that is not in the file (and no usable env keys for it): 500, nothing sent.
    let hits = mock.hits.load(Ordering::SeqCst);
    let gw2 = gateway(
        &mock,
        json!({"function_uri": "https://abcdef.lambda-url.eu-west-1.on.aws/",
               "authorization": {"iam": {"credentials_file": path.to_string_lossy(),
                   "profile": "absent", "service": "lambda", "aws_region": "eu-west-1"}}}),
    )
    .await;
    let resp = gw2.client.get(gw2.url("/fn/y")).send().await.expect("send");
    let status = resp.status().as_u16();
    // Env credentials, if the test machine has any, are tried next and refused by the mock (403).
    assert!(status == 500 || status == 403, "{status}");
    if status == 500 {
        assert_eq!(mock.hits.load(Ordering::SeqCst), hits);
    }
}

#[tokio::test]
async fn assumed_credentials_are_refreshed_within_five_minutes_of_expiry() {
    let sts = Mock::start(
        Iam {
            access: ACCESS_KEY,
            secret: SECRET_KEY,
            token: None,
            region: "us-east-1",
            service: "sts",
        },
        Kind::StsShortLived,
    )
    .await;
    let mock = Mock::start(
        Iam {
            access: STS_ACCESS_KEY,
            secret: STS_SECRET_KEY,
            token: Some(STS_TOKEN),
            region: "us-west-2",
            service: "lambda",
        },
        Kind::Lambda,
    )
    .await;
    let gw = gateway(
        &mock,
        json!({"function_uri": NAME_URI, "authorization": {"iam": {
            "accesskey": ACCESS_KEY, "secretkey": SECRET_KEY, "role_session_name": "short",
            "assume_role_arn": ROLE_ARN, "sts_endpoint": sts.url()}}}),
    )
    .await;
    for _ in 0..3 {
        let resp = gw.client.get(gw.url("/fn/r")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(
        sts.hits.load(Ordering::SeqCst),
        3,
        "refreshed on every request"
    );
    let form = String::from_utf8_lossy(&sts.last().body).into_owned();
    assert!(form.contains("RoleSessionName=short"), "{form}");
}
