//! `ngx.shared.DICT` storage, shared by every worker thread of the process.
//!
//! Dictionaries live in a process-global registry and are created on first use: Moongate needs no
//! `lua_shared_dict` declaration, any name works. Each dictionary has its own mutex, held only for the
//! duration of one operation. Values are strings, numbers or booleans with optional expiry and `flags`.
//!
//! Memory bound: each dictionary holds at most [`MAX_KEYS`] keys and [`MAX_BYTES`] bytes (key + value +
//! a fixed per-entry overhead of [`ENTRY_OVERHEAD`]). When a `set`/`add`/`incr` needs room, expired
//! entries go first, then the least recently used ones (reads count as use); the call then reports
//! `forcible = true` if a live entry was evicted. `safe_set`/`safe_add` never evict live entries and fail
//! with `"no memory"` instead. `capacity()` reports [`MAX_BYTES`].
//!
//! Natives, all taking the dictionary name first:
//! `shdict_get(d, key) -> value, flags | nil`, `shdict_get_stale(d, key) -> value, flags, stale`,
//! `shdict_set/safe_set/add/safe_add/replace(d, key, value, exptime, flags) -> ok, err, forcible`,
//! `shdict_delete(d, key)`, `shdict_incr(d, key, value, init, init_ttl) -> new, err, forcible`,
//! `shdict_ttl(d, key) -> ttl | nil, err`, `shdict_expire(d, key, exptime) -> true | nil, err`,
//! `shdict_flush_all(d)`, `shdict_flush_expired(d, max) -> n`, `shdict_get_keys(d, max) -> array`,
//! `shdict_capacity(d)`, `shdict_free_space(d)`. Errors are ngx's strings (`"exists"`, `"not found"`,
//! `"not a number"`, `"no memory"`, `"bad value type"`, `"empty key"`, `"key too long"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mlua::{Lua, LuaString, Table, Value};

/// Most keys one dictionary holds.
pub(crate) const MAX_KEYS: usize = 10_000;
/// Most bytes one dictionary accounts for.
pub(crate) const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bytes charged per entry on top of key and value.
pub(crate) const ENTRY_OVERHEAD: usize = 64;
/// Longest key, as in ngx.
const MAX_KEY_LEN: usize = 65535;
/// Default `max` of `get_keys`.
const DEFAULT_GET_KEYS: usize = 1024;

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ShValue {
    /// A byte string.
    Str(Vec<u8>),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl ShValue {
    fn size(&self) -> usize {
        match self {
            ShValue::Str(s) => s.len(),
            ShValue::Num(_) | ShValue::Bool(_) => 8,
        }
    }

    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            ShValue::Str(s) => Value::String(lua.create_string(s)?),
            ShValue::Num(n) => Value::Number(n),
            ShValue::Bool(b) => Value::Boolean(b),
        })
    }
}

/// Why an operation failed; `Display` is the ngx error string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShdictError {
    /// `add` on a live key.
    #[error("exists")]
    Exists,
    /// `replace`, `incr` without init, `ttl`, `expire` on a missing key.
    #[error("not found")]
    NotFound,
    /// `incr` on a non-number.
    #[error("not a number")]
    NotANumber,
    /// No room without evicting live entries (or the entry alone exceeds the dictionary).
    #[error("no memory")]
    NoMemory,
    /// A table, function, ... as value.
    #[error("bad value type")]
    BadValue,
    /// An empty key.
    #[error("empty key")]
    EmptyKey,
    /// A key over 65535 bytes.
    #[error("key too long")]
    KeyTooLong,
}

#[derive(Debug)]
struct Entry {
    value: ShValue,
    flags: u32,
    expires: Option<Instant>,
    stamp: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// How a write treats an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// `set`: always write.
    Set,
    /// `add`: fail with `exists` on a live key.
    Add,
    /// `replace`: fail with `not found` unless the key is live.
    Replace,
}

/// How a write stores its value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOptions {
    /// Seconds until expiry; 0 or less for none.
    pub(crate) exptime: f64,
    /// User flags returned by `get`.
    pub(crate) flags: u32,
    /// `set`, `add` or `replace`.
    pub(crate) mode: WriteMode,
    /// Fail with `no memory` instead of evicting live entries.
    pub(crate) safe: bool,
}

/// One dictionary.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    map: HashMap<Vec<u8>, Entry>,
    lru: BTreeMap<u64, Vec<u8>>,
    tick: u64,
    bytes: usize,
}

fn entry_size(key: &[u8], value: &ShValue) -> usize {
    key.len() + value.size() + ENTRY_OVERHEAD
}

fn deadline(exptime: f64, now: Instant) -> Option<Instant> {
    (exptime > 0.0 && exptime.is_finite())
        .then(|| now.checked_add(Duration::from_secs_f64(exptime.min(1e10))))
        .flatten()
}

impl Dict {
    fn touch(&mut self, key: &[u8]) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.map.get_mut(key) {
            if let Some(k) = self.lru.remove(&e.stamp) {
                self.lru.insert(tick, k);
            }
            e.stamp = tick;
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.lru.remove(&e.stamp);
        self.bytes = self.bytes.saturating_sub(entry_size(key, &e.value));
        Some(e)
    }

    fn insert(&mut self, key: Vec<u8>, value: ShValue, flags: u32, expires: Option<Instant>) {
        self.tick += 1;
        self.bytes += entry_size(&key, &value);
        self.lru.insert(self.tick, key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                flags,
                expires,
                stamp: self.tick,
            },
        );
    }

    /// Makes room for `size` more bytes and one more key. Returns whether a live entry was evicted.
    fn make_room(&mut self, size: usize, safe: bool, now: Instant) -> Result<bool, ShdictError> {
        if size > MAX_BYTES {
            return Err(ShdictError::NoMemory);
        }
        let full = |d: &Dict| d.map.len() >= MAX_KEYS || d.bytes + size > MAX_BYTES;
        if !full(self) {
            return Ok(false);
        }
        let expired: Vec<Vec<u8>> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        let mut forcible = false;
        while full(self) {
            if safe {
                return Err(ShdictError::NoMemory);
            }
            let Some((_, oldest)) = self.lru.pop_first() else {
                return Err(ShdictError::NoMemory);
            };
            if let Some(e) = self.map.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(entry_size(&oldest, &e.value));
                forcible = true;
            }
        }
        Ok(forcible)
    }

    /// `get`: the live value and its flags.
    pub(crate) fn get(&mut self, key: &[u8], now: Instant) -> Option<(ShValue, u32)> {
        let e = self.map.get(key).filter(|e| e.live(now))?;
        let out = (e.value.clone(), e.flags);
        self.touch(key);
        Some(out)
    }

    /// `get_stale`: the value even if expired, its flags and whether it is stale.
    pub(crate) fn get_stale(&mut self, key: &[u8], now: Instant) -> Option<(ShValue, u32, bool)> {
        let e = self.map.get(key)?;
        Some((e.value.clone(), e.flags, !e.live(now)))
    }

    /// `set`/`add`/`replace` and their safe variants (`None` deletes). Returns `forcible`.
    pub(crate) fn write(
        &mut self,
        key: &[u8],
        value: Option<ShValue>,
        opts: WriteOptions,
        now: Instant,
    ) -> Result<bool, ShdictError> {
        let WriteOptions {
            exptime,
            flags,
            mode,
            safe,
        } = opts;
        let live = self.map.get(key).is_some_and(|e| e.live(now));
        match mode {
            WriteMode::Add if live => return Err(ShdictError::Exists),
            WriteMode::Replace if !live => return Err(ShdictError::NotFound),
            _ => {}
        }
        self.remove(key);
        let Some(value) = value else {
            return Ok(false);
        };
        let forcible = self.make_room(entry_size(key, &value), safe, now)?;
        self.insert(key.to_vec(), value, flags, deadline(exptime, now));
        Ok(forcible)
    }

    /// `incr`. Returns the new value and `forcible`.
    pub(crate) fn incr(
        &mut self,
        key: &[u8],
        by: f64,
        init: Option<f64>,
        init_ttl: f64,
        now: Instant,
    ) -> Result<(f64, bool), ShdictError> {
        if let Some(e) = self.map.get_mut(key).filter(|e| e.live(now)) {
            let ShValue::Num(n) = e.value else {
                return Err(ShdictError::NotANumber);
            };
            let new = n + by;
            e.value = ShValue::Num(new);
            self.touch(key);
            return Ok((new, false));
        }
        let Some(init) = init else {
            return Err(ShdictError::NotFound);
        };
        let new = init + by;
        self.remove(key);
        let value = ShValue::Num(new);
        let forcible = self.make_room(entry_size(key, &value), false, now)?;
        self.insert(key.to_vec(), value, 0, deadline(init_ttl, now));
        Ok((new, forcible))
    }

    /// `ttl`: remaining seconds, 0 for no expiry.
    pub(crate) fn ttl(&self, key: &[u8], now: Instant) -> Result<f64, ShdictError> {
        let e = self
            .map
            .get(key)
            .filter(|e| e.live(now))
            .ok_or(ShdictError::NotFound)?;
        Ok(e.expires.map_or(0.0, |d| {
            (d.saturating_duration_since(now).as_millis() as f64) / 1000.0
        }))
    }

    /// `expire`: sets a new expiry (0 removes it).
    pub(crate) fn expire(
        &mut self,
        key: &[u8],
        exptime: f64,
        now: Instant,
    ) -> Result<(), ShdictError> {
        let e = self
            .map
            .get_mut(key)
            .filter(|e| e.live(now))
            .ok_or(ShdictError::NotFound)?;
        e.expires = deadline(exptime, now);
        Ok(())
    }

    /// `flush_all`: every entry becomes expired (still visible to `get_stale`).
    pub(crate) fn flush_all(&mut self, now: Instant) {
        for e in self.map.values_mut() {
            e.expires = Some(now);
        }
    }

    /// `flush_expired`: removes up to `max` expired entries (0 = all).
    pub(crate) fn flush_expired(&mut self, max: usize, now: Instant) -> usize {
        let mut expired: Vec<Vec<u8>> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        if max > 0 {
            expired.truncate(max);
        }
        for k in &expired {
            self.remove(k);
        }
        expired.len()
    }

    /// `get_keys`: up to `max` live keys (0 = all).
    pub(crate) fn keys(&self, max: usize, now: Instant) -> Vec<Vec<u8>> {
        let live = self
            .map
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone());
        if max > 0 {
            live.take(max).collect()
        } else {
            live.collect()
        }
    }

    /// Bytes still free.
    pub(crate) fn free_space(&self) -> usize {
        MAX_BYTES.saturating_sub(self.bytes)
    }
}

static DICTS: LazyLock<RwLock<HashMap<String, Arc<Mutex<Dict>>>>> = LazyLock::new(Default::default);

/// The dictionary `name`, created on first use.
pub(crate) fn dict(name: &str) -> Arc<Mutex<Dict>> {
    if let Some(d) = DICTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
    {
        return Arc::clone(d);
    }
    let mut map = DICTS.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(name.to_owned()).or_default())
}

fn with_dict<R>(name: &LuaString, f: impl FnOnce(&mut Dict, Instant) -> R) -> R {
    let d = dict(&name.to_string_lossy());
    let mut guard = d.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut guard, Instant::now())
}

fn check_key(key: &[u8]) -> Result<(), ShdictError> {
    if key.is_empty() {
        Err(ShdictError::EmptyKey)
    } else if key.len() > MAX_KEY_LEN {
        Err(ShdictError::KeyTooLong)
    } else {
        Ok(())
    }
}

fn to_value(v: &Value) -> Result<Option<ShValue>, ShdictError> {
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::String(s) => ShValue::Str(s.as_bytes().to_vec()),
        Value::Integer(i) => ShValue::Num(*i as f64),
        Value::Number(n) => ShValue::Num(*n),
        Value::Boolean(b) => ShValue::Bool(*b),
        _ => return Err(ShdictError::BadValue),
    }))
}

fn err_str(lua: &Lua, e: ShdictError) -> mlua::Result<Value> {
    lua.create_string(e.to_string()).map(Value::String)
}

type WriteArgs = (LuaString, LuaString, Value, Option<f64>, Option<u32>);

fn write_fn(lua: &Lua, mode: WriteMode, safe: bool) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, (d, key, value, exptime, flags): WriteArgs| {
        let key = key.as_bytes();
        let res = check_key(&key)
            .and_then(|()| to_value(&value))
            .and_then(|v| {
                with_dict(&d, |dict, now| {
                    let opts = WriteOptions {
                        exptime: exptime.unwrap_or(0.0),
                        flags: flags.unwrap_or(0),
                        mode,
                        safe,
                    };
                    dict.write(&key, v, opts, now)
                })
            });
        Ok(match res {
            Ok(forcible) => (Value::Boolean(true), Value::Nil, Value::Boolean(forcible)),
            Err(e) => (
                Value::Boolean(false),
                err_str(lua, e)?,
                Value::Boolean(false),
            ),
        })
    })
}

/// Registers the `shdict_*` natives.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "shdict_get",
        lua.create_function(|lua, (d, key): (LuaString, LuaString)| {
            let key = key.as_bytes();
            if let Err(e) = check_key(&key) {
                return Ok((Value::Nil, err_str(lua, e)?));
            }
            match with_dict(&d, |dict, now| dict.get(&key, now)) {
                Some((v, flags)) => Ok((
                    v.into_lua(lua)?,
                    if flags == 0 {
                        Value::Nil
                    } else {
                        Value::Integer(flags.into())
                    },
                )),
                None => Ok((Value::Nil, Value::Nil)),
            }
        })?,
    )?;
    native.set(
        "shdict_get_stale",
        lua.create_function(|lua, (d, key): (LuaString, LuaString)| {
            let key = key.as_bytes();
            if let Err(e) = check_key(&key) {
                return Ok((Value::Nil, err_str(lua, e)?, Value::Nil));
            }
            match with_dict(&d, |dict, now| dict.get_stale(&key, now)) {
                Some((v, flags, stale)) => Ok((
                    v.into_lua(lua)?,
                    if flags == 0 {
                        Value::Nil
                    } else {
                        Value::Integer(flags.into())
                    },
                    Value::Boolean(stale),
                )),
                None => Ok((Value::Nil, Value::Nil, Value::Nil)),
            }
        })?,
    )?;
    native.set("shdict_set", write_fn(lua, WriteMode::Set, false)?)?;
    native.set("shdict_safe_set", write_fn(lua, WriteMode::Set, true)?)?;
    native.set("shdict_add", write_fn(lua, WriteMode::Add, false)?)?;
    native.set("shdict_safe_add", write_fn(lua, WriteMode::Add, true)?)?;
    native.set("shdict_replace", write_fn(lua, WriteMode::Replace, false)?)?;
    native.set(
        "shdict_delete",
        lua.create_function(|_, (d, key): (LuaString, LuaString)| {
            with_dict(&d, |dict, _| dict.remove(&key.as_bytes()));
            Ok(true)
        })?,
    )?;
    native.set(
        "shdict_incr",
        lua.create_function(
            |lua,
             (d, key, by, init, init_ttl): (
                LuaString,
                LuaString,
                Value,
                Option<f64>,
                Option<f64>,
            )| {
                let key = key.as_bytes();
                let by = match by {
                    Value::Integer(i) => i as f64,
                    Value::Number(n) => n,
                    Value::String(s) => match s.to_str().ok().and_then(|s| s.trim().parse().ok()) {
                        Some(n) => n,
                        None => {
                            return Ok((
                                Value::Nil,
                                err_str(lua, ShdictError::NotANumber)?,
                                Value::Nil,
                            ));
                        }
                    },
                    _ => {
                        return Ok((
                            Value::Nil,
                            err_str(lua, ShdictError::NotANumber)?,
                            Value::Nil,
                        ));
                    }
                };
                let res = check_key(&key).and_then(|()| {
                    with_dict(&d, |dict, now| {
                        dict.incr(&key, by, init, init_ttl.unwrap_or(0.0), now)
                    })
                });
                Ok(match res {
                    Ok((n, forcible)) => (Value::Number(n), Value::Nil, Value::Boolean(forcible)),
                    Err(e) => (Value::Nil, err_str(lua, e)?, Value::Nil),
                })
            },
        )?,
    )?;
    native.set(
        "shdict_ttl",
        lua.create_function(|lua, (d, key): (LuaString, LuaString)| {
            let key = key.as_bytes();
            match check_key(&key).and_then(|()| with_dict(&d, |dict, now| dict.ttl(&key, now))) {
                Ok(t) => Ok((Value::Number(t), Value::Nil)),
                Err(e) => Ok((Value::Nil, err_str(lua, e)?)),
            }
        })?,
    )?;
    native.set(
        "shdict_expire",
        lua.create_function(
            |lua, (d, key, exptime): (LuaString, LuaString, Option<f64>)| {
                let key = key.as_bytes();
                let exptime = exptime.unwrap_or(0.0);
                match check_key(&key)
                    .and_then(|()| with_dict(&d, |dict, now| dict.expire(&key, exptime, now)))
                {
                    Ok(()) => Ok((Value::Boolean(true), Value::Nil)),
                    Err(e) => Ok((Value::Nil, err_str(lua, e)?)),
                }
            },
        )?,
    )?;
    native.set(
        "shdict_flush_all",
        lua.create_function(|_, d: LuaString| {
            with_dict(&d, |dict, now| dict.flush_all(now));
            Ok(())
        })?,
    )?;
    native.set(
        "shdict_flush_expired",
        lua.create_function(|_, (d, max): (LuaString, Option<i64>)| {
            let max = usize::try_from(max.unwrap_or(0)).unwrap_or(0);
            Ok(with_dict(&d, |dict, now| dict.flush_expired(max, now)))
        })?,
    )?;
    native.set(
        "shdict_get_keys",
        lua.create_function(|lua, (d, max): (LuaString, Option<i64>)| {
            let max = match max {
                Some(m) => usize::try_from(m).unwrap_or(0),
                None => DEFAULT_GET_KEYS,
            };
            let keys = with_dict(&d, |dict, now| dict.keys(max, now));
            let t = lua.create_table_with_capacity(keys.len(), 0)?;
            for (i, k) in keys.into_iter().enumerate() {
                t.raw_seti(i + 1, lua.create_string(k)?)?;
            }
            Ok(t)
        })?,
    )?;
    native.set(
        "shdict_capacity",
        lua.create_function(|_, _d: LuaString| Ok(MAX_BYTES))?,
    )?;
    native.set(
        "shdict_free_space",
        lua.create_function(|_, d: LuaString| Ok(with_dict(&d, |dict, _| dict.free_space())))?,
    )?;
    Ok(())
}
