//! The data plane end to end: routing, forwarding, HTTP versions, failures and streaming.

mod common;

use std::time::{Duration, Instant};

use common::{MockUpstream, TestGateway, route_to};
use serde_json::{Value, json};

async fn echo(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json echo")
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_body() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/api/*", &up.node())).await;
    let resp = gw
        .client
        .post(gw.url("/api/items?b=2&a=%2F1"))
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .body("payload")
        .send()
        .await
        .expect("send");
    let got = echo(resp).await;
    assert_eq!(got["method"], "POST");
    assert_eq!(got["uri"], "/api/items?b=2&a=%2F1");
    assert_eq!(got["body"], "payload");
    assert_eq!(got["headers"]["x-custom"], "kept");
    assert!(
        got["headers"].get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(got["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(got["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got["headers"]["x-forwarded-proto"], "http");
    assert_eq!(got["headers"]["x-forwarded-host"], "127.0.0.1");
    assert_eq!(
        got["headers"]["x-forwarded-port"],
        gw.http.port().to_string()
    );
    assert_eq!(
        got["headers"]["host"],
        format!("127.0.0.1:{}", gw.http.port()),
        "pass_host defaults to pass"
    );
}

/// An upstream that answers one request with an empty 200 and hands over the request head it got.
async fn head_catcher() -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let node = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the request head ended early");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    (node, rx)
}

#[tokio::test]
async fn forwarding_headers_from_the_client_are_replaced_once_and_x_forwarded_for_extended() {
    let (node, head) = head_catcher().await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/fwd", &node)).await;
    let resp = gw
        .client
        .get(gw.url("/fwd"))
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-port", "1")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let head = head
        .await
        .expect("the upstream got the request")
        .to_ascii_lowercase();
    let values = |name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
            .collect()
    };
    let port = gw.http.port().to_string();
    assert_eq!(values("x-real-ip"), ["127.0.0.1"], "{head}");
    assert_eq!(
        values("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 127.0.0.1"],
        "{head}"
    );
    assert_eq!(values("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(values("x-forwarded-port"), [port.as_str()], "{head}");
    assert_eq!(values("x-forwarded-host"), ["127.0.0.1"], "{head}");
}

#[tokio::test]
async fn response_status_and_end_to_end_headers_come_back_without_hop_by_hop() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/status/*", &up.node())).await;
    let resp = gw.get("/status/418").await;
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-upstream"], "u");
    assert!(resp.headers().get("keep-alive").is_none());
}

#[tokio::test]
async fn unmatched_path_gets_apisix_404() {
    let gw = TestGateway::start().await;
    let resp = gw.get("/nothing").await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({"error_msg": "404 Route Not Found"}));
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_same_port() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/h2", &up.node())).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("client");
    let resp = client.get(gw.url("/h2")).send().await.expect("h2c request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let got = echo(resp).await;
    assert_eq!(got["uri"], "/h2");
    assert_eq!(
        got["version"], "HTTP/1.1",
        "upstream is spoken to over HTTP/1.1"
    );
}

#[tokio::test]
async fn route_without_upstream_is_503() {
    let gw = TestGateway::start().await;
    gw.put("/services/s", json!({"desc": "no upstream"})).await;
    gw.put("/routes/1", json!({"uri": "/x", "service_id": "s"}))
        .await;
    assert_eq!(gw.get("/x").await.status(), 503);
}

#[tokio::test]
async fn unreachable_upstream_is_502_quickly() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/down", &format!("127.0.0.1:{port}")))
        .await;
    let started = Instant::now();
    let resp = gw.get("/down").await;
    assert_eq!(resp.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn read_timeout_is_504_never_503() {
    let up = MockUpstream::start("slow").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/slow", "upstream": {"nodes": {up.node(): 1}, "timeout": {"connect": 1, "send": 1, "read": 0.3}}}),
    )
    .await;
    let resp = gw.get("/slow?sleep_ms=3000").await;
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn route_timeout_overrides_the_upstream_timeout() {
    let up = MockUpstream::start("slow").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/slow", "timeout": {"connect": 1, "send": 1, "read": 0.3}, "upstream": {"nodes": {up.node(): 1}}}),
    )
    .await;
    assert_eq!(gw.get("/slow?sleep_ms=3000").await.status(), 504);
}

#[tokio::test]
async fn retries_move_to_the_next_node_when_one_is_down() {
    let up = MockUpstream::start("alive").await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": {"type": "roundrobin", "nodes": {up.node(): 1, format!("127.0.0.1:{dead_port}"): 1}}}),
    )
    .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/n", "upstream": {"type": "roundrobin", "pass_host": "node", "nodes": {up.node(): 1, format!("127.0.0.1:{dead_port}"): 1}}}),
    )
    .await;
    for _ in 0..6 {
        let got = echo(gw.get("/r").await).await;
        assert_eq!(got["upstream"], "alive");
        let got = echo(gw.get("/n").await).await;
        assert_eq!(
            got["headers"]["host"],
            up.node(),
            "a retried request carries the Host of the node that answers"
        );
    }
}

#[tokio::test]
async fn weighted_round_robin_spreads_by_weight() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/w", "upstream": {"type": "roundrobin", "nodes": {a.node(): 3, b.node(): 1}}}),
    )
    .await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        let got = echo(gw.get("/w").await).await;
        *counts
            .entry(got["upstream"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test]
async fn chash_sends_one_key_to_one_node() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/c", "upstream": {"type": "chash", "hash_on": "header", "key": "x-user", "nodes": {a.node(): 1, b.node(): 1}}}),
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let mut first = None;
        for _ in 0..3 {
            let resp = gw
                .client
                .get(gw.url("/c"))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .expect("send");
            let got = echo(resp).await;
            let name = got["upstream"].as_str().unwrap_or_default().to_owned();
            assert!(
                first.get_or_insert(name.clone()) == &name,
                "same key, same node"
            );
            seen.insert(name);
        }
    }
    assert_eq!(seen.len(), 2, "keys spread over both nodes");
}

#[tokio::test]
async fn pass_host_node_and_rewrite() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/node", "upstream": {"pass_host": "node", "nodes": {up.node(): 1}}}),
    )
    .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/rewrite", "upstream": {"pass_host": "rewrite", "upstream_host": "api.internal", "nodes": {up.node(): 1}}}),
    )
    .await;
    for (path, host) in [
        ("/node", up.node()),
        ("/rewrite", "api.internal".to_owned()),
    ] {
        let got = echo(gw.get(path).await).await;
        assert_eq!(got["headers"]["host"], host);
        assert_eq!(
            got["headers"]["x-forwarded-host"], "127.0.0.1",
            "X-Forwarded-Host keeps the client's host"
        );
    }
}

#[tokio::test]
async fn upstream_by_id_and_through_a_service() {
    let up = MockUpstream::start("by-id").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/upstreams/u1",
        json!({"type": "roundrobin", "nodes": {up.node(): 1}}),
    )
    .await;
    gw.put("/services/s1", json!({"upstream_id": "u1"})).await;
    gw.put("/routes/1", json!({"uri": "/direct", "upstream_id": "u1"}))
        .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/via-service", "service_id": "s1"}),
    )
    .await;
    assert_eq!(echo(gw.get("/direct").await).await["upstream"], "by-id");
    assert_eq!(
        echo(gw.get("/via-service").await).await["upstream"],
        "by-id"
    );
}

#[tokio::test]
async fn keepalive_reuses_upstream_connections() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/k", &up.node())).await;
    for _ in 0..50 {
        assert_eq!(gw.get("/k").await.status(), 200);
    }
    let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    // Two workers may each open their own pooled connections, never one per request.
    assert!(conns <= 4, "{conns} upstream connections for 50 requests");
}

#[tokio::test]
async fn config_changes_are_visible_immediately() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/swap", &a.node())).await;
    assert_eq!(echo(gw.get("/swap").await).await["upstream"], "a");
    gw.put("/routes/1", route_to("/swap", &b.node())).await;
    assert_eq!(echo(gw.get("/swap").await).await["upstream"], "b");
    gw.admin("DELETE", "/routes/1", None).await;
    assert_eq!(gw.get("/swap").await.status(), 404);
}

#[tokio::test]
async fn no_request_fails_while_config_changes() {
    let a = MockUpstream::start("a").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/steady", &a.node())).await;
    let client = gw.client.clone();
    let url = gw.url("/steady");
    let load = tokio::spawn(async move {
        let mut failures = 0;
        for _ in 0..300 {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                _ => failures += 1,
            }
        }
        failures
    });
    for i in 0..60 {
        gw.put(
            &format!("/routes/other{i}"),
            route_to(&format!("/other/{i}"), &a.node()),
        )
        .await;
        gw.put("/routes/1", json!({"uri": "/steady", "desc": format!("v{i}"), "upstream": {"nodes": {a.node(): 1}}}))
            .await;
    }
    assert_eq!(load.await.expect("load task"), 0);
}

#[tokio::test]
async fn oversized_body_is_413_before_the_upstream_is_contacted() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder()
        .client_max_body_size("1k")
        .start()
        .await;
    gw.put("/routes/1", route_to("/count", &up.node())).await;
    let resp = gw
        .client
        .post(gw.url("/count"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(counted_upload(&gw, 512).await, "512");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder()
        .client_max_body_size("1k")
        .start()
        .await;
    gw.put("/routes/1", route_to("/count", &up.node())).await;
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 512])));
    let resp = gw
        .client
        .post(gw.url("/count"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    // The rest of the body was not read: the client is told not to reuse the connection, and its
    // next request goes out on a new one.
    assert_eq!(resp.headers()["connection"], "close");
    for _ in 0..3 {
        assert_eq!(counted_upload(&gw, 512).await, "512");
    }
}

/// Uploads `len` bytes to the counting upstream behind `/count`; returns the size it counted.
async fn counted_upload(gw: &TestGateway, len: usize) -> String {
    let resp = gw
        .client
        .post(gw.url("/count"))
        .body(vec![b'a'; len])
        .send()
        .await
        .expect("send");
    resp.text().await.expect("body")
}

/// Reads one response (head and `Content-Length` body) from a raw connection; returns the head,
/// lower-cased.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("answer in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    head
}

/// Sends the head of a POST with a `length`-byte body to a path without a route, and reads the 404
/// that comes before the body; returns the connection and the answer's head.
async fn refused_before_the_body(
    gw: &TestGateway,
    length: usize,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    let head = format!("POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    (stream, head)
}

#[tokio::test]
async fn a_refusal_before_a_small_body_arrived_keeps_the_connection_open() {
    use tokio::io::AsyncWriteExt;
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/count", &up.node())).await;
    let (mut stream, head) = refused_before_the_body(&gw, 10).await;
    assert!(!head.contains("connection: close"), "{head}");
    // The body comes late and is dropped; the connection serves the next request.
    stream
        .write_all(b"0123456789GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refusal_before_a_large_body_arrived_closes_the_connection() {
    use tokio::io::AsyncReadExt;
    let gw = TestGateway::start().await;
    let (mut stream, head) = refused_before_the_body(&gw, 10_000_000).await;
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the gateway closes the connection");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/count", &up.node())).await;
    gw.put("/routes/2", route_to("/stream", &up.node())).await;
    // 100 MiB up, generated lazily so neither side holds it whole.
    let chunk = vec![b'z'; 1024 * 1024];
    let chunks =
        futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = gw
        .client
        .post(gw.url("/count"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.text().await.expect("body"),
        (100 * 1024 * 1024).to_string()
    );
    // 100 MiB down (1600 chunks of 64 KiB).
    let mut resp = gw.get("/stream?chunks=1600").await;
    let mut total = 0usize;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        total += chunk.len();
    }
    assert_eq!(total, 1600 * 64 * 1024);
}

#[tokio::test]
async fn an_upload_with_expect_100_continue_goes_through_whole() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/count", &up.node())).await;
    // The body comes slowly, so the upstream's `100 Continue` arrives while it is being sent.
    let pieces = futures_util::stream::unfold(0, |i| async move {
        if i == 5 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        Some((Ok::<_, std::io::Error>(vec![b'z'; 1000]), i + 1))
    });
    let resp = gw
        .client
        .put(gw.url("/count"))
        .header("expect", "100-continue")
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "5000");
}

#[tokio::test]
async fn an_http10_upstream_does_not_downgrade_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/old", &addr.to_string()))
        .await;
    let resp = gw.get("/old").await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.expect("body"), "ok");
}

#[tokio::test]
async fn https_upstreams_with_and_without_verification() {
    let up = MockUpstream::start_tls("secure").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/routes/1",
        json!({"uri": "/insecure", "upstream": {"scheme": "https", "nodes": {up.node(): 1}, "tls": {"verify": false}}}),
    )
    .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/verified", "upstream": {"scheme": "https", "nodes": {up.node(): 1}, "tls": {"verify": true}}}),
    )
    .await;
    let got = echo(gw.get("/insecure").await).await;
    assert_eq!(got["upstream"], "secure");
    assert_eq!(
        gw.get("/verified").await.status(),
        502,
        "a self-signed certificate fails verification"
    );
}
