//! The Lua plugin host: APISIX-convention plugin files dropped into a plugin directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{MockUpstream, TestGateway, route_to};
use serde_json::{Value, json};

/// A plugin that sets a response header in header_filter (and optionally more).
fn header_plugin(name: &str, priority: i64, extra: &str) -> String {
    format!(
        r#"
local core = require("apisix.core")
local _M = {{
    version = 0.1,
    priority = {priority},
    name = "{name}",
    schema = {{
        type = "object",
        properties = {{
            value = {{ type = "string", default = "on" }},
            count = {{ type = "integer", minimum = 1 }},
        }},
    }},
}}

function _M.check_schema(conf)
    return core.schema.check(_M.schema, conf)
end

function _M.access(conf, ctx)
    local order = core.request.header(ctx, "x-order") or ""
    core.request.set_header(ctx, "x-order", order .. "{name},")
end

function _M.header_filter(conf, ctx)
    core.response.set_header("x-{name}", conf.value)
end
{extra}
return _M
"#
    )
}

/// A plugin of priority 1 with an empty schema, whose module is `code` (defining `_M.<phase>`).
fn bare_plugin(name: &str, code: &str) -> String {
    format!(
        r#"local _M = {{ version = 0.1, priority = 1, name = "{name}", schema = {{ type = "object" }} }}
{code}
return _M
"#
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    // Write then rename, as editors do, so a reload never sees half a file.
    let tmp = dir.join(format!(".{}.tmp", file.replace('/', "_")));
    std::fs::write(&tmp, text).expect("write plugin");
    std::fs::rename(&tmp, &path).expect("rename plugin");
}

async fn plugin_names(gw: &TestGateway) -> Vec<String> {
    let (_, list) = gw.admin("GET", "/plugins/list", None).await;
    serde_json::from_value(list).unwrap_or_default()
}

/// Waits until `check` holds, polling; panics after 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn gateway_with(files: &[(&str, String)]) -> (TestGateway, MockUpstream, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("plugin dir");
    for (file, text) in files {
        write(dir.path(), file, text);
    }
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder().plugins_dir(dir.path()).start().await;
    (gw, up, dir)
}

fn route_with(up: &MockUpstream, plugins: Value) -> Value {
    json!({"uri": "/p", "plugins": plugins, "upstream": {"nodes": {up.node(): 1}}})
}

#[tokio::test]
async fn a_dropped_in_plugin_runs_with_its_apisix_config() {
    let (gw, up, _dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    assert_eq!(plugin_names(&gw).await, vec!["hello"]);
    gw.put(
        "/routes/1",
        route_with(&up, json!({"hello": {"value": "world"}})),
    )
    .await;
    let resp = gw.get("/p").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hello"], "world");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["headers"]["x-order"], "hello,",
        "access ran before proxying"
    );
}

#[tokio::test]
async fn schema_defaults_are_filled_for_the_data_plane_but_not_stored() {
    let (gw, up, _dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    let (_, stored) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(route_with(&up, json!({"hello": {}}))),
        )
        .await;
    assert_eq!(stored["value"]["plugins"]["hello"], json!({}));
    assert_eq!(gw.get("/p").await.headers()["x-hello"], "on");
}

#[tokio::test]
async fn plugins_run_by_priority_and_meta_priority_overrides() {
    let (gw, up, _dir) = gateway_with(&[
        ("first.lua", header_plugin("first", 100, "")),
        ("second.lua", header_plugin("second", 50, "")),
    ])
    .await;
    assert_eq!(
        plugin_names(&gw).await,
        vec!["first", "second"],
        "listed by priority"
    );
    gw.put(
        "/routes/1",
        route_with(&up, json!({"first": {}, "second": {}})),
    )
    .await;
    let body: Value = gw.get("/p").await.json().await.expect("json");
    assert_eq!(body["headers"]["x-order"], "first,second,");
    gw.put(
        "/routes/1",
        route_with(
            &up,
            json!({"first": {}, "second": {"_meta": {"priority": 1000}}}),
        ),
    )
    .await;
    let body: Value = gw.get("/p").await.json().await.expect("json");
    assert_eq!(body["headers"]["x-order"], "second,first,");
}

#[tokio::test]
async fn return_code_and_body_end_the_request_and_filters_still_run() {
    let stop = header_plugin(
        "stop",
        20,
        r#"
function _M.rewrite(conf, ctx)
    if ctx.var.arg_stop then
        return 403, { message = "stopped by " .. ctx.var.arg_stop }
    end
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("stop.lua", stop)]).await;
    gw.put(
        "/routes/1",
        route_with(&up, json!({"stop": {"value": "seen"}})),
    )
    .await;
    let resp = gw.get("/p?stop=me").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["x-stop"],
        "seen",
        "header_filter runs after an early exit"
    );
    assert_eq!(
        resp.text().await.expect("body"),
        "{\"message\":\"stopped by me\"}\n"
    );
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    gw.put(
        "/routes/1",
        route_with(
            &up,
            json!({"stop": {"_meta": {"error_response": {"message": "custom"}}}}),
        ),
    )
    .await;
    let resp = gw.get("/p?stop=me").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.expect("body"),
        "{\"message\":\"custom\"}\n"
    );
}

#[tokio::test]
async fn meta_disable_and_meta_filter() {
    let (gw, up, _dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    gw.put(
        "/routes/1",
        route_with(&up, json!({"hello": {"_meta": {"disable": true}}})),
    )
    .await;
    assert!(gw.get("/p").await.headers().get("x-hello").is_none());
    gw.put(
        "/routes/1",
        route_with(
            &up,
            json!({"hello": {"_meta": {"filter": [["arg_version", "==", "v2"]]}}}),
        ),
    )
    .await;
    assert!(
        gw.get("/p?version=v1")
            .await
            .headers()
            .get("x-hello")
            .is_none()
    );
    assert_eq!(gw.get("/p?version=v2").await.headers()["x-hello"], "on");
}

#[tokio::test]
async fn response_phases_see_the_request_head_as_the_client_sent_it() {
    // The upstream gets another Host (pass_host: node), no hop-by-hop headers and the gateway's own
    // X-Forwarded-For; header_filter still reads the client's request, as $http_* in nginx.
    let (gw, up, _dir) = gateway_with(&[(
        "seen.lua",
        bare_plugin(
            "seen",
            r#"
local core = require("apisix.core")
function _M.header_filter(conf, ctx)
    core.response.set_header("x-seen-host", ctx.var.http_host)
    core.response.set_header("x-seen-xff", core.request.header(ctx, "x-forwarded-for"))
    core.response.set_header("x-seen-hop", core.request.header(ctx, "x-hop"))
    core.response.set_header("x-seen-uri", ctx.var.request_uri)
end
"#,
        ),
    )])
    .await;
    gw.put(
        "/routes/1",
        json!({"uri": "/p", "plugins": {"seen": {}},
               "upstream": {"nodes": {up.node(): 1}, "pass_host": "node"}}),
    )
    .await;
    let resp = gw
        .client
        .get(gw.url("/p?q=1"))
        .header("host", "client.example")
        .header("x-forwarded-for", "10.0.0.1")
        .header("connection", "x-hop")
        .header("x-hop", "h")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-host"], "client.example");
    assert_eq!(resp.headers()["x-seen-xff"], "10.0.0.1");
    assert_eq!(resp.headers()["x-seen-hop"], "h");
    assert_eq!(resp.headers()["x-seen-uri"], "/p?q=1");
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["headers"]["host"], up.node());
    assert_eq!(echo["headers"]["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert!(echo["headers"].get("x-hop").is_none(), "{echo}");
}

#[tokio::test]
async fn meta_pre_function_runs_before_each_phase_and_its_errors_are_only_logged() {
    let (gw, up, _dir) = gateway_with(&[(
        "echo.lua",
        r#"
local core = require("apisix.core")
local _M = { version = 0.1, priority = 10, name = "echo", schema = { type = "object" } }
function _M.access(conf, ctx)
    core.request.set_header(ctx, "x-seen", tostring(ctx.pre_calls))
end
function _M.header_filter(conf, ctx)
    core.response.set_header("x-pre-calls", tostring(ctx.pre_calls))
end
return _M
"#
        .to_owned(),
    )])
    .await;
    gw.put(
        "/routes/1",
        route_with(
            &up,
            json!({"echo": {"_meta": {"pre_function":
                "return function(conf, ctx) ctx.pre_calls = (ctx.pre_calls or 0) + 1 end"}}}),
        ),
    )
    .await;
    let resp = gw.get("/p").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-pre-calls"],
        "2",
        "access and header_filter"
    );
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["headers"]["x-seen"], "1");

    // A pre_function that raises is logged; the plugin still runs.
    gw.put(
        "/routes/1",
        route_with(
            &up,
            json!({"echo": {"_meta": {"pre_function": "return function() error('boom') end"}}}),
        ),
    )
    .await;
    let resp = gw.get("/p").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pre-calls"], "nil");

    // One that does not compile is refused at write time with APISIX's message.
    let (code, err) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(route_with(
                &up,
                json!({"echo": {"_meta": {"pre_function": "return function("}}}),
            )),
        )
        .await;
    assert_eq!(code, 400);
    let msg = err["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("failed to load _meta.pre_function in plugin echo: "),
        "{msg}"
    );
}

#[tokio::test]
async fn admin_api_reports_plugin_schema_errors_like_apisix() {
    let (gw, up, _dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(route_with(&up, json!({"hello": {"count": 0}}))),
        )
        .await;
    assert_eq!(status, 400);
    let msg = body["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("failed to check the configuration of plugin hello err: property \"count\" validation failed"),
        "{msg}"
    );
    let (status, body) = gw
        .admin(
            "PUT",
            "/routes/1",
            Some(route_with(&up, json!({"nope": {}}))),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_msg"], "unknown plugin [nope]");
    let (status, body) = gw.admin("GET", "/plugins/hello", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["properties"]["_meta"]["type"], "object",
        "schema has the injected _meta"
    );
    assert_eq!(
        body["$comment"],
        "this is a mark for our injected plugin schema"
    );
}

#[tokio::test]
async fn broken_files_are_refused_and_the_rest_keep_working() {
    let (gw, up, _dir) = gateway_with(&[
        ("hello.lua", header_plugin("hello", 10, "")),
        ("syntax.lua", "return {".into()),
        (
            "noversion.lua",
            "return { priority = 1, schema = {} }".into(),
        ),
        (
            "meta.lua",
            "return { version = 0.1, priority = 1, schema = { properties = { _meta = {} } } }"
                .into(),
        ),
    ])
    .await;
    assert_eq!(plugin_names(&gw).await, vec!["hello"]);
    let (status, body) = gw.admin("GET", "/plugins/noversion", None).await;
    assert_eq!(status, 404);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("missing field: version"),
        "{body}"
    );
    let (_, body) = gw.admin("GET", "/plugins/meta", None).await;
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("found forbidden '_meta' field"),
        "{body}"
    );
    gw.put("/routes/1", route_with(&up, json!({"hello": {}})))
        .await;
    assert_eq!(gw.get("/p").await.status(), 200);
}

#[tokio::test]
async fn a_raising_plugin_fails_only_its_request() {
    let boom = header_plugin(
        "boom",
        10,
        r#"
function _M.rewrite(conf, ctx)
    if ctx.var.arg_boom then
        error("kaboom")
    end
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("boom.lua", boom)]).await;
    gw.put("/routes/1", route_with(&up, json!({"boom": {}})))
        .await;
    assert_eq!(gw.get("/p?boom=1").await.status(), 500);
    assert_eq!(gw.get("/p").await.status(), 200);
}

#[tokio::test]
async fn a_runaway_loop_is_stopped_and_the_worker_keeps_serving() {
    let spin = header_plugin(
        "spin",
        10,
        r#"
function _M.rewrite(conf, ctx)
    if ctx.var.arg_spin then
        while true do end
    end
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("spin.lua", spin)]).await;
    gw.put("/routes/1", route_with(&up, json!({"spin": {}})))
        .await;
    let started = Instant::now();
    assert_eq!(gw.get("/p?spin=1").await.status(), 500);
    assert!(started.elapsed() < Duration::from_secs(30));
    for _ in 0..4 {
        assert_eq!(gw.get("/p").await.status(), 200);
    }
}

/// A one-worker gateway with `plugin` on `/p` and a plain `/plain` route.
async fn one_worker_with(
    name: &str,
    plugin: &str,
) -> (TestGateway, MockUpstream, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("plugin dir");
    write(dir.path(), &format!("{name}.lua"), plugin);
    let up = MockUpstream::start("u").await;
    let gw = TestGateway::builder()
        .plugins_dir(dir.path())
        .workers(1)
        .start()
        .await;
    gw.put("/routes/1", route_with(&up, json!({name: {}})))
        .await;
    gw.put("/routes/2", route_to("/plain", &up.node())).await;
    (gw, up, dir)
}

#[tokio::test]
async fn a_runaway_loop_that_catches_the_time_limit_error_is_stopped_again() {
    let stubborn = bare_plugin(
        "stubborn",
        r#"
function _M.access(conf, ctx)
    while true do
        pcall(function() while true do end end)
    end
end
"#,
    );
    let (gw, _up, _dir) = one_worker_with("stubborn", &stubborn).await;
    let started = Instant::now();
    assert_eq!(gw.get("/p").await.status(), 500);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(gw.get("/plain").await.status(), 200);
}

#[tokio::test]
async fn runaway_code_compiled_at_run_time_is_stopped_too() {
    // Code a plugin compiles itself, and a `_meta.pre_function`, are not part of the plugin file;
    // they are stopped all the same, and the only worker serves again.
    let compiles = bare_plugin(
        "compiles",
        r#"
function _M.access(conf, ctx)
    if ctx.var.arg_spin then
        loadstring("while true do end")()
    end
end
"#,
    );
    let (gw, up, _dir) = one_worker_with("compiles", &compiles).await;
    gw.put(
        "/routes/3",
        json!({"uri": "/pre", "upstream": {"nodes": {up.node(): 1}}, "plugins": {"compiles": {
            "_meta": {"pre_function": "return function() while true do end end"}}}}),
    )
    .await;
    for path in ["/p?spin=1", "/pre"] {
        let started = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(20), gw.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path}: the runaway code was not stopped"));
        assert_eq!(resp.status(), 500, "{path}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(gw.get("/plain").await.status(), 200, "after {path}");
    }
    assert_eq!(gw.get("/p").await.status(), 200);
}

#[tokio::test]
async fn a_runaway_header_filter_fails_only_its_request() {
    let spin = bare_plugin(
        "spin",
        r#"
function _M.header_filter(conf, ctx)
    while true do end
end
"#,
    );
    let (gw, _up, _dir) = one_worker_with("spin", &spin).await;
    assert_eq!(gw.get("/p").await.status(), 500);
    assert_eq!(gw.get("/plain").await.status(), 200);
}

#[tokio::test]
async fn a_runaway_timer_callback_is_stopped_and_the_worker_serves_again() {
    let timer = bare_plugin(
        "spin_timer",
        r#"
function _M.access(conf, ctx)
    ngx.timer.at(0, function() while true do end end)
end
"#,
    );
    let (gw, _up, _dir) = one_worker_with("spin_timer", &timer).await;
    assert_eq!(gw.get("/p").await.status(), 200);
    // The timer holds the only worker until its time limit (2 s here) stops it; then the worker
    // serves again.
    let started = Instant::now();
    let after = tokio::time::timeout(Duration::from_secs(20), gw.get("/plain"))
        .await
        .expect("the worker never came back from the runaway timer");
    assert_eq!(after.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn waiting_longer_than_the_time_limit_is_not_running_away() {
    let patient = bare_plugin(
        "patient",
        r#"
function _M.access(conf, ctx)
    ngx.sleep(2.5)
    local n = 0
    for i = 1, 100000 do n = n + i end
    ngx.header["x-sum"] = tostring(n)
end
"#,
    );
    // The test gateways' limit is 2 s: the sleep is longer, the Lua itself runs for microseconds.
    let (gw, _up, _dir) = one_worker_with("patient", &patient).await;
    let resp = gw.get("/p").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sum"], "5000050000");
}

#[tokio::test]
async fn a_memory_hog_fails_its_request_and_the_vm_recovers() {
    let hog = header_plugin(
        "hog",
        10,
        r#"
function _M.rewrite(conf, ctx)
    if ctx.var.arg_hog then
        local t = {}
        for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    end
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("hog.lua", hog)]).await;
    gw.put("/routes/1", route_with(&up, json!({"hog": {}})))
        .await;
    assert_eq!(gw.get("/p?hog=1").await.status(), 500);
    for _ in 0..4 {
        assert_eq!(gw.get("/p").await.status(), 200);
    }
}

#[tokio::test]
async fn a_memory_hog_that_catches_the_limit_error_is_stopped_again() {
    let hoarder = bare_plugin(
        "hoarder",
        r#"
function _M.access(conf, ctx)
    local keep = {}
    while true do
        pcall(function()
            for i = 1, 1e9 do keep[#keep + 1] = string.rep("x", 1024) .. i end
        end)
    end
end
"#,
    );
    let (gw, _up, _dir) = one_worker_with("hoarder", &hoarder).await;
    assert_eq!(gw.get("/p").await.status(), 500);
    for _ in 0..4 {
        assert_eq!(gw.get("/plain").await.status(), 200);
    }
}

#[tokio::test]
async fn body_filter_and_log_phases() {
    let upper = header_plugin(
        "upper",
        10,
        r#"
function _M.body_filter(conf, ctx)
    if ngx.arg[1] then
        ngx.arg[1] = string.upper(ngx.arg[1])
    end
end

function _M.log(conf, ctx)
    ngx.shared["test-log"]:incr("logged", 1, 0)
end
"#,
    );
    let counter = bare_plugin(
        "logcount",
        r#"
function _M.access(conf, ctx)
    return 200, { logged = ngx.shared["test-log"]:get("logged") or 0 }
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("upper.lua", upper), ("logcount.lua", counter)]).await;
    gw.put("/routes/1", route_with(&up, json!({"upper": {}})))
        .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/count", "plugins": {"logcount": {}}}),
    )
    .await;
    let text = gw.get("/p").await.text().await.expect("body");
    assert!(text.contains("\"UPSTREAM\":\"U\""), "{text}");
    eventually("the log phase to run", || async {
        let body: Value = gw.get("/count").await.json().await.unwrap_or_default();
        body["logged"].as_i64().unwrap_or(0) >= 1
    })
    .await;
}

#[tokio::test]
async fn ngx_sleep_yields_without_blocking_the_worker() {
    let nap = bare_plugin(
        "nap",
        r#"
function _M.access(conf, ctx)
    ngx.sleep(1.5)
end
"#,
    );
    // One worker: if the sleep blocked its thread, the second request would wait behind it.
    let (gw, _up, _dir) = one_worker_with("nap", &nap).await;
    let slow = tokio::spawn(gw.client.get(gw.url("/p")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = gw.get("/plain").await;
    assert_eq!(fast.status(), 200);
    assert!(
        !slow.is_finished(),
        "the fast request finished while the slow one was still sleeping"
    );
    let slow = slow.await.expect("task").expect("slow request");
    assert_eq!(slow.status(), 200);
}

#[tokio::test]
async fn hot_reload_adds_changes_breaks_fixes_and_removes_plugins() {
    let (gw, up, dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    gw.put(
        "/routes/1",
        route_with(&up, json!({"hello": {"value": "v1"}})),
    )
    .await;
    assert_eq!(gw.get("/p").await.headers()["x-hello"], "v1");

    // Add a plugin: usable without restart.
    write(dir.path(), "added.lua", &header_plugin("added", 5, ""));
    eventually("the new plugin to load", || async {
        plugin_names(&gw).await.contains(&"added".to_owned())
    })
    .await;
    gw.put(
        "/routes/2",
        json!({"uri": "/added", "plugins": {"added": {}}, "upstream": {"nodes": {up.node(): 1}}}),
    )
    .await;
    assert_eq!(gw.get("/added").await.headers()["x-added"], "on");

    // Change a plugin: the new code serves.
    let changed = header_plugin("hello", 10, "").replace("conf.value)", "conf.value .. \"-v2\")");
    write(dir.path(), "hello.lua", &changed);
    eventually("the changed plugin to serve", || async {
        gw.get("/p")
            .await
            .headers()
            .get("x-hello")
            .is_some_and(|v| v == "v1-v2")
    })
    .await;

    // Break it: the last good version keeps serving and the error is visible.
    write(dir.path(), "hello.lua", "return { this is not lua");
    eventually("the load error to be reported", || async {
        let (_, schema) = gw.admin("GET", "/plugins/hello", None).await;
        schema.get("x-moongate-load-error").is_some()
    })
    .await;
    assert_eq!(gw.get("/p").await.headers()["x-hello"], "v1-v2");

    // Fix it.
    write(dir.path(), "hello.lua", &header_plugin("hello", 10, ""));
    eventually("the fixed plugin to serve", || async {
        gw.get("/p")
            .await
            .headers()
            .get("x-hello")
            .is_some_and(|v| v == "v1")
    })
    .await;

    // Remove a plugin that no route uses.
    gw.admin("DELETE", "/routes/2", None).await;
    std::fs::remove_file(dir.path().join("added.lua")).expect("remove");
    eventually("the removed plugin to unload", || async {
        !plugin_names(&gw).await.contains(&"added".to_owned())
    })
    .await;
}

#[tokio::test]
async fn a_new_version_rejecting_stored_confs_is_not_loaded() {
    let (gw, up, dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    gw.put(
        "/routes/1",
        route_with(&up, json!({"hello": {"value": "kept"}})),
    )
    .await;
    let stricter = header_plugin("hello", 10, "").replace(
        "value = { type = \"string\", default = \"on\" }",
        "value = { type = \"string\", enum = { \"a\", \"b\" } }",
    );
    write(dir.path(), "hello.lua", &stricter);
    eventually("the rejection to be reported", || async {
        let (_, schema) = gw.admin("GET", "/plugins/hello", None).await;
        schema
            .get("x-moongate-load-error")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("/apisix/routes/1"))
    })
    .await;
    assert_eq!(gw.get("/p").await.headers()["x-hello"], "kept");
}

#[tokio::test]
async fn no_request_fails_while_plugins_reload_50_times_some_broken() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let (gw, up, dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    gw.put("/routes/1", route_with(&up, json!({"hello": {}})))
        .await;
    let client = gw.client.clone();
    let url = gw.url("/p");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    for i in 0..50 {
        // Every fifth version is broken: the last good one keeps serving.
        let text = if i % 5 == 2 {
            "return { version = 0.1, priority = 10, name = \"hello\", schema = {".to_owned()
        } else {
            header_plugin("hello", 10, "")
                .replace("default = \"on\"", &format!("default = \"v{i}\""))
        };
        write(dir.path(), "hello.lua", &text);
        let (status, _) = gw.admin("PUT", "/plugins/reload", None).await;
        assert_eq!(status, 200);
        let serving = if i % 5 == 2 { i - 1 } else { i };
        assert_eq!(
            gw.get("/p").await.headers()["x-hello"],
            format!("v{serving}").as_str()
        );
        // Requests are served between every two reloads, however slow the machine is.
        let served = ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) == served {
            assert!(tokio::time::Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load");
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(
        failed, 0,
        "{failed} failed requests during 50 reloads ({ok} ok)"
    );
    assert!(ok >= 50, "the load kept going ({ok} requests)");
    assert_eq!(gw.get("/p").await.headers()["x-hello"], "v49");
}

#[tokio::test]
async fn global_rules_run_before_route_plugins() {
    let (gw, up, _dir) = gateway_with(&[
        ("glob.lua", header_plugin("glob", 1, "")),
        ("hello.lua", header_plugin("hello", 10, "")),
    ])
    .await;
    gw.put("/global_rules/1", json!({"plugins": {"glob": {}}}))
        .await;
    gw.put("/routes/1", route_with(&up, json!({"hello": {}})))
        .await;
    let body: Value = gw.get("/p").await.json().await.expect("json");
    assert_eq!(
        body["headers"]["x-order"], "glob,hello,",
        "global plugins first despite lower priority"
    );
}

#[tokio::test]
async fn route_without_upstream_served_by_a_plugin() {
    let answer = bare_plugin(
        "answer",
        r#"
local core = require("apisix.core")
function _M.access(conf, ctx)
    core.response.set_header("content-type", "text/plain")
    return 200, "answered by " .. ctx.var.uri .. " " .. (ctx.curr_req_matched[":ext"] or "")
end
"#,
    );
    let (gw, _up, _dir) = gateway_with(&[("answer.lua", answer)]).await;
    gw.put(
        "/routes/1",
        json!({"uri": "/fn/*", "plugins": {"answer": {}}}),
    )
    .await;
    let resp = gw.get("/fn/a/b").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.expect("body"), "answered by /fn/a/b a/b");
}

#[tokio::test]
async fn header_filter_runs_on_the_answer_for_a_route_without_upstream() {
    let stamp = bare_plugin(
        "stamp",
        r#"
local core = require("apisix.core")
function _M.header_filter(conf, ctx)
    core.response.set_header("x-stamp", ngx.status .. " " .. ctx.var.uri)
end
"#,
    );
    let (gw, _up, _dir) = gateway_with(&[("stamp.lua", stamp)]).await;
    gw.put(
        "/routes/1",
        json!({"uri": "/none", "plugins": {"stamp": {}}}),
    )
    .await;
    let resp = gw.get("/none").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-stamp"], "503 /none");
}

#[tokio::test]
async fn response_phases_see_when_the_request_arrived() {
    let age = bare_plugin(
        "age",
        r#"
local core = require("apisix.core")
function _M.header_filter(conf, ctx)
    core.response.set_header("x-age-ms", string.format("%d", (ngx.now() - ngx.req.start_time()) * 1000))
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("age.lua", age)]).await;
    gw.put("/routes/1", route_with(&up, json!({"age": {}})))
        .await;
    let resp = gw.get("/p?sleep_ms=300").await;
    assert_eq!(resp.status(), 200);
    let age_ms: u64 = resp.headers()["x-age-ms"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("x-age-ms is a number");
    // The upstream took 300 ms: the arrival time is from before forwarding.
    assert!((290..10_000).contains(&age_ms), "age {age_ms} ms");
}

#[tokio::test]
async fn response_phases_still_see_the_request() {
    let echo_arg = bare_plugin(
        "echoarg",
        r#"
local core = require("apisix.core")
function _M.header_filter(conf, ctx)
    core.response.set_header("x-arg", ctx.var.arg_name or "none")
    core.response.set_header("x-method", core.request.get_method())
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("echoarg.lua", echo_arg)]).await;
    gw.put("/routes/1", route_with(&up, json!({"echoarg": {}})))
        .await;
    let resp = gw.get("/p?name=moon").await;
    assert_eq!(resp.headers()["x-arg"], "moon");
    assert_eq!(resp.headers()["x-method"], "GET");
}

#[tokio::test]
async fn header_values_of_every_kind_reach_the_client_as_text() {
    let kinds = bare_plugin(
        "kinds",
        r#"
local core = require("apisix.core")
function _M.header_filter(conf, ctx)
    core.response.set_header("x-int", 5)
    core.response.set_header("x-float", 1.5)
    core.response.set_header("x-bool", true)
    core.response.set_header("x-list", {"a", "b"})
    ngx.header["x-n"] = 7
    ngx.header["x-t"] = {"c", "d"}
    core.response.set_header("x-gone", "1")
    core.response.set_header("x-gone", nil)
    ngx.header["x-gone-too"] = "1"
    ngx.header["x-gone-too"] = nil
end
"#,
    );
    let (gw, up, _dir) = gateway_with(&[("kinds.lua", kinds)]).await;
    gw.put("/routes/1", route_with(&up, json!({"kinds": {}})))
        .await;
    let resp = gw.get("/p").await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers();
    let all = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    assert_eq!(all("x-int"), ["5"]);
    assert_eq!(all("x-float"), ["1.5"]);
    assert_eq!(all("x-bool"), ["true"]);
    assert_eq!(all("x-list"), ["a", "b"]);
    assert_eq!(all("x-n"), ["7"]);
    assert_eq!(all("x-t"), ["c", "d"]);
    assert!(all("x-gone").is_empty());
    assert!(all("x-gone-too").is_empty());
}

#[tokio::test]
async fn each_request_starts_with_a_fresh_ctx() {
    // A finished request's ctx table serves a later request: nothing may carry over.
    let plugin = bare_plugin(
        "fresh",
        r#"
local core = require("apisix.core")
function _M.access(conf, ctx)
    core.response.set_header("x-before", tostring(ctx.mark) .. "," .. tostring(ctx.conf_type))
    core.response.set_header("x-route", tostring(ctx.conf_id) .. "," .. ctx.matched_route.value.uri
        .. "," .. type(ctx.conf_version))
    ctx.mark = ctx.var.arg_n
    -- A plugin's own value for a route fact lasts for its request only.
    ctx.conf_id = "changed"
end
function _M.header_filter(conf, ctx)
    core.response.set_header("x-mark", ctx.mark, "x-uri", ctx.var.uri, "x-num", 7)
    core.response.set_header("x-list", {"a", "b"})
    ngx.resp.add_header("x-flag", true)
end
"#,
    );
    // One worker, so the requests share one VM and its spare ctx tables.
    let (gw, _up, _dir) = one_worker_with("fresh", &plugin).await;
    for n in 0..3 {
        let resp = gw.get(&format!("/p?n={n}")).await;
        assert_eq!(resp.status(), 200);
        let headers = resp.headers();
        assert_eq!(headers["x-before"], "nil,route");
        assert_eq!(headers["x-route"], "1,/p,number");
        assert_eq!(headers["x-mark"], n.to_string().as_str());
        assert_eq!(headers["x-uri"], "/p");
        assert_eq!(headers["x-num"], "7");
        assert_eq!(headers["x-flag"], "true");
        let list: Vec<_> = headers.get_all("x-list").iter().collect();
        assert_eq!(list, ["a", "b"]);
    }
}

#[tokio::test]
async fn routes_with_plugins_reuse_upstream_connections() {
    let (gw, up, _dir) = gateway_with(&[("hello.lua", header_plugin("hello", 10, ""))]).await;
    gw.put("/routes/1", route_with(&up, json!({"hello": {}})))
        .await;
    for _ in 0..50 {
        assert_eq!(gw.get("/p").await.status(), 200);
    }
    let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns <= 4, "{conns} upstream connections for 50 requests");
}

#[tokio::test]
async fn a_reload_with_nothing_changed_keeps_the_running_vms() {
    // Module state lives as long as the VM: a no-op reload must not reset it.
    let counter = bare_plugin(
        "counter",
        r#"
local core = require("apisix.core")
local count = 0
function _M.header_filter(conf, ctx)
    count = count + 1
    core.response.set_header("x-count", count)
end
"#,
    );
    // One worker, so every request sees the same VM.
    let (gw, _up, dir) = one_worker_with("counter", &counter).await;
    let count = |resp: reqwest::Response| {
        resp.headers()["x-count"]
            .to_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(count(gw.get("/p").await), "1");
    assert_eq!(count(gw.get("/p").await), "2");
    let (status, _) = gw.admin("PUT", "/plugins/reload", None).await;
    assert_eq!(status, 200);
    assert_eq!(count(gw.get("/p").await), "3");
    write(
        dir.path(),
        "counter.lua",
        &counter.replace("count + 1", "count + 10"),
    );
    let (status, _) = gw.admin("PUT", "/plugins/reload", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        count(gw.get("/p").await),
        "10",
        "a changed file starts a fresh VM"
    );
}
