//! A compiled, immutable view of the configuration: what one request reads, start to finish.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::StoreError;
use super::model::{ConfigState, Item, id_of};
use crate::router::{RouteSpec, Router, RouterMode};
use crate::schema::ResourceKind;
use crate::tls::CertIndex;
use crate::upstream::{Timeouts, Upstream};

/// What a snapshot build depends on besides the resources.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotSettings {
    pub(crate) router_mode: RouterMode,
}

/// A route with everything it needs resolved: its service and upstream.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) service_id: Option<String>,
    /// The route object as stored (`ctx.matched_route.value`).
    pub(crate) value: Value,
    /// Plugin confs (name, conf JSON) merged as APISIX merges them: service, then plugin_config,
    /// then the route's own, a later one replacing an earlier one of the same name.
    pub(crate) plugins: Vec<(String, Arc<str>)>,
    /// Changes whenever any of the merged objects changes (route, service, plugin_config).
    pub(crate) plugins_version: u64,
    /// The upstream that serves it: its own (inline or by id), else its service's.
    pub(crate) upstream: Option<Arc<Upstream>>,
    /// The route's `timeout` applied over the upstream's.
    pub(crate) timeouts: Timeouts,
}

/// One generation of configuration, compiled for the data plane.
pub(crate) struct Snapshot {
    /// Increases by one with every change.
    pub(crate) generation: u64,
    /// Every stored object, for Admin reads.
    pub(crate) state: ConfigState,
    pub(crate) router: Router<Arc<RouteEntry>>,
    pub(crate) certs: CertIndex,
    /// Plugins of every global rule, merged; a plugin present in two rules is dropped from both.
    pub(crate) global_plugins: Vec<(String, Arc<str>)>,
    /// Changes whenever a global rule changes.
    pub(crate) global_version: u64,
    /// What the next build reuses while the objects it came from stay the same.
    compiled: Compiled,
}

/// The compiled form of each upstream and route, with the stored objects it came from.
#[derive(Default)]
struct Compiled {
    upstreams: HashMap<String, (Arc<Item>, Arc<Upstream>)>,
    routes: HashMap<String, CompiledRoute>,
}

struct CompiledRoute {
    /// The route, its service, its plugin_config, and the upstreams it names by id (its own and
    /// its service's): the objects a route's entry is compiled from.
    sources: [Option<Arc<Item>>; 5],
    spec: Arc<RouteSpec>,
    entry: Arc<RouteEntry>,
}

/// Whether two lists of sources are the very same stored objects (an object that changes is
/// replaced by a new one, so identity means unchanged).
fn same_sources(a: &[Option<Arc<Item>>; 5], b: &[Option<Arc<Item>>; 5]) -> bool {
    a.iter().zip(b).all(|pair| match pair {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    })
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("routes", &self.router.len())
            .finish_non_exhaustive()
    }
}

struct ServiceView {
    upstream: Option<Arc<Upstream>>,
    hosts: Vec<String>,
    plugins: Option<Value>,
    version: u64,
}

/// Merges plugin maps, later ones replacing earlier ones plugin by plugin.
fn merge_plugins(layers: &[Option<&Value>]) -> Vec<(String, Arc<str>)> {
    let mut merged: Vec<(String, Arc<str>)> = Vec::new();
    for layer in layers.iter().flatten() {
        if let Value::Object(map) = layer {
            for (name, conf) in map {
                let conf: Arc<str> = conf.to_string().into();
                match merged.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = conf,
                    None => merged.push((name.clone(), conf)),
                }
            }
        }
    }
    merged
}

/// Combines object versions into one number that changes when any of them does.
fn combine_versions(versions: &[u64]) -> u64 {
    versions.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ v).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Snapshot {
    /// Compiles a state. Fails, naming the object, when something cannot be served. Upstreams and
    /// routes whose stored objects are the same as in `previous` are taken from it as they are, so
    /// a change costs in proportion to what it touches, not to every route stored.
    pub(crate) fn build(
        state: ConfigState,
        generation: u64,
        settings: &SnapshotSettings,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, StoreError> {
        let reusable = previous.map(|p| &p.compiled);
        let invalid = |kind, id: &str, reason: String| StoreError::Invalid {
            kind,
            id: id.to_owned(),
            reason,
        };
        let mut compiled = Compiled::default();
        for item in state.list(ResourceKind::Upstream) {
            let kept = reusable
                .and_then(|r| r.upstreams.get(item.id()))
                .filter(|(source, _)| Arc::ptr_eq(source, item));
            let upstream = match kept {
                Some((_, upstream)) => upstream.clone(),
                None => Arc::new(
                    Upstream::from_json(Some(item.id().to_owned()), &item.value)
                        .map_err(|e| invalid(ResourceKind::Upstream, item.id(), e.to_string()))?,
                ),
            };
            compiled
                .upstreams
                .insert(item.id().to_owned(), (item.clone(), upstream));
        }
        let upstreams = &compiled.upstreams;
        let resolve =
            |kind, id: &str, value: &Value| -> Result<Option<Arc<Upstream>>, StoreError> {
                if let Some(inline) = value.get("upstream") {
                    let upstream = Upstream::from_json(None, inline)
                        .map_err(|e| invalid(kind, id, e.to_string()))?;
                    return Ok(Some(Arc::new(upstream)));
                }
                Ok(value
                    .get("upstream_id")
                    .and_then(id_of)
                    .and_then(|uid| upstreams.get(&uid).map(|(_, u)| u.clone())))
            };
        let mut services: HashMap<String, ServiceView> = HashMap::new();
        for item in state.list(ResourceKind::Service) {
            services.insert(
                item.id().to_owned(),
                ServiceView {
                    upstream: resolve(ResourceKind::Service, item.id(), &item.value)?,
                    hosts: strings(item.value.get("hosts")),
                    plugins: item.value.get("plugins").cloned(),
                    version: item.modified_index,
                },
            );
        }
        let mut routes = Vec::new();
        let mut compiled_routes = HashMap::new();
        for item in state.list(ResourceKind::Route) {
            let value = &item.value;
            if value.get("status").and_then(Value::as_i64) == Some(0) {
                continue;
            }
            let id = item.id();
            let service_id = value.get("service_id").and_then(id_of);
            let service_item = service_id
                .as_ref()
                .and_then(|s| state.get(ResourceKind::Service, s))
                .cloned();
            let plugin_config = value
                .get("plugin_config_id")
                .and_then(id_of)
                .and_then(|pc| state.get(ResourceKind::PluginConfig, &pc))
                .cloned();
            let upstream_of = |of: Option<&Arc<Item>>| {
                of.and_then(|item| item.value.get("upstream_id"))
                    .and_then(id_of)
                    .and_then(|uid| state.get(ResourceKind::Upstream, &uid).cloned())
            };
            let sources = [
                Some(item.clone()),
                plugin_config.clone(),
                upstream_of(Some(item)),
                upstream_of(service_item.as_ref()),
                service_item,
            ];
            let kept = reusable
                .and_then(|r| r.routes.get(id))
                .filter(|kept| same_sources(&kept.sources, &sources));
            let (spec, entry) = match kept {
                Some(kept) => (kept.spec.clone(), kept.entry.clone()),
                None => {
                    let service = service_id.as_ref().and_then(|s| services.get(s));
                    let upstream = match resolve(ResourceKind::Route, id, value)? {
                        Some(upstream) => Some(upstream),
                        None => service.and_then(|s| s.upstream.clone()),
                    };
                    let base = upstream
                        .as_ref()
                        .map_or_else(Timeouts::default, |u| u.timeouts);
                    let timeouts = value
                        .get("timeout")
                        .map_or(base, |t| Timeouts::from_json(t, base));
                    let mut hosts = one_or_many(value, "host", "hosts");
                    if hosts.is_empty() {
                        hosts = service.map(|s| s.hosts.clone()).unwrap_or_default();
                    }
                    let spec = RouteSpec {
                        uris: one_or_many(value, "uri", "uris"),
                        hosts,
                        methods: strings(value.get("methods")),
                        remote_addrs: one_or_many(value, "remote_addr", "remote_addrs"),
                        vars: value.get("vars").cloned(),
                        priority: value.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    };
                    let plugins = merge_plugins(&[
                        service.and_then(|s| s.plugins.as_ref()),
                        plugin_config
                            .as_ref()
                            .and_then(|pc| pc.value.get("plugins")),
                        value.get("plugins"),
                    ]);
                    let plugins_version = combine_versions(&[
                        item.modified_index,
                        service.map_or(0, |s| s.version),
                        plugin_config.as_ref().map_or(0, |pc| pc.modified_index),
                    ]);
                    let entry = RouteEntry {
                        id: id.to_owned(),
                        name: value.get("name").and_then(Value::as_str).map(str::to_owned),
                        service_id,
                        value: value.clone(),
                        plugins,
                        plugins_version,
                        upstream,
                        timeouts,
                    };
                    (Arc::new(spec), Arc::new(entry))
                }
            };
            routes.push((spec.clone(), entry.clone()));
            compiled_routes.insert(
                id.to_owned(),
                CompiledRoute {
                    sources,
                    spec,
                    entry,
                },
            );
        }
        compiled.routes = compiled_routes;
        let router =
            Router::new(routes, settings.router_mode).map_err(|e| StoreError::Invalid {
                kind: ResourceKind::Route,
                id: String::new(),
                reason: e.to_string(),
            })?;
        let certs =
            CertIndex::build(state.list(ResourceKind::Ssl).map(|i| &i.value)).map_err(|e| {
                StoreError::Invalid {
                    kind: ResourceKind::Ssl,
                    id: String::new(),
                    reason: e.to_string(),
                }
            })?;
        let (global_plugins, global_version) = merge_global_rules(&state);
        Ok(Snapshot {
            generation,
            state,
            router,
            certs,
            global_plugins,
            global_version,
            compiled,
        })
    }
}

/// APISIX merges every global rule into one; a plugin found in two rules is dropped from both.
fn merge_global_rules(state: &ConfigState) -> (Vec<(String, Arc<str>)>, u64) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut versions = Vec::new();
    let rules: Vec<&Value> = state
        .list(ResourceKind::GlobalRule)
        .map(|item| {
            versions.push(item.modified_index);
            &item.value
        })
        .collect();
    for rule in &rules {
        if let Some(Value::Object(plugins)) = rule.get("plugins") {
            for name in plugins.keys() {
                *seen.entry(name.clone()).or_default() += 1;
            }
        }
    }
    let mut merged = Vec::new();
    for rule in &rules {
        if let Some(Value::Object(plugins)) = rule.get("plugins") {
            for (name, conf) in plugins {
                if seen.get(name).copied().unwrap_or(0) > 1 {
                    tracing::error!(plugin = %name, "plugin found in more than one global rule, skipped");
                    continue;
                }
                merged.push((name.clone(), Arc::from(conf.to_string())));
            }
        }
    }
    versions.push(rules.len() as u64);
    (merged, combine_versions(&versions))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn one_or_many(value: &Value, one: &str, many: &str) -> Vec<String> {
    match value.get(many) {
        Some(list) => strings(Some(list)),
        None => strings(value.get(one)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::Change;

    fn put(state: &ConfigState, kind: ResourceKind, id: &str, value: Value) -> ConfigState {
        let change = Change::Put {
            kind,
            id: id.to_owned(),
            value,
        };
        state.apply(change).expect("valid change").0
    }

    fn build(state: &ConfigState, previous: Option<&Snapshot>) -> Snapshot {
        let settings = SnapshotSettings {
            router_mode: RouterMode::HostUri,
        };
        Snapshot::build(state.clone(), 1, &settings, previous).expect("compiles")
    }

    fn entry(snapshot: &Snapshot, id: &str) -> Arc<RouteEntry> {
        snapshot.compiled.routes[id].entry.clone()
    }

    fn node_of(entry: &RouteEntry) -> String {
        let upstream = entry.upstream.as_ref().expect("an upstream");
        upstream.attempt_order(None)[0].authority()
    }

    #[test]
    fn a_change_recompiles_only_the_routes_that_depend_on_it() {
        let mut state = ConfigState::default();
        state = put(
            &state,
            ResourceKind::Upstream,
            "u",
            json!({"nodes": {"10.0.0.1:80": 1}}),
        );
        state = put(
            &state,
            ResourceKind::Service,
            "s",
            json!({"upstream_id": "u"}),
        );
        state = put(
            &state,
            ResourceKind::PluginConfig,
            "pc",
            json!({"plugins": {"a": {}}}),
        );
        state = put(
            &state,
            ResourceKind::Route,
            "by-service",
            json!({"uri": "/s", "service_id": "s"}),
        );
        state = put(
            &state,
            ResourceKind::Route,
            "by-config",
            json!({"uri": "/c", "plugin_config_id": "pc", "upstream_id": "u"}),
        );
        state = put(
            &state,
            ResourceKind::Route,
            "inline",
            json!({"uri": "/i", "upstream": {"nodes": {"10.0.0.9:80": 1}}}),
        );
        let first = build(&state, None);

        // A route of its own changes: only it is compiled again.
        state = put(
            &state,
            ResourceKind::Route,
            "inline",
            json!({"uri": "/i2", "upstream": {"nodes": {"10.0.0.8:80": 1}}}),
        );
        let second = build(&state, Some(&first));
        assert!(Arc::ptr_eq(
            &entry(&first, "by-service"),
            &entry(&second, "by-service")
        ));
        assert!(Arc::ptr_eq(
            &entry(&first, "by-config"),
            &entry(&second, "by-config")
        ));
        assert_eq!(node_of(&entry(&second, "inline")), "10.0.0.8:80");
        assert_eq!(second.compiled.routes["inline"].spec.uris, ["/i2"]);

        // The shared upstream changes: both routes that reach it see the new node.
        state = put(
            &state,
            ResourceKind::Upstream,
            "u",
            json!({"nodes": {"10.0.0.2:80": 1}}),
        );
        let third = build(&state, Some(&second));
        assert_eq!(node_of(&entry(&third, "by-service")), "10.0.0.2:80");
        assert_eq!(node_of(&entry(&third, "by-config")), "10.0.0.2:80");
        assert!(Arc::ptr_eq(
            &entry(&second, "inline"),
            &entry(&third, "inline")
        ));

        // The plugin_config changes: its route's merged plugins follow.
        state = put(
            &state,
            ResourceKind::PluginConfig,
            "pc",
            json!({"plugins": {"b": {}}}),
        );
        let fourth = build(&state, Some(&third));
        let names: Vec<_> = entry(&fourth, "by-config")
            .plugins
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(names, ["b"]);
        assert!(Arc::ptr_eq(
            &entry(&third, "by-service"),
            &entry(&fourth, "by-service")
        ));

        // The service changes its hosts: its route is matched on them.
        state = put(
            &state,
            ResourceKind::Service,
            "s",
            json!({"upstream_id": "u", "hosts": ["a.example"]}),
        );
        let fifth = build(&state, Some(&fourth));
        assert_eq!(
            fifth.compiled.routes["by-service"].spec.hosts,
            ["a.example"]
        );
        assert!(!Arc::ptr_eq(
            &entry(&fourth, "by-service"),
            &entry(&fifth, "by-service")
        ));
    }

    #[test]
    fn an_unchanged_upstream_keeps_its_instance() {
        let mut state = ConfigState::default();
        state = put(
            &state,
            ResourceKind::Upstream,
            "u",
            json!({"nodes": {"10.0.0.1:80": 1}}),
        );
        state = put(
            &state,
            ResourceKind::Route,
            "r",
            json!({"uri": "/r", "upstream_id": "u"}),
        );
        let first = build(&state, None);
        state = put(
            &state,
            ResourceKind::Route,
            "other",
            json!({"uri": "/o", "upstream_id": "u"}),
        );
        let second = build(&state, Some(&first));
        let kept = &second.compiled.upstreams["u"].1;
        assert!(Arc::ptr_eq(&first.compiled.upstreams["u"].1, kept));
        let other = entry(&second, "other");
        assert!(Arc::ptr_eq(
            other.upstream.as_ref().expect("upstream"),
            kept
        ));
    }
}
