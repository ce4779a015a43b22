//! aws-lambda (and the serverless forwarding it shares) streams bodies both ways when nothing needs
//! the whole body: the function gets the client's first bytes before the client sent the rest, and
//! the client gets the function's first bytes before the function finished. A function offering
//! HTTP/2 through ALPN is reached over HTTP/2.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::TestGateway;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

/// How long a step may wait for the other side before the test fails (a gateway that buffered
/// would wait forever).
const STEP: Duration = Duration::from_secs(5);

type StandInBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A function stand-in. `/drip` answers "first", waits for `go`, then answers "second". `/trickle`
/// reads the first body chunk, signals `got_first`, then reads the rest and answers its length and
/// SHA-256. `/echo-size` answers the size and SHA-256 of the body it read.
struct Function {
    addr: SocketAddr,
    go: Arc<Notify>,
    got_first: Arc<Notify>,
    requests: Arc<AtomicUsize>,
}

impl Function {
    async fn start() -> Function {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (go, got_first) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let shared = (go.clone(), got_first.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (go, got_first, requests) = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        respond(req, go.clone(), got_first.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Function {
            addr,
            go,
            got_first,
            requests,
        }
    }

    fn uri(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn respond(
    req: Request<Incoming>,
    go: Arc<Notify>,
    got_first: Arc<Notify>,
) -> Result<Response<StandInBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    if path.ends_with("/mismatch") {
        // What API Gateway answers a bad signature with: the expected canonical request, which
        // carries the caller's session token.
        let message = "The request signature we calculated does not match the signature you provided. \
            Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n\
            The Canonical String for this request should have been\n'GET\n/default/mismatch\n\nhost:fn\n\
            x-amz-security-token:SECRET-SESSION-TOKEN\n'";
        let body = json!({ "message": message }).to_string();
        let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
        *resp.status_mut() = hyper::StatusCode::FORBIDDEN;
        return Ok(resp);
    }
    if path.ends_with("/drip") {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await;
            go.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                .await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    let mut first = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            len += data.len();
            hasher.update(data);
            if first && !data.is_empty() && path.ends_with("/trickle") {
                first = false;
                got_first.notify_one();
            }
        }
    }
    let answer = json!({"body_len": len, "body_sha256": hex::encode(hasher.finalize())});
    Ok(Response::new(
        http_body_util::Full::new(Bytes::from(answer.to_string())).boxed(),
    ))
}

async fn gateway(function: &Function, extra: Value) -> TestGateway {
    let gw = TestGateway::start().await;
    let mut conf =
        json!({"function_uri": function.uri("/default"), "authorization": {"apikey": "k"}});
    if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
        conf.extend(extra.clone());
    }
    gw.put(
        "/routes/1",
        json!({"uri": "/fn/*", "plugins": {"aws-lambda": conf}}),
    )
    .await;
    gw
}

#[tokio::test]
async fn the_client_gets_the_first_bytes_before_the_function_finishes() {
    let function = Function::start().await;
    let gw = gateway(&function, json!({})).await;
    let mut resp = tokio::time::timeout(STEP, gw.get("/fn/drip"))
        .await
        .expect("response head before the function finished");
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(STEP, resp.chunk())
        .await
        .expect("first chunk before the function finished")
        .expect("chunk");
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    function.go.notify_one();
    let rest = tokio::time::timeout(STEP, resp.bytes())
        .await
        .expect("rest")
        .expect("body");
    assert_eq!(&rest[..], b"second");
}

#[tokio::test]
async fn the_function_gets_the_first_bytes_before_the_client_sent_the_rest() {
    let function = Function::start().await;
    let gw = gateway(&function, json!({})).await;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let request = gw
        .client
        .post(gw.url("/fn/trickle"))
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let sender = async {
        tx.send(vec![b'a'; 1000]).await.expect("send first part");
        tokio::time::timeout(STEP, function.got_first.notified())
            .await
            .expect("the function got the first part while the client still held the rest");
        tx.send(vec![b'b'; 3000]).await.expect("send second part");
        drop(tx);
    };
    let (resp, ()) = tokio::join!(request, sender);
    let resp = resp.expect("response");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    let mut expected = Sha256::new();
    expected.update(vec![b'a'; 1000]);
    expected.update(vec![b'b'; 3000]);
    assert_eq!(answer["body_len"], 4000);
    assert_eq!(answer["body_sha256"], hex::encode(expected.finalize()));
}

#[tokio::test]
async fn a_large_body_streams_through_intact() {
    let function = Function::start().await;
    let gw = gateway(&function, json!({})).await;
    let body: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    let resp = gw
        .client
        .put(gw.url("/fn/echo-size"))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["body_len"], 8 * 1024 * 1024);
    assert_eq!(answer["body_sha256"], digest);
}

#[tokio::test]
async fn a_streamed_body_over_max_req_body_size_is_413() {
    let function = Function::start().await;
    let gw = gateway(&function, json!({"max_req_body_size": 1024})).await;
    // Declared too large: refused before the function is contacted.
    let resp = gw
        .client
        .post(gw.url("/fn/echo-size"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    assert_eq!(function.requests.load(Ordering::SeqCst), 0);
    // Chunked (no Content-Length), `count` chunks of 512 bytes.
    let post_chunked = |count: usize| {
        let chunks = futures_util::stream::iter(
            (0..count).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])),
        );
        gw.client
            .post(gw.url("/fn/echo-size"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
    };
    // Found too large while streaming.
    let resp = post_chunked(4).await.expect("send");
    assert_eq!(resp.status(), 413);
    // The rest of the body is not read, so the connection is not offered for reuse.
    assert_eq!(resp.headers()["connection"], "close");
    // Within the limit: forwarded whole.
    let resp = post_chunked(2).await.expect("send");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["body_len"], 1024);
}

/// A gateway with an aws-lambda route at `uri` to a function over TLS (not verified).
async fn tls_function_gateway(function: &common::MockUpstream, uri: &str) -> TestGateway {
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": uri, "plugins": {"aws-lambda": {
            "function_uri": format!("https://127.0.0.1:{}/default", function.addr.port()),
            "authorization": {"apikey": "k"}, "ssl_verify": false}}}),
    )
    .await;
    gw
}

#[tokio::test]
async fn a_function_offering_http2_is_reached_over_http2_with_connections_reused() {
    let function = common::MockUpstream::start_tls_h2("h2-function").await;
    let gw = tls_function_gateway(&function, "/h2/*").await;
    for _ in 0..3 {
        let resp = gw.get("/h2/x?a=1").await;
        assert_eq!(resp.status(), 200);
        let echo: Value = resp.json().await.expect("json");
        assert_eq!(echo["upstream"], "h2-function");
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["headers"]["x-api-key"], "k");
        assert!(
            echo["uri"]
                .as_str()
                .is_some_and(|u| u.ends_with("/default/x?a=1")),
            "{echo}"
        );
    }
    // The gateway has 2 workers, each with its own pool: at most one connection each.
    let connections = function.connections.load(Ordering::SeqCst);
    assert!(connections <= 2, "{connections} connections for 3 requests");
}

#[tokio::test]
async fn a_function_offering_only_http1_is_reached_over_http1() {
    let function = common::MockUpstream::start_tls("h1-function").await;
    let gw = tls_function_gateway(&function, "/h1/*").await;
    let resp = gw.get("/h1/x").await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["version"], "HTTP/1.1");
}

#[tokio::test]
async fn an_aws_signature_mismatch_body_loses_the_echoed_canonical_request() {
    let function = Function::start().await;
    let gw = gateway(&function, json!({})).await;
    let resp = gw.get("/fn/mismatch").await;
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.expect("body");
    assert!(!text.contains("SECRET-SESSION-TOKEN"), "{text}");
    let body: Value = serde_json::from_str(&text).expect("still JSON");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("The request signature we calculated does not match"),
        "{message}"
    );
}
