//! Moongate: an API gateway that serves Apache APISIX configuration and runs APISIX plugins.
//!
//! # Architecture
//!
//! - [`config`](crate::config) merges the embedded defaults, `conf/config.yaml` and env overrides.
//! - `store` holds every resource (routes, upstreams, ...) persisted by a backend (embedded redb by
//!   default, or read from `apisix.yaml`/`apisix.json` and re-read on change in standalone mode) and
//!   publishes them as one immutable snapshot behind an `ArcSwap`: the compiled router, parsed
//!   upstreams and TLS certificates. Each request loads the snapshot once.
//! - `admin` is the APISIX v3 Admin API: it validates writes (`schema`), then hands the store a
//!   `Change`; an invalid write changes nothing.
//! - `proxy` runs the data plane: worker threads with a current-thread runtime each, accepting on
//!   `SO_REUSEPORT` sockets, HTTP/1.1 and HTTP/2 on one port, TLS with SNI from `tls`.
//!   Its handler matches the route (`router`), picks a node (`upstream`) and streams the exchange
//!   through a per-worker keep-alive pool.
//! - [`Gateway`] ties them together and returns a [`GatewayHandle`] with the bound addresses.

mod admin;
pub mod aws;
pub mod cli;
mod config;
mod error;
pub mod fuzzing;
mod keyring;
mod plugin;
mod proxy;
mod router;
mod schema;
pub mod shutdown;
mod store;
pub mod telemetry;
mod timeouts;
mod tls;
mod upstream;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (exit code 64).
    #[error("{0}")]
    Config(String),
    /// The config store could not be opened or holds something unusable.
    #[error("config store: {0}")]
    Store(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugin host could not start.
    #[error("plugins: {0}")]
    Plugins(String),
    /// Worker threads could not be started.
    #[error("cannot start workers: {0}")]
    Workers(std::io::Error),
}

impl StartError {
    /// The process exit code for this error: 64 for invalid configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 64,
            _ => 1,
        }
    }
}

/// A loaded configuration, ready to start.
pub struct Gateway {
    loaded: config::Loaded,
    /// Kept for `${{VAR}}` substitution in the standalone file, which is re-read on every change.
    env: HashMap<String, String>,
}

impl Gateway {
    /// Loads the configuration: embedded defaults, then `config_path` (or `conf/config.yaml` when it
    /// exists), then the `MOONGATE_*` overrides and `${{VAR}}` values found in `env`.
    pub fn load(
        config_path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Gateway, StartError> {
        let loaded =
            config::load(config_path, env).map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Gateway {
            loaded,
            env: env.clone(),
        })
    }

    /// Warnings found while loading (unknown keys, generated keys).
    pub fn warnings(&self) -> &[String] {
        &self.loaded.warnings
    }

    /// The default log filter: everything at info, and the access log unless
    /// `nginx_config.http.enable_access_log` is false (`RUST_LOG` overrides both).
    pub fn log_filter(&self) -> &'static str {
        if self.loaded.config.access_log() {
            "info"
        } else {
            "info,access=off"
        }
    }

    /// The effective configuration with secrets redacted, for the startup debug line.
    pub fn summary(&self) -> String {
        self.loaded.config.effective_summary()
    }

    /// Opens the store and checks every stored resource, without listening. Returns a summary.
    pub fn check(&self) -> Result<String, StartError> {
        let opened = block_on(open_store(&self.loaded, &self.env))?;
        let snapshot = opened.store.snapshot();
        let counts: Vec<String> = schema::ResourceKind::ALL
            .iter()
            .map(|k| format!("{} {}", snapshot.state.list(*k).count(), k.collection()))
            .collect();
        Ok(format!(
            "configuration OK ({}); store OK: {}",
            self.loaded
                .source
                .as_ref()
                .map_or("embedded defaults".to_owned(), |p| p.display().to_string()),
            counts.join(", ")
        ))
    }

    /// Writes every stored resource in APISIX's standalone format (`conf/apisix.yaml`, ending in `#END`).
    /// Fields stored encrypted (`apisix.data_encryption`) are written in plaintext, as APISIX's
    /// standalone file holds them.
    pub fn export(&self) -> Result<String, StartError> {
        let config = &self.loaded.config;
        let store = Arc::new(block_on(open_store(&self.loaded, &self.env))?.store);
        let state = store.snapshot().state.clone();
        let Some(keyring) = keyring_of(config) else {
            return Ok(store::yaml::render(&state));
        };
        let plugins = plugin::PluginHost::start(plugin_settings(config, 1), store.clone())
            .map_err(|e| StartError::Plugins(e.to_string()))?;
        let mut items = Vec::new();
        for kind in schema::ResourceKind::ALL {
            for item in state.list(kind) {
                let mut item = store::Item::clone(item);
                let id = item.id().to_owned();
                keyring.seal_object(&*plugins, kind, &id, &mut item.value, keyring::Seal::Open);
                items.push((kind, item));
            }
        }
        let plain = store::ConfigState::from_items(state.revision(), items);
        Ok(store::yaml::render(&plain))
    }

    /// Reads a standalone file (YAML ending in `#END`, or JSON for a `.json` file) and writes its
    /// objects into the store (embedded or etcd), checked as Admin writes are (plugin confs included). Invalid
    /// items are skipped and listed in the returned summary.
    pub fn import(&self, file: &Path) -> Result<String, StartError> {
        let config = &self.loaded.config;
        if !matches!(
            config.config_provider(),
            config::ConfigProvider::Embedded | config::ConfigProvider::Etcd
        ) {
            return Err(StartError::Config(
                "import writes into the embedded store or etcd; use config_provider: embedded or etcd".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Workers)?;
        let opened = runtime.block_on(open_store(&self.loaded, &self.env))?;
        let store = Arc::new(opened.store);
        let plugins = plugin::PluginHost::start(plugin_settings(config, 1), store.clone())
            .map_err(|e| StartError::Plugins(e.to_string()))?;
        // An etcd write completes when the watch delivers it back.
        let cancel = CancellationToken::new();
        let _cancel_on_return = cancel.clone().drop_guard();
        if let Some(remote) = opened.remote {
            let revision = store.snapshot().state.revision();
            let _enter = runtime.enter();
            store::etcd::sync::spawn(
                store.clone(),
                remote,
                plugins.clone(),
                revision,
                cancel.clone(),
            );
        }
        let format = if file.extension().is_some_and(|e| e == "json") {
            store::yaml::FileFormat::Json
        } else {
            store::yaml::FileFormat::Yaml
        };
        let source = store::yaml::Source {
            path: file.to_path_buf(),
            format,
            env: self.env.clone(),
        };
        let (state, skipped) = source
            .load_reporting(Some(&*plugins))
            .map_err(|e| StartError::Config(e.to_string()))?;
        let keyring = keyring_of(config);
        let mut changes = Vec::new();
        for kind in store::yaml::Source::order() {
            for item in state.list(kind) {
                let mut value = item.value.clone();
                if let Some(keyring) = &keyring {
                    keyring.seal_object(
                        &*plugins,
                        kind,
                        item.id(),
                        &mut value,
                        keyring::Seal::Close,
                    );
                }
                changes.push(store::Change::Put {
                    kind,
                    id: item.id().to_owned(),
                    value,
                });
            }
        }
        let imported = changes.len();
        // One write for the whole file: checked, stored and published together, or not at all.
        runtime
            .block_on(store.write_all(changes))
            .map_err(|(key, e)| {
                StartError::Store(match key {
                    Some(key) => format!("{key}: {e}"),
                    None => e.to_string(),
                })
            })?;
        let mut summary = format!("imported {imported} objects from {}", file.display());
        for item in &skipped {
            summary.push_str(&format!("\nskipped {}: {}", item.key, item.reason));
        }
        Ok(summary)
    }

    /// Binds every listener and starts serving. Must be called inside a tokio runtime, which also
    /// runs the Admin API listener.
    pub async fn start(self) -> Result<GatewayHandle, StartError> {
        let config = &self.loaded.config;
        let Opened {
            store,
            standalone,
            remote,
        } = open_store(&self.loaded, &self.env).await?;
        let store = Arc::new(store);
        let workers = config.worker_threads();
        let plugins = plugin::PluginHost::start(plugin_settings(config, workers), store.clone())
            .map_err(|e| StartError::Plugins(e.to_string()))?;
        // The first read could not check plugin confs (no plugins yet): read again with them before
        // anything is served, so an item with an unknown plugin never serves.
        if let Some(source) = &standalone {
            store::yaml::reload(&store, source, plugins.clone())
                .await
                .map_err(|e| StartError::Store(e.to_string()))?;
        }
        let synced_revision = match &remote {
            Some(remote) => {
                let state = remote
                    .load(Some(&*plugins), None)
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?;
                let revision = state.revision();
                store
                    .replace(state)
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?;
                revision
            }
            None => 0,
        };
        let admin = Arc::new(admin::Admin {
            store: store.clone(),
            keys: config
                .admin_keys()
                .iter()
                .map(|k| admin::AdminKey {
                    key: k.key.expose().to_owned(),
                    role: match k.role {
                        config::AdminRole::Admin => admin::Role::Admin,
                        config::AdminRole::Viewer => admin::Role::Viewer,
                    },
                })
                .collect(),
            key_required: config.deployment.admin.admin_key_required,
            allow: config.allow_admin().to_vec(),
            plugins: plugins.clone(),
            read_only: standalone.is_some() || config.role() == config::Role::DataPlane,
            keyring: keyring_of(config),
        });
        // A control plane serves the Admin API only, as APISIX's does.
        let serves_traffic = config.role() != config::Role::ControlPlane;
        let mut listeners = Vec::new();
        let http_listen = if serves_traffic {
            config.node_listen_addrs()
        } else {
            Vec::new()
        };
        for addr in http_listen {
            listeners.push(
                proxy::bind(addr, workers, false)
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
        }
        let tls_addrs = if serves_traffic {
            config.ssl_listen_addrs()
        } else {
            Vec::new()
        };
        for addr in &tls_addrs {
            let addr = *addr;
            listeners.push(
                proxy::bind(addr, workers, true)
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
        }
        let admin_listener = match config.admin_addr() {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let http_addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter(|l| !l.tls)
            .map(|l| l.addr)
            .collect();
        let tls_bound: Vec<SocketAddr> =
            listeners.iter().filter(|l| l.tls).map(|l| l.addr).collect();
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let cancel = CancellationToken::new();
        let dp = Arc::new(proxy::DataPlane {
            store: store.clone(),
            admin: config.admin_addr().map(|_| admin.clone()),
            max_body: config.client_max_body_size(),
            plugins: Some(plugins.clone()),
        });
        let acceptor = (!tls_bound.is_empty())
            .then(|| tls::acceptor(store.shared(), config.apisix.enable_http2));
        let settings = proxy::ServeSettings {
            enable_http2: config.apisix.enable_http2,
            header_read_timeout: config.client_header_timeout(),
            grace: config.shutdown_grace(),
        };
        let worker_handles =
            proxy::spawn_workers(listeners, dp, acceptor, settings, cancel.clone())
                .map_err(StartError::Workers)?;
        plugins.watch(cancel.clone());
        if let Some(source) = standalone {
            store::yaml::watch(store.clone(), source, plugins.clone(), cancel.clone());
        }
        if let Some(remote) = remote {
            store::etcd::sync::spawn(
                store.clone(),
                remote,
                plugins.clone(),
                synced_revision,
                cancel.clone(),
            );
        }
        let admin_task = admin_listener
            .map(|listener| tokio::spawn(admin::serve(listener, admin, cancel.clone())));
        tracing::info!(
            http = ?http_addrs,
            tls = ?tls_bound,
            admin = ?admin_addr,
            workers,
            "moongate started"
        );
        Ok(GatewayHandle {
            http_addrs,
            tls_addrs: tls_bound,
            admin_addr,
            cancel,
            workers: worker_handles,
            admin_task,
        })
    }
}

fn keyring_of(config: &config::Config) -> Option<keyring::Keyring> {
    config
        .encryption_keys()
        .and_then(|keys| keyring::Keyring::new(&keys))
}

fn plugin_settings(config: &config::Config, workers: usize) -> plugin::PluginSettings {
    plugin::PluginSettings {
        dir: config.plugins_dir().to_path_buf(),
        enabled: config.plugins.clone(),
        attrs: config.plugin_attr.clone(),
        local_conf: serde_json::json!({
            "apisix": {"router": {"http": config.apisix.router.http.as_str()}},
            "plugins": config.plugins.clone(),
            "plugin_attr": config.plugin_attr.clone(),
        }),
        memory_limit: config
            .apisix
            .plugin_memory_limit
            .map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX)),
        phase_time_limit: config.apisix.plugin_time_limit,
        workers,
        keyring: keyring_of(config),
    }
}

/// The opened store, and what keeps it current.
struct Opened {
    store: store::Store,
    /// Standalone mode: the file to watch.
    standalone: Option<store::yaml::Source>,
    /// etcd mode: the prefix to watch.
    remote: Option<Arc<store::etcd::Remote>>,
}

/// Runs a future on a fresh current-thread runtime (the one-shot subcommands).
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, StartError>>,
) -> Result<T, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Workers)?
        .block_on(future)
}

/// Opens the configured store: the embedded database, the standalone file (data plane reading
/// `apisix.yaml`/`apisix.json`), or etcd.
async fn open_store(
    loaded: &config::Loaded,
    env: &HashMap<String, String>,
) -> Result<Opened, StartError> {
    use config::{ConfigProvider, Role};
    let config = &loaded.config;
    let settings = store::SnapshotSettings {
        router_mode: router::RouterMode::from_apisix_name(config.apisix.router.http.as_str())
            .unwrap_or_default(),
    };
    let store_err = |e: store::StoreError| StartError::Store(e.to_string());
    let local = |store| Opened {
        store,
        standalone: None,
        remote: None,
    };
    match (config.role(), config.config_provider()) {
        (_, ConfigProvider::Embedded) => {
            let backend =
                store::embedded::EmbeddedBackend::open(config.data_dir()).map_err(store_err)?;
            let store = store::Store::open(Arc::new(backend), settings).map_err(store_err)?;
            Ok(local(store))
        }
        (_, ConfigProvider::Etcd) => {
            let remote = Arc::new(
                store::etcd::Remote::new(etcd_options(&config.deployment.etcd)?)
                    .map_err(StartError::Config)?,
            );
            let state = first_etcd_read(&remote, config.deployment.etcd.startup_retry).await?;
            let store =
                store::Store::with_state(store::Persistence::Etcd(remote.clone()), state, settings)
                    .map_err(store_err)?;
            Ok(Opened {
                store,
                standalone: None,
                remote: Some(remote),
            })
        }
        (Role::DataPlane, provider @ (ConfigProvider::Yaml | ConfigProvider::Json)) => {
            let (file, format) = match provider {
                ConfigProvider::Json => ("apisix.json", store::yaml::FileFormat::Json),
                _ => ("apisix.yaml", store::yaml::FileFormat::Yaml),
            };
            // Beside the config file, as `conf/apisix.yaml` sits beside `conf/config.yaml`.
            let path = match loaded.source.as_deref().and_then(Path::parent) {
                Some(dir) => dir.join(file),
                None => Path::new("conf").join(file),
            };
            let source = store::yaml::Source {
                path,
                format,
                env: env.clone(),
            };
            let state = source
                .load(None)
                .map_err(|e| StartError::Store(e.to_string()))?;
            let backend = store::yaml::FileBackend::new(state);
            let store = store::Store::open(Arc::new(backend), settings).map_err(store_err)?;
            Ok(Opened {
                standalone: Some(source),
                ..local(store)
            })
        }
        // Refuse a provider we cannot honour rather than serve from a different source than the one
        // configured.
        (role, provider) => Err(StartError::Config(format!(
            "deployment.role {} with config_provider {} is not supported yet; use config_provider: embedded or etcd, or role data_plane with yaml or json",
            role.as_str(),
            provider.as_str()
        ))),
    }
}

/// The etcd client settings from `deployment.etcd`.
fn etcd_options(etcd: &config::EtcdConfig) -> Result<store::etcd::RemoteOptions, StartError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| StartError::Config(format!("cannot read {}: {e}", path.display())))
    };
    let identity = match (&etcd.tls.cert, &etcd.tls.key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        (None, None) => None,
        _ => {
            return Err(StartError::Config(
                "deployment.etcd.tls.cert and deployment.etcd.tls.key must be set together".into(),
            ));
        }
    };
    let credentials = match (&etcd.user, &etcd.password) {
        (Some(user), password) if !user.is_empty() => Some((
            user.clone(),
            password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        )),
        _ => None,
    };
    Ok(store::etcd::RemoteOptions {
        client: store::etcd::ClientOptions {
            endpoints: etcd.host.clone(),
            timeout: etcd.timeout,
            credentials,
            tls: store::etcd::TlsOptions {
                verify: etcd.tls.verify,
                identity,
                sni: etcd.tls.sni.clone(),
            },
        },
        prefix: etcd.prefix.clone(),
        watch_timeout: etcd.watch_timeout,
    })
}

/// The first read of etcd at start, tried `startup_retry` times a second apart: an unreachable
/// etcd stops the start with a clear error instead of serving an empty configuration.
async fn first_etcd_read(
    remote: &store::etcd::Remote,
    startup_retry: u32,
) -> Result<store::ConfigState, StartError> {
    let attempts = startup_retry.max(1);
    let mut attempt = 1;
    loop {
        match remote.load(None, None).await {
            Ok(state) => return Ok(state),
            Err(err) if attempt >= attempts => {
                return Err(StartError::Store(format!(
                    "cannot read the configuration from etcd ({}) after {attempts} attempts: {err}",
                    remote.endpoints()
                )));
            }
            Err(err) => {
                tracing::warn!(attempt, error = %err, "cannot read the configuration from etcd; retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// A running gateway.
pub struct GatewayHandle {
    http_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    workers: Vec<std::thread::JoinHandle<()>>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl GatewayHandle {
    /// The bound plain-HTTP data-plane addresses (HTTP/1.1 and h2c).
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The bound TLS data-plane addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound Admin API address, if the Admin API is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting connections and starts draining; see [`GatewayHandle::wait`].
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until every worker has drained and stopped (after [`GatewayHandle::shutdown`]).
    pub async fn wait(self) {
        if let Some(task) = self.admin_task {
            let _ = task.await;
        }
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}
