//! APISIX's resource schemas (`apisix/schema_def.lua`, 3.x) and the cross-field checks APISIX makes in Lua
//! next to them (`apisix/admin/routes.lua`, `apisix/upstream.lua`, `apisix/ssl.lua`).
//!
//! The schemas are built once with `json!` so the shared pieces (`id_schema`, `host_def`, the upstream
//! schema embedded in routes and services, ...) are written once, the way `schema_def.lua` shares Lua tables.

use std::sync::LazyLock;

use serde_json::{Value, json};

use super::validator::Schema;

/// A resource kind of the Admin API, with the schema APISIX validates it against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ResourceKind {
    /// `/apisix/admin/routes`
    Route,
    /// `/apisix/admin/services`
    Service,
    /// `/apisix/admin/upstreams`
    Upstream,
    /// `/apisix/admin/consumers`
    Consumer,
    /// `/apisix/admin/ssls`
    Ssl,
    /// `/apisix/admin/plugin_configs`
    PluginConfig,
    /// `/apisix/admin/global_rules`
    GlobalRule,
    /// `/apisix/admin/plugin_metadata`; the plugin's own `metadata_schema` is checked elsewhere.
    PluginMetadata,
    /// `/apisix/admin/consumer_groups`
    ConsumerGroup,
}

/// Why a resource was rejected. `Display` is the complete APISIX `error_msg`: schema failures carry the
/// `invalid configuration: ` prefix, the checks APISIX makes in Lua code do not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckError {
    /// The schema rejected the value; the field is the bare validator message.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A cross-field rule failed; the field is the whole message (`only one of host or hosts is allowed`).
    #[error("{0}")]
    Rule(String),
}

impl CheckError {
    fn rule(msg: impl Into<String>) -> Self {
        CheckError::Rule(msg.into())
    }
}

struct Compiled {
    json: Value,
    schema: Schema,
}

impl Compiled {
    fn new(json: Value) -> Self {
        let schema = Schema::compile(&json).expect("embedded resource schema must compile");
        Compiled { json, schema }
    }
}

static RESOURCES: LazyLock<[Compiled; 9]> =
    LazyLock::new(|| ResourceKind::ALL.map(|kind| Compiled::new(kind.build())));

static SCHEMA_DEF: LazyLock<Value> = LazyLock::new(build_schema_def);

impl ResourceKind {
    /// Every kind, in declaration order (the order of the `RESOURCES` table).
    pub(crate) const ALL: [ResourceKind; 9] = [
        ResourceKind::Route,
        ResourceKind::Service,
        ResourceKind::Upstream,
        ResourceKind::Consumer,
        ResourceKind::Ssl,
        ResourceKind::PluginConfig,
        ResourceKind::GlobalRule,
        ResourceKind::PluginMetadata,
        ResourceKind::ConsumerGroup,
    ];

    /// APISIX's singular name for the kind (`route`, `plugin_config`, ...), as used in
    /// `GET /apisix/admin/schema/<name>` and in messages such as `missing route id`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ResourceKind::Route => "route",
            ResourceKind::Service => "service",
            ResourceKind::Upstream => "upstream",
            ResourceKind::Consumer => "consumer",
            ResourceKind::Ssl => "ssl",
            ResourceKind::PluginConfig => "plugin_config",
            ResourceKind::GlobalRule => "global_rule",
            ResourceKind::PluginMetadata => "plugin_metadata",
            ResourceKind::ConsumerGroup => "consumer_group",
        }
    }

    /// The kind for a singular name (`route`) or an Admin API collection (`routes`).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| name == k.name() || name.strip_suffix('s') == Some(k.name()))
    }

    fn compiled(self) -> &'static Compiled {
        &RESOURCES[self as usize]
    }

    /// The compiled schema.
    pub(crate) fn schema(self) -> &'static Schema {
        &self.compiled().schema
    }

    /// The schema document, for `GET /apisix/admin/schema/<kind>`.
    pub(crate) fn schema_json(self) -> &'static Value {
        &self.compiled().json
    }

    /// Checks the resource schema only (`POST /apisix/admin/schema/validate/<kind>`), on a copy.
    /// Returns the bare validator message.
    pub(crate) fn validate(self, value: &Value) -> Result<(), String> {
        self.schema().validate_ref(value)
    }

    /// Everything APISIX checks about a resource without looking at other resources or plugins, on a copy:
    /// the stored value keeps no defaults (#12603). Not covered here: referenced ids (`upstream_id`, ...),
    /// plugin confs, `vars` expressions, `filter_func`/`script` compilation and PEM parsing.
    pub(crate) fn check(self, value: &Value) -> Result<(), CheckError> {
        let mut copy = value.clone();
        self.check_and_fill(&mut copy)
    }

    /// Like [`check`](Self::check) but fills schema defaults into `value`, as APISIX's data plane does
    /// when it syncs an item: use it to build the runtime copy of a resource.
    pub(crate) fn check_and_fill(self, value: &mut Value) -> Result<(), CheckError> {
        if self == ResourceKind::Route {
            check_route_exclusive_fields(value)?;
        }
        self.schema().validate(value).map_err(CheckError::Invalid)?;
        match self {
            ResourceKind::Route | ResourceKind::Service => match value.get("upstream") {
                Some(upstream) => check_upstream_rules(upstream),
                None => Ok(()),
            },
            ResourceKind::Upstream => check_upstream_rules(value),
            ResourceKind::Ssl => check_ssl_rules(value),
            _ => Ok(()),
        }
    }

    fn build(self) -> Value {
        match self {
            ResourceKind::Route => route_schema(),
            ResourceKind::Service => service_schema(),
            ResourceKind::Upstream => upstream_schema(),
            ResourceKind::Consumer => consumer_schema(),
            ResourceKind::Ssl => ssl_schema(),
            ResourceKind::PluginConfig => plugin_config_schema(),
            ResourceKind::GlobalRule => global_rule_schema(),
            ResourceKind::PluginMetadata => plugin_metadata_schema(),
            ResourceKind::ConsumerGroup => consumer_group_schema(),
        }
    }
}

/// The named entries of APISIX's `schema_def` (what `core.schema.<name>` returns in Lua): the resource
/// schemas plus shared definitions such as `id_schema`, `host_def`, `ip_def`, `uri_def`, `method_schema`,
/// `upstream_hash_vars_schema` and `plugin_injected_schema`.
pub(crate) fn schema_def() -> &'static Value {
    &SCHEMA_DEF
}

/// Lua truthiness of an optional field: present and neither `false` nor missing (`null` is `cjson.null`,
/// which is truthy).
fn is_set(value: &Value, key: &str) -> bool {
    !matches!(value.get(key), None | Some(Value::Bool(false)))
}

/// `apisix/admin/routes.lua` rejects these pairs before running the schema.
pub(crate) fn check_route_exclusive_fields(route: &Value) -> Result<(), CheckError> {
    if is_set(route, "host") && is_set(route, "hosts") {
        return Err(CheckError::rule("only one of host or hosts is allowed"));
    }
    if is_set(route, "remote_addr") && is_set(route, "remote_addrs") {
        return Err(CheckError::rule(
            "only one of remote_addr or remote_addrs is allowed",
        ));
    }
    Ok(())
}

/// `check_upstream_conf` in `apisix/upstream.lua`, after its schema check. Expects a value that passed
/// the upstream schema (with defaults filled, so `hash_on` is set).
pub(crate) fn check_upstream_rules(upstream: &Value) -> Result<(), CheckError> {
    let pass_host = upstream.get("pass_host").and_then(Value::as_str);
    let upstream_host = upstream.get("upstream_host").and_then(Value::as_str);
    if pass_host == Some("rewrite") && upstream_host.is_none_or(str::is_empty) {
        return Err(CheckError::rule(
            "`upstream_host` can't be empty when `pass_host` is `rewrite`",
        ));
    }
    if upstream.get("type").and_then(Value::as_str) != Some("chash") {
        return Ok(());
    }
    let hash_on = upstream
        .get("hash_on")
        .and_then(Value::as_str)
        .unwrap_or("vars");
    let key = upstream.get("key");
    if hash_on != "consumer" && !is_set(upstream, "key") {
        return Err(CheckError::rule("missing key"));
    }
    let key_schema = match hash_on {
        "vars" => &HASH_VARS,
        "header" | "cookie" => &HASH_HEADER,
        _ => return Ok(()),
    };
    match key {
        Some(key) => key_schema.validate_ref(key).map_err(CheckError::Invalid),
        None => Ok(()),
    }
}

static HASH_VARS: LazyLock<Schema> = LazyLock::new(|| {
    Schema::compile(&upstream_hash_vars_schema()).expect("embedded hash vars schema must compile")
});

static HASH_HEADER: LazyLock<Schema> = LazyLock::new(|| {
    Schema::compile(&upstream_hash_header_schema())
        .expect("embedded hash header schema must compile")
});

/// `check_ssl_conf` in `apisix/ssl.lua`, minus the PEM parsing (left to the TLS module).
pub(crate) fn check_ssl_rules(ssl: &Value) -> Result<(), CheckError> {
    if ssl.get("type").and_then(Value::as_str) == Some("client") {
        return Ok(());
    }
    let count = |key: &str| ssl.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    if count("certs") != count("keys") {
        return Err(CheckError::rule("mismatched number of certs and keys"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// schema_def.lua, piece by piece.

fn id_schema() -> Value {
    json!({
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-zA-Z0-9-_.]+$"},
            {"type": "integer", "minimum": 1}
        ]
    })
}

const HOST_DEF_PAT: &str = r"^\*$|^\*?[0-9a-zA-Z-._\[\]:]+$";

fn host_def() -> Value {
    json!({"type": "string", "pattern": HOST_DEF_PAT})
}

fn ip_def() -> Value {
    json!([
        {"title": "IPv4", "type": "string", "format": "ipv4"},
        {"title": "IPv4/CIDR", "type": "string", "pattern": r"^([0-9]{1,3}\.){3}[0-9]{1,3}/([12]?[0-9]|3[0-2])$"},
        {"title": "IPv6", "type": "string", "format": "ipv6"},
        {"title": "IPv6/CIDR", "type": "string", "pattern": r"^([a-fA-F0-9]{0,4}:){1,8}(:[a-fA-F0-9]{0,4}){0,8}([a-fA-F0-9]{0,4})?/[0-9]{1,3}$"}
    ])
}

fn remote_addr_def() -> Value {
    json!({"description": "client IP", "type": "string", "anyOf": ip_def()})
}

fn uri_def() -> Value {
    json!({"type": "string", "pattern": r"^[^\/]+:\/\/([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?"})
}

fn timestamp_def() -> Value {
    json!({"type": "integer"})
}

fn rule_name_def() -> Value {
    json!({"type": "string", "maxLength": 256, "minLength": 1})
}

fn desc_def() -> Value {
    json!({"type": "string", "maxLength": 256})
}

fn label_value_def() -> Value {
    json!({
        "description": "value of label",
        "type": "string",
        "pattern": r"^\S+$",
        "maxLength": 256,
        "minLength": 1
    })
}

fn labels_def() -> Value {
    json!({
        "description": "key/value pairs to specify attributes",
        "type": "object",
        "patternProperties": {".*": label_value_def()}
    })
}

fn plugins_schema() -> Value {
    json!({"type": "object"})
}

fn timeout_def() -> Value {
    json!({
        "type": "object",
        "properties": {
            "connect": {"type": "number", "exclusiveMinimum": 0},
            "send": {"type": "number", "exclusiveMinimum": 0},
            "read": {"type": "number", "exclusiveMinimum": 0}
        },
        "required": ["connect", "send", "read"]
    })
}

fn method_schema() -> Value {
    json!({
        "description": "HTTP method",
        "type": "string",
        "enum": ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE"]
    })
}

fn certificate_scheme() -> Value {
    json!({"type": "string", "minLength": 128, "maxLength": 65536})
}

fn private_key_schema() -> Value {
    json!({"type": "string", "minLength": 128, "maxLength": 65536})
}

fn secret_uri_schema() -> Value {
    json!({"type": "string", "pattern": r"^\$(secret|env)://"})
}

fn script_def() -> Value {
    json!({"type": "string", "minLength": 10, "maxLength": 102400})
}

fn upstream_hash_vars_schema() -> Value {
    json!({
        "type": "string",
        "pattern": concat!(
            r"^((uri|server_name|server_addr|request_uri|remote_port",
            r"|remote_addr|query_string|host|hostname|mqtt_client_id)",
            r"|arg_[0-9a-zA-z_-]+)$"
        )
    })
}

fn upstream_hash_header_schema() -> Value {
    json!({"type": "string", "pattern": "^[a-zA-Z0-9-_]+$"})
}

fn nodes_schema() -> Value {
    json!({
        "anyOf": [
            {
                "type": "object",
                "patternProperties": {
                    ".*": {"description": "weight of node", "type": "integer", "minimum": 0}
                }
            },
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "host": host_def(),
                        "port": {"description": "port of node", "type": "integer", "minimum": 1, "maximum": 65535},
                        "weight": {"description": "weight of node", "type": "integer", "minimum": 0},
                        "priority": {"description": "priority of node", "type": "integer", "default": 0},
                        "metadata": {"description": "metadata of node", "type": "object"}
                    },
                    "required": ["host", "weight"]
                }
            }
        ]
    })
}

/// Health checks are accepted as any object; the health checker reads what it knows.
fn health_checker() -> Value {
    json!({
        "type": "object",
        "properties": {
            "active": {"type": "object"},
            "passive": {"type": "object"}
        }
    })
}

fn upstream_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "create_time": timestamp_def(),
            "update_time": timestamp_def(),
            "nodes": nodes_schema(),
            "retries": {"type": "integer", "minimum": 0},
            "retry_timeout": {"type": "number", "minimum": 0},
            "timeout": timeout_def(),
            "tls": {
                "type": "object",
                "properties": {
                    "client_cert_id": id_schema(),
                    "client_cert": certificate_scheme(),
                    "client_key": private_key_schema(),
                    "verify": {
                        "type": "boolean",
                        "description": "Turn on server certificate verification",
                        "default": false
                    }
                },
                "dependencies": {
                    "client_cert": {"required": ["client_key"]},
                    "client_key": {"required": ["client_cert"]}
                }
            },
            "keepalive_pool": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer", "default": 320, "minimum": 1},
                    "idle_timeout": {"type": "number", "default": 60, "minimum": 0},
                    "requests": {"type": "integer", "default": 1000, "minimum": 1}
                }
            },
            "type": {
                "description": "algorithms of load balancing",
                "type": "string",
                "default": "roundrobin",
                "enum": ["roundrobin", "chash", "ewma", "least_conn"]
            },
            "checks": health_checker(),
            "hash_on": {
                "type": "string",
                "default": "vars",
                "enum": ["vars", "header", "cookie", "consumer", "vars_combinations"]
            },
            "key": {"description": "the key of chash for dynamic load balancing", "type": "string"},
            "scheme": {
                "default": "http",
                "enum": ["grpc", "grpcs", "http", "https", "tcp", "tls", "udp", "kafka"],
                "description": "The scheme of the upstream."
            },
            "discovery_type": {"description": "discovery type", "type": "string"},
            "discovery_args": {
                "type": "object",
                "properties": {
                    "namespace_id": {"description": "namespace id", "type": "string"},
                    "group_name": {"description": "group name", "type": "string"}
                }
            },
            "pass_host": {
                "description": "mod of host passing",
                "type": "string",
                "enum": ["pass", "node", "rewrite"],
                "default": "pass"
            },
            "upstream_host": host_def(),
            "service_name": {"type": "string", "maxLength": 256, "minLength": 1},
            "desc": desc_def(),
            "labels": labels_def(),
            "id": id_schema(),
            "name": rule_name_def()
        },
        "oneOf": [
            {"required": ["nodes"]},
            {"required": ["service_name", "discovery_type"]}
        ],
        "additionalProperties": false
    })
}

fn route_schema() -> Value {
    let either = |a: &str, b: &str| {
        json!({
            "oneOf": [
                {"not": {"anyOf": [{"required": [a]}, {"required": [b]}]}},
                {"required": [a]},
                {"required": [b]}
            ]
        })
    };
    let mut needs_target = Vec::new();
    for uri in ["uri", "uris"] {
        for target in ["plugins", "upstream", "upstream_id", "service_id"] {
            needs_target.push(json!({"required": [target, uri]}));
        }
    }
    needs_target.push(json!({"required": ["script", "uri"]}));
    needs_target.push(json!({"required": ["script", "uris"]}));
    json!({
        "type": "object",
        "properties": {
            "create_time": timestamp_def(),
            "update_time": timestamp_def(),
            "uri": {"type": "string", "minLength": 1, "maxLength": 4096},
            "uris": {
                "type": "array",
                "items": {"description": "HTTP uri", "type": "string"},
                "minItems": 1,
                "uniqueItems": true
            },
            "name": rule_name_def(),
            "desc": desc_def(),
            "priority": {"type": "integer", "default": 0},
            "methods": {
                "type": "array",
                "items": method_schema(),
                "uniqueItems": true
            },
            "host": host_def(),
            "hosts": {
                "type": "array",
                "items": host_def(),
                "minItems": 1,
                "uniqueItems": true
            },
            "remote_addr": remote_addr_def(),
            "remote_addrs": {
                "type": "array",
                "items": remote_addr_def(),
                "minItems": 1,
                "uniqueItems": true
            },
            "vars": {"type": "array"},
            "filter_func": {"type": "string", "minLength": 10, "pattern": "^function"},
            "script": script_def(),
            "script_id": id_schema(),
            "plugins": plugins_schema(),
            "plugin_config_id": id_schema(),
            "upstream": upstream_schema(),
            "labels": labels_def(),
            "service_id": id_schema(),
            "upstream_id": id_schema(),
            "enable_websocket": {"description": "enable websocket for request", "type": "boolean"},
            "status": {
                "description": "route status, 1 to enable, 0 to disable",
                "type": "integer",
                "enum": [1, 0],
                "default": 1
            },
            "timeout": timeout_def(),
            "id": id_schema()
        },
        "allOf": [
            {"oneOf": [{"required": ["uri"]}, {"required": ["uris"]}]},
            either("host", "hosts"),
            either("remote_addr", "remote_addrs")
        ],
        "anyOf": needs_target,
        "not": {
            "anyOf": [
                {"required": ["script", "plugins"]},
                {"required": ["script", "plugin_config_id"]}
            ]
        },
        "additionalProperties": false
    })
}

fn service_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": id_schema(),
            "name": rule_name_def(),
            "desc": desc_def(),
            "labels": labels_def(),
            "plugins": plugins_schema(),
            "upstream": upstream_schema(),
            "upstream_id": id_schema(),
            "script": script_def(),
            "create_time": timestamp_def(),
            "update_time": timestamp_def(),
            "enable_websocket": {"description": "enable websocket for request", "type": "boolean"},
            "hosts": {
                "type": "array",
                "items": host_def(),
                "minItems": 1,
                "uniqueItems": true
            }
        },
        "additionalProperties": false
    })
}

fn consumer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "pattern": r"^[a-zA-Z0-9_\-]+$"
            },
            "group_id": id_schema(),
            "create_time": timestamp_def(),
            "update_time": timestamp_def(),
            "plugins": plugins_schema(),
            "labels": labels_def(),
            "desc": desc_def()
        },
        "required": ["username"],
        "additionalProperties": false
    })
}

fn ssl_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": id_schema(),
            "type": {
                "description": "ssl certificate type, server to server certificate, client to client certificate for upstream",
                "type": "string",
                "default": "server",
                "enum": ["server", "client"]
            },
            "cert": {"oneOf": [certificate_scheme(), secret_uri_schema()]},
            "key": {"oneOf": [private_key_schema(), secret_uri_schema()]},
            "sni": {"type": "string", "pattern": HOST_DEF_PAT},
            "snis": {
                "type": "array",
                "items": {"type": "string", "pattern": HOST_DEF_PAT},
                "minItems": 1
            },
            "certs": {
                "type": "array",
                "items": {"oneOf": [certificate_scheme(), secret_uri_schema()]}
            },
            "keys": {
                "type": "array",
                "items": {"oneOf": [private_key_schema(), secret_uri_schema()]}
            },
            "client": {
                "type": "object",
                "properties": {
                    "ca": certificate_scheme(),
                    "depth": {"type": "integer", "minimum": 0, "default": 1},
                    "skip_mtls_uri_regex": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": true,
                        "items": {"description": "uri regular expression to skip mtls", "type": "string"}
                    }
                },
                "required": ["ca"]
            },
            "ssl_protocols": {
                "description": "set ssl protocols",
                "type": "array",
                "maxItems": 3,
                "uniqueItems": true,
                "items": {"enum": ["TLSv1.1", "TLSv1.2", "TLSv1.3"]}
            },
            "validity_end": timestamp_def(),
            "validity_start": timestamp_def(),
            "labels": labels_def(),
            "status": {
                "description": "ssl status, 1 to enable, 0 to disable",
                "type": "integer",
                "enum": [1, 0],
                "default": 1
            },
            "create_time": timestamp_def(),
            "update_time": timestamp_def()
        },
        "if": {"properties": {"type": {"enum": ["server"]}}},
        "then": {
            "oneOf": [
                {"required": ["sni", "key", "cert"]},
                {"required": ["snis", "key", "cert"]}
            ]
        },
        "else": {"required": ["key", "cert"]},
        "additionalProperties": false
    })
}

fn plugin_config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": id_schema(),
            "name": {"type": "string"},
            "desc": desc_def(),
            "plugins": plugins_schema(),
            "labels": labels_def(),
            "create_time": timestamp_def(),
            "update_time": timestamp_def()
        },
        "required": ["plugins"],
        "additionalProperties": false
    })
}

fn global_rule_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": id_schema(),
            "plugins": plugins_schema(),
            "create_time": timestamp_def(),
            "update_time": timestamp_def()
        },
        "required": ["plugins"],
        "additionalProperties": false
    })
}

fn plugin_metadata_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"}
        }
    })
}

fn consumer_group_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": id_schema(),
            "name": rule_name_def(),
            "desc": desc_def(),
            "plugins": plugins_schema(),
            "labels": labels_def(),
            "create_time": timestamp_def(),
            "update_time": timestamp_def()
        },
        "required": ["plugins"],
        "additionalProperties": false
    })
}

fn build_schema_def() -> Value {
    let mut def = serde_json::Map::new();
    for kind in ResourceKind::ALL {
        def.insert(kind.name().to_owned(), kind.schema_json().clone());
    }
    let shared = [
        ("id_schema", id_schema()),
        ("host_def", host_def()),
        ("ip_def", ip_def()),
        ("uri_def", uri_def()),
        ("timestamp_def", timestamp_def()),
        ("desc_def", desc_def()),
        ("label_value_def", label_value_def()),
        ("labels_def", labels_def()),
        ("timeout_def", timeout_def()),
        ("method_schema", method_schema()),
        ("plugins", plugins_schema()),
        ("certificate_scheme", certificate_scheme()),
        ("private_key_schema", private_key_schema()),
        ("secret_uri_schema", secret_uri_schema()),
        ("upstream_hash_vars_schema", upstream_hash_vars_schema()),
        ("upstream_hash_header_schema", upstream_hash_header_schema()),
        ("plugin_injected_schema", super::plugin_injected_schema()),
    ];
    for (name, schema) in shared {
        def.insert(name.to_owned(), schema);
    }
    Value::Object(def)
}
