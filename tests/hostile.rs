//! Hostile requests get a clear status and the gateway keeps serving everyone else.

mod common;

use std::time::Duration;

use common::{MockUpstream, TestGateway, route_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and returns the status line of the answer (empty if the connection just closed).
async fn raw(gw: &TestGateway, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn still_serving(gw: &TestGateway) {
    assert_eq!(
        gw.get("/ok").await.status(),
        200,
        "the gateway keeps serving"
    );
}

async fn gateway() -> (TestGateway, MockUpstream) {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/*", &up.node())).await;
    (gw, up)
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (gw, _up) = gateway().await;
    let big = "a".repeat(1024 * 1024);
    let request = format!("GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let status = raw(&gw, request.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
    still_serving(&gw).await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    // hyper follows RFC 9112 §6.1: Transfer-Encoding wins and Content-Length is dropped. The upstream
    // then gets a request framed by the gateway alone, so the two can never disagree on where it
    // ends; the bytes after the chunked body are a separate request, routed like any other.
    let (gw, _up) = gateway().await;
    let request = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let headers = &echo["headers"];
    assert!(
        !(headers.get("content-length").is_some() && headers.get("transfer-encoding").is_some()),
        "the upstream saw both framings: {headers}"
    );
    assert_eq!(echo["body"], "", "the chunked body was empty");
    still_serving(&gw).await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let (gw, up) = gateway().await;
    let request =
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 6\r\n\r\nabcdef";
    let status = raw(&gw, request).await;
    assert!(
        status.starts_with("HTTP/1.1 400") || status.is_empty(),
        "{status:?}"
    );
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    still_serving(&gw).await;
}

#[tokio::test]
async fn bad_chunk_sizes_are_refused() {
    let (gw, _up) = gateway().await;
    let request = b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let status = raw(&gw, request).await;
    assert!(!status.starts_with("HTTP/1.1 200"), "{status:?}");
    still_serving(&gw).await;
}

#[tokio::test]
async fn nul_bytes_and_escaping_dot_segments_in_paths_get_400() {
    let (gw, up) = gateway().await;
    for path in ["/a%00b", "/../etc/passwd", "/%2e%2e/etc/passwd"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let status = raw(&gw, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status:?}");
    }
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    still_serving(&gw).await;
}
