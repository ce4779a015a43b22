//! `require("moongate.native")`: the small native surface the Lua runtime in `lua/` is written on.
//! One file per area, each with a `register(lua, native)`.

mod aws;
mod crypto;
mod ctx;
mod http;
mod json;
mod log;
mod regex;
mod schema;
mod shdict;
#[cfg(test)]
mod tests;
mod time;
mod uri;

use mlua::{Lua, LuaSerdeExt, Table, Value};

pub(crate) use ctx::WorkerInfo;

use super::registry::PluginSettings;

/// Creates the native table, registers every area on it and makes it `require`-able.
pub(crate) fn install(
    lua: &Lua,
    worker: WorkerInfo,
    settings: &PluginSettings,
) -> mlua::Result<Table> {
    let native = lua.create_table()?;
    json::register(lua, &native)?;
    aws::register(lua, &native)?;
    crypto::register(lua, &native)?;
    uri::register(lua, &native)?;
    regex::register(lua, &native)?;
    time::register(lua, &native)?;
    shdict::register(lua, &native)?;
    schema::register(lua, &native)?;
    log::register(lua, &native)?;
    ctx::register(lua, &native, worker, settings)?;
    http::register(lua, &native)?;
    native.set(
        "schema_def_json",
        lua.create_function(|_, ()| Ok(crate::schema::schema_def().to_string()))?,
    )?;
    // `decrypt(text)`: the plaintext of a field stored encrypted, or nil (see crate::keyring).
    let keyring = settings.keyring.clone();
    native.set(
        "decrypt",
        lua.create_function(move |_, text: String| {
            Ok(keyring.as_ref().and_then(|k| k.decrypt(&text)))
        })?,
    )?;
    let attrs = lua.to_value(&settings.attrs)?;
    native.set(
        "plugin_attr",
        lua.create_function(move |_, name: String| match &attrs {
            Value::Table(t) => t.get::<Value>(name),
            _ => Ok(Value::Nil),
        })?,
    )?;
    install_debug(lua)?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("moongate.native", native.clone())?;
    Ok(native)
}

/// The safe part of the `debug` library plugins use (`debug.traceback`); the full library stays out
/// of reach of plugin code.
fn install_debug(lua: &Lua) -> mlua::Result<()> {
    let debug = lua.create_table()?;
    debug.set(
        "traceback",
        lua.create_function(|lua, (msg, level): (Value, Option<usize>)| match msg {
            Value::String(s) => Ok(Value::String(
                lua.traceback(Some(&s.to_string_lossy()), level.unwrap_or(1))?,
            )),
            Value::Nil => Ok(Value::String(lua.traceback(None, level.unwrap_or(1))?)),
            other => Ok(other),
        })?,
    )?;
    lua.globals().set("debug", debug.clone())?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("debug", debug)
}
