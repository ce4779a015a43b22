//! CRUD on the stored resources, plugin listing and schemas, in APISIX's request and response shapes.

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Admin, AdminResponse, SchemaType, error, form_pairs, json_response};
use crate::keyring::Seal;
use crate::schema::ResourceKind;
use crate::store::{Change, Item, StoreError};

/// Routes one Admin request (`path` is below `/apisix/admin`).
pub(super) async fn dispatch(
    admin: &Admin,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> AdminResponse {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["plugins", "list"] => json_response(StatusCode::OK, &json!(admin.plugins.names())),
        ["plugins", "reload"] => {
            if method != Method::PUT {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "please use PUT method to reload the plugins, {method} method is not allowed."
                    ),
                );
            }
            admin.plugins.reload();
            let mut resp = json_response(StatusCode::OK, &Value::Null);
            *resp.body_mut() = "done".into();
            resp.headers_mut().remove(http::header::CONTENT_TYPE);
            resp
        }
        ["plugins", name] | ["schema", "plugins", name] => {
            let schema_type = match form_pairs(query)
                .find(|(k, _)| k == "schema_type")
                .map(|(_, v)| v)
                .as_deref()
            {
                Some("consumer") => SchemaType::Consumer,
                Some("metadata") => SchemaType::Metadata,
                _ => SchemaType::Route,
            };
            match admin.plugins.schema(name, schema_type) {
                Some(mut schema) => {
                    // A newer file that failed to load is reported beside the schema still serving.
                    if let (Some(err), Value::Object(map)) =
                        (admin.plugins.load_error(name), &mut schema)
                    {
                        map.insert("x-moongate-load-error".into(), Value::String(err));
                    }
                    json_response(StatusCode::OK, &schema)
                }
                None if admin.plugins.names().iter().any(|n| n == name) => {
                    error(StatusCode::BAD_REQUEST, "not found schema")
                }
                None => match admin.plugins.load_error(name) {
                    Some(err) => error(
                        StatusCode::NOT_FOUND,
                        format!("plugin not found in subsystem http: {err}"),
                    ),
                    None => error(StatusCode::NOT_FOUND, "plugin not found in subsystem http"),
                },
            }
        }
        ["schema", "validate", kind] => match ResourceKind::from_name(kind) {
            Some(kind) if method == Method::POST => {
                let value = match parse_body(body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                match kind.validate(&value) {
                    Ok(()) => json_response(StatusCode::OK, &Value::Null),
                    Err(err) => error(StatusCode::BAD_REQUEST, err),
                }
            }
            Some(_) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("not supported `{method}` method"),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                format!("Unsupported resource type: {kind}"),
            ),
        },
        ["schema", kind] => match ResourceKind::from_name(kind) {
            Some(kind) => json_response(StatusCode::OK, kind.schema_json()),
            None => error(
                StatusCode::NOT_FOUND,
                format!("Unsupported resource type: {kind}"),
            ),
        },
        [collection, rest @ ..] => match ResourceKind::from_collection(collection) {
            Some(kind) => resource(admin, kind, method, rest, query, body).await,
            None => error(
                StatusCode::NOT_FOUND,
                format!("Unsupported resource type: {collection}"),
            ),
        },
        [] => error(StatusCode::NOT_FOUND, "Unsupported resource type: "),
    }
}

fn allowed(kind: ResourceKind, method: &Method) -> bool {
    use ResourceKind::*;
    match *method {
        Method::GET | Method::PUT | Method::DELETE => true,
        Method::POST => matches!(kind, Route | Service | Upstream | Ssl),
        Method::PATCH => matches!(
            kind,
            Route | Service | Upstream | Ssl | PluginConfig | GlobalRule | ConsumerGroup
        ),
        _ => false,
    }
}

async fn resource(
    admin: &Admin,
    kind: ResourceKind,
    method: &Method,
    rest: &[&str],
    query: &str,
    body: &[u8],
) -> AdminResponse {
    if !allowed(kind, method) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("not supported `{method}` method for {}", kind.name()),
        );
    }
    match (method.clone(), rest) {
        (Method::GET, []) => list(admin, kind, query),
        (Method::GET, [id]) => get(admin, kind, id),
        (Method::PUT, []) if kind == ResourceKind::Consumer => put(admin, kind, None, body).await,
        (Method::PUT, []) => error(
            StatusCode::BAD_REQUEST,
            format!("missing {} id", kind.name()),
        ),
        (Method::PUT, [id]) => put(admin, kind, Some(id), body).await,
        (Method::POST, []) => post(admin, kind, body).await,
        (Method::PATCH, [id, sub @ ..]) => patch(admin, kind, id, sub, body).await,
        (Method::DELETE, [id]) => delete(admin, kind, id).await,
        (Method::PATCH | Method::DELETE, []) => error(
            StatusCode::BAD_REQUEST,
            format!("missing {} id", kind.name()),
        ),
        _ => error(StatusCode::NOT_FOUND, "Key not found"),
    }
}

fn item_json(admin: &Admin, item: &Item) -> Value {
    json!({
        "key": item.key,
        "value": display_value(admin, item),
        "createdIndex": item.created_index,
        "modifiedIndex": item.modified_index,
    })
}

/// What GET shows of a stored value: an `ssls` private key is never returned.
fn display_value(admin: &Admin, item: &Item) -> Value {
    let mut value = item.value.clone();
    let (kind, id) = kind_and_id(item);
    seal(admin, kind, id, &mut value, Seal::Open);
    if item.key.starts_with("/apisix/ssls/")
        && let Value::Object(map) = &mut value
    {
        map.remove("key");
        map.remove("keys");
    }
    value
}

/// Encrypts (before storing) or decrypts (before showing) the `encrypt_fields` of an object's plugin
/// confs; nothing happens without a keyring.
fn seal(admin: &Admin, kind: ResourceKind, id: &str, value: &mut Value, direction: Seal) {
    if let Some(keyring) = &admin.keyring {
        keyring.seal_object(&*admin.plugins, kind, id, value, direction);
    }
}

/// The kind and id of a stored item, from its key.
fn kind_and_id(item: &Item) -> (ResourceKind, &str) {
    let kind = item
        .key
        .split('/')
        .nth(2)
        .and_then(ResourceKind::from_collection)
        .unwrap_or(ResourceKind::Route);
    (kind, item.id())
}

fn not_found() -> AdminResponse {
    // APISIX answers `{"message": "Key not found"}`; `error_msg` is added so clients reading either find it.
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"message": "Key not found", "error_msg": "Key not found"}),
    )
}

fn get(admin: &Admin, kind: ResourceKind, id: &str) -> AdminResponse {
    let snapshot = admin.store.snapshot();
    match snapshot.state.get(kind, id) {
        Some(item) => json_response(StatusCode::OK, &item_json(admin, item)),
        None => not_found(),
    }
}

fn list(admin: &Admin, kind: ResourceKind, query: &str) -> AdminResponse {
    let mut page = None;
    let mut page_size = None;
    let mut name = None;
    let mut label = None;
    let mut uri = None;
    for (k, v) in form_pairs(query) {
        match k.as_str() {
            "page" => page = Some(v),
            "page_size" => page_size = Some(v),
            "name" => name = Some(v),
            "label" => label = Some(v),
            "uri" => uri = Some(v),
            _ => {}
        }
    }
    let name_re = match name.map(|n| regex::Regex::new(&n)).transpose() {
        Ok(re) => re,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid name filter: {e}")),
    };
    let snapshot = admin.store.snapshot();
    let matches = |item: &Item| {
        let v = &item.value;
        name_re.as_ref().is_none_or(|re| {
            v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| re.is_match(n))
        }) && label.as_ref().is_none_or(|l| {
            let (key, val) = l
                .split_once(':')
                .map_or((l.as_str(), None), |(k, v)| (k, Some(v)));
            v.get("labels")
                .and_then(|ls| ls.get(key))
                .is_some_and(|lv| val.is_none_or(|want| lv.as_str() == Some(want)))
        }) && uri.as_ref().is_none_or(|u| {
            v.get("uri")
                .and_then(Value::as_str)
                .is_some_and(|x| x.contains(u.as_str()))
                || v.get("uris").and_then(Value::as_array).is_some_and(|us| {
                    us.iter()
                        .filter_map(Value::as_str)
                        .any(|x| x.contains(u.as_str()))
                })
        })
    };
    let items: Vec<Value> = snapshot
        .state
        .list(kind)
        .filter(|i| matches(i))
        .map(|i| item_json(admin, i))
        .collect();
    let total = items.len();
    let items = match (page, page_size) {
        (None, None) => items,
        (page, size) => {
            let size: usize = match size.map(|s| s.parse()) {
                None => 10,
                Some(Ok(s)) if (10..=500).contains(&s) => s,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "page_size must be between 10 and 500",
                    );
                }
            };
            let page: usize = match page.map(|p| p.parse()) {
                None => 1,
                Some(Ok(p)) if p >= 1 => p,
                _ => return error(StatusCode::BAD_REQUEST, "page must be a positive integer"),
            };
            items
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect()
        }
    };
    json_response(StatusCode::OK, &json!({"total": total, "list": items}))
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once per request"
)]
fn parse_body(body: &[u8]) -> Result<Value, AdminResponse> {
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "missing configurations"));
    }
    serde_json::from_slice(body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error_msg": format!("invalid request body: {e}"), "req_body": String::from_utf8_lossy(body)}),
        )
    })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn put(admin: &Admin, kind: ResourceKind, id: Option<&str>, body: &[u8]) -> AdminResponse {
    let mut value = match parse_body(body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match identify(kind, id, &mut value) {
        Ok(id) => store_value(admin, kind, id, value).await,
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

/// The id a PUT stores `value` under: the path's, or else the body's (`username` for consumers);
/// when both are given they must agree. The id is written into the body (plugin metadata keeps
/// none). `Err` is the Admin API's 400 message.
pub(crate) fn identify(
    kind: ResourceKind,
    id: Option<&str>,
    value: &mut Value,
) -> Result<String, String> {
    let Some(obj) = value.as_object_mut() else {
        return Err("invalid configuration: wrong type: expected object, got array".into());
    };
    let id_field = if kind == ResourceKind::Consumer {
        "username"
    } else {
        "id"
    };
    let id = match (id, obj.get(id_field)) {
        (Some(path_id), Some(body_id))
            if body_id.as_str().map_or(body_id.to_string(), str::to_owned) != path_id =>
        {
            return Err(format!("wrong {} id", kind.name()));
        }
        (Some(path_id), _) => path_id.to_owned(),
        (None, Some(Value::String(body_id))) => body_id.clone(),
        (None, _) => return Err(format!("missing {} id", kind.name())),
    };
    if kind == ResourceKind::PluginMetadata {
        obj.remove("id");
    } else {
        obj.insert(id_field.into(), Value::String(id.clone()));
    }
    Ok(id)
}

async fn post(admin: &Admin, kind: ResourceKind, body: &[u8]) -> AdminResponse {
    let mut value = match parse_body(body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(resp) = validate(admin, kind, None, &mut value, None) {
        return resp;
    }
    seal(admin, kind, "", &mut value, Seal::Close);
    match admin.store.create(kind, value).await {
        Ok(item) => json_response(
            StatusCode::OK,
            &json!({"key": item.key, "value": display_value(admin, &item)}),
        ),
        Err(err) => store_error(err),
    }
}

async fn patch(
    admin: &Admin,
    kind: ResourceKind,
    id: &str,
    sub_path: &[&str],
    body: &[u8],
) -> AdminResponse {
    let patch = match parse_body(body) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(current) = admin.store.snapshot().state.get(kind, id).cloned() else {
        return not_found();
    };
    let mut value = current.value.clone();
    seal(admin, kind, id, &mut value, Seal::Open);
    if sub_path.is_empty() {
        if !patch.is_object() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid configuration: wrong type: expected object",
            );
        }
        merge(&mut value, patch);
    } else {
        let mut node = &mut value;
        for (i, seg) in sub_path.iter().enumerate() {
            let Some(map) = node.as_object_mut() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid sub path {}", sub_path.join("/")),
                );
            };
            if i + 1 == sub_path.len() {
                map.insert((*seg).to_owned(), patch);
                break;
            }
            node = map.entry(*seg).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    store_value(admin, kind, id.to_owned(), value).await
}

/// APISIX's PATCH merge: objects merge recursively, other values (arrays included) replace, null removes.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else if let Some(existing) =
                    t.get_mut(&k).filter(|e| e.is_object() && v.is_object())
                {
                    merge(existing, v);
                } else {
                    t.insert(k, v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

async fn store_value(
    admin: &Admin,
    kind: ResourceKind,
    id: String,
    mut value: Value,
) -> AdminResponse {
    let existing = admin.store.snapshot().state.get(kind, &id).cloned();
    if let Err(resp) = validate(admin, kind, Some(&id), &mut value, existing.as_deref()) {
        return resp;
    }
    seal(admin, kind, &id, &mut value, Seal::Close);
    let created = existing.is_none();
    match admin.store.write(Change::Put { kind, id, value }).await {
        Ok(Some(item)) => json_response(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &json!({"key": item.key, "value": display_value(admin, &item)}),
        ),
        Ok(None) => error(StatusCode::INTERNAL_SERVER_ERROR, "store returned no item"),
        Err(err) => store_error(err),
    }
}

/// Checks an object before it is stored and stamps its times. Nothing is written when this fails.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, built once per request"
)]
fn validate(
    admin: &Admin,
    kind: ResourceKind,
    id: Option<&str>,
    value: &mut Value,
    existing: Option<&Item>,
) -> Result<(), AdminResponse> {
    let bad = |msg: String| error(StatusCode::BAD_REQUEST, msg);
    stamp_times(kind, value, existing, now());
    crate::validate::check_object(kind, id.unwrap_or_default(), value, Some(&*admin.plugins))
        .map_err(bad)?;
    Ok(())
}

/// Stamps `create_time` (kept from `existing`) and `update_time` as `now`: times are the server's,
/// a client cannot set them. Plugin metadata has none.
pub(crate) fn stamp_times(
    kind: ResourceKind,
    value: &mut Value,
    existing: Option<&Item>,
    now: i64,
) {
    if kind == ResourceKind::PluginMetadata {
        return;
    }
    if let Value::Object(map) = value {
        let created = existing
            .and_then(|e| e.value.get("create_time").cloned())
            .unwrap_or_else(|| json!(now));
        map.insert("create_time".into(), created);
        map.insert("update_time".into(), json!(now));
    }
}

async fn delete(admin: &Admin, kind: ResourceKind, id: &str) -> AdminResponse {
    match admin
        .store
        .write(Change::Delete {
            kind,
            id: id.to_owned(),
        })
        .await
    {
        Ok(_) => json_response(
            StatusCode::OK,
            &json!({"deleted": "1", "key": crate::store::model::item_key(kind, id)}),
        ),
        Err(err) => store_error(err),
    }
}

fn store_error(err: StoreError) -> AdminResponse {
    match err {
        StoreError::NotFound { .. } => not_found(),
        StoreError::Backend(_) => {
            tracing::error!(error = %err, "config store write failed");
            error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        other => error(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_merges_objects_and_replaces_arrays() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "m": ["GET"], "x": 1});
        merge(&mut v, json!({"a": {"c": 3}, "m": ["POST"], "x": null}));
        assert_eq!(v, json!({"a": {"b": 1, "c": 3}, "m": ["POST"]}));
    }
}
