//! The plugin host: the registry every worker follows, the control thread that builds and validates
//! registries and answers `check_schema` for the Admin API, and the watcher of the plugin directory.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::PluginError;
use super::native::WorkerInfo;
use super::registry::{self, PluginSettings, Registry, Source};
use super::vm::Vm;
use crate::schema::ResourceKind;
use crate::store::{Snapshot, Store};
use crate::validate::{PluginCatalog, SchemaType};

/// How long file events are merged before a reload (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);

enum Job {
    Check {
        name: String,
        conf: Value,
        schema_type: SchemaType,
        reply: mpsc::SyncSender<Result<(), String>>,
    },
    Reload {
        reply: mpsc::SyncSender<()>,
    },
}

/// Loads plugins, keeps every worker on the current registry, and validates plugin confs.
pub(crate) struct PluginHost {
    registry: Arc<ArcSwap<Registry>>,
    settings: PluginSettings,
    control: Mutex<mpsc::Sender<Job>>,
    instance_id: String,
}

thread_local! {
    static WORKER_VM: RefCell<Option<Rc<Vm>>> = const { RefCell::new(None) };
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
}

/// Records which worker the current thread is (for `ngx.worker.id()`).
pub(crate) fn set_worker_id(id: usize) {
    WORKER_ID.with(|w| w.set(id));
}

impl PluginHost {
    /// Starts the control thread and loads the plugin directory once.
    pub(crate) fn start(
        settings: PluginSettings,
        store: Arc<Store>,
    ) -> Result<Arc<PluginHost>, PluginError> {
        let registry = Arc::new(ArcSwap::from_pointee(Registry::default()));
        let (tx, rx) = mpsc::channel();
        let instance_id = instance_id();
        let thread_registry = registry.clone();
        let thread_settings = settings.clone();
        let thread_instance = instance_id.clone();
        // The control thread outlives the gateway's other parts by a moment; a weak reference lets the
        // store close as soon as the gateway stops.
        let store = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("moongate-plugins".into())
            .spawn(move || {
                control_loop(rx, thread_registry, thread_settings, store, thread_instance)
            })
            .map_err(|e| PluginError::Vm(format!("cannot start the plugin control thread: {e}")))?;
        let host = Arc::new(PluginHost {
            registry,
            settings,
            control: Mutex::new(tx),
            instance_id,
        });
        host.reload_blocking()?;
        Ok(host)
    }

    fn send(&self, job: Job) -> Result<(), PluginError> {
        let control = self.control.lock().map_err(|_| PluginError::ControlGone)?;
        control.send(job).map_err(|_| PluginError::ControlGone)
    }

    /// Re-reads the plugin directory and swaps in what loads; waits until the new registry is live.
    pub(crate) fn reload_blocking(&self) -> Result<(), PluginError> {
        let (reply, done) = mpsc::sync_channel(1);
        self.send(Job::Reload { reply })?;
        done.recv().map_err(|_| PluginError::ControlGone)
    }

    /// This worker's VM, rebuilt when the registry changed since it was built.
    pub(crate) fn worker_vm(&self) -> Result<Rc<Vm>, PluginError> {
        let registry = self.registry.load();
        if let Some(vm) = WORKER_VM.with(|v| v.borrow().clone())
            && vm.generation == registry.generation
        {
            return Ok(vm);
        }
        let worker = WorkerInfo {
            worker_id: WORKER_ID.with(Cell::get),
            worker_count: self.settings.workers,
            instance_id: self.instance_id.clone(),
        };
        let vm = Rc::new(Vm::new(
            registry.generation,
            &registry.sources,
            &self.settings,
            worker,
        )?);
        let names: Vec<String> = registry.plugins.iter().map(|p| p.name.clone()).collect();
        let (_, failed) = vm.load_plugins(&names);
        for (name, err) in failed {
            tracing::error!(plugin = %name, error = %err, "plugin failed to load on a worker");
        }
        // Requests still running keep the old VM alive until they finish; then it is dropped.
        if let Some(old) = WORKER_VM.with(|v| v.replace(Some(vm.clone()))) {
            old.destroy();
        }
        Ok(vm)
    }

    /// Watches the plugin directory and reloads on changes, until `cancel` fires.
    pub(crate) fn watch(self: &Arc<Self>, cancel: CancellationToken) {
        use notify::RecursiveMode;
        use notify_debouncer_full::new_debouncer;
        let dir = self.settings.dir.clone();
        if !dir.exists() {
            tracing::info!(dir = %dir.display(), "plugin directory does not exist, not watching it");
            return;
        }
        let (tx, rx) = mpsc::channel();
        let mut debouncer = match new_debouncer(DEBOUNCE, None, tx) {
            Ok(d) => d,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch the plugin directory");
                return;
            }
        };
        if let Err(err) = debouncer.watch(&dir, RecursiveMode::Recursive) {
            tracing::error!(dir = %dir.display(), error = %err, "cannot watch the plugin directory");
            return;
        }
        let host = self.clone();
        let spawned = std::thread::Builder::new()
            .name("moongate-plugin-watch".into())
            .spawn(move || {
                let _debouncer = debouncer;
                while !cancel.is_cancelled() {
                    match rx.recv_timeout(Duration::from_millis(250)) {
                        Ok(Ok(events)) if events.iter().any(|e| !e.kind.is_access()) => {
                            tracing::info!("plugin directory changed, reloading plugins");
                            if let Err(err) = host.reload_blocking() {
                                tracing::error!(error = %err, "plugin reload failed");
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(errors)) => tracing::warn!(?errors, "plugin directory watch error"),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the plugin watcher");
        }
    }
}

impl PluginCatalog for PluginHost {
    fn check(&self, name: &str, conf: &Value, schema_type: SchemaType) -> Result<(), String> {
        if self.registry.load().get(name).is_none() {
            return Err(format!("unknown plugin [{name}]"));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Check {
            name: name.to_owned(),
            conf: conf.clone(),
            schema_type,
            reply,
        })
        .map_err(|e| e.to_string())?;
        answer
            .recv()
            .map_err(|_| PluginError::ControlGone.to_string())?
    }

    fn names(&self) -> Vec<String> {
        self.registry
            .load()
            .plugins
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn schema(&self, name: &str, schema_type: SchemaType) -> Option<Value> {
        let registry = self.registry.load();
        let plugin = registry.get(name)?;
        match schema_type {
            SchemaType::Route => Some(plugin.schema.clone()),
            SchemaType::Consumer => plugin.consumer_schema.clone(),
            SchemaType::Metadata => plugin.metadata_schema.clone(),
        }
    }

    fn load_error(&self, name: &str) -> Option<String> {
        self.registry.load().errors.get(name).cloned()
    }

    fn reload(&self) {
        if let Err(err) = self.reload_blocking() {
            tracing::error!(error = %err, "plugin reload failed");
        }
    }
}

fn instance_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

fn control_loop(
    rx: mpsc::Receiver<Job>,
    shared: Arc<ArcSwap<Registry>>,
    settings: PluginSettings,
    store: std::sync::Weak<Store>,
    instance_id: String,
) {
    let mut current: Option<Vm> = None;
    // What the directory held at the last reload: an unchanged directory needs no new generation
    // (and no VM rebuild on every worker).
    let mut last_scan: Option<HashMap<String, Source>> = None;
    for job in rx {
        match job {
            Job::Reload { reply } => {
                let scanned = match registry::scan(&settings.dir) {
                    Ok(sources) => sources,
                    Err(err) => {
                        tracing::error!(dir = %settings.dir.display(), error = %err, "cannot read the plugin directory");
                        let _ = reply.send(());
                        continue;
                    }
                };
                // A refused file is retried even when unchanged: what refused it (a stored conf) may have.
                let clean = shared.load().errors.is_empty();
                if clean && current.is_some() && last_scan.as_ref() == Some(&scanned) {
                    tracing::debug!("plugin directory unchanged, nothing to reload");
                    let _ = reply.send(());
                    continue;
                }
                last_scan = Some(scanned.clone());
                let previous = shared.load_full();
                let Some(snapshot) = store.upgrade().map(|s| s.snapshot()) else {
                    let _ = reply.send(());
                    continue;
                };
                let worker = WorkerInfo {
                    worker_id: 0,
                    worker_count: settings.workers,
                    instance_id: instance_id.clone(),
                };
                match build(&settings, scanned, &previous, &snapshot, worker) {
                    Ok((registry, vm)) => {
                        log_outcome(&previous, &registry);
                        shared.store(Arc::new(registry));
                        if let Some(old) = current.replace(vm) {
                            old.destroy();
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "plugin reload failed, keeping the loaded plugins")
                    }
                }
                let _ = reply.send(());
            }
            Job::Check {
                name,
                conf,
                schema_type,
                reply,
            } => {
                let answer = match &current {
                    Some(vm) => vm.check(&name, &conf, schema_type),
                    None => Err(format!("unknown plugin [{name}]")),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

fn log_outcome(previous: &Registry, next: &Registry) {
    for (name, err) in &next.errors {
        if previous.errors.get(name) != Some(err) {
            let kept = next.get(name).is_some();
            tracing::error!(plugin = %name, error = %err, kept_previous_version = kept, "plugin failed to load");
        }
    }
    let names: Vec<&str> = next.plugins.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(generation = next.generation, plugins = ?names, "plugins loaded");
}

/// Builds the next registry from the directory. A plugin whose new version fails to load, or
/// rejects a conf that is stored and in use, keeps its previous version (or stays out if it had none).
fn build(
    settings: &PluginSettings,
    scanned: HashMap<String, Source>,
    previous: &Registry,
    snapshot: &Snapshot,
    worker: WorkerInfo,
) -> Result<(Registry, Vm), PluginError> {
    let mut sources = scanned;
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let generation = previous.generation + 1;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let names = match &settings.enabled {
            Some(list) => list.clone(),
            None => Registry::plugin_names(&sources),
        };
        let vm = Vm::new(generation, &sources, settings, worker.clone())?;
        let (loaded, failed) = vm.load_plugins(&names);
        let mut reverted = false;
        for (name, err) in failed {
            // A name enabled in config with no file is reported but is not a broken file.
            if !sources.contains_key(&format!("apisix.plugins.{name}"))
                && previous.get(&name).is_none()
            {
                errors.insert(
                    name.clone(),
                    format!("failed to load plugin [{name}] err: no plugin file found"),
                );
                continue;
            }
            errors.insert(name.clone(), err);
            reverted |= revert(&mut sources, previous, &name);
        }
        for info in &loaded {
            if same_code(&sources, &previous.sources, &info.name) {
                continue;
            }
            if let Err(err) = recheck_stored(&vm, snapshot, &info.name) {
                errors.insert(info.name.clone(), err);
                reverted |= revert(&mut sources, previous, &info.name);
            }
        }
        if !reverted || rounds >= 3 {
            return Ok((
                Registry {
                    generation,
                    sources,
                    plugins: loaded,
                    errors,
                },
                vm,
            ));
        }
    }
}

fn plugin_modules<'a>(
    sources: &'a HashMap<String, Source>,
    name: &str,
) -> Vec<(&'a String, &'a Source)> {
    let top = format!("apisix.plugins.{name}");
    let sub = format!("{top}.");
    let mut modules: Vec<_> = sources
        .iter()
        .filter(|(m, _)| **m == top || m.starts_with(&sub))
        .collect();
    modules.sort_by(|a, b| a.0.cmp(b.0));
    modules
}

fn same_code(
    next: &HashMap<String, Source>,
    previous: &HashMap<String, Source>,
    name: &str,
) -> bool {
    plugin_modules(next, name) == plugin_modules(previous, name)
}

/// Puts the previous version of a plugin (and its submodules) back; without one, removes it.
/// Returns whether anything changed.
fn revert(sources: &mut HashMap<String, Source>, previous: &Registry, name: &str) -> bool {
    let old: Vec<(String, Source)> = plugin_modules(&previous.sources, name)
        .into_iter()
        .map(|(m, s)| (m.clone(), s.clone()))
        .collect();
    let current: Vec<String> = plugin_modules(sources, name)
        .into_iter()
        .map(|(m, _)| m.clone())
        .collect();
    if current.is_empty() && old.is_empty() {
        return false;
    }
    for module in current {
        sources.remove(&module);
    }
    sources.extend(old);
    true
}

/// Checks every stored conf of a plugin against its new version.
fn recheck_stored(vm: &Vm, snapshot: &Snapshot, name: &str) -> Result<(), String> {
    for kind in [
        ResourceKind::Route,
        ResourceKind::Service,
        ResourceKind::PluginConfig,
        ResourceKind::GlobalRule,
        ResourceKind::Consumer,
    ] {
        let schema_type = if kind == ResourceKind::Consumer {
            SchemaType::Consumer
        } else {
            SchemaType::Route
        };
        for item in snapshot.state.list(kind) {
            if let Some(conf) = item.value.get("plugins").and_then(|p| p.get(name)) {
                vm.check(name, conf, schema_type).map_err(|e| {
                    format!(
                        "the new version rejects the conf stored in {}: {e}",
                        item.key
                    )
                })?;
            }
        }
    }
    if let Some(item) = snapshot.state.get(ResourceKind::PluginMetadata, name) {
        vm.check(name, &item.value, SchemaType::Metadata)
            .map_err(|e| format!("the new version rejects the stored plugin metadata: {e}"))?;
    }
    Ok(())
}
