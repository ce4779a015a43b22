//! Inbound TLS: certificates from the `ssls` resource, chosen per handshake by SNI.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::store::Snapshot;

/// Why an `ssls` object cannot serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("failed to parse cert: {0}")]
    Cert(String),
    #[error("failed to parse key: {0}")]
    Key(String),
    #[error("failed to use key: {0}")]
    Sign(String),
    #[error("the number of certs and keys do not match")]
    Mismatch,
}

/// SNI name → certificate, built once per config snapshot.
#[derive(Debug, Default)]
pub(crate) struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`, so `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertIndex {
    /// Indexes every enabled server certificate of the `ssls` objects.
    pub(crate) fn build<'a>(
        ssls: impl IntoIterator<Item = &'a Value>,
    ) -> Result<CertIndex, TlsError> {
        let mut index = CertIndex::default();
        for ssl in ssls {
            if ssl.get("status").and_then(Value::as_i64) == Some(0)
                || ssl.get("type").and_then(Value::as_str) == Some("client")
            {
                continue;
            }
            let key = Arc::new(certified_key(ssl)?);
            for sni in snis(ssl) {
                let sni = sni.to_ascii_lowercase();
                match sni.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.insert(suffix.to_owned(), key.clone()),
                    None => index.exact.insert(sni, key.clone()),
                };
            }
        }
        Ok(index)
    }

    /// The certificate for a server name: an exact name first, then the closest wildcard.
    pub(crate) fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let mut rest = name.as_str();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(key) = self.wildcard.get(suffix) {
                return Some(key.clone());
            }
            rest = suffix;
        }
        None
    }
}

/// Checks that an `ssls` object's PEM cert and key load, for the Admin API.
pub(crate) fn validate_ssl(ssl: &Value) -> Result<(), TlsError> {
    certified_key(ssl).map(|_| ())
}

fn snis(ssl: &Value) -> Vec<&str> {
    match (ssl.get("snis"), ssl.get("sni")) {
        (Some(Value::Array(list)), _) => list.iter().filter_map(Value::as_str).collect(),
        (_, Some(Value::String(sni))) => vec![sni.as_str()],
        _ => Vec::new(),
    }
}

fn certified_key(ssl: &Value) -> Result<CertifiedKey, TlsError> {
    let cert = ssl.get("cert").and_then(Value::as_str).unwrap_or_default();
    let key = ssl.get("key").and_then(Value::as_str).unwrap_or_default();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Cert("no certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::Key(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Sign(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::Mismatch)?;
    Ok(certified)
}

/// Picks the certificate from the snapshot current at handshake time.
#[derive(Debug)]
struct SniResolver {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Without SNI or a matching certificate the handshake fails; the listener keeps serving.
        let name = hello.server_name()?;
        self.snapshot.load().certs.lookup(name)
    }
}

/// The acceptor of the TLS listeners: h2 and HTTP/1.1 through ALPN.
pub(crate) fn acceptor(
    snapshot: Arc<ArcSwap<Snapshot>>,
    enable_http2: bool,
) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions");
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { snapshot }));
    config.alpn_protocols = if enable_http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
