//! Entry points for the cargo-fuzz targets in `fuzz/`, and for nothing else.
//!
//! The fuzz crate is a separate crate that depends on `moongate` by path, so it can only reach
//! public items, while the code worth fuzzing (`schema`, `validate`, `store`, `router`) is
//! `pub(crate)`. This module is the thin, hidden bridge: each item takes plain bytes, strings or
//! small structs and runs one internal module the way the gateway runs it. It is not part of
//! Moongate's API (no stability promise, hidden from the docs) and the gateway never calls it.
//! The SigV4 signer and the `Gateway` builder are public already and are used directly.
#![doc(hidden)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use crate::router::{MatchInput, RouteSpec, Router, RouterMode, Vars};
use crate::schema::ResourceKind;
use crate::store::yaml::{self, FileFormat};
use crate::store::{Backend, Change, ConfigState, Snapshot, SnapshotSettings, Store};
use crate::validate::{PluginCatalog, SchemaType};

/// The `create_time`/`update_time` stamped on Admin writes, fixed so that runs are reproducible.
const FIXED_TIME: i64 = 1_700_000_000;

/// The plugins [`AdminModel`] knows; any object conf is accepted for them. Any other name is an
/// `unknown plugin [name]`, as the Admin API answers.
pub const KNOWN_PLUGINS: [&str; 3] = ["key-auth", "proxy-rewrite", "limit-count"];

/// The Admin API resource names (`route`, `service`, ... `consumer_group`), in declaration order.
pub fn resource_kinds() -> [&'static str; 9] {
    ResourceKind::ALL.map(ResourceKind::name)
}

/// Runs the futures of [`AdminModel`] (the store persists on the blocking pool).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime for the fuzzing facade")
});

/// Plugin confs are checked against this stand-in for the Lua plugin host.
struct StubCatalog;

impl PluginCatalog for StubCatalog {
    fn check(&self, name: &str, conf: &Value, _schema_type: SchemaType) -> Result<(), String> {
        if !KNOWN_PLUGINS.contains(&name) {
            return Err(format!("unknown plugin [{name}]"));
        }
        if conf.is_object() {
            Ok(())
        } else {
            Err(format!(
                "failed to check the configuration of plugin {name} err: wrong type: expected object"
            ))
        }
    }

    fn names(&self) -> Vec<String> {
        KNOWN_PLUGINS.iter().map(|n| (*n).to_owned()).collect()
    }

    fn schema(&self, _name: &str, _schema_type: SchemaType) -> Option<Value> {
        None
    }
}

/// A backend that keeps nothing and fails a commit on request (a full disk, a lost etcd).
#[derive(Default)]
struct MemoryBackend {
    fail_next: AtomicBool,
}

impl Backend for MemoryBackend {
    fn load(&self) -> Result<ConfigState, crate::store::StoreError> {
        Ok(ConfigState::default())
    }

    fn commit(
        &self,
        _changes: &[crate::store::Committed<'_>],
        _revision: u64,
    ) -> Result<(), crate::store::StoreError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(crate::store::StoreError::Backend("injected failure".into()));
        }
        Ok(())
    }
}

/// The real [`Store`] (validate, compile a snapshot, persist, swap) over an in-memory backend,
/// written the way the Admin API writes, with its own steps: body parsed, id taken by
/// `admin::identify`, times stamped by `admin::stamp_times` (at a fixed time), the object checked by
/// `validate::check_object`, then `Store::write`.
pub struct AdminModel {
    store: Store,
    backend: Arc<MemoryBackend>,
}

impl Default for AdminModel {
    fn default() -> Self {
        Self::new()
    }
}

/// One stored object: key, value as JSON text, `createdIndex`, `modifiedIndex`.
pub type StoredItem = (String, String, u64, u64);

impl AdminModel {
    /// An empty store (embedded defaults: `radixtree_host_uri`).
    pub fn new() -> Self {
        let backend = Arc::new(MemoryBackend::default());
        let settings = SnapshotSettings {
            router_mode: RouterMode::default(),
        };
        let store = Store::open(backend.clone(), settings)
            .expect("an empty state always compiles into a snapshot");
        AdminModel { store, backend }
    }

    /// `PUT /apisix/admin/<kind>s[/<id>]` with `body`; `backend_fails` makes the persist step fail.
    /// `Err` is the Admin API's `error_msg` (400, or 404/503 for a missing object or a failed
    /// persist). An unknown `kind` is an error too.
    pub fn put(
        &self,
        kind: &str,
        id: Option<&str>,
        body: &[u8],
        backend_fails: bool,
    ) -> Result<(), String> {
        let kind = ResourceKind::from_name(kind).ok_or_else(|| format!("unknown kind {kind}"))?;
        if body.is_empty() {
            return Err("missing configurations".into());
        }
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
        let id = crate::admin::identify(kind, id, &mut value)?;
        {
            let snapshot = self.store.snapshot();
            let existing = snapshot.state.get(kind, &id).map(|e| &**e);
            crate::admin::stamp_times(kind, &mut value, existing, FIXED_TIME);
        }
        crate::validate::check_object(kind, &id, &value, Some(&StubCatalog))?;
        self.write(Change::Put { kind, id, value }, backend_fails)
    }

    /// `DELETE /apisix/admin/<kind>s/<id>`.
    pub fn delete(&self, kind: &str, id: &str, backend_fails: bool) -> Result<(), String> {
        let kind = ResourceKind::from_name(kind).ok_or_else(|| format!("unknown kind {kind}"))?;
        let change = Change::Delete {
            kind,
            id: id.to_owned(),
        };
        self.write(change, backend_fails)
    }

    fn write(&self, change: Change, backend_fails: bool) -> Result<(), String> {
        self.backend
            .fail_next
            .store(backend_fails, Ordering::SeqCst);
        let result = RUNTIME.block_on(self.store.write(change));
        self.backend.fail_next.store(false, Ordering::SeqCst);
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The stored value of one object.
    pub fn get(&self, kind: &str, id: &str) -> Option<Value> {
        let kind = ResourceKind::from_name(kind)?;
        let snapshot = self.store.snapshot();
        let item = snapshot.state.get(kind, id)?;
        Some(item.value.clone())
    }

    /// Everything the published snapshot holds: its generation, its revision, the routes its
    /// router serves, and every object sorted by key.
    pub fn fingerprint(&self) -> (u64, u64, usize, Vec<StoredItem>) {
        let snapshot = self.store.snapshot();
        let mut items: Vec<StoredItem> = ResourceKind::ALL
            .iter()
            .flat_map(|kind| snapshot.state.list(*kind))
            .map(|i| {
                (
                    i.key.clone(),
                    i.value.to_string(),
                    i.created_index,
                    i.modified_index,
                )
            })
            .collect();
        items.sort();
        (
            snapshot.generation,
            snapshot.state.revision(),
            snapshot.router.len(),
            items,
        )
    }
}

/// What a standalone file turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneReport {
    /// Every object built, as (key, value JSON text), sorted by key.
    pub items: Vec<(String, String)>,
    /// The items skipped as invalid, as (key, reason).
    pub skipped: Vec<(String, String)>,
    /// Whether the state compiled into a snapshot (`Err` is the reason the file would be refused).
    pub compiled: Result<usize, String>,
    /// The state written back in the standalone format (`moongate export`).
    pub rendered: String,
}

/// Parses a standalone file's bytes into one JSON document (`store::yaml::parse`) and stops there.
fn standalone_document(bytes: &[u8], json: bool) -> Result<Value, String> {
    yaml::parse(
        Path::new("apisix.yaml"),
        bytes,
        file_format(json),
        &fuzz_env(),
    )
    .map_err(|e| e.to_string())
}

fn file_format(json: bool) -> FileFormat {
    if json {
        FileFormat::Json
    } else {
        FileFormat::Yaml
    }
}

fn fuzz_env() -> HashMap<String, String> {
    HashMap::from([("FUZZ_VAR".to_owned(), "fuzz".to_owned())])
}

/// Reads a standalone file's bytes as the YAML or JSON watcher does (`store::yaml::parse`, then
/// `build_state` without plugins, then `Snapshot::build`). `${{FUZZ_VAR}}` is set to `fuzz`.
/// `Err` is the message that refuses the whole file.
pub fn standalone(bytes: &[u8], json: bool) -> Result<StandaloneReport, String> {
    let doc = standalone_document(bytes, json)?;
    let (state, skipped) = yaml::build_state(&doc, None);
    let mut items: Vec<(String, String)> = ResourceKind::ALL
        .iter()
        .flat_map(|kind| state.list(*kind))
        .map(|i| (i.key.clone(), i.value.to_string()))
        .collect();
    items.sort();
    let rendered = yaml::render(&state);
    let settings = SnapshotSettings {
        router_mode: RouterMode::default(),
    };
    let compiled = Snapshot::build(state, 1, &settings, None)
        .map(|s| s.router.len())
        .map_err(|e| e.to_string());
    Ok(StandaloneReport {
        items,
        skipped: skipped.into_iter().map(|s| (s.key, s.reason)).collect(),
        compiled,
        rendered,
    })
}

/// One route as the router sees it (`router::RouteSpec`).
#[derive(Debug, Clone, Default)]
pub struct RouteInput {
    /// `uri`/`uris`.
    pub uris: Vec<String>,
    /// `host`/`hosts`.
    pub hosts: Vec<String>,
    /// `methods`.
    pub methods: Vec<String>,
    /// `remote_addr`/`remote_addrs`.
    pub remote_addrs: Vec<String>,
    /// `vars`.
    pub vars: Option<Value>,
    /// `priority`.
    pub priority: i64,
}

/// A request as the router sees it (`router::MatchInput`).
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    /// The normalized path.
    pub path: &'a str,
    /// `$host`.
    pub host: Option<&'a str>,
    /// `$http_host`.
    pub host_with_port: Option<&'a str>,
    /// The method.
    pub method: &'a str,
    /// The client address.
    pub remote_addr: IpAddr,
    /// Request variables for `vars`, first match wins.
    pub vars: &'a [(String, String)],
}

/// A route found: its index in the list given to [`CompiledRoutes::new`] and what it captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route.
    pub route: usize,
    /// The `*` tail.
    pub ext: Option<String>,
    /// `:name` and `*name` captures.
    pub params: Vec<(String, String)>,
    /// The uri pattern that matched.
    pub matched_uri: String,
}

/// A compiled router over [`RouteInput`]s.
pub struct CompiledRoutes(Router<usize>);

struct SliceVars<'a>(&'a [(String, String)]);

impl Vars for SliceVars<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }
}

impl CompiledRoutes {
    /// Compiles `routes` for `mode` (an `apisix.router.http` name; unknown names use the default).
    /// `Err` is the reason the snapshot build would fail.
    pub fn new(routes: &[RouteInput], mode: &str) -> Result<Self, String> {
        let mode = RouterMode::from_apisix_name(mode).unwrap_or_default();
        let specs = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let spec = RouteSpec {
                    uris: r.uris.clone(),
                    hosts: r.hosts.clone(),
                    methods: r.methods.clone(),
                    remote_addrs: r.remote_addrs.clone(),
                    vars: r.vars.clone(),
                    priority: r.priority,
                };
                (spec, i)
            })
            .collect();
        Router::new(specs, mode)
            .map(CompiledRoutes)
            .map_err(|e| e.to_string())
    }

    /// Finds the route for a request.
    pub fn find(&self, request: &RequestInput<'_>) -> Option<Matched> {
        let vars = SliceVars(request.vars);
        let input = MatchInput {
            path: request.path,
            host: request.host,
            host_with_port: request.host_with_port,
            method: request.method,
            remote_addr: request.remote_addr,
            vars: &vars,
        };
        self.0.find(&input).map(|m| Matched {
            route: *m.value,
            ext: m.ext,
            params: m.params,
            matched_uri: m.matched_uri.to_string(),
        })
    }
}
