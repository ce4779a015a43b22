//! Arbitrary bytes as an HTTP request head, sent to the real gateway's listener.
//!
//! The gateway is started once per process, lazily, on its own runtime thread: one worker,
//! `127.0.0.1:0`, standalone mode with an `apisix.yaml` of two routes to a stand-in upstream (a
//! catch-all `/*`, and a host-, method- and `vars`-bound one), no plugins and no TLS listener.
//! Each input is written to a new connection and the answer is read with a short timeout (see
//! `exchange` for when the write side is closed).
//!
//! Properties: no panic anywhere in the gateway (libfuzzer-sys aborts on a panic in any thread,
//! including the gateway's workers); an answer, when there is one, starts with an HTTP status line;
//! and every 64 inputs, and after any input the gateway did not answer in time, a well-formed
//! request still gets the upstream's 200.

#![no_main]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIVENESS_EVERY: usize = 64;
const FIRST_BYTE: Duration = Duration::from_millis(250);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

/// Starts the stand-in upstream and the gateway on a runtime thread that lives as long as the
/// process; returns the gateway's plain-HTTP address.
fn gateway() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-gateway".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let upstream = start_upstream().await;
                    let dir = tempfile::tempdir().expect("temp dir");
                    let handle = start_gateway(dir.path(), upstream).await;
                    let addr = handle.http_addrs()[0];
                    tx.send(addr).expect("send the address");
                    // Keep the gateway (and its data dir) for the life of the process.
                    std::future::pending::<()>().await;
                    drop((handle, dir));
                });
            })
            .expect("gateway thread");
        let addr = rx.recv().expect("the gateway starts");
        let answer = exchange(addr, PROBE);
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with(b"HTTP/1.1 200")),
            "the gateway answers a well-formed request after start: {:?}",
            answer.map(|a| String::from_utf8_lossy(&a).into_owned())
        );
        addr
    })
}

/// A stand-in upstream: reads a request head, answers 200 `ok` and closes.
async fn start_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

async fn start_gateway(dir: &std::path::Path, upstream: SocketAddr) -> moongate::GatewayHandle {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let config = format!(
        r#"apisix:
  node_listen:
    - "127.0.0.1:0"
  ssl:
    enable: false
  data_dir: "{data}"
  plugins_dir: "{plugins}"
nginx_config:
  worker_processes: 1
  worker_shutdown_timeout: 1s
  http:
    client_max_body_size: "64k"
    client_header_timeout: 2s
deployment:
  role: data_plane
  role_data_plane:
    config_provider: yaml
"#,
        data = dir.join("store").display(),
        plugins = plugins.display(),
    );
    let routes = format!(
        r#"routes:
  - id: "1"
    uri: /*
    upstream:
      type: roundrobin
      nodes:
        "{upstream}": 1
  - id: "2"
    uris: ["/h/*", "/exact"]
    hosts: ["*.example.com"]
    methods: [GET, POST]
    vars: [["arg_a", "==", "1"]]
    upstream:
      type: roundrobin
      nodes:
        "{upstream}": 1
#END
"#
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).expect("write config.yaml");
    std::fs::write(dir.join("apisix.yaml"), routes).expect("write apisix.yaml");
    let gateway = moongate::Gateway::load(Some(&path), &HashMap::new()).expect("config loads");
    gateway.start().await.expect("gateway starts")
}

/// Sends `bytes` on a new connection and reads the answer. `None` when the gateway did not finish
/// answering in time (not a failure by itself: a liveness probe follows).
///
/// The gateway (hyper) drops a connection whose client closes its write side, even with a request
/// in flight, so the write side is closed only once the answer has started, after `FIRST_BYTE`
/// without an answer (the gateway is waiting for more: a body, the rest of a head), or at once
/// when the input holds no complete head (no blank line), since then there is nothing to answer.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("the gateway accepts connections");
    stream.set_write_timeout(Some(READ_TIMEOUT)).ok()?;
    // The gateway may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let has_head =
        bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(4).any(|w| w == b"\r\n\r\n");
    let mut answer = vec![0u8; 4096];
    let mut first = 0;
    if has_head {
        stream.set_read_timeout(Some(FIRST_BYTE)).ok()?;
        first = match stream.read(&mut answer) {
            Ok(0) => return Some(Vec::new()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(Vec::new()),
            Err(_) => 0,
        };
    }
    answer.truncate(first);
    let _ = stream.shutdown(Shutdown::Write);
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(answer),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(answer),
        Err(_) => None,
    }
}

fn alive(addr: SocketAddr) -> bool {
    exchange(addr, PROBE).is_some_and(|answer| answer.starts_with(b"HTTP/1.1 200"))
}

fuzz_target!(|data: &[u8]| {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let addr = gateway();
    let answer = exchange(addr, data);
    if let Some(answer) = &answer
        && !answer.is_empty()
    {
        // An HTTP/1.x status line, unless the input opens like the h2c prior-knowledge preface
        // (the answer is then HTTP/2 frames).
        assert!(
            answer.starts_with(b"HTTP/1.") || data.starts_with(b"PRI"),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    if answer.is_none() || runs % LIVENESS_EVERY == 0 {
        assert!(
            alive(addr),
            "the gateway stopped answering well-formed requests"
        );
    }
});
