//! `ngx.log` and `core.log` output through `tracing`.
//!
//! Natives:
//! * `log(level, msg)`: one event with target `"plugin"` and the message in the `msg` field. ngx levels map
//!   to tracing levels: STDERR (0), EMERG (1), ALERT (2), CRIT (3) and ERR (4) to `ERROR`, WARN (5) to
//!   `WARN`, NOTICE (6) and INFO (7) to `INFO`, DEBUG (8) to `DEBUG`. Non-UTF-8 bytes are replaced.
//! * `log_enabled(level) -> bool`: whether such an event would be recorded, so the Lua side can skip
//!   building messages nobody reads. It asks the current subscriber, so filter reloads apply at once.

use mlua::{Lua, LuaString, Table};
use tracing::Level;

/// Maps an ngx log level (0..=8) to a tracing level. Out-of-range levels count as `ERROR` below 0 and
/// `DEBUG` above 8.
pub(crate) fn ngx_level(level: i64) -> Level {
    match level {
        i64::MIN..=4 => Level::ERROR,
        5 => Level::WARN,
        6 | 7 => Level::INFO,
        _ => Level::DEBUG,
    }
}

/// Whether an event at `level` with target `plugin` would be recorded.
pub(crate) fn enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: "plugin", Level::ERROR),
        Level::WARN => tracing::enabled!(target: "plugin", Level::WARN),
        Level::INFO => tracing::enabled!(target: "plugin", Level::INFO),
        Level::DEBUG => tracing::enabled!(target: "plugin", Level::DEBUG),
        Level::TRACE => tracing::enabled!(target: "plugin", Level::TRACE),
    }
}

/// Emits one plugin log event.
pub(crate) fn emit(level: Level, msg: &str) {
    match level {
        Level::ERROR => tracing::error!(target: "plugin", msg),
        Level::WARN => tracing::warn!(target: "plugin", msg),
        Level::INFO => tracing::info!(target: "plugin", msg),
        Level::DEBUG => tracing::debug!(target: "plugin", msg),
        Level::TRACE => tracing::trace!(target: "plugin", msg),
    }
}

/// Registers `log` and `log_enabled`.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "log",
        lua.create_function(|_, (level, msg): (i64, LuaString)| {
            let level = ngx_level(level);
            if enabled(level) {
                emit(level, &msg.to_string_lossy());
            }
            Ok(())
        })?,
    )?;
    native.set(
        "log_enabled",
        lua.create_function(|_, level: i64| Ok(enabled(ngx_level(level))))?,
    )?;
    Ok(())
}
