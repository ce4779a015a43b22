//! Hostile requests get a clear status and the gateway keeps serving everyone else.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, MockUpstream, TestGateway, route_to};
use serde_json::{Value, json};
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

// ---------------------------------------------------------------------------------------------
// Helpers for the tests below

/// Sends raw bytes on a fresh connection and returns everything answered until the gateway closed
/// the connection (or 10 s passed): status line, headers and the de-chunked body.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    split_response(&buf)
}

/// Splits a raw HTTP/1.1 response into its status line and body (de-chunked when chunked).
fn split_response(raw: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (status, String::new());
    };
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_owned());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    (status, out)
}

/// The JSON a [`MockUpstream`] echoed, or `Null`.
fn echo_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients

#[tokio::test]
async fn a_slow_request_head_is_closed_after_client_header_timeout_while_others_are_served() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder()
        .client_header_timeout("1s")
        .start()
        .await;
    gw.put("/routes/1", route_to("/*", &up.node())).await;

    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("partial head");
    // Others are served while the slow head is pending.
    for _ in 0..5 {
        still_serving(&gw).await;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the slow connection is closed by the gateway, not left open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not closed before the timeout"
    );
    assert!(
        buf.is_empty(),
        "closed without a response, as nginx does: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        5,
        "the slow request never reached the upstream"
    );
    // On a new connection: the client's pooled one has been idle for about the header timeout by
    // now, and the gateway may close it just as the client reuses it.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let resp = fresh.get(gw.url("/ok")).send().await.expect("request");
    assert_eq!(resp.status(), 200, "the gateway keeps serving");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_client_header_timeout() {
    let (gw, _up) = gateway_with_header_timeout("1s").await;
    let mut idle = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a connection that never sends a byte is closed after client_header_timeout (1 s)"
    );
    still_serving(&gw).await;
}

async fn gateway_with_header_timeout(timeout: &str) -> (TestGateway, MockUpstream) {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder()
        .client_header_timeout(timeout)
        .start()
        .await;
    gw.put("/routes/1", route_to("/*", &up.node())).await;
    (gw, up)
}

#[tokio::test]
async fn two_hundred_idle_half_open_connections_do_not_stop_a_request() {
    let (gw, up) = gateway().await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(gw.http)
            .await
            .expect("connect");
        // Half send a partial request head, half send nothing at all.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("partial head");
        }
        idle.push(stream);
    }
    for _ in 0..10 {
        still_serving(&gw).await;
    }
    // A request completed on one of the idle connections is served too.
    let mut last = idle.pop().expect("one connection");
    last.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("full head");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), last.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 11);
    drop(idle);
    still_serving(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (h2c with prior knowledge), written frame by frame so nothing client-side holds back

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What the gateway sent back on a raw HTTP/2 connection.
#[derive(Debug, Default)]
struct H2Seen {
    /// The error code of a GOAWAY, if one came.
    goaway: Option<u32>,
    /// RST_STREAM error codes, in order.
    resets: Vec<u32>,
    /// Whether the connection was closed (EOF or reset) by the gateway.
    closed: bool,
}

/// Opens an h2c connection: preface, empty SETTINGS, then waits for the gateway's SETTINGS and
/// acknowledges them.
async fn h2_connect(gw: &TestGateway) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(gw.http)
        .await
        .expect("connect");
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(FRAME_SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("preface");
    loop {
        let (kind, flags, _, _) =
            tokio::time::timeout(Duration::from_secs(10), h2_read(&mut stream))
                .await
                .expect("server settings in time")
                .expect("server settings");
        if kind == FRAME_SETTINGS && flags & FLAG_ACK == 0 {
            break;
        }
    }
    stream
        .write_all(&h2_frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
        .await
        .expect("settings ack");
    stream
}

/// Reads one frame: (type, flags, stream id, payload).
async fn h2_read<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

/// Collects GOAWAY and RST_STREAM frames until the gateway closes the connection or `quiet`
/// passes without a frame.
async fn h2_collect<R: AsyncReadExt + Unpin>(r: &mut R, quiet: Duration) -> H2Seen {
    let mut seen = H2Seen::default();
    loop {
        match tokio::time::timeout(quiet, h2_read(r)).await {
            Err(_) => return seen,
            Ok(Err(_)) => {
                seen.closed = true;
                return seen;
            }
            Ok(Ok((kind, _, _, payload))) => {
                if kind == FRAME_GOAWAY && payload.len() >= 8 {
                    seen.goaway = Some(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                } else if kind == FRAME_RST_STREAM && payload.len() == 4 {
                    seen.resets.push(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
            }
        }
    }
}

/// A fresh HTTP/2 client and a fresh HTTP/1.1 client are both served.
async fn still_serving_h2(gw: &TestGateway) {
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let resp = h2.get(gw.url("/ok")).send().await.expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200, "a fresh h2c client is served");
    still_serving(gw).await;
}

#[tokio::test]
async fn h2_rapid_reset_is_cut_off_and_others_are_served() {
    let (gw, up) = gateway().await;
    let stream = h2_connect(&gw).await;
    let (mut reader, mut writer) = stream.into_split();
    let collector =
        tokio::spawn(async move { h2_collect(&mut reader, Duration::from_secs(5)).await });
    let headers = h2_request("GET", b"/ok", &[]);
    let mut sent = 0u32;
    'send: for batch in 0..50u32 {
        let mut buf = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            buf.extend(h2_frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                id,
                &headers,
            ));
            buf.extend(h2_frame(FRAME_RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if writer.write_all(&buf).await.is_err() {
            break 'send;
        }
        sent += 100;
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("the gateway answers within seconds")
        .expect("collector");
    // h2's defence against CVE-2023-44487: streams reset before they were accepted are counted,
    // and too many end the connection with ENHANCE_YOUR_CALM.
    assert_eq!(
        seen.goaway,
        Some(ENHANCE_YOUR_CALM),
        "the connection is ended with GOAWAY ENHANCE_YOUR_CALM (sent {sent} of 5000): {seen:?}"
    );
    assert!(seen.closed, "and closed: {seen:?}");
    assert!(
        up.requests.load(Ordering::SeqCst) < 5000,
        "not every reset stream reached the upstream"
    );
    still_serving_h2(&gw).await;
}

#[tokio::test]
async fn h2_streams_beyond_max_concurrent_streams_are_refused() {
    let (gw, _up) = gateway().await;
    let stream = h2_connect(&gw).await;
    let (mut reader, mut writer) = stream.into_split();
    let collector =
        tokio::spawn(async move { h2_collect(&mut reader, Duration::from_secs(3)).await });
    // 300 uploads whose bodies never come: each stays open, and 256 at most are accepted.
    let headers = h2_request("POST", b"/count", &[]);
    let mut buf = Vec::new();
    for i in 0..300u32 {
        buf.extend(h2_frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            2 * i + 1,
            &headers,
        ));
    }
    writer.write_all(&buf).await.expect("streams");
    let seen = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("collector ends")
        .expect("collector");
    assert_eq!(
        seen.resets,
        vec![REFUSED_STREAM; 300 - 256],
        "exactly the streams over 256 are refused with REFUSED_STREAM"
    );
    assert!(
        !seen.closed && seen.goaway.is_none(),
        "the connection stays up: {seen:?}"
    );
    // While this connection holds 256 open streams, fresh clients are served.
    still_serving_h2(&gw).await;
    drop(writer);
    still_serving_h2(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Bytes that are not allowed in header names and values

#[tokio::test]
async fn nul_and_control_bytes_in_header_names_and_values_get_400() {
    let (gw, up) = gateway().await;
    let cases: [&[u8]; 9] = [
        b"X-Bad: a\x00b\r\n",
        b"X-Bad: a\x01b\r\n",
        b"X-Bad: a\x7fb\r\n",
        b"X-Bad: a\rb\r\n",
        b"X-Bad: a\r\n folded\r\n",
        b"X\x00Bad: 1\r\n",
        b"X Bad: 1\r\n",
        b"X-\xffBad: 1\r\n",
        b"X-Bad\x01: 1\r\n",
    ];
    for header in cases {
        let mut request = b"GET /ok HTTP/1.1\r\nHost: x\r\n".to_vec();
        request.extend_from_slice(header);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let status = raw(&gw, &request).await;
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "{:?}: {status:?}",
            String::from_utf8_lossy(header)
        );
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        0,
        "none reached the upstream"
    );
    still_serving(&gw).await;
}

/// HPACK for `method` (`GET` or `POST`, indexed) `http://x<path>` with extra headers. `:path`,
/// `:authority` and the headers are literals (never indexed, no Huffman), so any byte reaches the
/// gateway as written.
fn h2_request(method: &str, path: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, bytes: &[u8]) {
        block.push(u8::try_from(bytes.len()).expect("short literal"));
        block.extend_from_slice(bytes);
    }
    // Static table: 2 is `:method GET`, 3 `:method POST`, 6 `:scheme http`; 4 is `:path` and 1
    // `:authority`, as names.
    let method = match method {
        "GET" => 0x82,
        "POST" => 0x83,
        other => panic!("no static entry for {other}"),
    };
    let mut block = vec![method, 0x86, 0x04];
    literal(&mut block, path);
    block.push(0x01);
    literal(&mut block, b"x");
    for (name, value) in headers {
        block.push(0x10);
        literal(&mut block, name);
        literal(&mut block, value);
    }
    block
}

/// How the gateway answered one stream on a raw HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum H2Answer {
    /// A response whose first header is the HPACK static entry for this status.
    Status(u16),
    Reset(u32),
    GoAway(u32),
    ConnectionClosed,
}

/// Sends one request on `stream_id` and reads until that stream is answered.
async fn h2_answer(conn: &mut tokio::net::TcpStream, stream_id: u32, block: &[u8]) -> H2Answer {
    conn.write_all(&h2_frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        stream_id,
        block,
    ))
    .await
    .expect("headers frame");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), h2_read(conn))
            .await
            .expect("an answer within seconds");
        let Ok((kind, _, id, payload)) = frame else {
            return H2Answer::ConnectionClosed;
        };
        match kind {
            FRAME_GOAWAY => {
                return H2Answer::GoAway(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            FRAME_RST_STREAM if id == stream_id => {
                return H2Answer::Reset(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            // Static table: 8 is `:status 200`, 12 `:status 400`.
            FRAME_HEADERS if id == stream_id => {
                return match payload.first() {
                    Some(0x88) => H2Answer::Status(200),
                    Some(0x8c) => H2Answer::Status(400),
                    other => panic!("unexpected response head {other:?}"),
                };
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn malformed_h2_requests_never_reach_the_upstream_and_end_only_their_own_connection() {
    // RFC 9113 §8.2.1 and §8.3: forbidden bytes in a field, an upper-case or
    // connection-specific field name, or a bad :path make a request malformed. A field that is
    // not a valid header at all ends the connection (GOAWAY PROTOCOL_ERROR: the h2 codec cannot
    // keep decoding after it); a well-formed field that HTTP forbids resets only its stream.
    const PROTOCOL_ERROR: u32 = 0x1;
    let (gw, up) = gateway().await;
    let bad_field = H2Answer::GoAway(PROTOCOL_ERROR);
    let bad_stream = H2Answer::Reset(PROTOCOL_ERROR);
    type Fields<'a> = &'a [(&'a [u8], &'a [u8])];
    let cases: [(&[u8], Fields<'_>, H2Answer); 9] = [
        (b"/ok", &[(b"x-bad", b"a\x00b")], bad_field),
        (b"/ok", &[(b"x-bad", b"a\r\nx-injected: 1")], bad_field),
        (b"/ok", &[(b"x-bad", b"a\nb")], bad_field),
        (b"/ok", &[(b"X-Bad", b"1")], bad_field),
        (b"/ok", &[(b"x bad", b"1")], bad_field),
        (b"/ok", &[(b"x-bad\x00", b"1")], bad_field),
        (b"/ok", &[(b"connection", b"keep-alive")], bad_stream),
        (b"/ok\x00", &[], bad_stream),
        (b"/o k", &[], bad_stream),
    ];
    let good = h2_request("GET", b"/ok", &[(b"x-opaque", b"\xff")]);
    for (path, headers, expected) in cases {
        // A good request first, so the bad one is not the connection's first stream.
        let mut conn = h2_connect(&gw).await;
        assert_eq!(h2_answer(&mut conn, 1, &good).await, H2Answer::Status(200));
        let answer = h2_answer(&mut conn, 3, &h2_request("GET", path, headers)).await;
        assert_eq!(
            answer,
            expected,
            "{:?} {:?}",
            String::from_utf8_lossy(path),
            headers
                .iter()
                .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        );
        if expected == bad_stream {
            // The connection carries on.
            assert_eq!(h2_answer(&mut conn, 5, &good).await, H2Answer::Status(200));
        }
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        9 + 3,
        "only the good requests reached the upstream"
    );
    still_serving_h2(&gw).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_header_value_is_forwarded_as_opaque_bytes() {
    // RFC 9110 §5.5 allows obs-text (0x80-0xFF) in field values, and nginx passes such values
    // through untouched; so does the gateway. What matters is that the bytes are neither
    // reinterpreted nor fatal.
    let (gw, up) = gateway().await;
    let request =
        b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Bytes: \xff\xfe\xc3\x28\r\nConnection: close\r\n\r\n";
    let (status, body) = exchange(gw.http, request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let echo = echo_of(&body);
    assert!(
        echo["headers"].get("x-bytes").is_some(),
        "the header reached the upstream: {echo}"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    still_serving(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Dot segments and encoded slashes

/// `/public/*` goes to the upstream "public"; `/secret/*` is refused to loopback clients by
/// `ip-restriction` (403) and its upstream "secret" must never be reached.
async fn public_and_secret() -> (TestGateway, MockUpstream, MockUpstream) {
    let public = MockUpstream::start("public").await;
    let secret = MockUpstream::start("secret").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/public", route_to("/public/*", &public.node()))
        .await;
    let mut route = route_to("/secret/*", &secret.node());
    route["plugins"] = json!({"ip-restriction": {"blacklist": ["127.0.0.0/8"]}});
    gw.put("/routes/secret", route).await;
    (gw, public, secret)
}

#[tokio::test]
async fn dot_segments_and_encoded_slashes_are_resolved_before_routing_and_forwarding() {
    let (gw, public, secret) = public_and_secret().await;
    // (request target, path the router matched and the upstream received)
    let to_public = [
        ("/public/a/../b", "/public/b"),
        ("/public/a/%2e%2e/b", "/public/b"),
        ("/public/a/%2E%2E/b", "/public/b"),
        ("/public/a/.%2e/b", "/public/b"),
        ("/public/./a/./b", "/public/a/b"),
        ("/public//a///b", "/public/a/b"),
        ("//public/a", "/public/a"),
        ("/public/a%2fb", "/public/a/b"),
        ("/public%2fa", "/public/a"),
        ("/secret/../public/a", "/public/a"),
        ("/secret/%2e%2e/public/a", "/public/a"),
        ("/public/a/..%2f..%2fpublic/b", "/public/b"),
        ("/public/..%5csecret/x", "/public/..%5Csecret/x"),
        ("/public/a?q=/../secret", "/public/a?q=/../secret"),
        ("/public/%2e", "/public/"),
        ("/public/caf%C3%A9", "/public/caf%C3%A9"),
    ];
    for (target, expected) in to_public {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, body) = exchange(gw.http, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{target}: {status:?}");
        let echo = echo_of(&body);
        assert_eq!(echo["upstream"], "public", "{target}: {echo}");
        assert_eq!(echo["uri"], expected, "{target}");
    }
    // Every spelling of a path into /secret/ meets the secret route (and its 403), never the
    // public route's upstream with a path it would resolve itself.
    let to_secret = [
        "/secret/x",
        "/public/../secret/x",
        "/public/%2e%2e/secret/x",
        "/public/%2E%2e/secret/x",
        "/public/.%2E/secret/x",
        "/public/..%2fsecret/x",
        "/public%2f..%2fsecret/x",
        "/public/a/../../secret/x",
        "//secret//x",
        "/./secret/./x",
        "/%73ecret/x",
    ];
    for target in to_secret {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = exchange(gw.http, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{target}: {status:?}");
    }
    // Climbing above the root is refused outright.
    for target in [
        "/public/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/public/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2fetc/passwd",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = exchange(gw.http, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status:?}");
    }
    assert_eq!(
        secret.requests.load(Ordering::SeqCst),
        0,
        "the secret upstream was never reached"
    );
    assert_eq!(public.requests.load(Ordering::SeqCst), to_public.len());
    still_serving_public(&gw).await;
}

async fn still_serving_public(gw: &TestGateway) {
    assert_eq!(
        gw.get("/public/ok").await.status(),
        200,
        "the gateway keeps serving"
    );
}

// ---------------------------------------------------------------------------------------------
// Host header spoofing and routing

/// A route bound to `host: a.example` (upstream "a") and a host-less catch-all (upstream "other").
async fn host_bound() -> (TestGateway, MockUpstream, MockUpstream) {
    let a = MockUpstream::start("a").await;
    let other = MockUpstream::start("other").await;
    let gw = TestGateway::start().await;
    let mut route = route_to("/*", &a.node());
    route["host"] = json!("a.example");
    gw.put("/routes/a", route).await;
    gw.put("/routes/other", route_to("/*", &other.node())).await;
    (gw, a, other)
}

/// Which upstream answered a raw request, or the status line when it was not a 200.
async fn routed_to(gw: &TestGateway, request: &str) -> String {
    let (status, body) = exchange(gw.http, request.as_bytes()).await;
    if !status.contains(" 200 ") {
        return status;
    }
    echo_of(&body)["upstream"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn host_is_matched_case_insensitively_and_without_its_port() {
    let (gw, _a, _other) = host_bound().await;
    for (host, expected) in [
        ("a.example", "a"),
        ("A.EXAMPLE", "a"),
        ("A.Example", "a"),
        ("a.example:80", "a"),
        ("a.example:9999", "a"),
        ("b.example", "other"),
        ("xa.example", "other"),
        ("a.example.evil", "other"),
        ("evil.a.example", "other"),
    ] {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(routed_to(&gw, &request).await, expected, "Host: {host}");
    }
    // No Host at all (HTTP/1.0) reaches only host-less routes.
    assert_eq!(
        routed_to(&gw, "GET /x HTTP/1.0\r\n\r\n").await,
        "other",
        "no Host"
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn a_trailing_dot_in_host_matches_the_host() {
    let (gw, _a, _other) = host_bound().await;
    let request = "GET /x HTTP/1.1\r\nHost: a.example.\r\nConnection: close\r\n\r\n";
    assert_eq!(routed_to(&gw, request).await, "a");
    still_serving(&gw).await;
}

#[tokio::test]
async fn the_host_of_an_absolute_form_target_wins_over_the_host_header() {
    let (gw, _a, _other) = host_bound().await;
    let request = "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    assert_eq!(routed_to(&gw, request).await, "a", "request line a.example");
    let request = "GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_eq!(
        routed_to(&gw, request).await,
        "other",
        "request line b.example, Host a.example"
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn duplicate_host_headers_get_400() {
    let (gw, a, other) = host_bound().await;
    for hosts in [
        "Host: b.example\r\nHost: a.example\r\n",
        "Host: a.example\r\nHost: b.example\r\n",
        "Host: a.example\r\nHost: a.example\r\n",
    ] {
        let request = format!("GET /x HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n");
        let status = raw(&gw, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{hosts:?}: {status:?}");
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
    assert_eq!(other.requests.load(Ordering::SeqCst), 0);
    still_serving(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile Admin API writes

/// Sends `body` to the Admin API over a raw connection, writing and reading at once (the gateway
/// may answer before it has read the whole body).
async fn admin_raw(gw: &TestGateway, method: &str, path: &str, body: Vec<u8>) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(gw.admin)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "{method} /apisix/admin{path} HTTP/1.1\r\nHost: x\r\nX-API-KEY: {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        for chunk in body.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    write.abort();
    split_response(&buf)
}

#[tokio::test]
async fn a_20_mib_admin_body_gets_413_and_nothing_is_stored() {
    let (gw, _up) = gateway().await;
    let mut body = br#"{"uri":"/huge","upstream":{"nodes":{"127.0.0.1:1":1}},"desc":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 20 * 1024 * 1024));
    body.extend_from_slice(br#""}"#);
    let (status, text) = admin_raw(&gw, "PUT", "/routes/huge", body).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status:?}");
    let error = echo_of(&text);
    assert!(
        error["error_msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid request body")),
        "{text}"
    );
    let (status, _) = gw.admin("GET", "/routes/huge", None).await;
    assert_eq!(status, 404, "nothing was stored");
    assert_eq!(
        gw.get("/huge").await.status(),
        200,
        "the catch-all route still answers /huge"
    );
    still_serving(&gw).await;
}

#[tokio::test]
async fn deeply_nested_admin_json_gets_400_and_nothing_is_stored() {
    let (gw, _up) = gateway().await;
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let in_a_field = format!(
        r#"{{"uri":"/deep","upstream":{{"nodes":{{"127.0.0.1:1":1}}}},"labels":{}}}"#,
        arrays
    );
    for body in [arrays, objects, in_a_field] {
        let resp = gw
            .client
            .put(gw.admin_url("/routes/deep"))
            .header("X-API-KEY", ADMIN_KEY)
            .body(body)
            .send()
            .await
            .expect("admin answers");
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.expect("body");
        let error = echo_of(&text);
        let msg = error["error_msg"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("invalid request body: recursion limit exceeded"),
            "{}",
            &text[..text.len().min(300)]
        );
    }
    let (status, _) = gw.admin("GET", "/routes/deep", None).await;
    assert_eq!(status, 404, "nothing was stored");
    still_serving(&gw).await;
}

#[tokio::test]
async fn plugin_confs_of_the_wrong_type_get_400_with_apisix_messages() {
    let (gw, up) = gateway().await;
    gw.put("/routes/2", route_to("/typed", &up.node())).await;
    let cases = [
        (
            json!({"key-auth": {"header": 123}}),
            "failed to check the configuration of plugin key-auth err: property \"header\" validation failed: wrong type: expected string, got number",
        ),
        (
            json!({"limit-count": {"count": "ten", "time_window": 60}}),
            "failed to check the configuration of plugin limit-count err: property \"count\" validation failed: wrong type: expected integer, got string",
        ),
        (
            json!({"ip-restriction": {"blacklist": "127.0.0.1"}}),
            "failed to check the configuration of plugin ip-restriction err: property \"blacklist\" validation failed: wrong type: expected array, got string",
        ),
    ];
    for (plugins, expected) in cases {
        let mut route = route_to("/typed", &up.node());
        route["plugins"] = plugins.clone();
        let (status, body) = gw.admin("PUT", "/routes/2", Some(route)).await;
        assert_eq!(status, 400, "{plugins}: {body}");
        assert_eq!(body["error_msg"], expected, "{plugins}");
    }
    let (status, body) = gw.admin("GET", "/routes/2", None).await;
    assert_eq!(status, 200);
    assert!(
        body["value"].get("plugins").is_none(),
        "the stored route is the one before the refused writes: {body}"
    );
    assert_eq!(gw.get("/typed").await.status(), 200);
    still_serving(&gw).await;
}
