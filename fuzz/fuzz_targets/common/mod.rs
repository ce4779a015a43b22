//! What the targets share: the known findings they step around, so that one known bug does not
//! stop every run at once. Each one is a regression test in tests/fuzz_regressions.rs.

use serde_json::Value;

/// Known finding: a timeout of more seconds than `Duration` holds (about 1.8e19) passes the
/// schema, then panics in `Duration::from_secs_f64` while the snapshot is built
/// (`src/upstream/mod.rs`: route and upstream `timeout.{connect,send,read}`, upstream
/// `retry_timeout` and `keepalive_pool.idle_timeout`). Tests:
/// `huge_*_does_not_panic_the_snapshot_build`.
pub fn has_huge_timeout(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| {
            let timeout_key = matches!(
                key.as_str(),
                "connect" | "send" | "read" | "retry_timeout" | "idle_timeout"
            );
            (timeout_key && v.as_f64().is_some_and(|s| s.is_finite() && s >= 1.8e19))
                || has_huge_timeout(v)
        }),
        Value::Array(list) => list.iter().any(has_huge_timeout),
        _ => false,
    }
}
