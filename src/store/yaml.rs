//! Standalone mode (`deployment.role: data_plane`, `config_provider: yaml` or `json`): every resource
//! comes from one file (`conf/apisix.yaml` or `conf/apisix.json`), re-read when its mtime changes.
//!
//! Parsing and item building are pure ([`parse`], [`build_state`]); reading the file and the poll loop
//! ([`load_file`], [`watch`]) are the IO edge. A file that cannot be read, parsed or compiled changes
//! nothing: the previous snapshot keeps serving. An invalid item is logged and skipped, the rest loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::model::{Change, ConfigState, id_of};
use super::{Backend, Store, StoreError};
use crate::schema::ResourceKind;
use crate::validate::PluginCatalog;

/// How often the file's mtime is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The file's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    /// YAML, accepted only when it ends with `#END`.
    Yaml,
    /// JSON, no end marker.
    Json,
}

impl FileFormat {
    fn name(self) -> &'static str {
        match self {
            FileFormat::Yaml => "YAML",
            FileFormat::Json => "JSON",
        }
    }
}

/// Why the standalone file was not loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StandaloneError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("missing valid end flag in file {}", path.display())]
    MissingEndFlag { path: PathBuf },
    #[error("invalid {format} in {}: {message}", path.display(), format = format.name())]
    Syntax {
        path: PathBuf,
        format: FileFormat,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Env { path: PathBuf, message: String },
    #[error("{}: the top level must be a mapping of resource arrays", path.display())]
    NotAMapping { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Build { path: PathBuf, source: StoreError },
}

/// The top-level keys read, in the order they are applied, so that a referenced object (an upstream, a
/// service, a plugin config, a consumer group) is present before the objects that refer to it.
const ORDER: [ResourceKind; 9] = [
    ResourceKind::Upstream,
    ResourceKind::Service,
    ResourceKind::PluginConfig,
    ResourceKind::ConsumerGroup,
    ResourceKind::Consumer,
    ResourceKind::Ssl,
    ResourceKind::GlobalRule,
    ResourceKind::PluginMetadata,
    ResourceKind::Route,
];

/// APISIX's end marker check: the last 10 bytes must match `#END\s*$`.
fn has_end_flag(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(10)..];
    let end = tail
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    tail[..end].ends_with(b"#END")
}

/// Parses the file's bytes into one JSON document, with `${{VAR}}` substituted from `env` (in the raw
/// text for YAML, in every string after parsing for JSON). An empty document is an empty config.
pub(crate) fn parse(
    path: &Path,
    bytes: &[u8],
    format: FileFormat,
    env: &HashMap<String, String>,
) -> Result<Value, StandaloneError> {
    let syntax = |message: String| StandaloneError::Syntax {
        path: path.to_owned(),
        format,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| syntax(e.to_string()))?;
    let env_err = |e: crate::config::env::SubstitutionError| StandaloneError::Env {
        path: path.to_owned(),
        message: match e {
            crate::config::env::SubstitutionError::Missing { var, line } => {
                format!("environment variable {var} is not set (line {line})")
            }
            crate::config::env::SubstitutionError::Malformed { line, message } => {
                format!("{message} (line {line})")
            }
        },
    };
    let doc = match format {
        FileFormat::Yaml => {
            if !has_end_flag(bytes) {
                return Err(StandaloneError::MissingEndFlag {
                    path: path.to_owned(),
                });
            }
            let text = crate::config::env::substitute(text, env).map_err(env_err)?;
            serde_saphyr::from_str::<Option<Value>>(&text)
                .map_err(|e| syntax(e.to_string()))?
                .unwrap_or(Value::Null)
        }
        FileFormat::Json => {
            let mut doc: Value = serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?;
            substitute_strings(&mut doc, env).map_err(env_err)?;
            doc
        }
    };
    match doc {
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        Value::Object(_) => Ok(doc),
        _ => Err(StandaloneError::NotAMapping {
            path: path.to_owned(),
        }),
    }
}

fn substitute_strings(
    value: &mut Value,
    env: &HashMap<String, String>,
) -> Result<(), crate::config::env::SubstitutionError> {
    match value {
        Value::String(s) if s.contains("${{") => {
            *s = crate::config::env::substitute(s, env)?;
        }
        Value::Array(list) => {
            for v in list {
                substitute_strings(v, env)?;
            }
        }
        Value::Object(map) => {
            for v in map.values_mut() {
                substitute_strings(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// One item that was skipped, with the reason as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// `/apisix/<collection>/<id>`.
    pub(crate) key: String,
    pub(crate) reason: String,
}

/// Turns a parsed document into a state. Each item is checked as an Admin write would be (resource
/// schema, `vars`, SSL material, plugin confs when `plugins` is given, references); an invalid one is
/// logged (`failed to check item data of [<key>] err: ...`), returned in the skipped list and left out.
pub(crate) fn build_state(
    doc: &Value,
    plugins: Option<&dyn PluginCatalog>,
) -> (ConfigState, Vec<Skipped>) {
    let mut state = ConfigState::default();
    let mut skipped = Vec::new();
    for kind in ORDER {
        let Some(list) = doc.get(kind.collection()) else {
            continue;
        };
        let Value::Array(list) = list else {
            let key = format!("/apisix/{}", kind.collection());
            let reason = "must be an array".to_owned();
            tracing::error!("failed to check item data of [{key}] err: {reason}");
            skipped.push(Skipped { key, reason });
            continue;
        };
        // Later duplicates replace earlier ones: keep each id's last position.
        let mut items: Vec<(String, Value)> = Vec::new();
        for (index, raw) in list.iter().enumerate() {
            let id = item_id(kind, raw).unwrap_or_else(|| format!("arr_{}", index + 1));
            items.retain(|(existing, _)| *existing != id);
            items.push((id, raw.clone()));
        }
        for (id, mut value) in items {
            let key = super::model::item_key(kind, &id);
            let result =
                crate::validate::check_item(kind, &id, &mut value, plugins).and_then(|()| {
                    state
                        .apply(Change::Put {
                            kind,
                            id: id.clone(),
                            value,
                        })
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok((next, _)) => state = next,
                Err(reason) => {
                    tracing::error!("failed to check item data of [{key}] err: {reason}");
                    skipped.push(Skipped { key, reason });
                }
            }
        }
    }
    (state, skipped)
}

fn item_id(kind: ResourceKind, value: &Value) -> Option<String> {
    value.get("id").and_then(id_of).or_else(|| {
        (kind == ResourceKind::Consumer)
            .then(|| value.get("username").and_then(id_of))
            .flatten()
    })
}

/// Writes a state as a standalone file: the resource arrays in dependency order, each object on one
/// line as a JSON flow mapping (valid YAML), and the `#END` marker.
pub(crate) fn render(state: &ConfigState) -> String {
    let mut out =
        String::from("# Moongate configuration in APISIX's standalone format (conf/apisix.yaml)\n");
    for kind in ORDER {
        let items: Vec<String> = state
            .list(kind)
            .map(|item| match (&item.value, kind) {
                // Stored without its id (the plugin's name, which is its key): written back.
                (Value::Object(map), ResourceKind::PluginMetadata) => {
                    let mut map = map.clone();
                    map.insert("id".into(), Value::String(item.id().to_owned()));
                    Value::Object(map).to_string()
                }
                (value, _) => value.to_string(),
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        out.push_str(kind.collection());
        out.push_str(":\n");
        for item in items {
            out.push_str("  - ");
            out.push_str(&item);
            out.push('\n');
        }
    }
    out.push_str("#END\n");
    out
}

/// Where the standalone configuration comes from, and what validates its plugin confs.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) format: FileFormat,
    pub(crate) env: HashMap<String, String>,
}

impl Source {
    /// Reads, parses and builds the file into a state (the IO edge of this module).
    pub(crate) fn load(
        &self,
        plugins: Option<&dyn PluginCatalog>,
    ) -> Result<ConfigState, StandaloneError> {
        self.load_reporting(plugins).map(|(state, _)| state)
    }

    /// Like [`Source::load`], also returning the items that were skipped as invalid.
    pub(crate) fn load_reporting(
        &self,
        plugins: Option<&dyn PluginCatalog>,
    ) -> Result<(ConfigState, Vec<Skipped>), StandaloneError> {
        let bytes = std::fs::read(&self.path).map_err(|source| StandaloneError::Io {
            path: self.path.clone(),
            source,
        })?;
        let doc = parse(&self.path, &bytes, self.format, &self.env)?;
        Ok(build_state(&doc, plugins))
    }

    /// The resource kinds in the order a store must receive them (referenced objects first).
    pub(crate) fn order() -> [ResourceKind; 9] {
        ORDER
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }
}

/// The backend of a standalone store: the state read at start; writes are refused.
pub(crate) struct FileBackend {
    initial: ConfigState,
}

impl FileBackend {
    pub(crate) fn new(initial: ConfigState) -> FileBackend {
        FileBackend { initial }
    }
}

impl Backend for FileBackend {
    fn load(&self) -> Result<ConfigState, StoreError> {
        Ok(self.initial.clone())
    }

    fn commit(
        &self,
        _changes: &[crate::store::Committed<'_>],
        _revision: u64,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend(
            "the configuration is read-only in standalone mode".into(),
        ))
    }
}

/// Re-reads the file with plugin checks and publishes it. On failure the previous snapshot stays.
pub(crate) async fn reload(
    store: &Store,
    source: &Source,
    plugins: Arc<dyn PluginCatalog>,
) -> Result<u64, StandaloneError> {
    let owned = source.clone();
    let state = tokio::task::spawn_blocking(move || owned.load(Some(plugins.as_ref())))
        .await
        .map_err(|e| StandaloneError::Build {
            path: source.path.clone(),
            source: StoreError::Backend(e.to_string()),
        })??;
    store
        .replace(state)
        .await
        .map_err(|source_err| StandaloneError::Build {
            path: source.path.clone(),
            source: source_err,
        })
}

/// Polls the file's mtime every second and reloads it when it changes, until `cancel` fires.
pub(crate) fn watch(
    store: Arc<Store>,
    source: Source,
    plugins: Arc<dyn PluginCatalog>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = source.stamp();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let stamp = source.stamp();
            if stamp == last {
                continue;
            }
            last = stamp;
            match reload(&store, &source, plugins.clone()).await {
                Ok(generation) => tracing::info!(
                    file = %source.path.display(),
                    generation,
                    "standalone configuration reloaded"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "standalone configuration not reloaded; the previous one keeps serving"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn render_round_trips_through_the_parser() {
        let doc = serde_json::json!({
            "upstreams": [{"id": "u1", "nodes": {"127.0.0.1:1980": 1}, "type": "roundrobin"}],
            "routes": [{"id": "1", "uri": "/a", "upstream_id": "u1"}, {"id": "2", "uri": "/b: c", "upstream_id": "u1"}],
        });
        let (state, skipped) = build_state(&doc, None);
        assert!(skipped.is_empty(), "{skipped:?}");
        let text = render(&state);
        assert!(text.ends_with("#END\n"));
        let reparsed = parse(
            Path::new("export.yaml"),
            text.as_bytes(),
            FileFormat::Yaml,
            &HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (again, skipped) = build_state(&reparsed, None);
        assert!(skipped.is_empty(), "{skipped:?}");
        for kind in ORDER {
            let a: Vec<&Value> = state.list(kind).map(|i| &i.value).collect();
            let b: Vec<&Value> = again.list(kind).map(|i| &i.value).collect();
            assert_eq!(a, b, "{kind:?}");
        }
    }
    use super::*;
    use crate::validate::SchemaType;
    use serde_json::json;

    fn parse_yaml(text: &str) -> Result<Value, StandaloneError> {
        parse(
            Path::new("conf/apisix.yaml"),
            text.as_bytes(),
            FileFormat::Yaml,
            &HashMap::new(),
        )
    }

    #[test]
    fn end_flag_is_required_in_the_last_ten_bytes() {
        assert!(has_end_flag(b"routes: []\n#END"));
        assert!(has_end_flag(b"routes: []\n#END\n  \n"));
        assert!(!has_end_flag(b"routes: []\n"));
        assert!(!has_end_flag(b"#END\n\n\n\n\n\n\n\n"));
        let err = parse_yaml("routes: []\n").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("missing valid end flag in file conf/apisix.yaml")
        );
    }

    #[test]
    fn yaml_and_json_parse_to_the_same_document() -> Result<(), StandaloneError> {
        let yaml = parse_yaml("routes:\n  - id: 1\n    uri: /a\n#END\n")?;
        let json = parse(
            Path::new("conf/apisix.json"),
            br#"{"routes": [{"id": 1, "uri": "/a"}]}"#,
            FileFormat::Json,
            &HashMap::new(),
        )?;
        assert_eq!(yaml, json);
        assert_eq!(parse_yaml("#END")?, json!({}));
        assert!(matches!(
            parse_yaml("routes: [\n#END"),
            Err(StandaloneError::Syntax { .. })
        ));
        assert!(matches!(
            parse_yaml("- a\n#END"),
            Err(StandaloneError::NotAMapping { .. })
        ));
        Ok(())
    }

    #[test]
    fn env_references_are_substituted() -> Result<(), StandaloneError> {
        let env = HashMap::from([("URI".to_owned(), "/from-env".to_owned())]);
        let yaml = parse(
            Path::new("a.yaml"),
            b"routes:\n  - {id: 1, uri: \"${{URI}}\"}\n#END",
            FileFormat::Yaml,
            &env,
        )?;
        assert_eq!(yaml["routes"][0]["uri"], "/from-env");
        let json = parse(
            Path::new("a.json"),
            br#"{"routes": [{"id": 1, "uri": "${{URI}}"}]}"#,
            FileFormat::Json,
            &env,
        )?;
        assert_eq!(json["routes"][0]["uri"], "/from-env");
        assert!(matches!(
            parse(
                Path::new("a.json"),
                br#"{"a": "${{NOPE}}"}"#,
                FileFormat::Json,
                &env
            ),
            Err(StandaloneError::Env { .. })
        ));
        Ok(())
    }

    #[test]
    fn ids_fall_back_to_username_then_position_and_later_duplicates_win() {
        let doc = json!({
            "upstreams": [
                {"id": "u", "nodes": {"127.0.0.1:1": 1}},
                {"nodes": {"127.0.0.1:2": 1}},
            ],
            "routes": [
                {"id": 1, "uri": "/old", "upstream_id": "u"},
                {"id": "1", "uri": "/new", "upstream_id": "u"},
            ],
            "consumers": [{"username": "jack"}],
            "plugin_metadata": [{"id": "example", "k": 1}],
        });
        let (state, skipped) = build_state(&doc, None);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(state.get(ResourceKind::Upstream, "arr_2").is_some());
        assert_eq!(
            state
                .get(ResourceKind::Route, "1")
                .map(|r| r.value["uri"].clone()),
            Some(json!("/new"))
        );
        assert!(state.get(ResourceKind::Consumer, "jack").is_some());
        assert_eq!(
            state
                .get(ResourceKind::PluginMetadata, "example")
                .map(|m| m.value.clone()),
            Some(json!({"k": 1}))
        );
    }

    #[test]
    fn invalid_items_are_skipped_and_the_rest_loads() {
        let doc = json!({
            "routes": [
                {"id": "ok", "uri": "/ok", "upstream": {"nodes": {"127.0.0.1:1": 1}}},
                {"id": "bad", "uri": 42},
                {"id": "dangling", "uri": "/d", "upstream_id": "missing"},
            ],
        });
        let (state, skipped) = build_state(&doc, None);
        assert!(state.get(ResourceKind::Route, "ok").is_some());
        assert!(state.get(ResourceKind::Route, "bad").is_none());
        let keys: Vec<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["/apisix/routes/bad", "/apisix/routes/dangling"]);
    }

    #[tokio::test]
    async fn replace_publishes_a_new_generation_or_keeps_the_old_one() -> Result<(), StoreError> {
        let settings = super::super::SnapshotSettings {
            router_mode: crate::router::RouterMode::default(),
        };
        let store = Store::open(Arc::new(FileBackend::new(ConfigState::default())), settings)?;
        assert_eq!(store.snapshot().generation, 1);
        let (good, _) = build_state(
            &json!({"routes": [{"id": "1", "uri": "/a", "upstream": {"nodes": {"127.0.0.1:1": 1}}}]}),
            None,
        );
        assert_eq!(store.replace(good).await?, 2);
        let (bad, _) = ConfigState::default().apply(Change::Put {
            kind: ResourceKind::Upstream,
            id: "u".into(),
            value: json!({"scheme": "ftp", "nodes": {}}),
        })?;
        assert!(store.replace(bad).await.is_err());
        let current = store.snapshot();
        assert_eq!(current.generation, 2);
        assert!(current.state.get(ResourceKind::Route, "1").is_some());
        assert!(
            store
                .write(Change::Delete {
                    kind: ResourceKind::Route,
                    id: "1".into()
                })
                .await
                .is_err()
        );
        Ok(())
    }

    struct OnlyExample;

    impl PluginCatalog for OnlyExample {
        fn check(&self, name: &str, _conf: &Value, _t: SchemaType) -> Result<(), String> {
            (name == "example")
                .then_some(())
                .ok_or_else(|| format!("unknown plugin [{name}]"))
        }
        fn names(&self) -> Vec<String> {
            vec!["example".into()]
        }
        fn schema(&self, _name: &str, _t: SchemaType) -> Option<Value> {
            None
        }
    }

    #[test]
    fn unknown_plugins_make_an_item_invalid() {
        let doc = json!({
            "routes": [
                {"id": "1", "uri": "/a", "plugins": {"example": {}}},
                {"id": "2", "uri": "/b", "plugins": {"nope": {}}},
            ],
        });
        let (state, skipped) = build_state(&doc, Some(&OnlyExample));
        assert!(state.get(ResourceKind::Route, "1").is_some());
        assert_eq!(
            skipped,
            [Skipped {
                key: "/apisix/routes/2".into(),
                reason: "unknown plugin [nope]".into()
            }]
        );
    }
}
