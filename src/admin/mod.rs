//! The Admin API (APISIX v3 shapes): access control, then dispatch to resources and plugin endpoints.
//!
//! Served on its own listener and, for loopback clients only, on the data-plane ports under
//! `/apisix/admin` as APISIX 2.x did. The IP allow list is enforced before anything is parsed, then the
//! key, then the request body is read (capped at 1.5 MiB like APISIX).

mod resources;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use ipnet::IpNet;
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

pub(crate) use resources::{identify, stamp_times};

use crate::store::Store;
pub(crate) use crate::validate::{PluginCatalog, SchemaType};

/// The path prefix of every Admin API endpoint.
pub(crate) const PREFIX: &str = "/apisix/admin";
/// APISIX's cap on Admin request bodies.
const MAX_BODY: usize = 1536 * 1024;

/// Who may use a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Every method.
    Admin,
    /// GET only.
    Viewer,
}

/// One accepted admin key. `Debug` never shows the key.
#[derive(Clone)]
pub(crate) struct AdminKey {
    pub(crate) key: String,
    pub(crate) role: Role,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey")
            .field("key", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Settings and state of the Admin API.
pub(crate) struct Admin {
    pub(crate) store: Arc<Store>,
    pub(crate) keys: Vec<AdminKey>,
    pub(crate) key_required: bool,
    pub(crate) allow: Vec<IpNet>,
    pub(crate) plugins: Arc<dyn PluginCatalog>,
    /// Standalone mode: the configuration comes from a file, so every write is refused.
    pub(crate) read_only: bool,
    /// Encrypts plugin conf fields listed in `encrypt_fields` before they are stored.
    pub(crate) keyring: Option<crate::keyring::Keyring>,
}

/// An Admin API response body.
pub(crate) type AdminResponse = Response<Full<Bytes>>;

/// Builds a JSON response with APISIX's headers.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("x-api-version", HeaderValue::from_static("v3"));
    resp
}

/// `{"error_msg": msg}` with a status.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> AdminResponse {
    json_response(status, &json!({ "error_msg": msg.into() }))
}

impl Admin {
    /// Handles one request whose path starts with [`PREFIX`].
    pub(crate) async fn handle<B>(&self, req: Request<B>, peer: IpAddr) -> AdminResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&canonical(peer))) {
            return error(StatusCode::FORBIDDEN, "403 Forbidden");
        }
        if let Err(reason) = self.authorize(&req) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error_msg": "failed to check token", "description": reason}),
            );
        }
        if self.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
            return error(
                StatusCode::BAD_REQUEST,
                "the Admin API is read-only in standalone mode",
            );
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("invalid request body: {err}"),
                );
            }
        };
        let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
        let query = parts.uri.query().unwrap_or_default();
        resources::dispatch(self, &parts.method, path, query, &body).await
    }

    fn authorize<B>(&self, req: &Request<B>) -> Result<(), &'static str> {
        if !self.key_required {
            return Ok(());
        }
        let presented = presented_key(req).ok_or("missing apikey")?;
        let key = self
            .keys
            .iter()
            .find(|k| constant_time_eq(k.key.as_bytes(), presented.as_bytes()))
            .ok_or("wrong apikey")?;
        if key.role == Role::Viewer && req.method() != Method::GET {
            return Err("invalid method for role viewer");
        }
        Ok(())
    }
}

/// The key from `X-API-KEY`, the `api_key` query argument, or the `x_api_key` cookie.
fn presented_key<B>(req: &Request<B>) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    if let Some(q) = req.uri().query() {
        for (k, v) in form_pairs(q) {
            if k == "api_key" {
                return Some(v);
            }
        }
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("x_api_key=").map(str::to_owned))
}

/// Decoded `key=value` pairs of a query string.
pub(crate) fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// IPv4-mapped IPv6 peers (`::ffff:127.0.0.1`) are matched as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Serves the Admin API on its own listener until `cancel` fires.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    cancel: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let admin = admin.clone();
            async move {
                let resp = if req.uri().path().starts_with(PREFIX) {
                    admin.handle(req, peer.ip()).await
                } else {
                    error(StatusCode::NOT_FOUND, "404 Route Not Found")
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let conn = builder
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPlugins;

    impl PluginCatalog for NoPlugins {
        fn check(&self, name: &str, _conf: &Value, _t: SchemaType) -> Result<(), String> {
            Err(format!("unknown plugin [{name}]"))
        }
        fn names(&self) -> Vec<String> {
            Vec::new()
        }
        fn schema(&self, _name: &str, _t: SchemaType) -> Option<Value> {
            None
        }
    }

    #[tokio::test]
    async fn a_read_only_admin_refuses_writes_and_serves_reads() -> Result<(), String> {
        let backend = crate::store::yaml::FileBackend::new(Default::default());
        let settings = crate::store::SnapshotSettings {
            router_mode: crate::router::RouterMode::default(),
        };
        let store = Store::open(Arc::new(backend), settings).map_err(|e| e.to_string())?;
        let admin = Admin {
            store: Arc::new(store),
            keys: Vec::new(),
            key_required: false,
            allow: Vec::new(),
            plugins: Arc::new(NoPlugins),
            read_only: true,
            keyring: None,
        };
        let peer = IpAddr::from([127, 0, 0, 1]);
        for method in ["PUT", "POST", "PATCH", "DELETE"] {
            let req = Request::builder()
                .method(method)
                .uri("/apisix/admin/routes/1")
                .body(Full::new(Bytes::from_static(br#"{"uri": "/"}"#)))
                .map_err(|e| e.to_string())?;
            let resp = admin.handle(req, peer).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method}");
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let body: Value =
                serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())?;
            assert_eq!(
                body["error_msg"], "the Admin API is read-only in standalone mode",
                "{method}"
            );
        }
        let req = Request::builder()
            .uri("/apisix/admin/routes")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        assert_eq!(admin.handle(req, peer).await.status(), StatusCode::OK);
        Ok(())
    }

    #[test]
    fn constant_time_eq_matches_only_equal_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn key_from_header_query_or_cookie() {
        let req = |uri: &str, h: Option<(&str, &str)>| {
            let mut b = Request::builder().uri(uri);
            if let Some((k, v)) = h {
                b = b.header(k, v);
            }
            b.body(()).unwrap_or_default()
        };
        assert_eq!(
            presented_key(&req("/", Some(("X-API-KEY", "k1")))).as_deref(),
            Some("k1")
        );
        assert_eq!(
            presented_key(&req("/?a=1&api_key=k2", None)).as_deref(),
            Some("k2")
        );
        assert_eq!(
            presented_key(&req("/", Some(("cookie", "a=b; x_api_key=k3")))).as_deref(),
            Some("k3")
        );
        assert_eq!(presented_key(&req("/", None)), None);
    }
}
