//! etcd mode against a real etcd: APISIX's key layout and value format, gateways converging through
//! one etcd, etcd lost and back while serving, compaction, roles, invalid items, authentication.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::etcd::{EtcdServer, Relay};
use common::{ADMIN_KEY, MockUpstream, TestGateway, route_to};
use serde_json::{Value, json};

async fn gateway(endpoint: &str, role: &str) -> TestGateway {
    TestGateway::builder()
        .etcd(endpoint, "/apisix", role, "")
        .start()
        .await
}

async fn status(gw: &TestGateway, path: &str) -> u16 {
    gw.get(path).await.status().as_u16()
}

/// Polls until `path` answers `want`; returns how long that took. Fails after 5 seconds.
async fn eventually(gw: &TestGateway, path: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = status(gw, path).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} still answers {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One client sending requests back to back to a path that must always answer 200.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyLoad {
    fn start(gw: Arc<TestGateway>, path: &'static str) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let task = {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let ok = gw
                        .client
                        .get(gw.url(path))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        SteadyLoad {
            stop,
            sent,
            failed,
            task,
        }
    }

    async fn stop_and_assert_no_failure(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load task");
        let sent = self.sent.load(Ordering::SeqCst);
        assert!(sent > 50, "only {sent} requests sent");
        assert_eq!(self.failed.load(Ordering::SeqCst), 0, "of {sent} requests");
    }
}

async fn body(gw: &TestGateway, path: &str) -> Value {
    gw.get(path).await.json().await.expect("JSON body")
}

#[tokio::test]
async fn admin_writes_are_stored_in_apisix_key_layout_and_value_format() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    let gw = gateway(&etcd.endpoint(), "traditional").await;

    gw.put(
        "/upstreams/1",
        json!({"type": "roundrobin", "nodes": {up.node(): 1}}),
    )
    .await;
    let created = gw
        .put("/routes/1", json!({"uri": "/hello", "upstream_id": "1"}))
        .await;
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}}),
    )
    .await;

    let route = etcd.get_json("/apisix/routes/1").await.expect("route key");
    assert_eq!(route["id"], "1");
    assert_eq!(route["uri"], "/hello");
    assert_eq!(route["upstream_id"], "1");
    assert!(route["create_time"].is_u64() && route["update_time"].is_u64());
    let (_, mod_revision) = etcd.get("/apisix/routes/1").await.expect("route key");
    assert_eq!(created["key"], "/apisix/routes/1");
    assert_eq!(created["value"], route);
    let (code, read) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(code, 200);
    assert_eq!(read["modifiedIndex"], mod_revision);
    assert_eq!(
        etcd.get_json("/apisix/upstreams/1")
            .await
            .expect("upstream")["nodes"],
        json!({up.node(): 1})
    );
    assert_eq!(
        etcd.get_json("/apisix/consumers/jack")
            .await
            .expect("consumer")["username"],
        "jack"
    );
    assert_eq!(status(&gw, "/hello").await, 200);

    // POST ids are 20 digits, from the revision of a write to /apisix/gen_id, as APISIX makes them.
    let (code, posted) = gw
        .admin("POST", "/routes", Some(route_to("/posted", &up.node())))
        .await;
    assert_eq!(code, 200, "{posted}");
    let key = posted["key"].as_str().expect("key").to_owned();
    let id = key.rsplit('/').next().expect("id");
    assert_eq!(id.len(), 20, "{key}");
    assert!(etcd.get(&key).await.is_some(), "{key} not in etcd");
    assert!(etcd.get("/apisix/gen_id").await.is_some());

    let (code, _) = gw.admin("DELETE", "/routes/1", None).await;
    assert_eq!(code, 200);
    assert!(etcd.get("/apisix/routes/1").await.is_none());
    assert_eq!(status(&gw, "/hello").await, 404);
    // Referential checks still hold: the upstream is unused now and can go.
    let (code, _) = gw.admin("DELETE", "/upstreams/1", None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn what_apisix_wrote_to_etcd_is_served() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("from-apisix").await;
    // What `apisix init_etcd` and APISIX's Admin API leave in etcd.
    etcd.put("/apisix/routes/", "init_dir").await;
    etcd.put("/apisix/upstreams/", "init_dir").await;
    etcd.put("/apisix/gen_id", "12").await;
    etcd.put(
        "/apisix/upstreams/u1",
        &json!({"id": "u1", "type": "roundrobin", "nodes": [{"host": "127.0.0.1", "port": up.addr.port(), "weight": 1}],
                "create_time": 1700000000, "update_time": 1700000000})
        .to_string(),
    )
    .await;
    etcd.put(
        "/apisix/routes/00000000000000000012",
        &json!({"id": "00000000000000000012", "uri": "/apisix/*", "upstream_id": "u1", "status": 1,
                "priority": 0, "create_time": 1700000000, "update_time": 1700000000})
        .to_string(),
    )
    .await;
    etcd.put(
        "/apisix/consumers/jack/credentials/c1",
        r#"{"plugins":{"key-auth":{"key":"x"}}}"#,
    )
    .await;
    let gw = gateway(&etcd.endpoint(), "traditional").await;
    assert_eq!(body(&gw, "/apisix/a").await["upstream"], "from-apisix");
    let (code, list) = gw.admin("GET", "/routes", None).await;
    assert_eq!(code, 200);
    assert_eq!(list["total"], 1, "{list}");

    // A change written straight into etcd (by APISIX's Admin API, say) is picked up by the watch.
    etcd.put(
        "/apisix/routes/2",
        &json!({"id": "2", "uri": "/direct", "upstream_id": "u1"}).to_string(),
    )
    .await;
    eventually(&gw, "/direct", 200).await;
    etcd.delete("/apisix/routes/2").await;
    eventually(&gw, "/direct", 404).await;
}

#[tokio::test]
async fn a_change_through_one_gateway_serves_on_another_within_a_second() {
    let etcd = EtcdServer::start().await;
    let one = MockUpstream::start("one").await;
    let two = MockUpstream::start("two").await;
    let admin_side = gateway(&etcd.endpoint(), "traditional").await;
    let data_plane = gateway(&etcd.endpoint(), "data_plane").await;

    let mut worst = Duration::ZERO;
    // Create.
    let written = Instant::now();
    admin_side
        .put("/routes/r", route_to("/converge", &one.node()))
        .await;
    eventually(&data_plane, "/converge", 200).await;
    worst = worst.max(written.elapsed());
    assert_eq!(body(&data_plane, "/converge").await["upstream"], "one");
    // Update: the other upstream.
    let written = Instant::now();
    admin_side
        .put("/routes/r", route_to("/converge", &two.node()))
        .await;
    loop {
        if body(&data_plane, "/converge").await["upstream"] == "two" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "update never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worst = worst.max(written.elapsed());
    // Delete.
    let written = Instant::now();
    let (code, _) = admin_side.admin("DELETE", "/routes/r", None).await;
    assert_eq!(code, 200);
    eventually(&data_plane, "/converge", 404).await;
    worst = worst.max(written.elapsed());
    assert!(
        worst < Duration::from_secs(1),
        "slowest change took {worst:?} to serve on the other gateway"
    );
}

#[tokio::test]
async fn etcd_restart_while_serving_fails_no_request() {
    let mut etcd = EtcdServer::start().await;
    let up = MockUpstream::start("steady").await;
    let gw = Arc::new(gateway(&etcd.endpoint(), "traditional").await);
    gw.put("/routes/1", route_to("/steady", &up.node())).await;

    let load = SteadyLoad::start(gw.clone(), "/steady");
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While etcd is away the Admin API says so; nothing is half-applied.
    let (code, err) = gw
        .admin("PUT", "/routes/2", Some(route_to("/later", &up.node())))
        .await;
    assert_eq!(code, 503, "{err}");
    assert!(
        err["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("etcd")),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart().await;
    // Once etcd is back, writes work again and the watch resumes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = gw
            .admin("PUT", "/routes/2", Some(route_to("/later", &up.node())))
            .await;
        if code == 201 || code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "Admin writes did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&gw, "/later").await, 200);
    etcd.put(
        "/apisix/routes/3",
        &route_to("/direct", &up.node()).to_string(),
    )
    .await;
    eventually(&gw, "/direct", 200).await;
    load.stop_and_assert_no_failure().await;
}

#[tokio::test]
async fn compaction_while_cut_off_leads_to_a_full_reread() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    let relay = Relay::start(etcd.client_addr()).await;
    let gw = Arc::new(
        TestGateway::builder()
            .etcd(&relay.endpoint(), "/apisix", "data_plane", "")
            .start()
            .await,
    );
    etcd.put(
        "/apisix/routes/old",
        &route_to("/old", &up.node()).to_string(),
    )
    .await;
    etcd.put(
        "/apisix/routes/steady",
        &route_to("/steady", &up.node()).to_string(),
    )
    .await;
    eventually(&gw, "/old", 200).await;
    eventually(&gw, "/steady", 200).await;
    let load = SteadyLoad::start(gw.clone(), "/steady");

    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Changes the gateway cannot see, then a compaction that removes their history.
    etcd.delete("/apisix/routes/old").await;
    etcd.put(
        "/apisix/routes/new",
        &route_to("/new", &up.node()).to_string(),
    )
    .await;
    for i in 0..5 {
        etcd.put("/apisix/gen_id", &i.to_string()).await;
    }
    etcd.compact().await;
    // Cut off, the gateway keeps serving what it had.
    assert_eq!(status(&gw, "/old").await, 200);
    assert_eq!(status(&gw, "/new").await, 404);

    relay.restore();
    eventually(&gw, "/new", 200).await;
    eventually(&gw, "/old", 404).await;
    // And it keeps watching after the re-read.
    etcd.put(
        "/apisix/routes/after",
        &route_to("/after", &up.node()).to_string(),
    )
    .await;
    eventually(&gw, "/after", 200).await;
    // The re-read swapped the configuration in without failing a request.
    load.stop_and_assert_no_failure().await;
}

#[tokio::test]
async fn invalid_items_are_skipped_and_an_invalid_update_keeps_the_last_valid_value() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    etcd.put("/apisix/routes/bad", r#"{"uri": 42}"#).await;
    etcd.put("/apisix/routes/garbage", "{not json").await;
    etcd.put(
        "/apisix/routes/unknown-plugin",
        &json!({"uri": "/unknown", "plugins": {"no-such-plugin": {}}, "upstream": {"nodes": {up.node(): 1}, "type": "roundrobin"}}).to_string(),
    )
    .await;
    etcd.put(
        "/apisix/routes/good",
        &route_to("/good", &up.node()).to_string(),
    )
    .await;
    let gw = gateway(&etcd.endpoint(), "traditional").await;
    assert_eq!(status(&gw, "/good").await, 200);
    // A route whose plugin this gateway does not have is not served at all (fail closed).
    assert_eq!(status(&gw, "/unknown").await, 404);
    let (_, list) = gw.admin("GET", "/routes", None).await;
    assert_eq!(list["total"], 1, "{list}");

    // An invalid update keeps the previous value serving.
    etcd.put(
        "/apisix/routes/good",
        r#"{"uri": "/good", "upstream": {"nodes": "nope"}}"#,
    )
    .await;
    etcd.put(
        "/apisix/routes/marker",
        &route_to("/marker", &up.node()).to_string(),
    )
    .await;
    eventually(&gw, "/marker", 200).await;
    assert_eq!(status(&gw, "/good").await, 200);
}

#[tokio::test]
async fn data_plane_is_read_only_and_control_plane_serves_only_the_admin_api() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    let control = gateway(&etcd.endpoint(), "control_plane").await;
    assert_eq!(
        control.http.port(),
        0,
        "a control plane has no data-plane listener"
    );
    let data = gateway(&etcd.endpoint(), "data_plane").await;

    control.put("/routes/1", route_to("/cp", &up.node())).await;
    eventually(&data, "/cp", 200).await;
    // The data plane has no Admin API, not even on its proxy port for loopback clients.
    let resp = data
        .client
        .put(data.url("/apisix/admin/routes/2"))
        .header("X-API-KEY", ADMIN_KEY)
        .body(route_to("/dp", &up.node()).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    assert!(etcd.get("/apisix/routes/2").await.is_none());
}

#[tokio::test]
async fn a_custom_prefix_keeps_gateways_apart() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    let blue = TestGateway::builder()
        .etcd(&etcd.endpoint(), "/blue", "traditional", "")
        .start()
        .await;
    let green = gateway(&etcd.endpoint(), "traditional").await;
    blue.put("/routes/1", route_to("/blue", &up.node())).await;
    assert!(etcd.get("/blue/routes/1").await.is_some());
    assert_eq!(etcd.keys("/apisix/").await, Vec::<String>::new());
    assert_eq!(status(&blue, "/blue").await, 200);
    assert_eq!(status(&green, "/blue").await, 404);
}

/// Starts a gateway on etcd at `endpoint` with extra `deployment.etcd` keys; it must fail. Returns
/// the error.
async fn start_failure(endpoint: &str, etcd_keys: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "deployment:\n  role: traditional\n  role_traditional:\n    config_provider: etcd\n  etcd:\n    host: [\"{endpoint}\"]\n    timeout: 2\n    {etcd_keys}\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: 0}}\napisix:\n  node_listen: [\"127.0.0.1:0\"]\n  ssl: {{enable: false}}\n"
        ),
    )
    .expect("write config");
    let gateway = moongate::Gateway::load(Some(&path), &HashMap::new()).expect("config loads");
    match gateway.start().await {
        Ok(_) => panic!("the gateway started"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn etcd_unreachable_at_start_is_a_clear_error() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let started = Instant::now();
    let err = start_failure(&format!("http://{dead}"), "startup_retry: 2").await;
    assert!(
        err.contains("etcd") && err.contains(&dead.to_string()) && err.contains("2 attempts"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let etcd = EtcdServer::start().await;
    let up = MockUpstream::start("up").await;
    etcd.call(
        "/v3/auth/user/add",
        json!({"name": "root", "password": "rootpw"}),
    )
    .await;
    etcd.call(
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    )
    .await;
    etcd.call("/v3/auth/enable", json!({})).await;

    let gw = TestGateway::builder()
        .etcd(
            &etcd.endpoint(),
            "/apisix",
            "traditional",
            "    user: root\n    password: rootpw\n",
        )
        .start()
        .await;
    gw.put("/routes/1", route_to("/auth", &up.node())).await;
    assert_eq!(status(&gw, "/auth").await, 200);

    let err = start_failure(
        &etcd.endpoint(),
        "startup_retry: 1\n    user: root\n    password: wrong-secret-value",
    )
    .await;
    assert!(err.contains("authentication failed"), "{err}");
    assert!(
        !err.contains("wrong-secret-value"),
        "the password leaked: {err}"
    );
}

#[tokio::test]
async fn import_writes_a_standalone_file_into_etcd_and_export_reads_it_back() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "deployment:\n  role: traditional\n  role_traditional:\n    config_provider: etcd\n  etcd:\n    host: [\"{}\"]\n",
            etcd.endpoint()
        ),
    )
    .expect("write config");
    let file = dir.path().join("apisix.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  - {id: u1, type: roundrobin, nodes: {\"127.0.0.1:1980\": 1}}\nroutes:\n  - {id: r1, uri: /imported, upstream_id: u1}\n  - {id: bad, uri: 42}\n#END\n",
    )
    .expect("write file");
    let (summary, exported) = tokio::task::spawn_blocking(move || {
        let gateway = moongate::Gateway::load(Some(&config), &HashMap::new()).expect("loads");
        let summary = gateway.import(&file).expect("import");
        (summary, gateway.export().expect("export"))
    })
    .await
    .expect("import task");
    assert!(summary.starts_with("imported 2 objects"), "{summary}");
    assert!(summary.contains("skipped /apisix/routes/bad"), "{summary}");
    assert_eq!(
        etcd.get_json("/apisix/routes/r1").await.expect("route")["uri"],
        "/imported"
    );
    assert!(etcd.get_json("/apisix/upstreams/u1").await.is_some());
    assert!(
        exported.contains("/imported") && exported.ends_with("#END\n"),
        "{exported}"
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate_reaches_etcd() {
    let etcd = EtcdServer::start_tls().await;
    let up = MockUpstream::start("up").await;
    let gw = TestGateway::builder()
        .etcd(
            &etcd.endpoint(),
            "/apisix",
            "traditional",
            &format!(
                "    tls:\n      verify: false\n      cert: \"{}\"\n      key: \"{}\"\n",
                etcd.client_cert().display(),
                etcd.client_key().display()
            ),
        )
        .start()
        .await;
    gw.put("/routes/1", route_to("/tls", &up.node())).await;
    assert_eq!(status(&gw, "/tls").await, 200);
    assert!(etcd.get("/apisix/routes/1").await.is_some());

    // Without the client certificate etcd refuses the connection and the gateway says so.
    let err = start_failure(
        &etcd.endpoint(),
        "startup_retry: 1\n    tls: {verify: false}",
    )
    .await;
    assert!(err.contains(&etcd.endpoint()), "{err}");
}

#[tokio::test]
async fn plugin_secrets_are_encrypted_in_etcd_and_plain_to_the_admin_api_and_the_plugin() {
    let etcd = EtcdServer::start().await;
    let function = MockUpstream::start("function").await;
    // APISIX's own test keyring; the first key encrypts.
    let gw = TestGateway::builder()
        .etcd(&etcd.endpoint(), "/apisix", "traditional", "")
        .apisix_yaml("  data_encryption:\n    keyring: [edd1c9f0985e76a2]\n")
        .start()
        .await;
    let conf = json!({
        "function_uri": format!("http://{}/default/fn", function.node()),
        "authorization": {"apikey": "test-api-key"}
    });
    gw.put(
        "/routes/1",
        json!({"uri": "/fn", "plugins": {"aws-lambda": conf}}),
    )
    .await;
    // Stored encrypted: base64(AES-128-CBC) with the key as IV, the bytes APISIX writes.
    let stored = etcd.get_json("/apisix/routes/1").await.expect("route");
    assert_eq!(
        stored["plugins"]["aws-lambda"]["authorization"]["apikey"],
        "KmjDqNkKEE39RiuQS4o2wg=="
    );
    assert_eq!(
        stored["plugins"]["aws-lambda"]["function_uri"], conf["function_uri"],
        "fields not listed in encrypt_fields stay plain"
    );
    // The Admin API shows the plaintext, and the plugin sends it.
    let (_, read) = gw.admin("GET", "/routes/1", None).await;
    assert_eq!(
        read["value"]["plugins"]["aws-lambda"]["authorization"]["apikey"],
        "test-api-key"
    );
    let echo = body(&gw, "/fn").await;
    assert_eq!(echo["headers"]["x-api-key"], "test-api-key");

    // A key APISIX encrypted with an older keyring key still decrypts (keys are tried in order).
    let gw2 = TestGateway::builder()
        .etcd(&etcd.endpoint(), "/apisix", "data_plane", "")
        .apisix_yaml("  data_encryption:\n    keyring: [qeddd145sfvddff3, edd1c9f0985e76a2]\n")
        .start()
        .await;
    let echo = body(&gw2, "/fn").await;
    assert_eq!(echo["headers"]["x-api-key"], "test-api-key");
}
