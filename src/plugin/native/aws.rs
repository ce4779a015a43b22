//! `native.aws_sign`: the Rust SigV4 signer for Lua plugins (aws-lambda).

use std::cell::RefCell;

use mlua::{Lua, LuaString, Table};

use crate::aws::sigv4::{
    self, Credentials, Payload, SessionTokenMode, SignableRequest, SigningKeyCache, SigningParams,
    SigningSettings,
};

thread_local! {
    // Signing keys change once a day per (secret, region, service); one cache per worker thread.
    static KEYS: RefCell<SigningKeyCache> = RefCell::new(SigningKeyCache::new());
}

/// Installs `native.aws_sign(req) -> {headers = {name = value}, query = canonical query}`.
///
/// `req`: `method`, `path` (as sent, without query), `query` (raw, without `?`), `headers` (array of
/// `{name, value}` pairs to sign; must include `host`), `body`, `access_key`, `secret_key`,
/// `session_token`, `region`, `service`. The returned query is what must be sent, so the wire request
/// equals the signed one.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "aws_sign",
        lua.create_function(|lua, req: Table| {
            let method: String = req
                .get::<Option<String>>("method")?
                .unwrap_or_else(|| "GET".into());
            let path: String = req
                .get::<Option<String>>("path")?
                .unwrap_or_else(|| "/".into());
            let raw_query: String = req.get::<Option<String>>("query")?.unwrap_or_default();
            let body: Option<LuaString> = req.get("body")?;
            let body_bytes = body
                .as_ref()
                .map(|b| b.as_bytes().to_vec())
                .unwrap_or_default();
            let mut header_pairs: Vec<(String, String)> = Vec::new();
            if let Some(list) = req.get::<Option<Table>>("headers")? {
                for pair in list.sequence_values::<Table>() {
                    let pair = pair?;
                    let name: String = pair.get(1)?;
                    let value: LuaString = pair.get(2)?;
                    header_pairs.push((name.to_ascii_lowercase(), value.to_string_lossy()));
                }
            }
            let credentials = Credentials::new(
                req.get::<String>("access_key")?,
                req.get::<String>("secret_key")?,
                req.get::<Option<String>>("session_token")?,
            );
            let region: String = req
                .get::<Option<String>>("region")?
                .unwrap_or_else(|| "us-east-1".into());
            let service: String = req
                .get::<Option<String>>("service")?
                .unwrap_or_else(|| "execute-api".into());
            let query = sigv4::canonical_query(&raw_query);
            let headers: Vec<(&str, &str)> = header_pairs
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let request = SignableRequest {
                method: &method,
                path: &path,
                query: &query,
                headers: &headers,
                payload: Payload::Bytes(&body_bytes),
            };
            let params = SigningParams {
                credentials: &credentials,
                region: &region,
                service: &service,
                time: time::OffsetDateTime::now_utc(),
                settings: SigningSettings {
                    double_uri_encode: service != "s3",
                    payload_checksum_header: false,
                    session_token_mode: SessionTokenMode::Include,
                },
            };
            let output = KEYS.with(|keys| keys.borrow_mut().sign(&request, &params));
            let out_headers = lua.create_table()?;
            for (name, value) in output.headers() {
                out_headers.set(*name, value.as_str())?;
            }
            let result = lua.create_table()?;
            result.set("headers", out_headers)?;
            result.set("query", query)?;
            Ok(result)
        })?,
    )
}
