//! Test harness: the real gateway in-process on ephemeral loopback ports, plus stand-in upstreams.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod etcd;
pub mod process;
pub mod sigv4;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use moongate::{Gateway, GatewayHandle};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
pub const VIEWER_KEY: &str = "test-viewer-key-0123456789abcdef";

/// A gateway started for one test, with its own data dir.
pub struct TestGateway {
    pub handle: Option<GatewayHandle>,
    pub dir: Arc<TempDir>,
    pub http: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
}

pub struct TestGatewayBuilder {
    dir: Arc<TempDir>,
    extra_yaml: String,
    max_body: String,
    /// `nginx_config.http.client_header_timeout`, when set (the default is the gateway's own).
    header_timeout: Option<String>,
    router: String,
    plugins_dir: PathBuf,
    workers: usize,
    /// The `deployment:` keys that choose the role and the config provider (empty: traditional +
    /// embedded).
    role_yaml: String,
    /// Whether the role serves the Admin API.
    admin: bool,
    /// Extra keys under `apisix:` (indented by two spaces).
    apisix_yaml: String,
    /// Extra keys under `deployment.admin:` (indented by four spaces).
    admin_yaml: String,
}

impl TestGateway {
    pub fn builder() -> TestGatewayBuilder {
        TestGatewayBuilder {
            dir: Arc::new(tempfile::tempdir().expect("temp dir")),
            extra_yaml: String::new(),
            max_body: "0".into(),
            header_timeout: None,
            router: "radixtree_host_uri".into(),
            plugins_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins")),
            workers: 2,
            role_yaml: String::new(),
            admin: true,
            apisix_yaml: String::new(),
            admin_yaml: String::new(),
        }
    }

    pub async fn start() -> TestGateway {
        Self::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}/apisix/admin{}", self.admin, path)
    }

    /// Sends an Admin API request with the admin key; returns status and JSON (or string) body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        admin_request(&self.client, &self.admin_url(path), method, body.as_ref()).await
    }

    /// PUTs an object and asserts the write succeeded.
    pub async fn put(&self, path: &str, body: Value) -> Value {
        let (status, resp) = self.admin("PUT", path, Some(body)).await;
        assert!(
            status == 200 || status == 201,
            "PUT {path} failed: {status} {resp}"
        );
        resp
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            handle.wait().await;
        }
        self.dir.clone()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.shutdown();
        }
    }
}

impl TestGatewayBuilder {
    /// Extra YAML appended to the generated config (top-level keys not already present).
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self.extra_yaml.push('\n');
        self
    }

    /// Adds keys under `apisix:` (each line indented by two spaces).
    pub fn apisix_yaml(mut self, yaml: &str) -> Self {
        self.apisix_yaml.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.apisix_yaml.push('\n');
        }
        self
    }

    /// Sets `deployment.admin.allow_admin`.
    pub fn allow_admin(mut self, cidrs: &[&str]) -> Self {
        self.admin_yaml.push_str("    allow_admin:\n");
        for cidr in cidrs {
            self.admin_yaml.push_str(&format!("      - \"{cidr}\"\n"));
        }
        self
    }

    /// Sets `nginx_config.http.client_max_body_size`.
    pub fn client_max_body_size(mut self, size: &str) -> Self {
        self.max_body = size.to_owned();
        self
    }

    /// Sets `nginx_config.http.client_header_timeout` (e.g. `"1s"`, `"500ms"`).
    pub fn client_header_timeout(mut self, timeout: &str) -> Self {
        self.header_timeout = Some(timeout.to_owned());
        self
    }

    /// Sets `apisix.plugins_dir` (default: the repository's `plugins/`).
    pub fn plugins_dir(mut self, dir: &std::path::Path) -> Self {
        self.plugins_dir = dir.to_path_buf();
        self
    }

    /// Sets `nginx_config.worker_processes` (default 2).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets `apisix.router.http`.
    pub fn router(mut self, mode: &str) -> Self {
        self.router = mode.to_owned();
        self
    }

    /// Reuses the data dir of a previous gateway (restart tests).
    pub fn dir(mut self, dir: Arc<TempDir>) -> Self {
        self.dir = dir;
        self
    }

    /// Standalone mode: `deployment.role: data_plane` with this `config_provider` (`yaml` or `json`),
    /// reading `apisix.yaml`/`apisix.json` beside the config file (write it before `start`). There is
    /// no Admin listener: `admin` is then an unbound placeholder.
    pub fn standalone(mut self, provider: &str) -> Self {
        self.role_yaml =
            format!("  role: data_plane\n  role_data_plane:\n    config_provider: {provider}\n");
        self.admin = false;
        self
    }

    /// etcd mode with `deployment.role` `traditional`, `data_plane` (no Admin listener) or
    /// `control_plane` (no data-plane listener: `http` is then an unbound placeholder), on `prefix`.
    /// `etcd_yaml` adds keys under `deployment.etcd` (indented by four spaces).
    pub fn etcd(mut self, endpoint: &str, prefix: &str, role: &str, etcd_yaml: &str) -> Self {
        self.role_yaml = format!(
            "  role: {role}\n  role_{role}:\n    config_provider: etcd\n  etcd:\n    host:\n      - \"{endpoint}\"\n    prefix: \"{prefix}\"\n    timeout: 5\n    startup_retry: 1\n{etcd_yaml}"
        );
        self.admin = role != "data_plane";
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub async fn start(self) -> TestGateway {
        let data_dir = self.dir.path().join("store");
        let yaml = format!(
            r#"apisix:
  node_listen:
    - "127.0.0.1:0"
  ssl:
    listen:
      - ip: 127.0.0.1
        port: 0
  data_dir: "{data}"
  plugins_dir: "{plugins}"
  plugin_memory_limit: 128m
  plugin_time_limit: 2s
  router:
    http: {router}
{apisix_extra}nginx_config:
  worker_processes: {workers}
  worker_shutdown_timeout: 5s
  http:
    client_max_body_size: "{max_body}"
{header_timeout}deployment:
{role}  admin:
{admin_yaml}    admin_listen:
      ip: 127.0.0.1
      port: 0
    admin_key:
      - name: admin
        key: {ADMIN_KEY}
        role: admin
      - name: viewer
        key: {VIEWER_KEY}
        role: viewer
{extra}"#,
            data = data_dir.display(),
            max_body = self.max_body,
            header_timeout = self
                .header_timeout
                .as_ref()
                .map(|t| format!("    client_header_timeout: \"{t}\"\n"))
                .unwrap_or_default(),
            router = self.router,
            workers = self.workers,
            plugins = self.plugins_dir.display(),
            extra = self.extra_yaml,
            role = self.role_yaml,
            apisix_extra = self.apisix_yaml,
            admin_yaml = self.admin_yaml,
        );
        let path = self.config_path();
        std::fs::write(&path, yaml).expect("write config");
        let gateway = Gateway::load(Some(&path), &HashMap::new()).expect("config loads");
        let handle = gateway.start().await.expect("gateway starts");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let http = handle.http_addrs().first().copied().unwrap_or(unbound);
        let tls = handle.tls_addrs().first().copied();
        let admin = if self.admin {
            handle.admin_addr().expect("admin listener")
        } else {
            assert!(handle.admin_addr().is_none(), "no Admin API in this role");
            unbound
        };
        TestGateway {
            handle: Some(handle),
            dir: self.dir,
            http,
            tls,
            admin,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }
}

/// A stand-in upstream: answers with a JSON echo of what it received, or per-path behaviour.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl MockUpstream {
    /// Starts the upstream; `name` is echoed back so tests can tell upstreams apart.
    pub async fn start(name: &str) -> MockUpstream {
        Self::spawn(name, None).await
    }

    /// The same upstream over HTTPS, with a self-signed certificate for `localhost`/`127.0.0.1`.
    pub async fn start_tls(name: &str) -> MockUpstream {
        Self::spawn(name, Some(tls_acceptor(&["localhost", "127.0.0.1"]))).await
    }

    /// Over HTTPS, offering HTTP/2 (and HTTP/1.1) through ALPN.
    pub async fn start_tls_h2(name: &str) -> MockUpstream {
        let acceptor = tls_acceptor_alpn(&["localhost", "127.0.0.1"], &[b"h2", b"http/1.1"]);
        Self::spawn(name, Some(acceptor)).await
    }

    async fn spawn(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> MockUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let name: Arc<str> = name.into();
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = rx.changed() => return,
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                let reqs = reqs.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        respond(name.clone(), req)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        MockUpstream {
            addr,
            connections,
            requests,
            shutdown: tx,
        }
    }

    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn respond(name: Arc<str>, req: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ms) = query.get("sleep_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.starts_with("/stream") {
        // `n` chunks of 64 KiB, generated on the fly.
        let n: usize = query
            .get("chunks")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
        );
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    if path.starts_with("/count") {
        // Reads the body without keeping it, and answers its size.
        let mut body = req.into_body();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => total += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        return Ok(Response::new(
            Full::new(Bytes::from(total.to_string())).boxed(),
        ));
    }
    let status: u16 = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").to_owned()),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let echo = json!({
        "upstream": &*name,
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())).boxed());
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    resp.headers_mut()
        .insert("x-upstream", name.parse().expect("ascii name"));
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().expect("static"));
    Ok(resp)
}

/// A route JSON with an inline roundrobin upstream.
pub fn route_to(uri: &str, node: &str) -> Value {
    json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": {node: 1}}})
}

/// A TLS acceptor (HTTP/1.1 via ALPN) with a self-signed certificate for the given names.
pub fn tls_acceptor(names: &[&str]) -> tokio_rustls::TlsAcceptor {
    tls_acceptor_alpn(names, &[b"http/1.1"])
}

/// A TLS acceptor offering these ALPN protocols, with a self-signed certificate for the names.
pub fn tls_acceptor_alpn(names: &[&str], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = self_signed(names);
    tls_acceptor_pem(&cert, &key, alpn)
}

/// A TLS acceptor for a certificate chain and key given as PEM, offering these ALPN protocols.
pub fn tls_acceptor_pem(cert: &str, key: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A self-signed certificate and key (PEM) for the given names.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("generate cert");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

/// An Admin API request with the admin key to `url`; returns status and JSON (or string) body.
pub async fn admin_request(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method.parse().expect("method"), url)
        .header("X-API-KEY", ADMIN_KEY);
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("admin body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
