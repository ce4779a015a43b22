//! A real etcd server for one test (Debian's `etcd-server`, installed by `scripts/test.sh`) on
//! ephemeral loopback ports in a temp dir, killed on drop; raw key-value helpers over etcd's v3 JSON
//! gateway; and a TCP relay that can cut a gateway off from etcd.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    http: reqwest::Client,
    /// Serves clients over TLS and requires a client certificate.
    tls: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> EtcdServer {
        Self::start_with(false).await
    }

    /// Starts etcd serving clients over TLS (a self-signed certificate for 127.0.0.1) and requiring
    /// a client certificate: [`EtcdServer::client_cert`] and [`EtcdServer::client_key`] are accepted.
    pub async fn start_tls() -> EtcdServer {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> EtcdServer {
        let dir = tempfile::tempdir().expect("etcd dir");
        let mut http = reqwest::Client::builder().no_proxy();
        if tls {
            let [ca, cert, key, client_cert, client_key] = test_pki();
            for (name, pem) in [
                ("server.pem", &cert),
                ("server-key.pem", &key),
                ("client-ca.pem", &ca),
                ("client.pem", &client_cert),
                ("client-key.pem", &client_key),
            ] {
                std::fs::write(dir.path().join(name), pem).expect("write PEM");
            }
            let identity =
                reqwest::Identity::from_pkcs8_pem(client_cert.as_bytes(), client_key.as_bytes())
                    .expect("client identity");
            http = http.identity(identity).danger_accept_invalid_certs(true);
        }
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            http: http.build().expect("client"),
            tls,
        };
        server.spawn().await;
        server
    }

    /// The client certificate a TLS etcd accepts.
    pub fn client_cert(&self) -> std::path::PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The key of [`EtcdServer::client_cert`].
    pub fn client_key(&self) -> std::path::PathBuf {
        self.dir.path().join("client-key.pem")
    }

    async fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let mut command = Command::new("etcd");
        if self.tls {
            let path = |name: &str| self.dir.path().join(name).display().to_string();
            command
                .arg(format!("--cert-file={}", path("server.pem")))
                .arg(format!("--key-file={}", path("server-key.pem")))
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", path("client-ca.pem")));
        }
        let child = command
            .arg("--name=moongate-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=moongate-test={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (scripts/test.sh installs Debian's etcd-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .try_call("/v3/kv/range", json!({"key": B64.encode("/")}))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client URL, as written in `deployment.etcd.host`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Kills etcd (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn try_call(&self, path: &str, body: Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.endpoint()))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    /// One call to the JSON gateway, which must succeed.
    pub async fn call(&self, path: &str, body: Value) -> Value {
        self.try_call(path, body)
            .await
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"))
    }

    /// Writes a key; returns the revision.
    pub async fn put(&self, key: &str, value: &str) -> u64 {
        let answer = self
            .call(
                "/v3/kv/put",
                json!({"key": B64.encode(key), "value": B64.encode(value)}),
            )
            .await;
        int(&answer["header"]["revision"])
    }

    /// Reads a key: its value and mod revision.
    pub async fn get(&self, key: &str) -> Option<(String, u64)> {
        let answer = self
            .call("/v3/kv/range", json!({"key": B64.encode(key)}))
            .await;
        let kv = answer.get("kvs")?.get(0)?;
        let value = B64
            .decode(kv["value"].as_str().unwrap_or_default())
            .expect("base64 value");
        Some((
            String::from_utf8(value).expect("UTF-8 value"),
            int(&kv["mod_revision"]),
        ))
    }

    /// Reads a key as JSON.
    pub async fn get_json(&self, key: &str) -> Option<Value> {
        let (text, _) = self.get(key).await?;
        Some(serde_json::from_str(&text).expect("JSON value"))
    }

    /// Every key under a prefix.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let answer = self
            .call(
                "/v3/kv/range",
                json!({"key": B64.encode(prefix), "range_end": B64.encode(end), "keys_only": true}),
            )
            .await;
        answer
            .get("kvs")
            .and_then(Value::as_array)
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        String::from_utf8(
                            B64.decode(kv["key"].as_str().unwrap_or_default())
                                .expect("base64 key"),
                        )
                        .expect("UTF-8 key")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn delete(&self, key: &str) -> u64 {
        let answer = self
            .call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .await;
        int(&answer["header"]["revision"])
    }

    /// Compacts the history up to the current revision; returns it.
    pub async fn compact(&self) -> u64 {
        let answer = self
            .call("/v3/kv/range", json!({"key": B64.encode("/")}))
            .await;
        let revision = int(&answer["header"]["revision"]);
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await;
        revision
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and two certificates it signed, PEM: `[ca, server, server key, client, client key]`. The
/// server certificate also serves as a client one: etcd's JSON gateway dials etcd's own gRPC port
/// with it, and `--client-cert-auth` checks that connection too.
pub fn test_pki() -> [String; 5] {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moongate test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let sign = |names: Vec<String>, cn: &str| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = sign(vec!["127.0.0.1".into(), "localhost".into()], "etcd");
    let (client, client_key) = sign(vec!["moongate-client".into()], "moongate-client");
    [ca.pem(), server, server_key, client, client_key]
}

fn int(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

/// A TCP relay in front of etcd. While cut, every relayed connection is closed and new ones are
/// accepted and closed at once, as when the network to etcd is lost.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let cut = Arc::new(watch::Sender::new(false));
        let state = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *state.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
