//! Standalone mode: a data plane serving `apisix.yaml` / `apisix.json`, reloaded when the file changes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{ADMIN_KEY, MockUpstream, TestGateway};
use moongate::Gateway;

/// Longer than two polls of the file (one per second): a reload, if one were coming, has happened.
const SETTLE: Duration = Duration::from_millis(2500);

/// Replaces the file atomically, as deploy tools do: write a sibling, then rename it over.
fn replace_file(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).expect("write temp file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn route_yaml(id: &str, uri: &str, node: &str) -> String {
    format!(
        "  - id: \"{id}\"\n    uri: {uri}\n    upstream:\n      type: roundrobin\n      nodes:\n        \"{node}\": 1\n"
    )
}

async fn standalone(provider: &str, file: &str, content: &str) -> TestGateway {
    let builder = TestGateway::builder().standalone(provider);
    replace_file(builder.config_path().parent().expect("dir"), file, content);
    builder.start().await
}

async fn status(gw: &TestGateway, path: &str) -> u16 {
    gw.get(path).await.status().as_u16()
}

/// Polls until `path` answers `want`, for at most 5 seconds.
async fn eventually(gw: &TestGateway, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = status(gw, path).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_route_from_apisix_yaml_is_proxied() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("1", "/a", &up.node())),
    )
    .await;
    let resp = gw.get("/a").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "file");
    assert_eq!(status(&gw, "/other").await, 404);
}

#[tokio::test]
async fn an_edited_file_is_served_without_a_restart() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("1", "/a", &up.node())),
    )
    .await;
    assert_eq!(status(&gw, "/b").await, 404);
    replace_file(
        gw.dir.path(),
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("2", "/b", &up.node())),
    );
    eventually(&gw, "/b", 200).await;
    assert_eq!(status(&gw, "/a").await, 404, "the old route is gone");
}

#[tokio::test]
async fn a_file_without_end_flag_leaves_the_old_config_serving() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("1", "/a", &up.node())),
    )
    .await;
    replace_file(
        gw.dir.path(),
        "apisix.yaml",
        &format!("routes:\n{}", route_yaml("2", "/b", &up.node())),
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!(status(&gw, "/a").await, 200);
    assert_eq!(status(&gw, "/b").await, 404);
    // Once the marker is back, the same content loads.
    replace_file(
        gw.dir.path(),
        "apisix.yaml",
        &format!("routes:\n{}#END", route_yaml("2", "/b", &up.node())),
    );
    eventually(&gw, "/b", 200).await;
}

#[tokio::test]
async fn invalid_yaml_leaves_the_old_config_serving() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("1", "/a", &up.node())),
    )
    .await;
    replace_file(
        gw.dir.path(),
        "apisix.yaml",
        "routes: [ {id: 2, uri: /b\n#END\n",
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!(status(&gw, "/a").await, 200);
    assert_eq!(status(&gw, "/b").await, 404);
}

#[tokio::test]
async fn an_invalid_item_is_skipped_while_the_others_load() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!(
            "routes:\n{}  - id: bad\n    uri: 42\n  - id: unknown-plugin\n    uri: /c\n    plugins:\n      no-such-plugin: {{}}\n{}#END\n",
            route_yaml("1", "/a", &up.node()),
            route_yaml("2", "/b", &up.node()),
        ),
    )
    .await;
    assert_eq!(status(&gw, "/a").await, 200);
    assert_eq!(status(&gw, "/b").await, 200);
    assert_eq!(status(&gw, "/c").await, 404);
}

#[tokio::test]
async fn apisix_json_is_served_and_reloaded() {
    let up = MockUpstream::start("json").await;
    let json = |uri: &str| {
        serde_json::json!({
            "upstreams": [{"id": "u", "nodes": {up.node(): 1}}],
            "routes": [{"id": "1", "uri": uri, "upstream_id": "u"}],
        })
        .to_string()
    };
    let gw = standalone("json", "apisix.json", &json("/j")).await;
    let resp = gw.get("/j").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "json");
    replace_file(gw.dir.path(), "apisix.json", &json("/k"));
    eventually(&gw, "/k", 200).await;
}

#[tokio::test]
async fn admin_writes_are_refused() {
    let up = MockUpstream::start("file").await;
    let gw = standalone(
        "yaml",
        "apisix.yaml",
        &format!("routes:\n{}#END\n", route_yaml("1", "/a", &up.node())),
    )
    .await;
    // No Admin listener (asserted by the builder), and the data-plane ports do not serve it either.
    let resp = gw
        .client
        .put(gw.url("/apisix/admin/routes/9"))
        .header("X-API-KEY", ADMIN_KEY)
        .body(common::route_to("/nine", &up.node()).to_string())
        .send()
        .await
        .expect("request");
    assert!(!resp.status().is_success(), "{}", resp.status());
    assert_eq!(status(&gw, "/nine").await, 404);
    assert_eq!(status(&gw, "/a").await, 200);
}

#[tokio::test]
async fn a_missing_or_unmarked_file_at_start_is_a_start_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apisix:\n  node_listen: [\"127.0.0.1:0\"]\n  data_dir: \"{}\"\ndeployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: yaml\n",
            dir.path().join("store").display()
        ),
    )
    .expect("write config");
    let file = dir.path().join("apisix.yaml");
    let start = || async {
        let gateway = Gateway::load(Some(&cfg), &HashMap::new()).expect("config loads");
        match gateway.start().await {
            Ok(handle) => {
                handle.shutdown();
                panic!("started without a valid {}", file.display());
            }
            Err(err) => err.to_string(),
        }
    };
    let err = start().await;
    assert!(err.contains(&file.display().to_string()), "{err}");
    std::fs::write(&file, "routes: []\n").expect("write");
    let err = start().await;
    assert!(
        err.contains(&format!(
            "missing valid end flag in file {}",
            file.display()
        )),
        "{err}"
    );
}
