//! JSON Schema validation the way APISIX does it.
//!
//! * [`Schema`]: a draft-4 validator (plus the draft-6/7 keywords APISIX plugins use) that reproduces
//!   api7/jsonschema's error strings and fills defaults while validating. Used by `core.schema.check` and by
//!   the Admin API.
//! * [`ResourceKind`]: APISIX's resource schemas (`schema_def.lua`) and the cross-field rules APISIX checks
//!   in Lua next to them. [`CheckError`]'s `Display` is the Admin API `error_msg`.
//! * [`inject_meta`]: adds `_meta` to a plugin schema, as APISIX's plugin loader does.
//!
//! The module has no IO and knows nothing of Lua or HTTP: values go in and out as `serde_json::Value`.

mod resources;
mod validator;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

pub(crate) use resources::{CheckError, ResourceKind, schema_def};
pub(crate) use validator::{Schema, SchemaError};

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

/// Injects `properties._meta` into a plugin's `schema` and marks it with `$comment`, as APISIX's plugin
/// loader does. Idempotent: a schema that already carries the mark is left alone. A schema that defines
/// `_meta` itself is rejected with APISIX's message (the loader logs it as
/// `invalid plugin [<name>]: found forbidden '_meta' field in the schema`).
pub(crate) fn inject_meta(plugin_schema: &mut Value) -> Result<(), String> {
    let Value::Object(schema) = plugin_schema else {
        return Err("invalid plugin schema: expected a table".to_owned());
    };
    if schema.get("$comment").and_then(Value::as_str) == Some(INJECTED_SCHEMA_MARK) {
        return Ok(());
    }
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    // An empty Lua table may have been converted to `[]`.
    if properties.as_array().is_some_and(Vec::is_empty) {
        *properties = Value::Object(Map::new());
    }
    let Value::Object(properties) = properties else {
        return Err("invalid plugin schema: properties is not a table".to_owned());
    };
    if properties.contains_key("_meta") {
        return Err("found forbidden '_meta' field in the schema".to_owned());
    }
    properties.insert("_meta".to_owned(), meta_schema());
    schema.insert(
        "$comment".to_owned(),
        Value::String(INJECTED_SCHEMA_MARK.to_owned()),
    );
    Ok(())
}
