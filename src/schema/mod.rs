//! JSON Schema validation the way APISIX does it.
//!
//! * [`Schema`]: a draft-4 validator (plus the draft-6/7 keywords APISIX plugins use) that reproduces
//!   api7/jsonschema's error strings and fills defaults while validating. Used by `core.schema.check` and by
//!   the Admin API.
//! * [`ResourceKind`]: APISIX's resource schemas (`schema_def.lua`) and the cross-field rules APISIX checks
//!   in Lua next to them. [`CheckError`]'s `Display` is the Admin API `error_msg`.
//! * [`plugin_injected_schema`]: the `_meta` schema the plugin loader adds to every plugin schema.
//!
//! The module has no IO and knows nothing of Lua or HTTP: values go in and out as `serde_json::Value`.

mod resources;
mod validator;

#[cfg(test)]
mod tests;

use serde_json::{Value, json};

pub(crate) use resources::{ResourceKind, schema_def};
pub(crate) use validator::Schema;

/// The `$comment` APISIX puts on a plugin schema once `_meta` has been injected.
pub(crate) const INJECTED_SCHEMA_MARK: &str = "this is a mark for our injected plugin schema";

/// `schema_def.plugin_injected_schema`: the mark and the `_meta` schema.
pub(crate) fn plugin_injected_schema() -> Value {
    json!({
        "$comment": INJECTED_SCHEMA_MARK,
        "_meta": meta_schema()
    })
}

fn meta_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "disable": {"type": "boolean"},
            "error_response": {
                "oneOf": [{"type": "string"}, {"type": "object"}]
            },
            "priority": {
                "description": "priority of plugins by customized order",
                "type": "integer"
            },
            "filter": {
                "description": "filter determines whether the plugin needs to be executed at runtime",
                "type": "array"
            },
            "pre_function": {
                "description": "function to be executed in each phase before execution of plugins. The pre_function will have access to two arguments: `conf` and `ctx`.",
                "type": "string"
            }
        },
        "additionalProperties": false
    })
}
