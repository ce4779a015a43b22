//! Natives bound to the request being served: `ngx.var`, `ngx.req.*`, `ngx.resp`, `ngx.status`,
//! `ngx.say`, `ngx.exit`, `ngx.ctx`, `ngx.sleep`, `ngx.timer.at`, and the plugin metadata lookups.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use http_body_util::{BodyExt, Limited};
use mlua::{BString, Either, ExternalResult, Lua, LuaSerdeExt, MultiValue, Table, Value};
use rustc_hash::FxHashMap;

use crate::plugin::PluginSettings;
use crate::plugin::request::{ReqBody, RequestState, RespState, with_current};
use crate::plugin::time_limit;
use crate::proxy::RequestVars;
use crate::router::Vars;

/// Per-process values the natives report.
#[derive(Debug, Clone)]
pub(crate) struct WorkerInfo {
    pub(crate) worker_id: usize,
    pub(crate) worker_count: usize,
    pub(crate) instance_id: String,
}

fn current() -> mlua::Result<Rc<RequestState>> {
    with_current(|s| s.cloned()).ok_or_else(|| {
        mlua::Error::runtime("no request is being served (called outside a request phase)")
    })
}

/// A header name or value argument. `BString` reads a Lua string straight off the stack (a copy),
/// where `LuaString` or `Value` would first take a reference to it: on the hot path of a plugin
/// that sets a header, those references cost more than the copy.
type HeaderArg = Either<Option<BString>, Value>;

/// How many parsed header names a worker keeps.
const KNOWN_NAMES_MAX: usize = 512;

/// Header names as plugins wrote them, parsed: the same few names come with every request, and
/// parsing a name that is not a standard one allocates. A name keeps its index for the life of
/// the worker, so Lua can pass the index instead of the text (see `header_id`): a number crosses
/// into Rust without a copy or a lookup.
#[derive(Default)]
struct KnownNames {
    ids: FxHashMap<Box<[u8]>, u32>,
    names: Vec<HeaderName>,
}

thread_local! {
    static KNOWN_NAMES: RefCell<KnownNames> = RefCell::new(KnownNames::default());
}

/// The parsed name, and its index while the worker has room for new ones.
fn known_name(name: &[u8]) -> mlua::Result<(HeaderName, Option<u32>)> {
    KNOWN_NAMES.with_borrow_mut(|known| {
        if let Some(&id) = known.ids.get(name) {
            return Ok((known.names[id as usize].clone(), Some(id)));
        }
        let parsed = HeaderName::from_bytes(name).map_err(|_| {
            mlua::Error::runtime(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        if known.names.len() >= KNOWN_NAMES_MAX {
            return Ok((parsed, None));
        }
        let id = known.names.len() as u32;
        known.names.push(parsed.clone());
        known.ids.insert(name.into(), id);
        Ok((parsed, Some(id)))
    })
}

fn header_name(name: &[u8]) -> mlua::Result<HeaderName> {
    known_name(name).map(|(parsed, _)| parsed)
}

fn header_name_by_id(id: u32) -> mlua::Result<HeaderName> {
    KNOWN_NAMES
        .with_borrow(|known| known.names.get(id as usize).cloned())
        .ok_or_else(|| mlua::Error::runtime(format!("unknown header id {id}")))
}

fn header_value(value: Vec<u8>) -> mlua::Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(value))
        .map_err(|_| mlua::Error::runtime("invalid header value"))
}

/// Headers as APISIX shows them: lower-case names, a string for one value, an array for several.
pub(crate) fn headers_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, headers.keys_len())?;
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        let rest: Vec<&HeaderValue> = values.collect();
        match (first, rest.is_empty()) {
            (Some(v), true) => t.raw_set(name.as_str(), lua.create_string(v.as_bytes())?)?,
            (Some(v), false) => {
                let arr = lua.create_table_with_capacity(rest.len() + 1, 0)?;
                arr.raw_push(lua.create_string(v.as_bytes())?)?;
                for v in rest {
                    arr.raw_push(lua.create_string(v.as_bytes())?)?;
                }
                t.raw_set(name.as_str(), arr)?;
            }
            (None, _) => {}
        }
    }
    Ok(t)
}

/// The response headers, while plugins may still change them: an error once they went out.
fn unsent_headers(resp: &mut RespState) -> mlua::Result<&mut HeaderMap> {
    if resp.sent {
        return Err(mlua::Error::runtime("headers have already been sent"));
    }
    Ok(&mut resp.headers)
}

/// Sets (`add = false`) or appends one header from a Lua value: string, number, boolean, array, or
/// nil to remove.
fn put_header(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderArg,
    add: bool,
) -> mlua::Result<()> {
    // One text value, the usual call: a single lookup in the map.
    if let Either::Left(Some(text)) = value {
        let value = header_value(text.into())?;
        if add {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
        return Ok(());
    }
    if !add {
        headers.remove(&name);
    }
    match value {
        Either::Left(_) => {}
        Either::Right(Value::Table(list)) => {
            for v in list.sequence_values::<BString>() {
                headers.append(name.clone(), header_value(v?.into())?);
            }
        }
        Either::Right(Value::Boolean(b)) => {
            headers.append(
                name,
                HeaderValue::from_static(if b { "true" } else { "false" }),
            );
        }
        Either::Right(other) => {
            return Err(mlua::Error::runtime(format!(
                "invalid header value of type {}",
                other.type_name()
            )));
        }
    }
    Ok(())
}

fn set_path_and_query(
    state: &RequestState,
    path: Option<&str>,
    query: Option<Option<&str>>,
) -> mlua::Result<()> {
    let mut parts = state.parts.borrow_mut();
    let current_path = parts.uri.path().to_owned();
    let current_query = parts.uri.query().map(str::to_owned);
    let path = path.unwrap_or(&current_path);
    let query = query.unwrap_or(current_query.as_deref());
    let pq = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    parts.uri = pq.parse::<Uri>().into_lua_err()?;
    Ok(())
}

/// Reads the client body whole (at most `max` bytes, and never more than `client_max_body_size`).
async fn read_body(state: &RequestState, max: Option<u64>) -> mlua::Result<Result<Bytes, String>> {
    let limit = state.body_limit(max);
    let declared = state.declared_length();
    if let (Some(limit), Some(len)) = (limit, declared)
        && len > limit
    {
        return Ok(Err(format!(
            "request size {len} is greater than the maximum size {limit} allowed"
        )));
    }
    let taken = std::mem::replace(&mut *state.body.borrow_mut(), ReqBody::Reading);
    let incoming = match taken {
        ReqBody::Buffered(bytes) => {
            *state.body.borrow_mut() = ReqBody::Buffered(bytes.clone());
            return Ok(Ok(bytes));
        }
        ReqBody::Reading => return Ok(Err("the request body is already being read".into())),
        ReqBody::Stream(incoming) => incoming,
    };
    let cap = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    match Limited::new(incoming, cap).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            *state.body.borrow_mut() = ReqBody::Buffered(bytes.clone());
            Ok(Ok(bytes))
        }
        Err(err) => {
            *state.body.borrow_mut() = ReqBody::Buffered(Bytes::new());
            if err.is::<http_body_util::LengthLimitError>() {
                Ok(Err(format!(
                    "request size is greater than the maximum size {} allowed",
                    limit.unwrap_or(0)
                )))
            } else {
                Ok(Err(format!("failed to read the request body: {err}")))
            }
        }
    }
}

/// Installs the request-bound natives on `native`.
pub(crate) fn register(
    lua: &Lua,
    native: &Table,
    worker: WorkerInfo,
    settings: &PluginSettings,
) -> mlua::Result<()> {
    let local_conf = settings.local_conf.clone();
    let limit = settings.phase_time_limit;
    native.set(
        "var",
        lua.create_function(|lua, name: mlua::LuaString| {
            let state = current()?;
            let name = name.to_str()?;
            if let Some(v) = state.vars.borrow().get(&*name) {
                return Ok(Value::String(lua.create_string(v)?));
            }
            let route_var = match &*name {
                "route_id" => Some(state.route.id.as_str()),
                "route_name" => state.route.name.as_deref(),
                "service_id" => state.route.service_id.as_deref(),
                _ => None,
            };
            if let Some(v) = route_var {
                return Ok(Value::String(lua.create_string(v)?));
            }
            let parts = state.parts.borrow();
            let path = state.path.borrow();
            let vars = RequestVars::new(&parts, &path, state.conn);
            match vars.var(&name) {
                Some(v) => Ok(Value::String(lua.create_string(v.as_bytes())?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    native.set(
        "var_set",
        lua.create_function(|_, (name, value): (String, Option<mlua::LuaString>)| {
            let state = current()?;
            let mut vars = state.vars.borrow_mut();
            match value {
                Some(v) => {
                    vars.insert(name, v.to_string_lossy());
                }
                None => {
                    vars.remove(&name);
                }
            }
            Ok(())
        })?,
    )?;
    native.set(
        "req_method",
        lua.create_function(|_, ()| Ok(current()?.parts.borrow().method.as_str().to_owned()))?,
    )?;
    native.set(
        "req_set_method",
        lua.create_function(|_, method: String| {
            let m = Method::from_bytes(method.as_bytes()).into_lua_err()?;
            current()?.parts.borrow_mut().method = m;
            Ok(())
        })?,
    )?;
    native.set(
        "req_uri",
        lua.create_function(|_, ()| Ok(current()?.path.borrow().clone()))?,
    )?;
    native.set(
        "req_set_uri",
        lua.create_function(|_, path: String| {
            let state = current()?;
            if !path.starts_with('/') {
                return Err(mlua::Error::runtime("the uri must start with /"));
            }
            let encoded = crate::proxy::encode_path(&path);
            set_path_and_query(&state, Some(&encoded), None)?;
            *state.path.borrow_mut() = path;
            Ok(())
        })?,
    )?;
    native.set(
        "req_raw_uri",
        lua.create_function(|_, ()| {
            let state = current()?;
            let parts = state.parts.borrow();
            Ok(parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()))
        })?,
    )?;
    native.set(
        "req_http_version",
        lua.create_function(|_, ()| {
            Ok(match current()?.parts.borrow().version {
                http::Version::HTTP_2 => 2.0,
                http::Version::HTTP_10 => 1.0,
                http::Version::HTTP_09 => 0.9,
                _ => 1.1,
            })
        })?,
    )?;
    native.set(
        "req_headers",
        lua.create_function(|lua, ()| headers_table(lua, &current()?.parts.borrow().headers))?,
    )?;
    native.set(
        "req_header",
        lua.create_function(|lua, name: BString| {
            let state = current()?;
            let parts = state.parts.borrow();
            match parts.headers.get(header_name(&name)?) {
                Some(v) => Ok(Value::String(lua.create_string(v.as_bytes())?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    native.set(
        "req_set_header",
        lua.create_function(|_, (name, value): (BString, HeaderArg)| {
            let state = current()?;
            let name = header_name(&name)?;
            put_header(&mut state.parts.borrow_mut().headers, name, value, false)
        })?,
    )?;
    native.set(
        "req_add_header",
        lua.create_function(|_, (name, value): (BString, HeaderArg)| {
            let state = current()?;
            let name = header_name(&name)?;
            put_header(&mut state.parts.borrow_mut().headers, name, value, true)
        })?,
    )?;
    native.set(
        "req_args",
        lua.create_function(|_, ()| Ok(current()?.parts.borrow().uri.query().map(str::to_owned)))?,
    )?;
    native.set(
        "req_set_args",
        lua.create_function(|_, query: Option<String>| {
            let state = current()?;
            set_path_and_query(&state, None, Some(query.as_deref()))
        })?,
    )?;
    native.set(
        "req_body",
        lua.create_async_function(|lua, max: Option<u64>| async move {
            let state = current()?;
            match read_body(&state, max).await? {
                Ok(bytes) if bytes.is_empty() => Ok(MultiValue::from_vec(vec![Value::Nil])),
                Ok(bytes) => Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(&bytes)?,
                )])),
                Err(err) => Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::String(lua.create_string(&err)?),
                ])),
            }
        })?,
    )?;
    native.set(
        "req_body_buffered",
        lua.create_function(|lua, ()| {
            let state = current()?;
            match &*state.body.borrow() {
                ReqBody::Buffered(bytes) if !bytes.is_empty() => {
                    Ok(Value::String(lua.create_string(bytes)?))
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    native.set(
        "req_set_body",
        lua.create_function(|_, body: mlua::LuaString| {
            let state = current()?;
            let bytes = Bytes::copy_from_slice(&body.as_bytes());
            let mut parts = state.parts.borrow_mut();
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            *state.body.borrow_mut() = ReqBody::Buffered(bytes);
            Ok(())
        })?,
    )?;
    native.set(
        "req_start_time",
        lua.create_function(|_, ()| Ok(current()?.start_time))?,
    )?;
    native.set(
        "resp_status",
        lua.create_function(|_, ()| Ok(current()?.resp.borrow().status))?,
    )?;
    native.set(
        "resp_set_status",
        lua.create_function(|_, status: u16| {
            let state = current()?;
            let mut resp = state.resp.borrow_mut();
            if resp.sent {
                return Err(mlua::Error::runtime(
                    "attempt to set ngx.status after sending out response headers",
                ));
            }
            resp.status = Some(status);
            Ok(())
        })?,
    )?;
    native.set(
        "resp_headers",
        lua.create_function(|lua, ()| headers_table(lua, &current()?.resp.borrow().headers))?,
    )?;
    native.set(
        "resp_header",
        lua.create_function(|lua, name: BString| {
            let state = current()?;
            let resp = state.resp.borrow();
            let values: Vec<&HeaderValue> =
                resp.headers.get_all(header_name(&name)?).iter().collect();
            match values.as_slice() {
                [] => Ok(Value::Nil),
                [one] => Ok(Value::String(lua.create_string(one.as_bytes())?)),
                many => {
                    let t = lua.create_table()?;
                    for v in many {
                        t.raw_push(lua.create_string(v.as_bytes())?)?;
                    }
                    Ok(Value::Table(t))
                }
            }
        })?,
    )?;
    native.set(
        "header_id",
        lua.create_function(|_, name: BString| Ok(known_name(&name).ok().and_then(|(_, id)| id)))?,
    )?;
    native.set(
        "resp_set_header_id",
        lua.create_function(|_, (id, value): (u32, HeaderArg)| {
            let state = current()?;
            let mut resp = state.resp.borrow_mut();
            let headers = unsent_headers(&mut resp)?;
            put_header(headers, header_name_by_id(id)?, value, false)
        })?,
    )?;
    for (fname, add) in [("resp_set_header", false), ("resp_add_header", true)] {
        native.set(
            fname,
            lua.create_function(move |_, (name, value): (BString, HeaderArg)| {
                let state = current()?;
                let mut resp = state.resp.borrow_mut();
                let headers = unsent_headers(&mut resp)?;
                put_header(headers, header_name(&name)?, value, add)
            })?,
        )?;
    }
    native.set(
        "resp_headers_sent",
        lua.create_function(|_, ()| Ok(current()?.resp.borrow().sent))?,
    )?;
    native.set(
        "say",
        lua.create_function(|_, text: mlua::LuaString| {
            current()?
                .resp
                .borrow_mut()
                .out
                .extend_from_slice(&text.as_bytes());
            Ok(())
        })?,
    )?;
    native.set(
        "exit",
        lua.create_function(|_, code: i64| {
            let state = current()?;
            let mut resp = state.resp.borrow_mut();
            let code = u16::try_from(code).unwrap_or(500);
            resp.exit = Some(code);
            if code >= 100 {
                resp.status = Some(code);
            }
            Ok(())
        })?,
    )?;
    native.set(
        "phase",
        lua.create_function(|_, ()| Ok(current()?.phase.get().name()))?,
    )?;
    native.set(
        "ngx_ctx",
        lua.create_function(|lua, ()| {
            let state = current()?;
            let mut slot = state.ngx_ctx.borrow_mut();
            match &*slot {
                Some(t) => Ok(t.clone()),
                None => {
                    let t = lua.create_table()?;
                    *slot = Some(t.clone());
                    Ok(t)
                }
            }
        })?,
    )?;
    native.set(
        "sleep",
        lua.create_async_function(|_, seconds: f64| async move {
            if seconds.is_finite() && seconds > 0.0 {
                tokio::time::sleep(crate::upstream::seconds(seconds)).await;
            }
            Ok(())
        })?,
    )?;
    native.set(
        "timer_at",
        lua.create_function(
            move |lua, (delay, callback, args): (f64, mlua::Function, MultiValue)| {
                let delay = if delay.is_finite() && delay > 0.0 {
                    delay
                } else {
                    0.0
                };
                let lua = lua.clone();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(crate::upstream::seconds(delay)).await;
                    let mut call_args = vec![Value::Boolean(false)];
                    call_args.extend(args);
                    let call = callback.call_async::<()>(MultiValue::from_vec(call_args));
                    if let Err(err) = time_limit::limited(limit, call).await {
                        tracing::error!(target: "plugin", error = %err, "timer callback failed");
                    }
                    drop(lua);
                });
                Ok(true)
            },
        )?,
    )?;
    let WorkerInfo {
        worker_id,
        worker_count,
        instance_id,
    } = worker;
    native.set(
        "worker_id",
        lua.create_function(move |_, ()| Ok(worker_id))?,
    )?;
    native.set(
        "worker_count",
        lua.create_function(move |_, ()| Ok(worker_count))?,
    )?;
    native.set(
        "instance_id",
        lua.create_function(move |_, ()| Ok(instance_id.clone()))?,
    )?;
    let conf = lua.to_value(&local_conf)?;
    native.set(
        "local_conf",
        lua.create_function(move |_, ()| Ok(conf.clone()))?,
    )?;
    native.set(
        "plugin_metadata",
        lua.create_function(|lua, name: String| {
            let state = current()?;
            let Some(item) = state
                .snapshot
                .state
                .get(crate::schema::ResourceKind::PluginMetadata, &name)
            else {
                return Ok(Value::Nil);
            };
            let t = lua.create_table()?;
            t.set("value", lua.to_value(&item.value)?)?;
            t.set("modifiedIndex", item.modified_index)?;
            Ok(Value::Table(t))
        })?,
    )?;
    native.set(
        "curr_req_matched",
        lua.create_function(|lua, ()| {
            let state = current()?;
            let matched = &state.matched;
            let t = lua.create_table()?;
            t.raw_set("_path", &*matched.uri)?;
            if let Some(ext) = &matched.ext {
                t.raw_set(":ext", ext.as_str())?;
            }
            for (k, v) in &matched.params {
                t.raw_set(k.as_str(), v.as_str())?;
            }
            Ok(t)
        })?,
    )?;
    native.set(
        "consumer_group",
        lua.create_function(|lua, id: String| {
            let state = current()?;
            match state
                .snapshot
                .state
                .get(crate::schema::ResourceKind::ConsumerGroup, &id)
            {
                Some(item) => lua.to_value(&item.value),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    native.set(
        "consumers_by_plugin",
        lua.create_function(|lua, name: String| {
            let state = current()?;
            let generation = state.snapshot.generation;
            if let Some(cache) = lua.app_data_ref::<ConsumerCache>()
                && let Some((g, t)) = cache.0.get(&name)
                && *g == generation
            {
                return Ok(t.clone());
            }
            let list = lua.create_table()?;
            for item in state
                .snapshot
                .state
                .list(crate::schema::ResourceKind::Consumer)
            {
                if item
                    .value
                    .get("plugins")
                    .and_then(|p| p.get(&name))
                    .is_some()
                {
                    list.raw_push(lua.to_value(&item.value)?)?;
                }
            }
            match lua.app_data_mut::<ConsumerCache>() {
                Some(mut cache) => {
                    cache.0.insert(name, (generation, list.clone()));
                }
                None => {
                    let mut cache = ConsumerCache::default();
                    cache.0.insert(name, (generation, list.clone()));
                    lua.set_app_data(cache);
                }
            }
            Ok(list)
        })?,
    )?;
    Ok(())
}

/// Consumers with a given plugin, as Lua tables, kept while the config generation is unchanged so
/// plugins can cache lookups keyed by the table.
#[derive(Default)]
struct ConsumerCache(std::collections::HashMap<String, (u64, Table)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_keep_their_id_while_the_worker_has_room() {
        let (stamp, id) = known_name(b"x-stamp").expect("a valid name");
        let id = id.expect("room for the first name");
        assert_eq!(stamp, "x-stamp");
        assert_eq!(known_name(b"x-stamp").expect("known").1, Some(id));
        assert_eq!(header_name_by_id(id).expect("known id"), "x-stamp");
        let (upper, upper_id) = known_name(b"X-Stamp").expect("a valid name");
        assert_eq!(upper, "x-stamp", "names are compared as HTTP does");
        assert_ne!(upper_id, Some(id), "each spelling has its own id");

        let err = known_name(b"bad name").expect_err("a space is not allowed");
        assert!(err.to_string().contains("invalid header name"), "{err}");
        assert!(header_name_by_id(u32::MAX).is_err());

        for i in 0..KNOWN_NAMES_MAX {
            known_name(format!("x-filler-{i}").as_bytes()).expect("a valid name");
        }
        let (late, late_id) = known_name(b"x-late").expect("still parsed");
        assert_eq!(late, "x-late");
        assert_eq!(late_id, None, "no id once the worker knows too many names");
        assert_eq!(known_name(b"x-stamp").expect("known").1, Some(id));
        assert_eq!(header_name_by_id(id).expect("ids stay valid"), "x-stamp");
    }
}
