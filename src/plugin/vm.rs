//! One LuaJIT state: the runtime modules, the natives, the plugins of one registry generation, and
//! the compiled plugin chains of the routes it served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, Value, VmState};
use serde_json::Value as Json;

use super::native::{self, WorkerInfo};
use super::registry::{PluginInfo, PluginSettings, Source};
use super::time_limit;
use super::{Phase, PluginError, lua_message};
use crate::store::{RouteEntry, Snapshot};
use crate::validate::SchemaType;

/// Instructions between two checks of the time and memory limits in running Lua.
const HOOK_EVERY: u32 = 10_000;
/// The error a deadline check raises, recognised to report a timeout.
const TIME_LIMIT_MARK: &str = "moongate: plugin time limit exceeded";
/// The error the memory check raises.
const MEMORY_LIMIT_MARK: &str = "moongate: plugin memory limit exceeded";
/// How many finished requests' ctx tables a VM keeps for the next requests.
const CTX_POOL_MAX: usize = 256;

/// The plugins of one route (global-rule plugins first), compiled into a Lua array once per config
/// version: conf tables with schema defaults filled, sorted by priority. Each phase some plugin has
/// gets a runner, a Lua function that runs that phase of the chain on a request's ctx.
pub(crate) struct Chain {
    table: Table,
    runners: [Option<Function>; Phase::ALL.len()],
    /// The config version it was built for.
    version: (u64, u64),
}

impl Chain {
    /// Whether any plugin of the chain has this phase.
    pub(crate) fn has(&self, phase: Phase) -> bool {
        self.runner(phase).is_some()
    }

    /// Whether any plugin of the chain runs before the request goes upstream.
    pub(crate) fn has_request_side(&self) -> bool {
        self.has(Phase::Rewrite) || self.has(Phase::Access) || self.has(Phase::BeforeProxy)
    }

    /// The Lua function that runs this phase of the chain, if any plugin has the phase.
    pub(crate) fn runner(&self, phase: Phase) -> Option<&Function> {
        self.runners[phase as usize].as_ref()
    }
}

/// A LuaJIT state with the runtime and one generation of plugins loaded.
pub(crate) struct Vm {
    lua: Lua,
    pub(crate) generation: u64,
    build_chain: Function,
    merge_consumer: Function,
    new_ctx: Function,
    check: Function,
    destroy: Function,
    /// Per route id; looked up on every request, so with a fast hasher.
    chains: RefCell<rustc_hash::FxHashMap<String, Rc<Chain>>>,
    /// How long a stretch of Lua may run without yielding (see [`time_limit`]).
    time_limit: Duration,
    /// ctx tables of finished requests, handed to the next ones: a request that only runs plugin
    /// code then leaves no garbage for the Lua GC.
    ctx_pool: RefCell<Vec<Table>>,
}

impl Vm {
    /// Builds a VM whose `require` finds plugin modules in `sources`.
    pub(crate) fn new(
        generation: u64,
        sources: &HashMap<String, Source>,
        settings: &PluginSettings,
        worker: WorkerInfo,
    ) -> Result<Vm, PluginError> {
        let vm_err = |e: mlua::Error| PluginError::Vm(lua_message(&e));
        let lua =
            Lua::new_with(StdLib::ALL_SAFE | StdLib::JIT, LuaOptions::new()).map_err(vm_err)?;
        let native = native::install(&lua, worker, settings).map_err(vm_err)?;
        preload_runtime(&lua).map_err(vm_err)?;
        install_plugin_searcher(&lua, sources).map_err(vm_err)?;
        let ngx: Table = lua
            .load("return require('moongate.ngx')")
            .set_name("@moongate/bootstrap")
            .call(())
            .map_err(vm_err)?;
        ngx.get::<Function>("install")
            .and_then(|f| f.call::<()>(native.clone()))
            .map_err(vm_err)?;
        let host: Table = lua
            .load("return require('moongate.host')")
            .call(())
            .map_err(vm_err)?;
        let meta = lua
            .to_value(&crate::schema::plugin_injected_schema())
            .map_err(vm_err)?;
        host.get::<Function>("init")
            .and_then(|f| f.call::<()>(meta))
            .map_err(vm_err)?;
        // The memory limit is checked here rather than set as mlua's allocator limit: with an
        // allocator limit, mlua runs every string or table it creates from Rust as a protected call
        // (a new C closure and a pcall each), which was a fifth of the aws-lambda path's CPU.
        let memory_limit = settings.memory_limit;
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |lua, _| {
                if time_limit::overdue() {
                    return Err(mlua::Error::runtime(TIME_LIMIT_MARK));
                }
                if memory_limit > 0 && lua.used_memory() > memory_limit {
                    return Err(mlua::Error::runtime(MEMORY_LIMIT_MARK));
                }
                Ok(VmState::Continue)
            },
        )
        .map_err(vm_err)?;
        let get = |name: &str| host.get::<Function>(name).map_err(vm_err);
        Ok(Vm {
            build_chain: get("build_chain")?,
            merge_consumer: get("merge_consumer")?,
            new_ctx: get("new_ctx")?,
            check: get("check")?,
            destroy: get("destroy")?,
            lua,
            generation,
            chains: RefCell::new(rustc_hash::FxHashMap::default()),
            time_limit: settings.phase_time_limit,
            ctx_pool: RefCell::new(Vec::new()),
        })
    }

    /// Loads (requires, validates, `init()`s) each plugin; returns what loaded and what failed.
    pub(crate) fn load_plugins(
        &self,
        names: &[String],
    ) -> (Vec<PluginInfo>, Vec<(String, String)>) {
        let _stretch = self.stretch();
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        let load = match self
            .lua
            .load("return require('moongate.host').load")
            .call::<Function>(())
        {
            Ok(f) => f,
            Err(err) => {
                let msg = lua_message(&err);
                return (
                    Vec::new(),
                    names.iter().map(|n| (n.clone(), msg.clone())).collect(),
                );
            }
        };
        for name in names {
            match load.call::<(Option<Table>, Option<String>)>(name.as_str()) {
                Ok((Some(info), _)) => match plugin_info(name, &info) {
                    Ok(info) => loaded.push(info),
                    Err(err) => failed.push((name.clone(), lua_message(&err))),
                },
                Ok((None, err)) => {
                    failed.push((name.clone(), err.unwrap_or_else(|| "failed to load".into())))
                }
                Err(err) => failed.push((name.clone(), lua_message(&err))),
            }
        }
        loaded.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        (loaded, failed)
    }

    /// Runs a plugin's `check_schema` (or its schema) on a conf, as the Admin API does on writes.
    pub(crate) fn check(
        &self,
        name: &str,
        conf: &Json,
        schema_type: SchemaType,
    ) -> Result<(), String> {
        let kind = match schema_type {
            SchemaType::Route => 0,
            SchemaType::Consumer => 1,
            SchemaType::Metadata => 2,
        };
        let conf = serde_json::to_string(conf).map_err(|e| e.to_string())?;
        let _stretch = self.stretch();
        match self
            .check
            .call::<(bool, Option<String>)>((name, conf, kind))
        {
            Ok((true, _)) => Ok(()),
            Ok((false, err)) => Err(err
                .unwrap_or_else(|| format!("failed to check the configuration of plugin {name}"))),
            Err(err) => Err(format!(
                "failed to check the configuration of plugin {name} err: {}",
                lua_message(&err)
            )),
        }
    }

    /// The compiled chain of a route, built on first use for each config version.
    pub(crate) fn chain(
        &self,
        snapshot: &Snapshot,
        route: &RouteEntry,
    ) -> Result<Rc<Chain>, PluginError> {
        let version = (route.plugins_version, snapshot.global_version);
        if let Some(chain) = self.chains.borrow().get(&route.id)
            && chain.version == version
        {
            return Ok(chain.clone());
        }
        let to_list = |plugins: &[(String, Arc<str>)]| -> mlua::Result<Table> {
            let list = self.lua.create_table_with_capacity(plugins.len(), 0)?;
            for (name, conf) in plugins {
                let entry = self.lua.create_table_with_capacity(0, 2)?;
                entry.raw_set("name", name.as_str())?;
                entry.raw_set("conf", &**conf)?;
                list.raw_push(entry)?;
            }
            Ok(list)
        };
        let globals = to_list(&snapshot.global_plugins)?;
        let own = to_list(&route.plugins)?;
        let info = self.lua.create_table()?;
        info.raw_set("id", route.id.as_str())?;
        info.raw_set("conf_version", route.plugins_version)?;
        if let Some(service) = &route.service_id {
            info.raw_set("service_id", service.as_str())?;
        }
        info.raw_set("value", route.value.to_string())?;
        let (table, runners): (Table, Table) = self.build_chain.call((globals, own, info))?;
        let chain = Rc::new(Chain {
            table,
            runners: runners_by_phase(&runners)?,
            version,
        });
        let mut chains = self.chains.borrow_mut();
        // Routes that changed leave stale chains behind; drop them all when the map grows large.
        if chains.len() > 4 * snapshot.router.len().max(64) {
            chains.clear();
        }
        chains.insert(route.id.clone(), chain.clone());
        Ok(chain)
    }

    /// When a plugin authenticated a consumer, the chain with the consumer's plugins merged in and
    /// the newly added entries (whose `rewrite` runs next); `None` when the consumer adds nothing.
    pub(crate) fn merge_consumer(
        &self,
        chain: &Chain,
        ctx: &Table,
    ) -> Result<Option<(Rc<Chain>, Chain)>, PluginError> {
        let _stretch = self.stretch();
        let (merged, runners, added_rewrite): (Option<Table>, Option<Table>, Option<Function>) =
            self.merge_consumer.call((&chain.table, ctx))?;
        let (Some(merged), Some(runners)) = (merged, runners) else {
            return Ok(None);
        };
        let mut added = Chain {
            table: merged.clone(),
            runners: Default::default(),
            version: chain.version,
        };
        added.runners[Phase::Rewrite as usize] = added_rewrite;
        let merged = Rc::new(Chain {
            table: merged,
            runners: runners_by_phase(&runners)?,
            version: chain.version,
        });
        Ok(Some((merged, added)))
    }

    /// Runs a chain's runner of one request-side phase (rewrite, access, before_proxy), in a
    /// coroutine: as in OpenResty, these may yield (`ngx.sleep`, `resty.http`). The request's `ctx`
    /// (APISIX's `api_ctx`) is set up by the first call, and returned to the VM by
    /// [`Vm::release_ctx`] when the request is done. `Ok(true)` means a plugin ended the request.
    pub(crate) async fn run_phase(
        &self,
        runner: &Function,
        ctx: &mut Option<Table>,
    ) -> Result<bool, PluginError> {
        let (ctx, fresh) = self.request_ctx(ctx)?;
        let call = runner.call_async::<bool>((ctx, fresh));
        let result = time_limit::limited(self.time_limit, call).await;
        self.map_result(result)
    }

    /// Runs a chain's runner of one response-side phase (header_filter, log) as a plain call: these
    /// never yield.
    pub(crate) fn run_phase_now(
        &self,
        runner: &Function,
        ctx: &mut Option<Table>,
    ) -> Result<(), PluginError> {
        let (ctx, fresh) = self.request_ctx(ctx)?;
        let _stretch = self.stretch();
        let result = runner.call::<bool>((ctx, fresh));
        self.map_result(result).map(|_| ())
    }

    /// Runs a chain's `body_filter` runner on one chunk; returns the chunk to send.
    pub(crate) fn run_body_filter(
        &self,
        runner: &Function,
        ctx: &mut Option<Table>,
        chunk: Bytes,
        eof: bool,
    ) -> Result<Bytes, PluginError> {
        let (ctx, fresh) = self.request_ctx(ctx)?;
        let chunk = self.lua.create_string(&chunk)?;
        let _stretch = self.stretch();
        let result = runner.call::<Option<mlua::LuaString>>((ctx, fresh, chunk, eof));
        let out = self.map_result(result)?;
        Ok(out.map_or_else(Bytes::new, |s| Bytes::copy_from_slice(&s.as_bytes())))
    }

    /// The request's ctx table; on its first phase call one from the pool (or a new one from Lua,
    /// with the ctx metatable), with `true` for Lua to set it up.
    fn request_ctx<'a>(
        &self,
        ctx: &'a mut Option<Table>,
    ) -> Result<(&'a Table, bool), PluginError> {
        match ctx {
            Some(table) => Ok((table, false)),
            None => {
                let pooled = self.ctx_pool.borrow_mut().pop();
                let table = match pooled {
                    Some(table) => table,
                    None => self.new_ctx.call(())?,
                };
                Ok((ctx.insert(table), true))
            }
        }
    }

    /// Takes back the ctx of a finished request for a later one.
    pub(crate) fn release_ctx(&self, ctx: Table) {
        let mut pool = self.ctx_pool.borrow_mut();
        if pool.len() < CTX_POOL_MAX {
            pool.push(ctx);
        }
    }

    fn map_result<T>(&self, result: mlua::Result<T>) -> Result<T, PluginError> {
        match result {
            Ok(v) => Ok(v),
            Err(err) => {
                let msg = lua_message(&err);
                if matches!(err, mlua::Error::MemoryError(_))
                    || msg.contains("not enough memory")
                    || msg.contains(MEMORY_LIMIT_MARK)
                {
                    // The VM refuses work until the garbage is collected (see the LuaJIT notes).
                    let _ = self.lua.gc_collect();
                }
                if msg.contains(TIME_LIMIT_MARK) {
                    return Err(PluginError::Timeout {
                        limit_ms: u64::try_from(self.time_limit.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                Err(PluginError::Lua(msg))
            }
        }
    }

    /// A stretch of Lua on this VM under the time limit, until the returned value is dropped.
    fn stretch(&self) -> time_limit::Stretch {
        time_limit::start(self.time_limit)
    }

    /// Calls every plugin's `destroy()` (errors are logged, never raised).
    pub(crate) fn destroy(&self) {
        let _stretch = self.stretch();
        if let Err(err) = self.destroy.call::<()>(()) {
            tracing::warn!(error = %lua_message(&err), "plugin destroy failed");
        }
    }
}

/// A chain's runners from the table Lua returns, keyed by each phase's position in [`Phase::ALL`].
fn runners_by_phase(runners: &Table) -> mlua::Result<[Option<Function>; Phase::ALL.len()]> {
    let mut by_phase: [Option<Function>; Phase::ALL.len()] = Default::default();
    for phase in Phase::ALL {
        by_phase[phase as usize] = runners.raw_get(phase.index())?;
    }
    Ok(by_phase)
}

fn plugin_info(name: &str, info: &Table) -> mlua::Result<PluginInfo> {
    let json = |key: &str| -> mlua::Result<Option<Json>> {
        match info.get::<Option<String>>(key)? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(mlua::Error::external),
            None => Ok(None),
        }
    };
    Ok(PluginInfo {
        name: name.to_owned(),
        priority: info.get("priority")?,
        schema: json("schema")?.unwrap_or(Json::Null),
        consumer_schema: json("consumer_schema")?,
        metadata_schema: json("metadata_schema")?,
    })
}

/// Registers every embedded `lua/` module in `package.preload`, named after its file.
fn preload_runtime(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    for (module, path, source) in super::lua_modules::MODULES {
        let chunk = lua
            .load(*source)
            .set_name(format!("@lua/{path}"))
            .into_function()?;
        preload.set(*module, chunk)?;
    }
    Ok(())
}

/// Makes `require("apisix.plugins.x")` load from the registry's sources, with the JIT off for plugin
/// code so the instruction-count hook can stop a runaway loop.
fn install_plugin_searcher(lua: &Lua, sources: &HashMap<String, Source>) -> mlua::Result<()> {
    let sources = sources.clone();
    let searcher = lua.create_function(move |lua, name: String| {
        let Some(source) = sources.get(&name) else {
            return Ok(Value::String(
                lua.create_string(format!("\n\tno plugin file for '{name}'"))?,
            ));
        };
        let chunk = lua
            .load(&*source.text)
            .set_name(source.chunk_name.clone())
            .into_function()?;
        let jit: Table = lua.globals().get("jit")?;
        jit.get::<Function>("off")?
            .call::<()>((chunk.clone(), true))?;
        Ok(Value::Function(chunk))
    })?;
    let loaders: Table = lua.globals().get::<Table>("package")?.get("loaders")?;
    // Before the filesystem searchers: plugin modules come only from the plugin directory.
    loaders.raw_insert(2, searcher)?;
    Ok(())
}
