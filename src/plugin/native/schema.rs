//! `core.schema.check` on the crate's validator ([`crate::schema::Schema`]).
//!
//! Native: `schema_check(schema, conf) -> true | false, err`. The schema and the conf are converted to
//! JSON, the conf is validated (which fills defaults), and every default the validator added is written
//! back into the **same** Lua conf table, in place: plugins read `conf.timeout` after the check, and
//! caches keyed on conf tables must keep seeing the same objects.
//!
//! Conversion: an empty table is `{}` (the validator also accepts it as an empty array), a table with the
//! array marker metatable or keys exactly `1..n` is an array, any other table an object with string keys
//! (number keys formatted). `null` (the lightuserdata) is JSON null. Functions, userdata and threads are
//! left out (a required property holding a function therefore fails `required`). Non-UTF-8 strings are
//! converted lossily.
//!
//! Compiled schemas are cached per VM keyed by the schema table's address. The cache holds the table
//! itself, so the address cannot be reused by another table while the entry exists; it is cleared when it
//! reaches [`MAX_CACHED`] schemas (APISIX keeps an LRU of 1000). A schema table mutated after its first
//! check keeps its first compilation, as in APISIX.
//!
//! Not done: APISIX skips validation of `$secret://` and `$env://` string values; here they are
//! validated like any other string.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use mlua::{Lua, Table, Value};
use serde_json::{Map, Number, Value as Json};

use crate::schema::Schema;

/// Compiled schemas kept per VM before the cache is reset.
pub(crate) const MAX_CACHED: usize = 1000;
/// Deepest table nesting converted.
const MAX_DEPTH: usize = 128;

/// Why a Lua value could not become JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
    /// Nesting deeper than [`MAX_DEPTH`] (or a cycle).
    #[error("table nests too deeply (or is cyclic)")]
    TooDeep,
    /// A Lua error while reading a table.
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

/// Converts a Lua value to JSON for validation. `None` for values JSON cannot hold.
pub(crate) fn lua_to_json(
    v: &Value,
    array_mt: *const c_void,
) -> Result<Option<Json>, ConvertError> {
    to_json(v, array_mt, 0)
}

fn to_json(v: &Value, array_mt: *const c_void, depth: usize) -> Result<Option<Json>, ConvertError> {
    Ok(Some(match v {
        Value::Nil => Json::Null,
        Value::LightUserData(p) if p.0.is_null() => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number(Number::from(*i)),
        Value::Number(n) => Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) => table_to_json(t, array_mt, depth + 1)?,
        _ => return Ok(None),
    }))
}

fn table_to_json(t: &Table, array_mt: *const c_void, depth: usize) -> Result<Json, ConvertError> {
    if depth > MAX_DEPTH {
        return Err(ConvertError::TooDeep);
    }
    if t.metatable().is_some_and(|mt| mt.to_pointer() == array_mt) {
        let len = t.raw_len();
        let mut items = Vec::with_capacity(len);
        for i in 1..=len {
            items.push(to_json(&t.raw_get::<Value>(i)?, array_mt, depth)?.unwrap_or(Json::Null));
        }
        return Ok(Json::Array(items));
    }
    let mut entries: Vec<(Value, Value)> = Vec::new();
    let mut max_index = 0usize;
    let mut sequence = true;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        if sequence {
            match &k {
                Value::Integer(i) if *i >= 1 => max_index = max_index.max(*i as usize),
                _ => sequence = false,
            }
        }
        entries.push((k, v));
    }
    if sequence && !entries.is_empty() && max_index == entries.len() {
        let mut items = vec![Json::Null; max_index];
        for (k, v) in &entries {
            if let Value::Integer(i) = k
                && let Some(slot) = items.get_mut((*i as usize).wrapping_sub(1))
            {
                *slot = to_json(v, array_mt, depth)?.unwrap_or(Json::Null);
            }
        }
        return Ok(Json::Array(items));
    }
    let mut map = Map::with_capacity(entries.len());
    for (k, v) in &entries {
        let key = match k {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => super::json::format_g14(*n),
            _ => continue,
        };
        if let Some(j) = to_json(v, array_mt, depth)? {
            map.insert(key, j);
        }
    }
    Ok(Json::Object(map))
}

/// Converts JSON (a default value) to a Lua value; arrays get the array marker metatable.
pub(crate) fn json_to_lua(lua: &Lua, v: &Json, array_mt: &Table) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_seti(i + 1, json_to_lua(lua, item, array_mt)?)?;
            }
            t.set_metatable(Some(array_mt.clone()))?;
            Value::Table(t)
        }
        Json::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), json_to_lua(lua, item, array_mt)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Writes into `t` every key of `filled` that `t` lacks (the defaults the validator added).
fn write_back(
    lua: &Lua,
    t: &Table,
    filled: &Json,
    array_mt: &Table,
    depth: usize,
) -> mlua::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match filled {
        Json::Object(map) => {
            for (k, v) in map {
                match t.raw_get::<Value>(k.as_str())? {
                    Value::Nil => {
                        // A number key was stringified on the way out; it is not missing.
                        if let Ok(i) = k.parse::<i64>()
                            && !t.raw_get::<Value>(i)?.is_nil()
                        {
                            continue;
                        }
                        t.raw_set(k.as_str(), json_to_lua(lua, v, array_mt)?)?;
                    }
                    Value::Table(sub) => write_back(lua, &sub, v, array_mt, depth + 1)?,
                    _ => {}
                }
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if let Value::Table(sub) = t.raw_get::<Value>(i + 1)? {
                    write_back(lua, &sub, v, array_mt, depth + 1)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Default)]
struct SchemaCache {
    /// Keyed by the schema table's address; the table is held so the address stays its own.
    map: HashMap<usize, (Table, Rc<Schema>)>,
}

impl SchemaCache {
    fn get(&mut self, schema: &Table, array_mt: *const c_void) -> Result<Rc<Schema>, String> {
        let key = schema.to_pointer() as usize;
        if let Some((_, compiled)) = self.map.get(&key) {
            return Ok(Rc::clone(compiled));
        }
        let json =
            table_to_json(schema, array_mt, 1).map_err(|e| format!("invalid schema: {e}"))?;
        let compiled = Rc::new(Schema::compile(&json).map_err(|e| e.to_string())?);
        if self.map.len() >= MAX_CACHED {
            self.map.clear();
        }
        self.map.insert(key, (schema.clone(), Rc::clone(&compiled)));
        Ok(compiled)
    }
}

/// Validates `conf` against `schema`, filling defaults into `conf` in place.
fn check(
    lua: &Lua,
    cache: &RefCell<SchemaCache>,
    array_mt: &Table,
    schema: &Table,
    conf: &Value,
) -> mlua::Result<Result<(), String>> {
    let mt_ptr = array_mt.to_pointer();
    let compiled = match cache.borrow_mut().get(schema, mt_ptr) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut json = match lua_to_json(conf, mt_ptr) {
        Ok(j) => j.unwrap_or(Json::Null),
        Err(ConvertError::Lua(e)) => return Err(e),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let result = compiled.validate(&mut json);
    // api7 fills defaults even when a later check fails, so write back either way.
    if let Value::Table(t) = conf {
        write_back(lua, t, &json, array_mt, 0)?;
    }
    Ok(result)
}

/// Registers `schema_check`.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    let cache = Rc::new(RefCell::new(SchemaCache::default()));
    let array_mt = super::json::array_metatable(lua)?;
    native.set(
        "schema_check",
        lua.create_function(move |lua, (schema, conf): (Value, Value)| {
            let Value::Table(schema) = schema else {
                return Ok((false, Some("invalid schema: expected a table".to_owned())));
            };
            match check(lua, &cache, &array_mt, &schema, &conf)? {
                Ok(()) => Ok((true, None)),
                Err(e) => Ok((false, Some(e))),
            }
        })?,
    )?;
    Ok(())
}
