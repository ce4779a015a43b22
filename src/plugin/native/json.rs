//! JSON with lua-cjson semantics, the backend of `cjson`, `cjson.safe` and `core.json`.
//!
//! Natives: `json_encode(value [, pretty [, escape_slash]])`, `json_stably_encode(value)` (keys sorted)
//! and `json_decode(str)`, each returning the result or `nil, err` (the Lua side raises for plain
//! `cjson`). `escape_slash` is cjson's `encode_escape_forward_slash`: cjson defaults to `true`, APISIX's
//! `core.json` turns it off, and so does this native unless asked.
//! Also `native.null` (the null lightuserdata, which is `cjson.null`/`ngx.null`) and `native.array_mt`
//! (the array marker, which is `cjson.array_mt`/`cjson.empty_array_mt`/`core.json.array_mt`: a plain
//! empty table, so `getmetatable`/`setmetatable` work on marked tables as in cjson). Tables carrying
//! mlua's own array metatable (from `LuaSerdeExt::to_value`) also encode as arrays.
//!
//! What follows cjson (openresty's fork, default settings):
//! * An empty table encodes as `{}` unless its metatable is `array_mt`, which always encodes as an array
//!   of `#t` items. Decoded arrays get `array_mt`, so they re-encode as arrays even when empty.
//! * A table whose keys are all positive integers is an array (holes become `null`); one that is too
//!   sparse (`max > 2 * count` and `max > 10`) fails with "excessively sparse array". Any other key
//!   makes an object; number keys are written as strings.
//! * Control bytes are escaped as `\uXXXX` (or `\n`, ...), `/` as `\/` only with `escape_slash`; other
//!   bytes (including invalid UTF-8) pass through.
//! * Numbers use `%.14g`, except integral values (within the i64 range), which are written in full:
//!   cjson switches to exponent notation from 1e14 on, which loses digits of large ids.
//! * Nesting deeper than 1000 fails. Decoding nests at most 128 deep (serde_json's limit).
//! * Decoding rejects invalid UTF-8 inside strings (cjson passes it through).

use std::ffi::c_void;
use std::io::Write as _;

use mlua::{Lua, LuaSerdeExt, LuaString, Table, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// cjson's `encode_max_depth`.
const MAX_ENCODE_DEPTH: usize = 1000;

/// Why a value cannot be encoded. Messages are cjson's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JsonError {
    /// A function, userdata, thread or non-null lightuserdata.
    #[error("Cannot serialise {0}: type not supported")]
    Unsupported(&'static str),
    /// NaN or an infinity.
    #[error("Cannot serialise number: must not be NaN or Infinity")]
    InvalidNumber,
    /// An integer-keyed table with too many holes.
    #[error("Cannot serialise table: excessively sparse array")]
    SparseArray,
    /// A key that is neither a string nor a number.
    #[error("Cannot serialise {0}: table key must be a number or string")]
    BadKey(&'static str),
    /// Too deeply nested (or cyclic).
    #[error("Cannot serialise, excessive nesting ({0})")]
    Depth(usize),
    /// A Lua error while reading a table.
    #[error("{0}")]
    Lua(String),
    /// Invalid JSON text.
    #[error("{0}")]
    Syntax(String),
}

impl From<mlua::Error> for JsonError {
    fn from(err: mlua::Error) -> Self {
        JsonError::Lua(err.to_string())
    }
}

/// Encoding options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EncodeOptions {
    /// Sort object keys bytewise (`core.json.stably_encode`).
    pub(crate) sort_keys: bool,
    /// Indent with two spaces per level.
    pub(crate) pretty: bool,
    /// Write `/` as `\/` (cjson's default).
    pub(crate) escape_slash: bool,
}

/// Registry name of the array marker metatable.
const ARRAY_MT_KEY: &str = "moongate.json.array_mt";

/// The per-VM array marker metatable (`native.array_mt`), created on first use.
pub(crate) fn array_metatable(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(Value::Table(t)) = lua.named_registry_value::<Value>(ARRAY_MT_KEY) {
        return Ok(t);
    }
    let t = lua.create_table()?;
    lua.set_named_registry_value(ARRAY_MT_KEY, &t)?;
    Ok(t)
}

/// The metatables that mark a Lua table as a JSON array: `native.array_mt` and mlua's own.
#[derive(Debug, Clone)]
pub(crate) struct ArrayMarkers {
    own: Table,
    serde: Table,
}

impl ArrayMarkers {
    /// The markers of this VM.
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        Ok(Self {
            own: array_metatable(lua)?,
            serde: lua.array_metatable(),
        })
    }
}

/// Encodes a Lua value as JSON bytes.
pub(crate) fn encode(
    value: &Value,
    markers: &ArrayMarkers,
    opts: EncodeOptions,
) -> Result<Vec<u8>, JsonError> {
    let mut enc = Encoder {
        out: Vec::with_capacity(64),
        array_mt: markers.own.to_pointer(),
        serde_array_mt: markers.serde.to_pointer(),
        opts,
    };
    enc.value(value, 0)?;
    Ok(enc.out)
}

/// Decodes JSON bytes into a Lua value: null becomes [`Value::NULL`], arrays get `array_mt`.
pub(crate) fn decode(lua: &Lua, input: &[u8], array_mt: &Table) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let value = LuaSeed { lua, array_mt }
        .deserialize(&mut de)
        .map_err(|e| JsonError::Syntax(e.to_string()))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Registers `json_encode`, `json_stably_encode`, `json_decode`, `null` and `array_mt`.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    let markers = ArrayMarkers::new(lua)?;
    let array_mt = markers.own.clone();
    native.set("null", Value::NULL)?;
    native.set("array_mt", array_mt.clone())?;

    let mt = markers.clone();
    native.set(
        "json_encode",
        lua.create_function(
            move |lua, (value, pretty, escape_slash): (Value, Option<bool>, Option<bool>)| {
                let opts = EncodeOptions {
                    sort_keys: false,
                    pretty: pretty.unwrap_or(false),
                    escape_slash: escape_slash.unwrap_or(false),
                };
                encode_result(lua, encode(&value, &mt, opts))
            },
        )?,
    )?;

    let mt = markers;
    native.set(
        "json_stably_encode",
        lua.create_function(move |lua, value: Value| {
            let opts = EncodeOptions {
                sort_keys: true,
                pretty: false,
                escape_slash: false,
            };
            encode_result(lua, encode(&value, &mt, opts))
        })?,
    )?;

    let mt = array_mt;
    native.set(
        "json_decode",
        lua.create_function(move |lua, input: Value| {
            let Value::String(s) = &input else {
                let msg = format!(
                    "bad argument #1 to 'decode' (string expected, got {})",
                    input.type_name()
                );
                return Ok((Value::Nil, Value::String(lua.create_string(msg)?)));
            };
            match decode(lua, &s.as_bytes(), &mt) {
                Ok(v) => Ok((v, Value::Nil)),
                Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?))),
            }
        })?,
    )?;
    Ok(())
}

fn encode_result(lua: &Lua, res: Result<Vec<u8>, JsonError>) -> mlua::Result<(Value, Value)> {
    match res {
        Ok(bytes) => Ok((Value::String(lua.create_string(bytes)?), Value::Nil)),
        Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?))),
    }
}

struct Encoder {
    out: Vec<u8>,
    array_mt: *const c_void,
    serde_array_mt: *const c_void,
    opts: EncodeOptions,
}

enum Shape {
    Array(Vec<Value>),
    Object(Vec<(Value, Value)>),
}

impl Encoder {
    fn value(&mut self, v: &Value, depth: usize) -> Result<(), JsonError> {
        match v {
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::Boolean(true) => self.out.extend_from_slice(b"true"),
            Value::Boolean(false) => self.out.extend_from_slice(b"false"),
            Value::Integer(i) => write_integer(&mut self.out, *i),
            Value::Number(n) => write_number(&mut self.out, *n)?,
            Value::String(s) => write_string(&mut self.out, self.opts.escape_slash, &s.as_bytes()),
            Value::Table(t) => self.table(t, depth + 1)?,
            Value::LightUserData(p) if p.0.is_null() => self.out.extend_from_slice(b"null"),
            other => return Err(JsonError::Unsupported(other.type_name())),
        }
        Ok(())
    }

    fn table(&mut self, t: &Table, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_ENCODE_DEPTH {
            return Err(JsonError::Depth(depth));
        }
        match self.shape(t)? {
            Shape::Array(items) => {
                self.out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.newline(depth);
                    self.value(item, depth)?;
                }
                if !items.is_empty() {
                    self.newline(depth - 1);
                }
                self.out.push(b']');
            }
            Shape::Object(mut entries) => {
                if self.opts.sort_keys {
                    let mut keyed = Vec::with_capacity(entries.len());
                    for (k, v) in entries.drain(..) {
                        let mut key = Vec::new();
                        key_bytes(&mut key, &k)?;
                        keyed.push((key, v));
                    }
                    keyed.sort_by(|a, b| a.0.cmp(&b.0));
                    self.out.push(b'{');
                    for (i, (k, v)) in keyed.iter().enumerate() {
                        if i > 0 {
                            self.out.push(b',');
                        }
                        self.newline(depth);
                        write_string(&mut self.out, self.opts.escape_slash, k);
                        self.colon();
                        self.value(v, depth)?;
                    }
                    if !keyed.is_empty() {
                        self.newline(depth - 1);
                    }
                    self.out.push(b'}');
                } else {
                    self.out.push(b'{');
                    let mut key = Vec::new();
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            self.out.push(b',');
                        }
                        self.newline(depth);
                        match k {
                            Value::String(s) => {
                                write_string(&mut self.out, self.opts.escape_slash, &s.as_bytes())
                            }
                            other => {
                                key.clear();
                                key_bytes(&mut key, other)?;
                                write_string(&mut self.out, self.opts.escape_slash, &key);
                            }
                        }
                        self.colon();
                        self.value(v, depth)?;
                    }
                    if !entries.is_empty() {
                        self.newline(depth - 1);
                    }
                    self.out.push(b'}');
                }
            }
        }
        Ok(())
    }

    /// Decides between array and object the way cjson's `lua_array_length` does.
    fn shape(&self, t: &Table) -> Result<Shape, JsonError> {
        if let Some(mt) = t.metatable()
            && (mt.to_pointer() == self.array_mt || mt.to_pointer() == self.serde_array_mt)
        {
            let len = t.raw_len();
            let mut items = Vec::with_capacity(len);
            for i in 1..=len {
                items.push(t.raw_get::<Value>(i)?);
            }
            return Ok(Shape::Array(items));
        }
        let mut entries: Vec<(Value, Value)> = Vec::new();
        let mut max: usize = 0;
        let mut is_array = true;
        // One walk with `lua_next` in a single protected call (`pairs` pays a call and copies of
        // the key per entry). Nested tables are encoded after it returns, so protected calls do not
        // nest as deep as the value does.
        t.for_each(|k: Value, v: Value| {
            if is_array {
                match array_index(&k) {
                    Some(i) => max = max.max(i),
                    None => is_array = false,
                }
            }
            entries.push((k, v));
            Ok(())
        })?;
        if entries.is_empty() || !is_array {
            return Ok(Shape::Object(entries));
        }
        if max > entries.len() * 2 && max > 10 {
            return Err(JsonError::SparseArray);
        }
        let mut items = vec![Value::Nil; max];
        for (k, v) in entries {
            if let Some(i) = array_index(&k)
                && let Some(slot) = items.get_mut(i - 1)
            {
                *slot = v;
            }
        }
        Ok(Shape::Array(items))
    }

    fn newline(&mut self, depth: usize) {
        if self.opts.pretty {
            self.out.push(b'\n');
            for _ in 0..depth {
                self.out.extend_from_slice(b"  ");
            }
        }
    }

    fn colon(&mut self) {
        if self.opts.pretty {
            self.out.extend_from_slice(b": ");
        } else {
            self.out.push(b':');
        }
    }
}

fn array_index(k: &Value) -> Option<usize> {
    match k {
        Value::Integer(i) if *i >= 1 => usize::try_from(*i).ok(),
        Value::Number(n) if *n >= 1.0 && n.fract() == 0.0 && *n < 9.007_199_254_740_992e15 => {
            Some(*n as usize)
        }
        _ => None,
    }
}

fn key_bytes(out: &mut Vec<u8>, k: &Value) -> Result<(), JsonError> {
    match k {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => write_integer(out, *i),
        Value::Number(n) => write_number(out, *n)?,
        other => return Err(JsonError::BadKey(other.type_name())),
    }
    Ok(())
}

fn write_integer(out: &mut Vec<u8>, i: i64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{i}");
}

/// Writes a finite number like cjson (`%.14g`), integral values below 2^53 in full.
pub(crate) fn write_number(out: &mut Vec<u8>, n: f64) -> Result<(), JsonError> {
    if !n.is_finite() {
        return Err(JsonError::InvalidNumber);
    }
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        if n == 0.0 && n.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            write_integer(out, n as i64);
        }
        return Ok(());
    }
    out.extend_from_slice(format_g14(n).as_bytes());
    Ok(())
}

/// C's `%.14g` for a finite number.
pub(crate) fn format_g14(n: f64) -> String {
    const PRECISION: i32 = 14;
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, n);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (PRECISION - 1 - exp).max(0) as usize;
        let fixed = format!("{n:.decimals$}");
        trim_fraction(&fixed).to_owned()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Writes a JSON string with cjson's escapes.
fn write_string(out: &mut Vec<u8>, escape_slash: bool, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'/' if escape_slash => b"\\/",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Builds Lua values straight from the JSON parser, with no intermediate tree.
#[derive(Clone, Copy)]
struct LuaSeed<'a> {
    lua: &'a Lua,
    array_mt: &'a Table,
}

fn de_err<E: de::Error>(err: mlua::Error) -> E {
    E::custom(err)
}

impl<'de> DeserializeSeed<'de> for LuaSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LuaSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.lua.create_string(v).map(Value::String).map_err(de_err)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::NULL)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::NULL)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let t = self
            .lua
            .create_table_with_capacity(seq.size_hint().unwrap_or(0), 0)
            .map_err(de_err)?;
        let mut i = 0usize;
        while let Some(v) = seq.next_element_seed(self)? {
            i += 1;
            t.raw_seti(i, v).map_err(de_err)?;
        }
        t.set_metatable(Some(self.array_mt.clone()))
            .map_err(de_err)?;
        Ok(Value::Table(t))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let t = self
            .lua
            .create_table_with_capacity(0, map.size_hint().unwrap_or(0))
            .map_err(de_err)?;
        while let Some(k) = map.next_key_seed(KeySeed(self.lua))? {
            let v = map.next_value_seed(self)?;
            t.raw_set(k, v).map_err(de_err)?;
        }
        Ok(Value::Table(t))
    }
}

struct KeySeed<'a>(&'a Lua);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = LuaString;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<LuaString, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = LuaString;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<LuaString, E> {
        self.0.create_string(v).map_err(de_err)
    }
}
