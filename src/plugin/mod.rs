//! The Lua plugin host: APISIX-convention plugin files run on one LuaJIT VM per worker thread.
//!
//! A [`Registry`] is what is loaded: the source of every plugin file and what each plugin declares
//! (priority, schemas, phases). It is built and validated on the control thread (which owns its own
//! VM for `check_schema`), then swapped in; each worker notices the new generation on its next
//! request and builds a fresh VM for it, while requests already running finish on the old one.
//!
//! Phase order for one request (APISIX's):
//!
//! ```text
//! match route -> rewrite -> access -> pick node -> before_proxy -> proxy
//!             -> header_filter -> body_filter (each chunk) -> log (after the response)
//! ```
//!
//! Global-rule plugins run before route plugins in every phase; within each group plugins run by
//! priority, highest first (`_meta.priority` overrides).

mod host;
mod lua_modules;
pub(crate) mod native;
mod registry;
mod request;
mod time_limit;
mod vm;

pub(crate) use host::{PluginHost, set_worker_id};
pub(crate) use registry::PluginSettings;
pub(crate) use request::{Arrival, ReqBody, RequestState, enter, epoch_now, scoped};
pub(crate) use vm::{Chain, Vm};

/// A point in a request's life where plugins run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// After the route matched, before authentication. May rewrite the request; `return code, body`
    /// ends the request.
    Rewrite,
    /// After every `rewrite` (authentication, authorization, serverless calls). `return code, body`
    /// ends the request.
    Access,
    /// After a node was picked, right before the request goes upstream. `return code, body` ends it.
    BeforeProxy,
    /// The response head is known (from the upstream or an early exit). May change status and headers
    /// with `ngx.status` / `core.response.set_header`; the return value is ignored.
    HeaderFilter,
    /// Once per body chunk: `ngx.arg[1]` is the chunk (assign to change it), `ngx.arg[2]` is true on the
    /// last call. The return value is ignored.
    BodyFilter,
    /// After the response was sent; never delays it. The return value is ignored.
    Log,
}

impl Phase {
    /// APISIX's name of the phase, which is also the plugin module's function name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::BeforeProxy => "before_proxy",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
        }
    }

    /// The phase's 1-based position in [`Phase::ALL`], which is also the Lua side's phase list.
    pub(crate) fn index(self) -> u8 {
        self as u8 + 1
    }

    /// Every phase, in order.
    pub(crate) const ALL: [Phase; 6] = [
        Phase::Rewrite,
        Phase::Access,
        Phase::BeforeProxy,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Log,
    ];
}

/// Why plugin code could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    /// Lua raised (the message names the plugin and carries a traceback).
    #[error("{0}")]
    Lua(String),
    /// A plugin phase ran past its time limit.
    #[error("plugin exceeded the time limit of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    /// The VM could not be built for the current registry.
    #[error("cannot build the plugin VM: {0}")]
    Vm(String),
    /// The control thread is gone.
    #[error("the plugin control thread stopped")]
    ControlGone,
}

impl crate::error::Classify for PluginError {
    /// Plugin code is the gateway's own configuration: its failures are internal (500).
    fn source(&self) -> crate::error::ErrorSource {
        crate::error::ErrorSource::Internal
    }

    fn is_timeout(&self) -> bool {
        false
    }
}

impl From<mlua::Error> for PluginError {
    fn from(err: mlua::Error) -> Self {
        PluginError::Lua(lua_message(&err))
    }
}

/// The innermost readable message of a Lua error (callback errors wrap their cause).
pub(crate) fn lua_message(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", lua_message(cause))
        }
        mlua::Error::RuntimeError(msg) => msg.clone(),
        mlua::Error::MemoryError(msg) => format!("memory limit reached: {msg}"),
        other => other.to_string(),
    }
}
