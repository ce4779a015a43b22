//! Start, restart, shutdown and the command line.

mod common;

use std::process::Command;
use std::time::Duration;

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
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "apisix:\n  node_listen:\n    - 70000\n").expect("write");
    let out = moongate()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apisix.node_listen"), "{err}");
}

#[test]
fn default_admin_key_on_a_public_address_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "deployment:\n  admin:\n    admin_listen:\n      ip: 0.0.0.0\n      port: 9180\n",
    )
    .expect("write");
    let out = moongate()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default admin key"), "{err}");
}

#[test]
fn bad_command_line_exits_2() {
    let out = moongate().arg("--no-such-flag").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apisix:\n  node_listen: [\"127.0.0.1:0\"]\n  ssl:\n    enable: false\n  data_dir: \"{}\"\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: 0}}\n",
            dir.path().join("store").display()
        ),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_moongate"))
        .args(["-c"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("moongate started") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(started, "gateway logged its start");
    let pid = child.id().expect("pid");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    let _: Option<Value> = None;
}
