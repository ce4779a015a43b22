//! The checks every stored object passes, whether it arrives through the Admin API or from a
//! standalone file: the resource schema, `vars` expressions, TLS material and each plugin conf.

use serde_json::Value;

use crate::schema::ResourceKind;

/// The loaded plugins, as far as validation and the Admin API need them.
pub(crate) trait PluginCatalog: Send + Sync {
    /// Checks one plugin conf (`schema_type` as APISIX: None, consumer, metadata). Errors read like
    /// APISIX's: `unknown plugin [x]` or the plugin's own schema error.
    fn check(&self, name: &str, conf: &Value, schema_type: SchemaType) -> Result<(), String>;
    /// Enabled plugin names, highest priority first.
    fn names(&self) -> Vec<String>;
    /// A plugin's schema with the injected `_meta`, if loaded.
    fn schema(&self, name: &str, schema_type: SchemaType) -> Option<Value>;
    /// Why the last load of a plugin failed, if it did (the previous version may still serve).
    fn load_error(&self, _name: &str) -> Option<String> {
        None
    }
    /// Reloads plugin code; returns once every worker will pick the new registry up.
    fn reload(&self) {}
}

/// Which of a plugin's schemas applies (`core.schema.TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaType {
    Route,
    Consumer,
    Metadata,
}

/// Checks one object (its `id` already set). Errors are APISIX's `error_msg` strings. Without a
/// catalog, plugin confs are not checked (the plugins are not loaded yet).
pub(crate) fn check_object(
    kind: ResourceKind,
    id: &str,
    value: &Value,
    plugins: Option<&dyn PluginCatalog>,
) -> Result<(), String> {
    if kind != ResourceKind::PluginMetadata {
        kind.check(value).map_err(|e| e.to_string())?;
    }
    if let Some(vars) = value.get("vars") {
        crate::router::Expr::compile(vars)
            .map_err(|e| format!("failed to validate the 'vars' expression: {e}"))?;
    }
    if kind == ResourceKind::Ssl {
        crate::tls::validate_ssl(value).map_err(|e| e.to_string())?;
    }
    let Some(catalog) = plugins else {
        return Ok(());
    };
    if kind == ResourceKind::PluginMetadata {
        catalog.check(id, value, SchemaType::Metadata)?;
    }
    let schema_type = if kind == ResourceKind::Consumer {
        SchemaType::Consumer
    } else {
        SchemaType::Route
    };
    if let Some(Value::Object(confs)) = value.get("plugins") {
        for (name, conf) in confs {
            if !conf.is_object() {
                return Err(format!("invalid plugin conf {conf} for plugin [{name}]"));
            }
            catalog.check(name, conf, schema_type)?;
        }
    }
    Ok(())
}

/// The checks the Admin API runs on a write, on an item read from a standalone file or etcd: the
/// object's id field is set from its key first (`username` for consumers; none for plugin metadata).
pub(crate) fn check_item(
    kind: ResourceKind,
    id: &str,
    value: &mut Value,
    plugins: Option<&dyn PluginCatalog>,
) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err("invalid configuration: wrong type: expected object".into());
    };
    match kind {
        ResourceKind::PluginMetadata => {
            map.remove("id");
        }
        ResourceKind::Consumer => {
            map.entry("username")
                .or_insert_with(|| Value::String(id.to_owned()));
        }
        _ => {
            map.insert("id".into(), Value::String(id.to_owned()));
        }
    }
    check_object(kind, id, value, plugins)
}
