//! `native.http_request`: the outbound HTTP client behind `resty.http`, on the same per-worker
//! keep-alive pools as upstream proxying. It yields the calling coroutine while waiting.
//!
//! Two Moongate options let a plugin forward a request without buffering it in the VM (the
//! serverless plugins use them): `client_body = true` sends the client's own request body as it
//! arrives (at most `client_body_limit` bytes, else the error is `request body too large`), and
//! `stream_response = true` hands a successful (< 400) response body to the client as it arrives
//! instead of returning it (`res.body` is then nil and the plugin ends the request with the status).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use mlua::{Lua, MultiValue, Table, Value};

use super::ctx::headers_table;
use crate::plugin::request::{ReqBody, with_current};
use crate::upstream::pool::{self, CallOptions, Endpoint, OutBody, UpstreamHead};
use crate::upstream::{KeepalivePool, Scheme};

/// Bodies larger than this are refused rather than buffered into the VM.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

fn millis(t: &Table, key: &str, default: u64) -> Duration {
    Duration::from_millis(t.get::<Option<u64>>(key).ok().flatten().unwrap_or(default))
}

async fn request(lua: &Lua, req: Table) -> mlua::Result<Result<Table, String>> {
    let scheme = match req.get::<Option<String>>("scheme")?.as_deref() {
        Some("https") => Scheme::Https,
        Some("http") | None => Scheme::Http,
        Some(other) => return Ok(Err(format!("unsupported scheme: {other}"))),
    };
    let host: String = req.get("host")?;
    let port: u16 = req
        .get::<Option<u16>>("port")?
        .unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    let method: String = req
        .get::<Option<String>>("method")?
        .unwrap_or_else(|| "GET".into());
    let path: String = req
        .get::<Option<String>>("path")?
        .unwrap_or_else(|| "/".into());
    let timeouts: Option<Table> = req.get("timeout_ms")?;
    let (connect, send, read) = match &timeouts {
        Some(t) => (
            millis(t, "connect", 60_000),
            millis(t, "send", 60_000),
            millis(t, "read", 60_000),
        ),
        None => (
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(60),
        ),
    };
    let keepalive = if req.get::<Option<bool>>("keepalive")?.unwrap_or(true) {
        Some(KeepalivePool {
            size: req
                .get::<Option<usize>>("keepalive_pool")?
                .unwrap_or(30)
                .max(1),
            idle_timeout: Duration::from_millis(
                req.get::<Option<u64>>("keepalive_timeout")?
                    .unwrap_or(60_000),
            ),
            requests: 1000,
        })
    } else {
        None
    };
    let endpoint = Endpoint {
        scheme,
        host: host.trim_start_matches('[').trim_end_matches(']').into(),
        port,
        tls_verify: req.get::<Option<bool>>("ssl_verify")?.unwrap_or(true),
        // A function or API over TLS is reached over HTTP/2 when it offers it.
        h2: scheme == Scheme::Https,
    };
    let body = if req.get::<Option<bool>>("client_body")?.unwrap_or(false) {
        let limit = req.get::<Option<u64>>("client_body_limit")?;
        match client_body(limit) {
            Ok(body) => body,
            Err(err) => return Ok(Err(err)),
        }
    } else {
        let bytes = match req.get::<Option<mlua::LuaString>>("body")? {
            Some(b) => Bytes::copy_from_slice(&b.as_bytes()),
            None => Bytes::new(),
        };
        crate::proxy::outbound(Full::new(bytes))
    };
    let stream_response = req.get::<Option<bool>>("stream_response")?.unwrap_or(false);
    let mut out = Request::new(body);
    *out.method_mut() = match Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return Ok(Err(format!("invalid method: {method}"))),
    };
    *out.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(e) => return Ok(Err(format!("invalid path {path:?}: {e}"))),
    };
    if let Some(headers) = req.get::<Option<Table>>("headers")? {
        for pair in headers.pairs::<mlua::LuaString, Value>() {
            let (name, value) = pair?;
            let Ok(name) = HeaderName::from_bytes(&name.as_bytes()) else {
                return Ok(Err(format!(
                    "invalid header name {:?}",
                    name.to_string_lossy()
                )));
            };
            let values: Vec<mlua::LuaString> = match value {
                Value::Table(list) => list
                    .sequence_values::<mlua::LuaString>()
                    .collect::<mlua::Result<_>>()?,
                Value::String(s) => vec![s],
                Value::Integer(n) => vec![lua.create_string(n.to_string())?],
                Value::Number(n) => vec![lua.create_string(n.to_string())?],
                _ => continue,
            };
            for v in values {
                match HeaderValue::from_bytes(&v.as_bytes()) {
                    Ok(v) => {
                        out.headers_mut().append(name.clone(), v);
                    }
                    Err(_) => return Ok(Err(format!("invalid value for header {name}"))),
                }
            }
        }
    }
    let options = CallOptions {
        connect_timeout: connect,
        send_timeout: send,
        read_timeout: read,
        keepalive,
    };
    let (head, body) = out.into_parts();
    let response = match pool::call(&endpoint, UpstreamHead::unchanged(&head), body, &options).await
    {
        Ok(r) => r,
        Err((err, _)) => {
            use crate::error::Classify;
            return Ok(Err(if err.is_timeout() {
                "timeout".to_owned()
            } else if err.body_error().is_some() {
                TOO_LARGE.to_owned()
            } else {
                err.to_string()
            }));
        }
    };
    let (head, body) = response.into_parts();
    if stream_response && head.status.as_u16() < 400 {
        let handed_over =
            with_current(|state| state.map(|state| state.resp.borrow_mut().stream = Some(body)));
        if handed_over.is_none() {
            return Ok(Err(
                "stream_response needs a request being served".to_owned()
            ));
        }
        let res = lua.create_table()?;
        res.set("status", head.status.as_u16())?;
        res.set("reason", head.status.canonical_reason().unwrap_or(""))?;
        res.set("headers", headers_table(lua, &head.headers)?)?;
        res.set("streamed", true)?;
        return Ok(Ok(res));
    }
    let collected = match http_body_util::Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(err) => {
            let msg = err.to_string();
            return Ok(Err(if msg.contains("timed out") {
                "timeout".to_owned()
            } else {
                msg
            }));
        }
    };
    let res = lua.create_table()?;
    res.set("status", head.status.as_u16())?;
    res.set("reason", head.status.canonical_reason().unwrap_or(""))?;
    res.set("headers", headers_table(lua, &head.headers)?)?;
    res.set("body", lua.create_string(&collected)?)?;
    Ok(Ok(res))
}

/// The error for a client body over its limit, which the serverless plugins answer with 413.
const TOO_LARGE: &str = "request body too large";

/// The current request's body, to send on: streamed as it arrives (at most `limit` bytes, and never
/// more than `client_max_body_size`), or the bytes a plugin already read (kept, so later phases can
/// still read them).
fn client_body(limit: Option<u64>) -> Result<OutBody, String> {
    let state = with_current(|s| s.cloned())
        .ok_or_else(|| "client_body needs a request being served".to_owned())?;
    let limit = state.body_limit(limit).unwrap_or(u64::MAX);
    if state.declared_length().is_some_and(|len| len > limit) {
        return Err(TOO_LARGE.to_owned());
    }
    let mut body = state.body.borrow_mut();
    match std::mem::replace(&mut *body, ReqBody::Reading) {
        ReqBody::Stream(incoming) => Ok(crate::proxy::outbound(http_body_util::Limited::new(
            incoming,
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))),
        ReqBody::Buffered(bytes) => {
            *body = ReqBody::Buffered(bytes.clone());
            if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
                return Err(TOO_LARGE.to_owned());
            }
            Ok(crate::proxy::outbound(Full::new(bytes)))
        }
        ReqBody::Reading => Err("the request body is being read elsewhere".to_owned()),
    }
}

/// Installs `native.http_request(req) -> res | nil, err`.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "http_request",
        lua.create_async_function(|lua, req: Table| async move {
            match request(&lua, req).await? {
                Ok(res) => Ok(MultiValue::from_vec(vec![Value::Table(res)])),
                Err(err) => Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::String(lua.create_string(&err)?),
                ])),
            }
        })?,
    )
}
