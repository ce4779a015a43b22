//! URI escaping and query strings, as ngx_lua does them.
//!
//! Natives:
//! * `escape_uri(s [, type])`: type 2 (the default) escapes every byte but `A-Za-z0-9-._~`
//!   (ngx_lua's `NGX_ESCAPE_URI_COMPONENT`); type 0 escapes only controls, space, `#`, `%`, `?`, DEL and
//!   bytes >= 0x80 (nginx's `NGX_ESCAPE_URI`). Hex digits are upper-case.
//! * `unescape_uri(s)`: decodes `%XX` and turns `+` into a space; malformed escapes are kept verbatim.
//! * `encode_args(t)`: `ngx.encode_args`, with keys sorted bytewise for determinism (ngx uses table
//!   order). `true` gives a bare key, `false` is omitted, an array repeats the key; numbers are
//!   formatted like `tostring`.
//! * `decode_args(s [, max])`: `ngx.decode_args`; `max` defaults to 100, 0 means unlimited. A repeated key
//!   becomes an array, a bare key `true`; keys and values are unescaped. Returns the table and, when
//!   arguments were dropped because of `max`, a second value `"truncated"`.

use mlua::{ExternalError as _, Lua, LuaString, Table, Value};

/// Default argument limit of `ngx.decode_args`/`ngx.req.get_uri_args`.
const DEFAULT_MAX_ARGS: usize = 100;

/// Why `encode_args`/`escape_uri` refused their input. Messages follow ngx_lua.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UriError {
    /// `escape_uri` with a type other than 0 or 2.
    #[error("unsupported escape type {0}")]
    EscapeType(i64),
    /// A key that is not a string or number.
    #[error("attempt to use {0} as query arg key")]
    BadKey(&'static str),
    /// A value that cannot go into a query string.
    #[error("attempt to use {0} as query arg value")]
    BadValue(&'static str),
}

/// nginx-style escape tables: bit set = escape.
type EscapeTable = [u32; 8];

const ESCAPE_URI: EscapeTable = [
    0xffff_ffff, // 0x00-0x1f
    0x8000_0029, // " ", "#", "%", "?"
    0x0000_0000,
    0x8000_0000, // DEL
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
];

const ESCAPE_URI_COMPONENT: EscapeTable = [
    0xffff_ffff,
    0xfc00_9fff, // all but "-", ".", 0-9
    0x7800_0001, // all but A-Z and "_"
    0xb800_0001, // all but a-z and "~"
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
];

fn needs_escape(table: &EscapeTable, b: u8) -> bool {
    table[usize::from(b >> 5)] & (1 << (b & 0x1f)) != 0
}

fn escape_with(out: &mut Vec<u8>, s: &[u8], table: &EscapeTable) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        if needs_escape(table, b) {
            out.push(b'%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b);
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `ngx.unescape_uri`: `%XX` decoded, `+` as space, malformed escapes kept.
pub(crate) fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = s.get(i + 1).copied().and_then(hex_value);
                let lo = s.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn arg_scalar(out: &mut Vec<u8>, v: &Value) -> Result<bool, UriError> {
    match v {
        Value::String(s) => escape_with(out, &s.as_bytes(), &ESCAPE_URI_COMPONENT),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => out.extend_from_slice(super::json::format_g14(*n).as_bytes()),
        other => return Err(UriError::BadValue(other.type_name())),
    }
    Ok(true)
}

fn push_arg(out: &mut Vec<u8>, key: &[u8], v: &Value) -> Result<(), UriError> {
    match v {
        Value::Boolean(false) => return Ok(()),
        Value::Boolean(true) => {
            if !out.is_empty() {
                out.push(b'&');
            }
            escape_with(out, key, &ESCAPE_URI_COMPONENT);
        }
        _ => {
            if !out.is_empty() {
                out.push(b'&');
            }
            escape_with(out, key, &ESCAPE_URI_COMPONENT);
            out.push(b'=');
            arg_scalar(out, v)?;
        }
    }
    Ok(())
}

/// `ngx.encode_args` with sorted keys.
pub(crate) fn encode_args(t: &Table) -> mlua::Result<Result<Vec<u8>, UriError>> {
    let mut entries: Vec<(Vec<u8>, Value)> = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = match &k {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Number(n) => super::json::format_g14(*n).into_bytes(),
            other => return Ok(Err(UriError::BadKey(other.type_name()))),
        };
        entries.push((key, v));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, v) in &entries {
        if let Value::Table(arr) = v {
            for item in arr.sequence_values::<Value>() {
                if let Err(e) = push_arg(&mut out, key, &item?) {
                    return Ok(Err(e));
                }
            }
        } else if let Err(e) = push_arg(&mut out, key, v) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(out))
}

/// `ngx.decode_args`: fills a new table; the flag says whether arguments were dropped.
pub(crate) fn decode_args(lua: &Lua, s: &[u8], max: usize) -> mlua::Result<(Table, bool)> {
    let t = lua.create_table()?;
    let mut count = 0usize;
    for part in s.split(|&b| b == b'&') {
        if part.is_empty() {
            continue;
        }
        if max > 0 && count >= max {
            return Ok((t, true));
        }
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], Some(&part[eq + 1..])),
            None => (part, None),
        };
        if key.is_empty() {
            continue;
        }
        count += 1;
        let key = lua.create_string(unescape(key))?;
        let value = match value {
            Some(v) => Value::String(lua.create_string(unescape(v))?),
            None => Value::Boolean(true),
        };
        match t.raw_get::<Value>(&key)? {
            Value::Nil => t.raw_set(key, value)?,
            Value::Table(arr) => arr.raw_push(value)?,
            prev => {
                let arr = lua.create_sequence_from([prev, value])?;
                t.raw_set(key, arr)?;
            }
        }
    }
    Ok((t, false))
}

/// Registers `escape_uri`, `unescape_uri`, `encode_args` and `decode_args`.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "escape_uri",
        lua.create_function(|lua, (s, kind): (LuaString, Option<i64>)| {
            let table = match kind.unwrap_or(2) {
                0 => &ESCAPE_URI,
                2 => &ESCAPE_URI_COMPONENT,
                other => return Err(UriError::EscapeType(other).into_lua_err()),
            };
            let bytes = s.as_bytes();
            if !bytes.iter().any(|&b| needs_escape(table, b)) {
                return Ok(s);
            }
            let mut out = Vec::with_capacity(bytes.len() + 16);
            escape_with(&mut out, &bytes, table);
            lua.create_string(out)
        })?,
    )?;
    native.set(
        "unescape_uri",
        lua.create_function(|lua, s: LuaString| {
            let bytes = s.as_bytes();
            if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
                return Ok(s);
            }
            lua.create_string(unescape(&bytes))
        })?,
    )?;
    native.set(
        "encode_args",
        lua.create_function(|lua, t: Table| match encode_args(&t)? {
            Ok(bytes) => lua.create_string(bytes),
            Err(e) => Err(e.into_lua_err()),
        })?,
    )?;
    native.set(
        "decode_args",
        lua.create_function(|lua, (s, max): (Option<LuaString>, Option<i64>)| {
            let max = match max {
                Some(m) => usize::try_from(m).unwrap_or(0),
                None => DEFAULT_MAX_ARGS,
            };
            let (t, truncated) = match s {
                Some(s) => decode_args(lua, &s.as_bytes(), max)?,
                None => (lua.create_table()?, false),
            };
            Ok((t, truncated.then_some("truncated")))
        })?,
    )?;
    Ok(())
}
