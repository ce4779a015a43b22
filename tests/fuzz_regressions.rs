//! Inputs the fuzz targets in `fuzz/` found (see docs/reliability.md), kept as tests that assert the
//! correct behaviour. A finding not fixed yet is `#[ignore]`d with the reason; remove the `ignore`
//! with the fix.

use moongate::fuzzing::{AdminModel, standalone};
use serde_json::json;

/// A PUT of `route` must be stored or refused with an `error_msg`, never panic.
fn put_route(route: serde_json::Value) -> Result<(), String> {
    let model = AdminModel::new();
    let result = model.put("routes", Some("1"), route.to_string().as_bytes(), false);
    if let Err(message) = &result {
        assert!(!message.is_empty(), "a refusal names its reason");
    }
    result
}

/// A route with `timeout` on the route and `upstream` as its inline upstream.
fn route(timeout: serde_json::Value, upstream: serde_json::Value) -> serde_json::Value {
    let mut upstream_object = json!({"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}});
    if let (Some(base), Some(extra)) = (upstream_object.as_object_mut(), upstream.as_object()) {
        base.extend(extra.clone());
    }
    let mut route = json!({"uri": "/x", "upstream": upstream_object});
    if !timeout.is_null() {
        route["timeout"] = timeout;
    }
    route
}

// Found by `admin_json`. `Timeouts::from_json` and `Upstream::from_json` (src/upstream/mod.rs) call
// `Duration::from_secs_f64`, which panicked above u64::MAX seconds (about 1.8e19), while the schema
// (APISIX's) only asks for a positive number: the Admin write's task panicked, and in standalone or
// etcd mode the snapshot build did. Fixed: `upstream::seconds` caps durations at about 300 years.

#[test]
fn huge_route_timeout_does_not_panic_the_snapshot_build() {
    // The input admin_json found had `"timeout": {"connect": 1, "send": 27777…7 (23 digits), …}`.
    let timeout = json!({"connect": 1, "send": 2.777_777_777_777_777_7e22, "read": 5});
    let _ = put_route(route(timeout, json!({})));
}

#[test]
fn huge_upstream_timeout_does_not_panic_the_snapshot_build() {
    let timeout = json!({"connect": 1, "send": 1, "read": 1e20});
    let _ = put_route(route(json!(null), json!({ "timeout": timeout })));
}

#[test]
fn huge_retry_timeout_does_not_panic_the_snapshot_build() {
    let _ = put_route(route(json!(null), json!({"retry_timeout": 1e20})));
}

#[test]
fn huge_keepalive_idle_timeout_does_not_panic_the_snapshot_build() {
    let pool = json!({"size": 1, "idle_timeout": 1e20, "requests": 1});
    let _ = put_route(route(json!(null), json!({ "keepalive_pool": pool })));
}

#[test]
fn huge_timeout_in_a_standalone_file_does_not_panic() {
    let file = b"routes:\n  - id: 1\n    uri: /x\n    timeout: {connect: 1, send: 1, read: 1e20}\n    upstream: {type: roundrobin, nodes: {\"127.0.0.1:1980\": 1}}\n#END\n";
    let report = standalone(file, false).expect("the file parses");
    assert_eq!(report.skipped, Vec::new(), "{report:?}");
}

/// Timeouts a `Duration` holds keep being stored (a guard against a fix that refuses too much).
#[test]
fn ordinary_timeouts_are_stored() {
    let timeout = json!({"connect": 1, "send": 2.5, "read": 1e9});
    assert_eq!(put_route(route(timeout.clone(), json!({}))), Ok(()));
    assert_eq!(
        put_route(route(
            json!(null),
            json!({"timeout": timeout, "retry_timeout": 1e9})
        )),
        Ok(())
    );
}

/// Found by `standalone_yaml`: `moongate export` wrote plugin metadata without its `id` (the
/// plugin's name, which `check_item` removes from the stored value), so reading the export back
/// filed it under `arr_1`. Fixed: `store::yaml::render` writes the id back.
#[test]
fn standalone_export_keeps_plugin_metadata_ids() {
    let file = b"plugin_metadata:\n  - id: http-logger\n    log_format: {host: \"$host\"}\n#END\n";
    let report = standalone(file, false).expect("the file parses");
    let keys: Vec<&str> = report.items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/apisix/plugin_metadata/http-logger"]);
    let reread = standalone(report.rendered.as_bytes(), false).expect("the export parses");
    assert_eq!(reread.items, report.items, "export:\n{}", report.rendered);
}
