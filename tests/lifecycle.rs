//! Start, restart, shutdown and the command line.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::process::GatewayProcess;
use common::{MockUpstream, TestGateway, route_to};
use serde_json::Value;

#[tokio::test]
async fn config_survives_a_restart() {
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/persist", &up.node())).await;
    gw.put("/upstreams/u", serde_json::json!({"nodes": {up.node(): 1}}))
        .await;
    let dir = gw.stop().await;

    let gw = TestGateway::builder().dir(dir).start().await;
    let (status, body) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"]["uri"], "/persist");
    assert_eq!(gw.get("/persist").await.status(), 200);
    let (status, _) = gw
        .admin("PUT", "/routes/2", Some(route_to("/two", &up.node())))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let up = MockUpstream::start("slow").await;
    let mut gw = TestGateway::start().await;
    gw.put("/routes/1", route_to("/slow", &up.node())).await;
    let client = gw.client.clone();
    let url = gw.url("/slow?sleep_ms=700");
    let in_flight =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let handle = gw.handle.take().expect("running");
    handle.shutdown();
    let status = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("drained in time");
    assert!(
        reqwest::get(gw.url("/slow")).await.is_err(),
        "new connections are refused"
    );
}

fn moongate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moongate"))
}

/// Runs `moongate check` on a config and asserts it exits 64 with `expected` in its message.
fn check_refuses(yaml: &str, expected: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).expect("write");
    let out = moongate()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expected), "{err}");
}

#[test]
fn version_and_help() {
    let out = moongate().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("moongate "));
    let out = moongate().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("MOONGATE_CONFIG"), "{help}");
}

#[test]
fn check_validates_config_and_exits() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apisix:\n  data_dir: \"{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .expect("write");
    let out = moongate()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn invalid_config_exits_64_naming_the_key() {
    check_refuses(
        "apisix:\n  node_listen:\n    - 70000\n",
        "apisix.node_listen",
    );
}

#[test]
fn default_admin_key_on_a_public_address_refuses_to_start() {
    check_refuses(
        "deployment:\n  admin:\n    admin_listen:\n      ip: 0.0.0.0\n      port: 9180\n",
        "default admin key",
    );
}

#[test]
fn bad_command_line_exits_2() {
    let out = moongate().arg("--no-such-flag").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let up = MockUpstream::start("slow").await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut gw = GatewayProcess::spawn(dir.path()).await;
    let (status, _) = gw
        .admin("PUT", "/routes/1", Some(&route_to("/slow", &up.node())))
        .await;
    assert_eq!(status, 201);
    // 20 requests in flight, each on its own connection, each answered after 1 s.
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let url = format!("http://{}/slow?sleep_ms=1000", gw.http);
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client");
                let resp = client.get(url).send().await?;
                let status = resp.status().as_u16();
                resp.bytes().await.map(|_| status)
            })
        })
        .collect();
    while up.requests.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("TERM");
    let signalled = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(&gw.http).await.is_err(),
        "new connections are refused while draining"
    );
    for request in in_flight {
        let status = request
            .await
            .expect("task")
            .expect("in-flight request completes");
        assert_eq!(status, 200);
    }
    let status = tokio::time::timeout(Duration::from_secs(20), gw.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exited once the in-flight requests were done, long before the drain timeout (240 s)"
    );
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9_during_a_burst() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut gw = GatewayProcess::spawn(dir.path()).await;
    // Four writers put routes as fast as they are acknowledged, until the gateway is gone.
    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let admin = gw.admin.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client");
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let id = format!("w{writer}-{i}");
                    let sent = client
                        .put(format!("http://{admin}/apisix/admin/routes/{id}"))
                        .header("X-API-KEY", common::ADMIN_KEY)
                        .body(route_to(&format!("/r/{id}"), "127.0.0.1:1").to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(resp) if resp.status().is_success() => {
                            acknowledged.push(id);
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    // The kill lands in the middle of the burst, once writes are flowing (on a busy machine the
    // first ones take a while).
    let flowing = tokio::time::timeout(Duration::from_secs(30), async {
        while acks.load(Ordering::SeqCst) < 8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    gw.child.start_kill().expect("kill -9");
    let _ = gw.child.wait().await;
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        flowing.is_ok() && acknowledged.len() >= 8,
        "writes were acknowledged before the kill"
    );
    let gw = GatewayProcess::spawn(dir.path()).await;
    for id in &acknowledged {
        let (status, body) = gw.admin("GET", &format!("/routes/{id}"), None).await;
        assert_eq!(status, 200, "route {id} was acknowledged but lost");
        assert_eq!(body["value"]["uri"], format!("/r/{id}"));
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mib_body_streams_through_with_flat_memory() {
    let up = MockUpstream::start("u").await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = GatewayProcess::spawn(dir.path()).await;
    let (status, _) = gw
        .admin("PUT", "/routes/1", Some(&route_to("/*", &up.node())))
        .await;
    assert_eq!(status, 201);
    // No overall timeout: 200 MiB cross the gateway.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let pid = gw.child.id().expect("pid");
    let before = peak_rss_kib(pid);
    let chunk = vec![b'z'; 1024 * 1024];
    let chunks =
        futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client
        .post(format!("http://{}/count", gw.http))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("upload");
    assert_eq!(
        resp.text().await.expect("count"),
        (100 * 1024 * 1024).to_string()
    );
    let mut down = client
        .get(format!("http://{}/stream?chunks=1600", gw.http))
        .send()
        .await
        .expect("download");
    let mut total = 0usize;
    while let Some(c) = down.chunk().await.expect("chunk") {
        total += c.len();
    }
    assert_eq!(total, 1600 * 64 * 1024);
    let after = peak_rss_kib(pid);
    // 200 MiB went through; buffering any of it whole would raise the peak by ~100 MiB.
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn an_unsupported_config_provider_is_refused() {
    check_refuses(
        "deployment:\n  role: traditional\n  role_traditional:\n    config_provider: yaml\n",
        "config_provider yaml is not supported yet",
    );
}

#[tokio::test]
async fn export_then_import_moves_the_configuration_to_another_gateway() {
    let up = MockUpstream::start("moved").await;
    let gw = TestGateway::start().await;
    gw.put(
        "/upstreams/u1",
        serde_json::json!({"type": "roundrobin", "nodes": {up.node(): 1}}),
    )
    .await;
    gw.put(
        "/routes/1",
        serde_json::json!({"uri": "/moved", "upstream_id": "u1", "plugins": {"request-id": {}}}),
    )
    .await;
    let old = gw.stop().await;

    let out = moongate()
        .args(["export", "-c"])
        .arg(old.path().join("config.yaml"))
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(exported.trim_end().ends_with("#END"), "{exported}");
    assert!(exported.contains("\"/moved\""), "{exported}");

    let fresh = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let file = fresh.path().join("apisix.yaml");
    std::fs::write(&file, &exported).expect("write export");
    let cfg = fresh.path().join("import.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apisix:\n  data_dir: \"{}\"\n  plugins_dir: \"{}\"\n",
            fresh.path().join("store").display(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/plugins")
        ),
    )
    .expect("write config");
    let out = moongate()
        .args(["import", "-c"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 objects"));

    let gw = TestGateway::builder().dir(fresh).start().await;
    let resp = gw.get("/moved").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().contains_key("x-request-id"),
        "the plugin conf came along"
    );
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["upstream"], "moved");
}
