//! Faults around the gateway (upstreams that die, stall or answer garbage, TLS that fails, a store
//! that cannot write) each get a clean status for the request they hit, while a steady load on a
//! healthy route sees no failure at all.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::{GatewayProcess, Spawn};
use common::{MockUpstream, TestGateway, route_to};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// The gateway runs in this test process, so `/proc/self/fd` counts its descriptors: the test that
/// counts them runs alone (write lock), every other test shares (read lock).
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The shortest time a steady load runs, so each fault happens under traffic.
const LOAD_AT_LEAST: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Steady load

/// A few clients requesting a healthy route in a loop, counting every failure.
struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<JoinHandle<(usize, Vec<String>)>>,
}

/// What a load saw.
struct LoadResult {
    ok: usize,
    failures: Vec<String>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    let (mut ok, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::SeqCst) {
                        match client.get(&url).send().await {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                match resp.bytes().await {
                                    Ok(_) if status == 200 => ok += 1,
                                    Ok(_) => failures.push(format!("status {status}")),
                                    Err(err) => failures.push(format!("body: {err}")),
                                }
                            }
                            Err(err) => failures.push(format!("request: {err}")),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load {
            stop,
            started: Instant::now(),
            tasks,
        }
    }

    /// Stops the load (after it ran at least [`LOAD_AT_LEAST`]) and returns what it saw.
    async fn finish(self) -> LoadResult {
        if let Some(rest) = LOAD_AT_LEAST.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let mut result = LoadResult {
            ok: 0,
            failures: Vec::new(),
        };
        for task in self.tasks {
            let (ok, failures) = task.await.expect("load task");
            result.ok += ok;
            result.failures.extend(failures);
        }
        result
    }

    /// Stops the load and asserts that it was served throughout.
    async fn assert_no_failures(self) {
        let result = self.finish().await;
        assert!(result.ok > 0, "the load made progress");
        assert!(
            result.failures.is_empty(),
            "{} of {} load requests failed: {:?}",
            result.failures.len(),
            result.ok + result.failures.len(),
            &result.failures[..result.failures.len().min(5)]
        );
    }
}

/// A gateway with `/healthy` on a working upstream, for the steady load.
async fn gateway_with_healthy_route() -> (TestGateway, MockUpstream) {
    let healthy = MockUpstream::start("healthy").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/healthy", route_to("/healthy", &healthy.node()))
        .await;
    (gw, healthy)
}

// ---------------------------------------------------------------------------------------------
// Misbehaving servers, written on raw TCP

/// What a raw server does once it has read a request head.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// `Content-Length: 100000`, 50,000 bytes of body, then close.
    HalfBody,
    /// A chunked response whose stream ends after one chunk, without the last chunk.
    HalfChunked,
    /// 4 KiB of random bytes, then close.
    Garbage,
    /// Close without answering.
    CloseBeforeHeaders,
    /// Reads the request head, then neither reads the body nor answers.
    NeverReadsBody,
    /// Random bytes as soon as the connection opens (before reading anything), then close: what a
    /// TLS client sees from a server that does not speak TLS.
    GarbageFirst,
}

/// Starts a raw server that misbehaves in one way on every connection.
async fn misbehaving(behaviour: Misbehaviour) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Misbehaviour::GarbageFirst = behaviour {
                    let _ = stream.write_all(&random_bytes(4096)).await;
                    return;
                }
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = match behaviour {
                    Misbehaviour::NeverReadsBody => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(())
                    }
                    Misbehaviour::HalfBody => {
                        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n".to_vec();
                        resp.extend(std::iter::repeat_n(b'h', 50_000));
                        stream.write_all(&resp).await
                    }
                    Misbehaviour::HalfChunked => {
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n")
                            .await
                            .and(stream.write_all(&[b'c'; 0x1000]).await)
                            .and(stream.write_all(b"\r\n").await)
                    }
                    Misbehaviour::Garbage => stream.write_all(&random_bytes(4096)).await,
                    Misbehaviour::CloseBeforeHeaders | Misbehaviour::GarbageFirst => Ok(()),
                };
                let _ = stream.flush().await;
                // Give the bytes time to leave before the close, so the close is not a reset that
                // overtakes them.
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    addr
}

/// Reads until the end of a request head; false if the peer closed first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// Random bytes that do not start like an HTTP status line.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..n).map(|_| fastrand::u8(..)).collect();
    bytes[0] = 0x00;
    bytes
}

/// The error page the gateway answers for a 502.
fn is_clean_502_page(body: &str) -> bool {
    body.contains("502 Bad Gateway") && body.len() < 1024
}

// ---------------------------------------------------------------------------------------------
// An upstream that dies mid-response

#[tokio::test]
async fn an_upstream_that_dies_mid_response_truncates_that_response_only() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let half = misbehaving(Misbehaviour::HalfBody).await;
    let chunked = misbehaving(Misbehaviour::HalfChunked).await;
    let closed = misbehaving(Misbehaviour::CloseBeforeHeaders).await;
    gw.put("/routes/half", route_to("/half", &half.to_string()))
        .await;
    gw.put(
        "/routes/chunked",
        route_to("/chunked", &chunked.to_string()),
    )
    .await;
    gw.put("/routes/closed", route_to("/closed", &closed.to_string()))
        .await;

    let load = Load::start(gw.url("/healthy"), 3);
    for _ in 0..5 {
        for path in ["/half", "/chunked"] {
            // The head was already on its way: the client gets the 200, then a body that ends in
            // an error, in bounded time.
            let resp = tokio::time::timeout(Duration::from_secs(15), gw.get(path))
                .await
                .expect("the head arrives, no hang");
            assert_eq!(resp.status(), 200, "{path}");
            let body = tokio::time::timeout(Duration::from_secs(15), resp.bytes())
                .await
                .expect("the body ends, no hang");
            assert!(
                body.is_err(),
                "{path}: a truncated body is an error, not a short success: {body:?}"
            );
        }
        // Nothing was sent yet: the client gets a 502 page.
        let resp = gw.get("/closed").await;
        assert_eq!(resp.status(), 502);
        assert!(is_clean_502_page(&resp.text().await.expect("page")));
    }
    // The same over raw HTTP/1.1: the response is cut short of its Content-Length and the
    // connection closed.
    let (head, body_len) = raw_get(gw.http, "/half").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100000"),
        "{head:?}"
    );
    assert!(body_len < 100_000, "{body_len} body bytes");
    load.assert_no_failures().await;
}

/// Sends `GET path` on a fresh connection; returns the response head and how many body bytes came
/// before the connection closed.
async fn raw_get(addr: SocketAddr, path: &str) -> (String, usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the connection was left open after a truncated response"),
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    (
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf.len() - split,
    )
}

// ---------------------------------------------------------------------------------------------
// A slow upstream

/// The number of open file descriptors of this process (the gateway's included).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn read_timeouts_answer_504_and_leak_no_connections() {
    let _serial = SERIAL.write().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    // Its own upstream: a request on a pooled keep-alive connection escapes the read timeout (see
    // `read_timeout_applies_on_a_reused_keepalive_connection`), and nothing here is ever pooled.
    let slow = MockUpstream::start("slow").await;
    let mut route = route_to("/slow", &slow.node());
    route["timeout"] = json!({"connect": 2, "send": 0.3, "read": 0.3});
    gw.put("/routes/slow", route).await;

    // Warm up: the pools and the load's connections exist before the baseline.
    Load::start(gw.url("/healthy"), 3).finish().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = open_fds();

    let load = Load::start(gw.url("/healthy"), 3);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for _ in 0..5 {
        let burst: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                let url = gw.url("/slow?sleep_ms=1500");
                tokio::spawn(async move {
                    let resp = client.get(url).send().await.expect("answer");
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    status
                })
            })
            .collect();
        for request in burst {
            assert_eq!(request.await.expect("task"), 504, "a read timeout is a 504");
        }
    }
    load.assert_no_failures().await;
    drop(client);

    // The timed-out upstream connections are closed once the upstream wakes up (1.5 s) and the
    // client connections once the client is gone; poll until the count settles.
    let margin = 16;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = open_fds();
    while after > before + margin && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = open_fds();
    }
    assert!(
        after <= before + margin,
        "open descriptors went from {before} to {after} after 50 timed-out requests"
    );
    assert_eq!(gw.get("/healthy").await.status(), 200);
}

#[tokio::test]
async fn read_timeout_applies_on_a_reused_keepalive_connection() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let slow = MockUpstream::start("slow").await;
    let mut route = route_to("/slow", &slow.node());
    route["timeout"] = json!({"connect": 2, "send": 0.3, "read": 0.3});
    gw.put("/routes/slow", route).await;
    // The first request leaves an idle keep-alive connection to the upstream in the pool.
    assert_eq!(gw.get("/slow?sleep_ms=1").await.status(), 200);
    assert_eq!(slow.connections.load(Ordering::SeqCst), 1);
    let resp = gw.get("/slow?sleep_ms=3000").await;
    assert_eq!(
        slow.connections.load(Ordering::SeqCst),
        1,
        "the pooled connection was reused"
    );
    assert_eq!(
        resp.status(),
        504,
        "the read timeout (0.3 s) fires on a reused connection too"
    );
}

#[tokio::test]
async fn read_timeout_bounds_the_response_head_when_the_send_timeout_is_longer() {
    // nginx: proxy_send_timeout bounds writes of the request, proxy_read_timeout the wait for
    // each read of the response, the head included.
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let slow = MockUpstream::start("slow").await;
    let mut route = route_to("/slow", &slow.node());
    route["timeout"] = json!({"connect": 2, "send": 5, "read": 0.3});
    gw.put("/routes/slow", route).await;
    let started = Instant::now();
    assert_eq!(gw.get("/slow?sleep_ms=2000").await.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the read timeout (0.3 s) fired, not the send timeout (5 s)"
    );
}

#[tokio::test]
async fn send_timeout_bounds_a_request_body_the_upstream_never_reads() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let deaf = misbehaving(Misbehaviour::NeverReadsBody).await;
    gw.put(
        "/routes/deaf",
        json!({
            "uri": "/deaf",
            "upstream": {"type": "roundrobin", "nodes": {deaf.to_string(): 1}},
            "timeout": {"connect": 2, "send": 0.5, "read": 60},
        }),
    )
    .await;
    let load = Load::start(gw.url("/healthy"), 3);
    // More than the loopback socket buffers hold: the gateway's writes stall.
    let body = vec![b'b'; 32 << 20];
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(gw.url("/deaf"))
        .body(body)
        .send()
        .await;
    let elapsed = started.elapsed();
    // The gateway may answer before the client finished sending and close the connection.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 504, "a send timeout is a 504");
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "the send timeout (0.5 s) fired, not the read timeout (60 s): took {elapsed:?}"
    );
    load.assert_no_failures().await;
}

// ---------------------------------------------------------------------------------------------
// A function endpoint that answers garbage

#[tokio::test]
async fn a_function_that_answers_garbage_or_nothing_is_502() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let cases = [
        ("/garbage", misbehaving(Misbehaviour::Garbage).await),
        (
            "/nothing",
            misbehaving(Misbehaviour::CloseBeforeHeaders).await,
        ),
    ];
    for (path, addr) in &cases {
        gw.put(
            &format!("/routes{path}"),
            json!({"uri": path, "plugins": {"aws-lambda": {
                "function_uri": format!("http://{addr}/default/fn"),
                "authorization": {"apikey": "test-key"},
                "timeout": 5000,
            }}}),
        )
        .await;
    }
    let load = Load::start(gw.url("/healthy"), 3);
    for _ in 0..5 {
        for (path, _) in &cases {
            let resp = tokio::time::timeout(Duration::from_secs(15), gw.get(path))
                .await
                .expect("no hang");
            assert_eq!(resp.status(), 502, "{path}");
            let body = resp.text().await.expect("a complete body");
            assert!(
                is_clean_502_page(&body),
                "{path}: the error page, nothing of the function's answer: {body:?}"
            );
        }
    }
    load.assert_no_failures().await;
}

#[tokio::test]
async fn a_function_failure_answers_the_502_error_page() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let addr = misbehaving(Misbehaviour::CloseBeforeHeaders).await;
    gw.put(
        "/routes/fn",
        json!({"uri": "/fn", "plugins": {"aws-lambda": {
            "function_uri": format!("http://{addr}/default/fn"),
            "authorization": {"apikey": "test-key"},
        }}}),
    )
    .await;
    let resp = gw.get("/fn").await;
    assert_eq!(resp.status(), 502);
    assert!(is_clean_502_page(&resp.text().await.expect("body")));
}

// ---------------------------------------------------------------------------------------------
// TLS to the upstream fails

#[tokio::test]
async fn failed_upstream_tls_handshakes_are_502() {
    let _serial = SERIAL.read().await;
    let (gw, _healthy) = gateway_with_healthy_route().await;
    let plain = misbehaving(Misbehaviour::GarbageFirst).await;
    let closing = misbehaving(Misbehaviour::CloseBeforeHeaders).await;
    let self_signed = MockUpstream::start_tls("self-signed").await;
    let https = |uri: &str, node: String, verify: bool| {
        json!({"uri": uri, "upstream": {
            "scheme": "https",
            "nodes": {node: 1},
            "tls": {"verify": verify},
        }})
    };
    gw.put("/routes/plain", https("/plain", plain.to_string(), false))
        .await;
    gw.put(
        "/routes/closing",
        https("/closing", closing.to_string(), false),
    )
    .await;
    gw.put("/routes/verify", https("/verify", self_signed.node(), true))
        .await;
    gw.put(
        "/routes/noverify",
        https("/noverify", self_signed.node(), false),
    )
    .await;

    let load = Load::start(gw.url("/healthy"), 3);
    for _ in 0..5 {
        for path in ["/plain", "/closing", "/verify"] {
            let resp = tokio::time::timeout(Duration::from_secs(15), gw.get(path))
                .await
                .expect("no hang");
            assert_eq!(resp.status(), 502, "{path}");
            let body = resp.text().await.expect("a complete body");
            assert!(is_clean_502_page(&body), "{path}: {body:?}");
        }
    }
    // The same upstream without verification is reachable: the 502 was the verification.
    let resp = gw.get("/noverify").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(self_signed.requests.load(Ordering::SeqCst), 1);
    load.assert_no_failures().await;
}

// ---------------------------------------------------------------------------------------------
// The config store cannot write

/// A route to `node` whose `serverless-pre-function` carries `padding` bytes of Lua comment: a
/// valid object big enough that storing it must grow the database file.
fn padded_route(uri: &str, node: &str, padding: usize) -> Value {
    let mut route = route_to(uri, node);
    route["plugins"] = json!({"serverless-pre-function": {
        "phase": "rewrite",
        "functions": [format!("--{}\nreturn function() end", "p".repeat(padding))],
    }});
    route
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_keeps_the_previous_object() {
    let _serial = SERIAL.read().await;
    let up = MockUpstream::start("up").await;
    let dir = tempfile::tempdir().expect("tmp");

    // First run: store version 1 of the route, then stop.
    let gw = GatewayProcess::spawn(dir.path()).await;
    let v1 = route_to("/v1", &up.node());
    let (status, body) = gw.admin("PUT", "/routes/1", Some(&v1)).await;
    assert_eq!(status, 201, "{body}");
    // A graceful stop, so the next start has nothing to repair.
    assert!(gw.terminate().await.success());
    let store = dir.path().join("store").join("store.redb");
    let size = std::fs::metadata(&store).expect("store file").len();

    // Second run: the store file may not grow beyond its current size (rounded up to a KiB).
    let gw = GatewayProcess::spawn_with(
        dir.path(),
        Spawn {
            file_limit_kib: Some(size.div_ceil(1024)),
            ..Spawn::default()
        },
    )
    .await;
    let load = Load::start(format!("http://{}/v1", gw.http), 3);
    let v2 = padded_route("/v2", &up.node(), 1024 * 1024);
    let (status, body) = gw.admin("PUT", "/routes/1", Some(&v2)).await;
    assert!(
        status == 500 || status == 503,
        "a write the store cannot persist is a 500 or 503, not {status}: {body}"
    );
    assert!(body["error_msg"].is_string(), "{body}");
    let (status, body) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["value"]["uri"], "/v1",
        "the previous object is kept: {body}"
    );
    let v2_served = gw
        .client
        .get(format!("http://{}/v2", gw.http))
        .send()
        .await
        .expect("answer");
    assert_eq!(v2_served.status(), 404, "the refused version is not served");
    load.assert_no_failures().await;
    assert!(
        std::fs::metadata(&store).expect("store file").len() <= size.div_ceil(1024) * 1024,
        "the store file did not grow"
    );
}
