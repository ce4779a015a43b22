//! Static gateway configuration: `conf/config.yaml` with Apache APISIX key names.
//!
//! Layering, lowest first: the embedded `defaults.yaml`, the user file, then the `MOONGATE_*` environment
//! overrides (see the `env` submodule); command-line flags are applied by the caller on top of the returned [`Config`].
//!
//! Loading goes text → `${{VAR}}` substitution → serde-saphyr into a small YAML tree that remembers the
//! line and column of every node → deep merge over the defaults tree (maps merge key by key, lists and
//! scalars replace, a null keeps the default) → [`Config`] through a serde deserializer over that tree.
//! Because the tree keeps positions, a bad value deep inside the merged document still produces an error
//! naming the file, the dotted key, the line and the column. Range and format checks live in the
//! `Deserialize` impls of the small value types (ports, durations, sizes, CIDRs), so they get positions for
//! free; cross-field rules run afterwards in `validate`.
//!
//! Unknown keys in the user file are warnings, never errors: APISIX config files carry many keys that
//! only make sense for nginx, and refusing them would break drop-in use.

pub(crate) mod env;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// The embedded defaults. Every key Moongate reads is present here.
const DEFAULTS_YAML: &str = include_str!("defaults.yaml");

/// Path tried when no config path is given, relative to the working directory.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "conf/config.yaml";

/// The well-known admin key from APISIX's docker examples. Refused on a non-loopback Admin API listener.
pub(crate) const WELL_KNOWN_ADMIN_KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";

/// How errors refer to values that came from the embedded defaults.
const DEFAULTS_LABEL: &str = "<built-in defaults>";

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// A 1-based line and column in a YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: u64,
    pub(crate) column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Formats `" (line L, column C)"` or nothing.
struct At(Option<Position>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pos) => write!(f, " ({pos})"),
            None => Ok(()),
        }
    }
}

/// Why the configuration could not be loaded. Every variant stops start-up (exit code 64 in `main`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A config path was given explicitly and does not exist.
    #[error("config file {} does not exist", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid YAML.
    #[error("invalid YAML in {}{}: {message}", path.display(), At(*position))]
    Syntax {
        path: PathBuf,
        position: Option<Position>,
        message: String,
    },

    /// The document is valid YAML but its top level is not a mapping.
    #[error("invalid configuration in {}{}: expected a mapping of configuration keys at the top level", path.display(), At(*position))]
    NotAMapping {
        path: PathBuf,
        position: Option<Position>,
    },

    /// A value has the wrong type, is out of range, or breaks a rule. `key` is dotted (`apisix.node_listen`).
    #[error("invalid value for \"{key}\" in {}{}: {message}", path.display(), At(*position))]
    InvalidValue {
        path: PathBuf,
        key: String,
        position: Option<Position>,
        message: String,
    },

    /// `${{VAR}}` names an unset variable and has no `:=default`.
    #[error("environment variable \"{var}\" referenced in {} (line {line}) is not set and has no default (write ${{{{{var}:=default}}}} to give one)", path.display())]
    MissingEnvVar {
        path: PathBuf,
        var: String,
        line: u64,
    },

    /// A `${{…}}` reference is malformed.
    #[error("invalid environment reference in {} (line {line}): {message}", path.display())]
    BadEnvReference {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// A `MOONGATE_*` override has an invalid value.
    #[error("invalid value for environment variable {var}: {message}")]
    InvalidEnv { var: String, message: String },

    /// Two listeners use the same address.
    #[error("listen address {addr} is configured twice ({first} and {second})")]
    DuplicateListen {
        addr: SocketAddr,
        first: String,
        second: String,
    },

    /// The Admin API would be reachable from the network with the key everybody knows.
    #[error(
        "the Admin API listens on {addr} with the well-known default admin key; set deployment.admin.admin_key to a secret key or listen on 127.0.0.1"
    )]
    DefaultAdminKeyExposed { addr: SocketAddr },

    /// The OS random source failed while generating an admin key.
    #[error("cannot generate a random admin key: {message}")]
    KeyGeneration { message: String },
}

// ---------------------------------------------------------------------------------------------------------
// Config types
// ---------------------------------------------------------------------------------------------------------

/// A secret string (admin keys, the etcd password). `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    /// A null (`key:` with no value) is the empty secret, like `key: ''`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Option::<String>::deserialize(d)?.unwrap_or_default()))
    }
}

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are the few places that compare or send it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` in time that depends only on the lengths.
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(\"\")")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

/// The whole static configuration. Sections and keys keep APISIX names.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub(crate) apisix: ApisixConfig,
    pub(crate) nginx_config: NginxConfig,
    pub(crate) deployment: DeploymentConfig,
    /// Enabled HTTP plugins. `None` (the default) enables every plugin file in `apisix.plugins_dir`;
    /// a user `plugins:` list replaces that.
    pub(crate) plugins: Option<Vec<String>>,
    /// `plugin_attr.<name>`: static per-plugin attributes, kept as JSON.
    pub(crate) plugin_attr: serde_json::Map<String, serde_json::Value>,
}

/// The `apisix:` section.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ApisixConfig {
    pub(crate) node_listen: Vec<ListenEntry>,
    /// HTTP/2 (h2c, and h2 over TLS) on every listener that does not set its own `enable_http2`.
    pub(crate) enable_http2: bool,
    pub(crate) enable_admin: bool,
    pub(crate) ssl: SslConfig,
    pub(crate) router: RouterConfig,
    /// Moongate: where the embedded store lives. Relative paths are relative to the working directory.
    pub(crate) data_dir: PathBuf,
    /// Moongate: the plugin directory (`apisix.plugins.a.b` is `<plugins_dir>/a/b.lua`).
    pub(crate) plugins_dir: PathBuf,
    /// Moongate: memory one worker's Lua VM may use (`None` is unlimited).
    #[serde(deserialize_with = "de_size")]
    pub(crate) plugin_memory_limit: Option<u64>,
    /// Moongate: how long one plugin phase call may run before it is stopped.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) plugin_time_limit: Duration,
    pub(crate) data_encryption: DataEncryption,
}

/// `apisix.data_encryption`: plugin conf fields named in a schema's `encrypt_fields` are stored
/// encrypted with the first key (AES-128-CBC, as APISIX); every key is tried to decrypt.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DataEncryption {
    pub(crate) enable_encrypt_fields: bool,
    #[serde(default)]
    pub(crate) keyring: Vec<Secret>,
}

/// `apisix.ssl`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SslConfig {
    pub(crate) enable: bool,
    pub(crate) listen: Vec<ListenEntry>,
}

/// `apisix.router`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RouterConfig {
    pub(crate) http: HttpRouter,
    #[allow(
        dead_code,
        reason = "accepted for APISIX compatibility; radixtree_sni is the only SNI router"
    )]
    pub(crate) ssl: SslRouter,
}

/// `apisix.router.http`.
#[allow(
    clippy::enum_variant_names,
    reason = "variant names mirror APISIX's router names"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HttpRouter {
    RadixtreeHostUri,
    RadixtreeUri,
    RadixtreeUriWithParameter,
}

impl HttpRouter {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RadixtreeHostUri => "radixtree_host_uri",
            Self::RadixtreeUri => "radixtree_uri",
            Self::RadixtreeUriWithParameter => "radixtree_uri_with_parameter",
        }
    }
}

/// `apisix.router.ssl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SslRouter {
    RadixtreeSni,
}

/// One `node_listen` / `ssl.listen` entry: `9080`, `"127.0.0.1:9080"`, or `{ip, port, enable_http2}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenEntry {
    /// `None` means all IPv4 interfaces (`0.0.0.0`).
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: u16,
    /// Overrides `apisix.enable_http2` for this listener.
    pub(crate) enable_http2: Option<bool>,
}

/// A resolved listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) enable_http2: bool,
}

/// The `nginx_config:` section; only the keys Moongate maps onto its own behaviour.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NginxConfig {
    pub(crate) error_log_level: ErrorLogLevel,
    /// Worker thread count.
    pub(crate) worker_processes: WorkerProcesses,
    /// Grace period for draining connections at shutdown.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) worker_shutdown_timeout: Duration,
    pub(crate) http: NginxHttpConfig,
}

/// `nginx_config.http`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NginxHttpConfig {
    /// `None` is unlimited (`"0"`).
    #[serde(deserialize_with = "de_size")]
    pub(crate) client_max_body_size: Option<u64>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) client_header_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) keepalive_timeout: Duration,
    /// Whether each request is logged (the `access` log target).
    pub(crate) enable_access_log: bool,
}

/// `nginx_config.error_log_level` (nginx level names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorLogLevel {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl ErrorLogLevel {
    /// The equivalent `tracing` filter directive.
    pub(crate) fn as_filter(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info | Self::Notice => "info",
            Self::Warn => "warn",
            Self::Error | Self::Crit | Self::Alert | Self::Emerg => "error",
        }
    }
}

/// `nginx_config.worker_processes`: `auto` or a count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerProcesses {
    /// One worker per available CPU.
    Auto,
    Count(usize),
}

/// The `deployment:` section.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DeploymentConfig {
    pub(crate) role: Role,
    pub(crate) role_traditional: RoleSettings,
    pub(crate) role_data_plane: RoleSettings,
    pub(crate) role_control_plane: RoleSettings,
    pub(crate) admin: AdminConfig,
    /// Parsed for APISIX compatibility; used by the `etcd` store.
    pub(crate) etcd: EtcdConfig,
}

/// `deployment.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Traditional,
    DataPlane,
    ControlPlane,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Traditional => "traditional",
            Self::DataPlane => "data_plane",
            Self::ControlPlane => "control_plane",
        }
    }

    /// The providers that make sense for this role.
    fn allowed_providers(self) -> &'static [ConfigProvider] {
        match self {
            Self::Traditional => &[
                ConfigProvider::Embedded,
                ConfigProvider::Etcd,
                ConfigProvider::Yaml,
            ],
            Self::DataPlane => &[
                ConfigProvider::Yaml,
                ConfigProvider::Json,
                ConfigProvider::Etcd,
            ],
            Self::ControlPlane => &[ConfigProvider::Etcd, ConfigProvider::Embedded],
        }
    }
}

/// `deployment.role_<role>`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RoleSettings {
    pub(crate) config_provider: ConfigProvider,
}

/// Where routes, upstreams and the other resources come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ConfigProvider {
    /// Moongate: the gateway stores resources itself (under `apisix.data_dir`), written via the Admin API.
    Embedded,
    Etcd,
    /// `conf/apisix.yaml` (data plane), or in-memory config pushed to `/apisix/admin/configs` (traditional).
    Yaml,
    /// `conf/apisix.json`.
    Json,
}

impl ConfigProvider {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Etcd => "etcd",
            Self::Yaml => "yaml",
            Self::Json => "json",
        }
    }
}

/// `deployment.admin`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AdminConfig {
    pub(crate) admin_key_required: bool,
    pub(crate) admin_key: Vec<AdminKey>,
    pub(crate) admin_listen: AdminListen,
    /// Client networks allowed to reach the Admin API. An empty list allows every client.
    #[serde(deserialize_with = "de_ip_nets")]
    pub(crate) allow_admin: Vec<IpNet>,
    pub(crate) admin_api_version: String,
}

/// One `deployment.admin.admin_key` entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AdminKey {
    #[serde(default)]
    pub(crate) name: String,
    /// Empty (`key: ''`, as in APISIX's shipped file) means "generate one at start".
    #[serde(default)]
    pub(crate) key: Secret,
    #[serde(default = "AdminRole::admin")]
    pub(crate) role: AdminRole,
}

/// `admin` may use every method, `viewer` only GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AdminRole {
    Admin,
    Viewer,
}

impl AdminRole {
    fn admin() -> Self {
        Self::Admin
    }
}

/// `deployment.admin.admin_listen`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AdminListen {
    #[serde(deserialize_with = "de_ip_addr")]
    pub(crate) ip: IpAddr,
    #[serde(deserialize_with = "de_port")]
    pub(crate) port: u16,
}

/// `deployment.etcd`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EtcdConfig {
    pub(crate) host: Vec<String>,
    pub(crate) prefix: String,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) watch_timeout: Duration,
    pub(crate) startup_retry: u32,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<Secret>,
    pub(crate) tls: EtcdTls,
}

/// `deployment.etcd.tls`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EtcdTls {
    pub(crate) verify: bool,
    #[serde(default)]
    pub(crate) cert: Option<PathBuf>,
    #[serde(default)]
    pub(crate) key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) sni: Option<String>,
}

/// The result of [`load`].
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    /// Human-readable warnings (unknown keys, generated keys, …), to be logged at `warn` once logging is up.
    pub(crate) warnings: Vec<String>,
    /// The file that was read, or `None` when running on the embedded defaults.
    pub(crate) source: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------

/// Loads the configuration.
///
/// With `path == None`, reads `conf/config.yaml` relative to the working directory if it exists and runs
/// on the embedded defaults otherwise. An explicit path that does not exist is an error. `env` is the
/// process environment (`std::env::vars().collect()`), used for `${{VAR}}` and the `MOONGATE_*` overrides.
pub(crate) fn load(
    path: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let path = match path {
        Some(path) => {
            if !path.exists() {
                return Err(ConfigError::NotFound {
                    path: path.to_owned(),
                });
            }
            Some(path.to_owned())
        }
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()),
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            load_str(Some((&path, &text)), env)
        }
        None => load_str(None, env),
    }
}

/// Like [`load`], from text already in memory. `user` is `(path used in messages, YAML text)`.
pub(crate) fn load_str(
    user: Option<(&Path, &str)>,
    env: &HashMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let mut merged = defaults_tree();
    let source = user.map(|(path, _)| path.to_owned());
    let label = source
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULTS_LABEL));

    if let Some((path, text)) = user {
        let text = env::substitute(text, env).map_err(|e| match e {
            env::SubstitutionError::Missing { var, line } => ConfigError::MissingEnvVar {
                path: path.to_owned(),
                var,
                line,
            },
            env::SubstitutionError::Malformed { line, message } => ConfigError::BadEnvReference {
                path: path.to_owned(),
                line,
                message,
            },
        })?;
        if let Some(user_tree) = tree::parse(&text, Origin::User, path)? {
            if !matches!(user_tree.value, tree::Value::Map(_)) {
                return Err(ConfigError::NotAMapping {
                    path: path.to_owned(),
                    position: user_tree.pos,
                });
            }
            known_keys::check(&user_tree, path, &mut warnings);
            tree::merge(&mut merged, user_tree);
        }
    }

    let mut config = Config::deserialize(tree::NodeDeserializer::root(&merged))
        .map_err(|e| e.into_config_error(&label))?;

    let applied = env::apply_overrides(&mut config, env)?;
    validate(&config, &merged, &label, &applied)?;
    fill_empty_admin_keys(&mut config, source.as_deref(), &mut warnings)?;
    check_admin_exposure(&config, &mut warnings)?;

    Ok(Loaded {
        config,
        warnings,
        source,
    })
}

fn defaults_tree() -> tree::Node {
    match tree::parse(DEFAULTS_YAML, Origin::Defaults, Path::new(DEFAULTS_LABEL)) {
        Ok(Some(node)) => node,
        // Startup invariant: the embedded file is covered by tests.
        Ok(None) => panic!("embedded defaults.yaml is empty"),
        Err(e) => panic!("embedded defaults.yaml must parse: {e}"),
    }
}

impl Default for Config {
    /// The embedded defaults alone (no file, no environment).
    fn default() -> Self {
        let merged = defaults_tree();
        match Config::deserialize(tree::NodeDeserializer::root(&merged)) {
            Ok(config) => config,
            Err(e) => panic!("embedded defaults.yaml must deserialize: {e}"),
        }
    }
}

/// Cross-field rules. Type and range errors were already reported during deserialization.
fn validate(
    config: &Config,
    merged: &tree::Node,
    label: &Path,
    env_applied: &[&str],
) -> Result<(), ConfigError> {
    let invalid_at = |key: &str, message: String| {
        let (origin, position) = merged.locate(key);
        let path = match origin {
            Some(Origin::User) | None => label.to_owned(),
            Some(Origin::Defaults) => PathBuf::from(DEFAULTS_LABEL),
        };
        ConfigError::InvalidValue {
            path,
            key: key.to_owned(),
            position,
            message,
        }
    };

    let deployment = &config.deployment;
    let (settings_key, provider) = match deployment.role {
        Role::Traditional => (
            "deployment.role_traditional.config_provider",
            deployment.role_traditional.config_provider,
        ),
        Role::DataPlane => (
            "deployment.role_data_plane.config_provider",
            deployment.role_data_plane.config_provider,
        ),
        Role::ControlPlane => (
            "deployment.role_control_plane.config_provider",
            deployment.role_control_plane.config_provider,
        ),
    };
    let allowed = deployment.role.allowed_providers();
    if !allowed.contains(&provider) {
        let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
        return Err(invalid_at(
            settings_key,
            format!(
                "config_provider \"{}\" cannot be used with role {}; expected one of {}",
                provider.as_str(),
                deployment.role.as_str(),
                names.join(", ")
            ),
        ));
    }

    let encryption = &config.apisix.data_encryption;
    if encryption.enable_encrypt_fields {
        if encryption.keyring.is_empty() {
            return Err(invalid_at(
                "apisix.data_encryption.keyring",
                "enable_encrypt_fields needs at least one key".into(),
            ));
        }
        if let Some((i, _)) = encryption
            .keyring
            .iter()
            .enumerate()
            .find(|(_, k)| k.expose().len() != 16)
        {
            return Err(invalid_at(
                &format!("apisix.data_encryption.keyring[{i}]"),
                "each key must be 16 characters long (AES-128)".into(),
            ));
        }
    }

    if deployment.admin.admin_api_version != "v3" {
        return Err(invalid_at(
            "deployment.admin.admin_api_version",
            format!(
                "only v3 is supported, got \"{}\"",
                deployment.admin.admin_api_version
            ),
        ));
    }

    for (index, entry) in deployment.admin.admin_key.iter().enumerate() {
        if entry.name.is_empty() {
            let key = format!("deployment.admin.admin_key[{index}].name");
            return Err(invalid_at(
                &key,
                "every admin key needs a non-empty name".to_owned(),
            ));
        }
    }

    if config.apisix.node_listen.is_empty() {
        return Err(invalid_at(
            "apisix.node_listen",
            "expected at least one listener".to_owned(),
        ));
    }
    if config.apisix.ssl.enable && config.apisix.ssl.listen.is_empty() {
        return Err(invalid_at(
            "apisix.ssl.listen",
            "expected at least one listener while apisix.ssl.enable is true".to_owned(),
        ));
    }

    // Listener conflicts. A wildcard address conflicts with every address on the same port.
    let node_key = if env_applied.contains(&env::NODE_LISTEN) {
        env::NODE_LISTEN
    } else {
        "apisix.node_listen"
    };
    let admin_key = if env_applied.contains(&env::ADMIN_LISTEN) {
        env::ADMIN_LISTEN
    } else {
        "deployment.admin.admin_listen"
    };
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    let all = config
        .node_listen_addrs()
        .into_iter()
        .map(|a| (a, node_key))
        .chain(
            config
                .ssl_listen_addrs()
                .into_iter()
                .map(|a| (a, "apisix.ssl.listen")),
        )
        .chain(config.admin_addr().map(|a| (a, admin_key)));
    for (addr, key) in all {
        if addr.port() == 0 {
            continue;
        }
        let clash = seen.iter().find(|(other, _)| {
            other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((_, first)) = clash {
            return Err(ConfigError::DuplicateListen {
                addr,
                first: (*first).to_owned(),
                second: key.to_owned(),
            });
        }
        seen.push((addr, key));
    }
    Ok(())
}

/// Replaces empty admin keys with random ones, as APISIX does on first start (APISIX also writes the key
/// back to config.yaml; Moongate does not touch the file, so the key changes on every start).
fn fill_empty_admin_keys(
    config: &mut Config,
    source: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, ConfigError> {
    let admin_enabled = config.admin_addr().is_some();
    let mut generated = None;
    for entry in &mut config.deployment.admin.admin_key {
        if !entry.key.is_empty() {
            continue;
        }
        let key = random_key()?;
        if admin_enabled {
            let file = source.map_or_else(
                || DEFAULT_CONFIG_PATH.to_owned(),
                |p| p.display().to_string(),
            );
            warnings.push(format!(
                "deployment.admin.admin_key \"{}\" is empty; generated a random key for this run: {} \
                 (it is not written back to {file}; set the key there or in {} to keep it across restarts)",
                entry.name,
                key.expose(),
                env::ADMIN_KEY
            ));
        }
        entry.key = key.clone();
        generated.get_or_insert(key);
    }
    Ok(generated)
}

/// 32 lowercase hex characters from the OS random source.
fn random_key() -> Result<Secret, ConfigError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ConfigError::KeyGeneration {
        message: e.to_string(),
    })?;
    let mut key = String::with_capacity(32);
    for b in bytes {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    Ok(Secret::new(key))
}

/// The security rule: the well-known key must not be reachable from the network.
fn check_admin_exposure(config: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let Some(addr) = config.admin_addr() else {
        return Ok(());
    };
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let admin = &config.deployment.admin;
    if admin
        .admin_key
        .iter()
        .any(|k| k.key.matches(WELL_KNOWN_ADMIN_KEY))
    {
        return Err(ConfigError::DefaultAdminKeyExposed { addr });
    }
    if !admin.admin_key_required {
        warnings.push(format!(
            "deployment.admin.admin_key_required is false and the Admin API listens on {addr}: \
             any client allowed by deployment.admin.allow_admin can change the configuration"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Resolved helpers for the rest of the crate
// ---------------------------------------------------------------------------------------------------------

impl ListenEntry {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.port,
        )
    }

    /// Parses `9080`, `":9080"`, `"127.0.0.1:9080"` or `"[::1]:9080"`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(port) = text.trim_start_matches(':').parse::<u64>() {
            return Ok(Self {
                ip: None,
                port: check_port(port)?,
                enable_http2: None,
            });
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self {
                ip: Some(addr.ip()),
                port: addr.port(),
                enable_http2: None,
            });
        }
        if let Some((_, port)) = text.rsplit_once(':')
            && let Ok(port) = port.parse::<u64>()
        {
            check_port(port)?;
        }
        Err(format!("expected a port or ip:port, got \"{text}\""))
    }
}

impl WorkerProcesses {
    /// Parses `auto` or a count of at least 1.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match text.parse::<u64>() {
            Ok(n) => Self::from_count(n),
            Err(_) => Err(format!(
                "expected \"auto\" or a worker count of at least 1, got \"{text}\""
            )),
        }
    }

    fn from_count(n: u64) -> Result<Self, String> {
        match usize::try_from(n) {
            Ok(n) if n >= 1 => Ok(Self::Count(n)),
            _ => Err(format!(
                "expected \"auto\" or a worker count of at least 1, got {n}"
            )),
        }
    }
}

impl Config {
    /// Proxy listeners with their HTTP/2 setting. A bare port means `0.0.0.0:port`.
    pub(crate) fn node_listeners(&self) -> Vec<ListenerSpec> {
        self.listeners(&self.apisix.node_listen)
    }

    /// Proxy listener addresses.
    pub(crate) fn node_listen_addrs(&self) -> Vec<SocketAddr> {
        self.apisix
            .node_listen
            .iter()
            .map(ListenEntry::addr)
            .collect()
    }

    /// TLS listeners; empty when `apisix.ssl.enable` is false.
    pub(crate) fn ssl_listeners(&self) -> Vec<ListenerSpec> {
        if self.apisix.ssl.enable {
            self.listeners(&self.apisix.ssl.listen)
        } else {
            Vec::new()
        }
    }

    /// TLS listener addresses; empty when `apisix.ssl.enable` is false.
    pub(crate) fn ssl_listen_addrs(&self) -> Vec<SocketAddr> {
        self.ssl_listeners().into_iter().map(|l| l.addr).collect()
    }

    fn listeners(&self, entries: &[ListenEntry]) -> Vec<ListenerSpec> {
        entries
            .iter()
            .map(|e| ListenerSpec {
                addr: e.addr(),
                enable_http2: e.enable_http2.unwrap_or(self.apisix.enable_http2),
            })
            .collect()
    }

    /// The Admin API address; `None` when `apisix.enable_admin` is false or the role is `data_plane`.
    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        if !self.apisix.enable_admin || self.deployment.role == Role::DataPlane {
            return None;
        }
        let listen = &self.deployment.admin.admin_listen;
        Some(SocketAddr::new(listen.ip, listen.port))
    }

    /// Networks allowed to call the Admin API (empty = everyone).
    pub(crate) fn allow_admin(&self) -> &[IpNet] {
        &self.deployment.admin.allow_admin
    }

    /// Admin API keys, none of them empty after [`load`].
    pub(crate) fn admin_keys(&self) -> &[AdminKey] {
        &self.deployment.admin.admin_key
    }

    /// Number of data-plane worker threads (`auto` = available parallelism).
    pub(crate) fn worker_threads(&self) -> usize {
        match self.nginx_config.worker_processes {
            WorkerProcesses::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            WorkerProcesses::Count(n) => n,
        }
    }

    /// Request body limit in bytes; `None` is unlimited.
    pub(crate) fn client_max_body_size(&self) -> Option<u64> {
        self.nginx_config.http.client_max_body_size
    }

    pub(crate) fn client_header_timeout(&self) -> Duration {
        self.nginx_config.http.client_header_timeout
    }

    pub(crate) fn keepalive_timeout(&self) -> Duration {
        self.nginx_config.http.keepalive_timeout
    }

    /// How long shutdown waits for in-flight requests (`nginx_config.worker_shutdown_timeout`).
    pub(crate) fn shutdown_grace(&self) -> Duration {
        self.nginx_config.worker_shutdown_timeout
    }

    /// The keys that encrypt plugin conf fields at rest, or `None` when that is off.
    pub(crate) fn encryption_keys(&self) -> Option<Vec<String>> {
        let encryption = &self.apisix.data_encryption;
        encryption.enable_encrypt_fields.then(|| {
            encryption
                .keyring
                .iter()
                .map(|k| k.expose().to_owned())
                .collect()
        })
    }

    /// Whether requests are logged (`nginx_config.http.enable_access_log`).
    pub(crate) fn access_log(&self) -> bool {
        self.nginx_config.http.enable_access_log
    }

    /// Default `tracing` filter derived from `nginx_config.error_log_level` (`RUST_LOG` wins over it).
    pub(crate) fn log_filter(&self) -> &'static str {
        self.nginx_config.error_log_level.as_filter()
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.apisix.data_dir
    }

    pub(crate) fn plugins_dir(&self) -> &Path {
        &self.apisix.plugins_dir
    }

    pub(crate) fn role(&self) -> Role {
        self.deployment.role
    }

    /// The config provider of the active role.
    pub(crate) fn config_provider(&self) -> ConfigProvider {
        let d = &self.deployment;
        match d.role {
            Role::Traditional => d.role_traditional.config_provider,
            Role::DataPlane => d.role_data_plane.config_provider,
            Role::ControlPlane => d.role_control_plane.config_provider,
        }
    }

    /// `plugin_attr.<name>`, as APISIX's `plugin.plugin_attr(name)`.
    #[cfg(test)]
    pub(crate) fn plugin_attr(&self, name: &str) -> Option<&serde_json::Value> {
        self.plugin_attr.get(name)
    }

    /// One line describing the effective configuration, without secrets, for a startup debug log.
    pub(crate) fn effective_summary(&self) -> String {
        fn join(addrs: &[ListenerSpec]) -> String {
            let items: Vec<String> = addrs
                .iter()
                .map(|l| {
                    if l.enable_http2 {
                        format!("{}+h2", l.addr)
                    } else {
                        l.addr.to_string()
                    }
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        let admin = match self.admin_addr() {
            Some(addr) => format!(
                "{addr} (keys: {}, key_required: {}, allow: {})",
                self.admin_keys().len(),
                self.deployment.admin.admin_key_required,
                if self.allow_admin().is_empty() {
                    "any".to_owned()
                } else {
                    self.allow_admin()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
            None => "off".to_owned(),
        };
        let ssl = if self.apisix.ssl.enable {
            join(&self.ssl_listeners())
        } else {
            "off".to_owned()
        };
        let body = self
            .client_max_body_size()
            .map_or_else(|| "unlimited".to_owned(), |n| format!("{n}B"));
        format!(
            "node_listen={} ssl_listen={} admin={} role={} config_provider={} router={} workers={} \
             client_max_body_size={} client_header_timeout={:?} keepalive_timeout={:?} shutdown_grace={:?} \
             log_level={} data_dir={} plugins_dir={} plugins={} [{}]",
            join(&self.node_listeners()),
            ssl,
            admin,
            self.role().as_str(),
            self.config_provider().as_str(),
            self.apisix.router.http.as_str(),
            self.worker_threads(),
            body,
            self.client_header_timeout(),
            self.keepalive_timeout(),
            self.shutdown_grace(),
            self.log_filter(),
            self.data_dir().display(),
            self.plugins_dir().display(),
            self.plugins.as_ref().map_or(0, Vec::len),
            self.plugins
                .as_ref()
                .map_or_else(|| "every plugin file".to_owned(), |p| p.join(","))
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Value parsing
// ---------------------------------------------------------------------------------------------------------

fn port_message(port: &dyn fmt::Display) -> String {
    format!("expected a port number between 0 and 65535 (0 picks a free port), got {port}")
}

fn check_port(port: u64) -> Result<u16, String> {
    match u16::try_from(port) {
        Ok(p) => Ok(p),
        Err(_) => Err(port_message(&port)),
    }
}

/// Parses an nginx-style duration: `"60s"`, `"5m"`, `"500ms"`, `"1h30m"`, or a plain integer (seconds).
/// Units: `ms`, `s`, `m`, `h`, `d`, `w`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let original = text;
    let text = text.trim();
    let bad = || format!("expected a duration such as 60s, 5m or 500ms, got \"{original}\"");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let millis = number.checked_mul(millis_per_unit).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses an nginx-style size: `"64m"`, `"1k"`, `"1g"`, `"1024"` (bytes). `"0"` means unlimited (`None`).
pub(crate) fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let original = text;
    let text = text.trim();
    let bad = || format!("expected a size such as 64m, 512k or 0 (unlimited), got \"{original}\"");
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        Some(_) => (text, 1),
        None => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(multiplier).ok_or_else(bad)?;
    Ok(if bytes == 0 { None } else { Some(bytes) })
}

/// Scalar visitor shared by the small value types: integers, floats and strings reach `parse`.
struct ScalarVisitor<T> {
    expecting: &'static str,
    from_str: fn(&str) -> Result<T, String>,
    from_u64: fn(u64) -> Result<T, String>,
}

impl<T> Visitor<'_> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.from_str)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.from_u64)(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => (self.from_u64)(v).map_err(E::custom),
            Err(_) => Err(E::custom(format!("expected {}, got {v}", self.expecting))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.from_str)(&v.to_string()).map_err(E::custom)
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 60s, 5m or 500ms")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("expected a non-negative duration, got {v}")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v)
                .map_err(|_| E::custom(format!("expected a non-negative duration, got {v}")))
        }
    }
    d.deserialize_any(DurationVisitor)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(ScalarVisitor {
        expecting: "a size such as 64m, 512k or 0",
        from_str: parse_size,
        from_u64: |n| Ok((n != 0).then_some(n)),
    })
}

fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    d.deserialize_any(ScalarVisitor {
        expecting: "a port number between 0 and 65535",
        from_str: |s| match s.trim().parse::<u64>() {
            Ok(n) => check_port(n),
            Err(_) => Err(port_message(&format!("\"{s}\""))),
        },
        from_u64: check_port,
    })
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let trimmed = s.trim().trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse()
        .map_err(|_| format!("expected an IP address, got \"{s}\""))
}

fn de_ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    d.deserialize_str(ScalarVisitor {
        expecting: "an IP address",
        from_str: parse_ip,
        from_u64: |n| Err(format!("expected an IP address, got {n}")),
    })
}

/// A CIDR (`127.0.0.0/24`) or a bare address (`::1`, meaning a single host).
struct Cidr(IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ScalarVisitor {
            expecting: "a CIDR such as 127.0.0.0/24",
            from_str: |s| {
                let t = s.trim();
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map(Cidr)
                    .map_err(|_| {
                        format!(
                            "expected a CIDR such as 127.0.0.0/24 or an IP address, got \"{s}\""
                        )
                    })
            },
            from_u64: |n| Err(format!("expected a CIDR such as 127.0.0.0/24, got {n}")),
        })
    }
}

fn de_ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Cidr>::deserialize(d)?
        .into_iter()
        .map(|c| c.0)
        .collect())
}

impl<'de> Deserialize<'de> for WorkerProcesses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor {
            expecting: "\"auto\" or a worker count of at least 1",
            from_str: WorkerProcesses::parse,
            from_u64: WorkerProcesses::from_count,
        })
    }
}

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a port, an \"ip:port\" string, or a map with ip, port and enable_http2",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ListenEntry, E> {
                Ok(ListenEntry {
                    ip: None,
                    port: check_port(v).map_err(E::custom)?,
                    enable_http2: None,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ListenEntry, E> {
                Err(E::custom(port_message(&v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                ListenEntry::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListenEntry, A::Error> {
                #[derive(Deserialize)]
                struct Ip(#[serde(deserialize_with = "de_ip_addr")] IpAddr);
                #[derive(Deserialize)]
                struct Port(#[serde(deserialize_with = "de_port")] u16);

                let mut entry = ListenEntry {
                    ip: None,
                    port: 0,
                    enable_http2: None,
                };
                let mut has_port = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "ip" => entry.ip = map.next_value::<Option<Ip>>()?.map(|ip| ip.0),
                        "port" => {
                            entry.port = map.next_value::<Port>()?.0;
                            has_port = true;
                        }
                        "enable_http2" => entry.enable_http2 = map.next_value()?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                if !has_port {
                    return Err(de::Error::custom("missing \"port\" in listener entry"));
                }
                Ok(entry)
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The positioned YAML tree, merging, and a serde deserializer over it
// ---------------------------------------------------------------------------------------------------------

/// Which layer a node came from, so errors name the right file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Defaults,
    User,
}

mod tree {
    use super::*;

    use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

    #[derive(Debug, Clone)]
    pub(super) struct Node {
        pub(super) value: Value,
        pub(super) pos: Option<Position>,
        pub(super) origin: Origin,
    }

    #[derive(Debug, Clone)]
    pub(super) enum Value {
        Null,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Float(f64),
        Str(String),
        Seq(Vec<Node>),
        Map(Vec<Entry>),
    }

    #[derive(Debug, Clone)]
    pub(super) struct Entry {
        pub(super) key: String,
        pub(super) key_pos: Option<Position>,
        pub(super) node: Node,
    }

    /// Parses YAML text. `Ok(None)` for an empty document (only comments, or nothing).
    pub(super) fn parse(
        text: &str,
        origin: Origin,
        path: &Path,
    ) -> Result<Option<Node>, ConfigError> {
        let options = serde_saphyr::options! {
            // YAML 1.2 booleans: `on`, `yes`, `y` stay strings (bool targets still accept them, see
            // `deserialize_bool`), so a key or value such as `n` is never read as `false`.
            strict_booleans: true,
            with_snippet: false,
        };
        match serde_saphyr::from_str_with_options::<Option<Spanned<Raw>>>(text, options) {
            Ok(raw) => Ok(raw.map(|raw| convert(raw, origin))),
            Err(e) => {
                let inner = e.without_snippet();
                let message: String = UserMessageFormatter
                    .format_message(inner)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    position: e.location().and_then(position),
                    message,
                })
            }
        }
    }

    fn position(loc: serde_saphyr::Location) -> Option<Position> {
        (loc.line() > 0).then(|| Position {
            line: loc.line(),
            column: loc.column(),
        })
    }

    fn convert(raw: Spanned<Raw>, origin: Origin) -> Node {
        let pos = position(raw.referenced);
        let value = match raw.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Int(i) => Value::Int(i),
            Raw::UInt(u) => Value::UInt(u),
            Raw::Float(f) => Value::Float(f),
            Raw::Str(s) => Value::Str(s),
            Raw::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, origin)).collect()),
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Entry {
                        key: k.value.0,
                        key_pos: position(k.referenced),
                        node: convert(v, origin),
                    })
                    .collect(),
            ),
        };
        Node { value, pos, origin }
    }

    /// What serde-saphyr produces; converted to [`Node`] right away.
    enum Raw {
        Null,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Float(f64),
        Str(String),
        Seq(Vec<Spanned<Raw>>),
        Map(Vec<(Spanned<RawKey>, Spanned<Raw>)>),
    }

    struct RawKey(String);

    impl<'de> Deserialize<'de> for RawKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = RawKey;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a scalar mapping key")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
                    Ok(RawKey(v.to_owned()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<RawKey, E> {
                    Ok(RawKey(v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKey, E> {
                    Ok(RawKey(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKey, E> {
                    Ok(RawKey(v.to_string()))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKey, E> {
                    Ok(RawKey(v.to_string()))
                }
                fn visit_unit<E: de::Error>(self) -> Result<RawKey, E> {
                    Ok(RawKey("null".to_owned()))
                }
            }
            d.deserialize_string(KeyVisitor)
        }
    }

    impl<'de> Deserialize<'de> for Raw {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct RawVisitor;
            impl<'de> Visitor<'de> for RawVisitor {
                type Value = Raw;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any YAML value")
                }
                fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
                    Ok(Raw::Null)
                }
                fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
                    Ok(Raw::Null)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                    Raw::deserialize(d)
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
                    Ok(Raw::Bool(v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
                    Ok(Raw::Int(v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                    Ok(Raw::UInt(v))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
                    Ok(Raw::Float(v))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
                    Ok(Raw::Str(v.to_owned()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
                    Ok(Raw::Str(v))
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
                    Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element()? {
                        items.push(item);
                    }
                    Ok(Raw::Seq(items))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(key) = map.next_key()? {
                        entries.push((key, map.next_value()?));
                    }
                    Ok(Raw::Map(entries))
                }
            }
            d.deserialize_any(RawVisitor)
        }
    }

    /// Deep-merges `over` into `base`: maps merge key by key, a null keeps the base, anything else replaces.
    pub(super) fn merge(base: &mut Node, over: Node) {
        if matches!(over.value, Value::Null) {
            return;
        }
        if let (Value::Map(base_entries), Value::Map(_)) = (&mut base.value, &over.value) {
            let Value::Map(over_entries) = over.value else {
                return;
            };
            for entry in over_entries {
                match base_entries.iter_mut().find(|b| b.key == entry.key) {
                    Some(existing) => {
                        existing.key_pos = entry.key_pos;
                        merge(&mut existing.node, entry.node);
                    }
                    None => base_entries.push(entry),
                }
            }
            base.pos = over.pos;
            base.origin = over.origin;
            return;
        }
        *base = over;
    }

    impl Node {
        /// Finds the node at a dotted key (`a.b[2].c`) and returns where it came from.
        pub(super) fn locate(&self, dotted: &str) -> (Option<Origin>, Option<Position>) {
            // Walks as far as the path exists; a missing tail points at the deepest node found.
            let mut node = self;
            for part in dotted.split('.') {
                let (name, index) = match part.split_once('[') {
                    Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                    None => (part, None),
                };
                let Value::Map(entries) = &node.value else {
                    break;
                };
                let Some(entry) = entries.iter().find(|e| e.key == name) else {
                    break;
                };
                node = &entry.node;
                if let Some(index) = index {
                    let Value::Seq(items) = &node.value else {
                        break;
                    };
                    let Some(item) = items.get(index) else { break };
                    node = item;
                }
            }
            (Some(node.origin), node.pos)
        }

        /// Names the node's type for error messages.
        fn describe(&self) -> String {
            match &self.value {
                Value::Null => "null".to_owned(),
                Value::Bool(b) => format!("boolean {b}"),
                Value::Int(i) => format!("integer {i}"),
                Value::UInt(u) => format!("integer {u}"),
                Value::Float(f) => format!("number {f}"),
                Value::Str(s) => format!("string \"{s}\""),
                Value::Seq(_) => "a list".to_owned(),
                Value::Map(_) => "a mapping".to_owned(),
            }
        }
    }

    /// A deserialization error with the dotted key and position of the innermost node that raised it.
    #[derive(Debug)]
    pub(super) struct DeError {
        message: String,
        key: Option<String>,
        pos: Option<Position>,
        origin: Option<Origin>,
    }

    impl DeError {
        pub(super) fn into_config_error(self, user_path: &Path) -> ConfigError {
            let path = match self.origin {
                Some(Origin::Defaults) => PathBuf::from(DEFAULTS_LABEL),
                _ => user_path.to_owned(),
            };
            ConfigError::InvalidValue {
                path,
                key: self
                    .key
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "(top level)".to_owned()),
                position: self.pos,
                message: self.message,
            }
        }
    }

    impl fmt::Display for DeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{}: {}{}",
                self.key.as_deref().unwrap_or("(top level)"),
                self.message,
                At(self.pos)
            )
        }
    }

    impl std::error::Error for DeError {}

    impl de::Error for DeError {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Self {
                message: msg.to_string(),
                key: None,
                pos: None,
                origin: None,
            }
        }
    }

    /// Serde deserializer over a [`Node`], tracking the dotted key for error messages.
    pub(super) struct NodeDeserializer<'a> {
        node: &'a Node,
        key: String,
    }

    impl<'a> NodeDeserializer<'a> {
        pub(super) fn root(node: &'a Node) -> Self {
            Self {
                node,
                key: String::new(),
            }
        }

        /// Attaches this node's key and position to an error raised directly by its visitor.
        fn annotate(&self, mut e: DeError) -> DeError {
            if e.key.is_none() {
                e.key = Some(self.key.clone());
                e.pos = self.node.pos;
                e.origin = Some(self.node.origin);
            }
            e
        }

        fn visit<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, DeError> {
            let result = match &self.node.value {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(*b),
                Value::Int(i) => visitor.visit_i64(*i),
                Value::UInt(u) => visitor.visit_u64(*u),
                Value::Float(f) => visitor.visit_f64(*f),
                Value::Str(s) => visitor.visit_str(s),
                Value::Seq(items) => visitor.visit_seq(SeqDe {
                    items: items.iter(),
                    key: &self.key,
                }),
                Value::Map(entries) => visitor.visit_map(MapDe {
                    entries: entries.iter(),
                    pending: None,
                    parent: &self.key,
                }),
            };
            result.map_err(|e| self.annotate(e))
        }

        fn scalar_string(&self) -> Option<String> {
            match &self.node.value {
                Value::Bool(b) => Some(b.to_string()),
                Value::Int(i) => Some(i.to_string()),
                Value::UInt(u) => Some(u.to_string()),
                Value::Float(f) => Some(f.to_string()),
                _ => None,
            }
        }
    }

    impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
        type Error = DeError;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.visit(visitor)
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if matches!(self.node.value, Value::Null) {
                visitor.visit_none().map_err(|e| self.annotate(e))
            } else {
                let annotated = NodeDeserializer {
                    node: self.node,
                    key: self.key.clone(),
                };
                visitor.visit_some(self).map_err(|e| annotated.annotate(e))
            }
        }

        fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            // YAML 1.1 spellings, as older APISIX files may use them.
            if let Value::Str(s) = &self.node.value {
                let b = match s.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Some(true),
                    "false" | "no" | "off" => Some(false),
                    _ => None,
                };
                if let Some(b) = b {
                    return visitor.visit_bool(b).map_err(|e| self.annotate(e));
                }
            }
            self.visit(visitor)
        }

        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            // A scalar written without quotes (`key: 12345`) is still a string where a string is expected.
            match self.scalar_string() {
                Some(s) => visitor.visit_string(s).map_err(|e| self.annotate(e)),
                None => self.visit(visitor),
            }
        }

        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_str(visitor)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, DeError> {
            let annotated = NodeDeserializer {
                node: self.node,
                key: self.key.clone(),
            };
            visitor
                .visit_newtype_struct(self)
                .map_err(|e| annotated.annotate(e))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, DeError> {
            self.deserialize_map(visitor)
        }

        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if matches!(self.node.value, Value::Map(_)) {
                self.visit(visitor)
            } else {
                let message = format!("expected a mapping, got {}", self.node.describe());
                Err(self.annotate(de::Error::custom(message)))
            }
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, DeError> {
            match &self.node.value {
                Value::Str(s) => visitor
                    .visit_enum(s.as_str().into_deserializer())
                    .map_err(|e: DeError| self.annotate(e)),
                _ => self.visit(visitor),
            }
        }

        serde::forward_to_deserialize_any! {
            i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct seq tuple
            tuple_struct identifier ignored_any
        }
    }

    struct SeqDe<'a> {
        items: std::slice::Iter<'a, Node>,
        key: &'a str,
    }

    impl<'de> SeqAccess<'de> for SeqDe<'_> {
        type Error = DeError;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, DeError> {
            match self.items.next() {
                Some(node) => seed
                    .deserialize(NodeDeserializer {
                        node,
                        key: self.key.to_owned(),
                    })
                    .map(Some),
                None => Ok(None),
            }
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.items.len())
        }
    }

    struct MapDe<'a> {
        entries: std::slice::Iter<'a, Entry>,
        pending: Option<&'a Entry>,
        parent: &'a str,
    }

    impl<'de> MapAccess<'de> for MapDe<'_> {
        type Error = DeError;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, DeError> {
            match self.entries.next() {
                Some(entry) => {
                    self.pending = Some(entry);
                    seed.deserialize(entry.key.as_str().into_deserializer())
                        .map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, DeError> {
            let Some(entry) = self.pending.take() else {
                return Err(de::Error::custom("value requested before key"));
            };
            let key = if self.parent.is_empty() {
                entry.key.clone()
            } else {
                format!("{}.{}", self.parent, entry.key)
            };
            seed.deserialize(NodeDeserializer {
                node: &entry.node,
                key,
            })
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.entries.len())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Known keys
// ---------------------------------------------------------------------------------------------------------

mod known_keys {
    use super::tree::{Node, Value};
    use super::*;

    /// Keys Moongate reads. `[]` stands for "each item of the list".
    const USED: &[&str] = &[
        "apisix.node_listen[].ip",
        "apisix.node_listen[].port",
        "apisix.node_listen[].enable_http2",
        "apisix.enable_http2",
        "apisix.enable_admin",
        "apisix.data_dir",
        "apisix.data_encryption.enable_encrypt_fields",
        "apisix.data_encryption.keyring",
        "apisix.plugins_dir",
        "apisix.plugin_memory_limit",
        "apisix.plugin_time_limit",
        "apisix.ssl.enable",
        "apisix.ssl.listen[].ip",
        "apisix.ssl.listen[].port",
        "apisix.ssl.listen[].enable_http2",
        "apisix.router.http",
        "apisix.router.ssl",
        "nginx_config.error_log_level",
        "nginx_config.worker_processes",
        "nginx_config.worker_shutdown_timeout",
        "nginx_config.http.client_max_body_size",
        "nginx_config.http.client_header_timeout",
        "nginx_config.http.keepalive_timeout",
        "nginx_config.http.enable_access_log",
        "deployment.role",
        "deployment.role_traditional.config_provider",
        "deployment.role_data_plane.config_provider",
        "deployment.role_control_plane.config_provider",
        "deployment.admin.admin_key_required",
        "deployment.admin.admin_key[].name",
        "deployment.admin.admin_key[].key",
        "deployment.admin.admin_key[].role",
        "deployment.admin.admin_listen.ip",
        "deployment.admin.admin_listen.port",
        "deployment.admin.allow_admin",
        "deployment.admin.admin_api_version",
        "deployment.etcd.host",
        "deployment.etcd.prefix",
        "deployment.etcd.timeout",
        "deployment.etcd.watch_timeout",
        "deployment.etcd.startup_retry",
        "deployment.etcd.user",
        "deployment.etcd.password",
        "deployment.etcd.tls.verify",
        "deployment.etcd.tls.cert",
        "deployment.etcd.tls.key",
        "deployment.etcd.tls.sni",
        "plugins",
        "plugin_attr",
    ];

    /// APISIX keys Moongate accepts without using them (nginx tuning, stream proxy, features not built).
    /// A key listed here silences the warning for itself and everything below it.
    const ACCEPTED_UNUSED: &[&str] = &[
        "apisix.id",
        "apisix.enable_control",
        "apisix.control",
        "apisix.proxy_mode",
        "apisix.stream_proxy",
        "apisix.enable_ipv6",
        "apisix.enable_dev_mode",
        "apisix.enable_reuseport",
        "apisix.enable_server_tokens",
        "apisix.show_upstream_status_in_response_header",
        "apisix.extra_lua_path",
        "apisix.extra_lua_cpath",
        "apisix.lua_module_hook",
        "apisix.proxy_cache",
        "apisix.delete_uri_tail_slash",
        "apisix.normalize_uri_like_servlet",
        "apisix.match_uri_encoded_slash",
        "apisix.dns_resolver",
        "apisix.dns_resolver_valid",
        "apisix.resolver_timeout",
        "apisix.enable_resolv_search_opt",
        "apisix.disable_sync_configuration_during_start",
        "apisix.events",
        "apisix.tracing",
        "apisix.status",
        "apisix.node_listen[].enable_http3",
        "apisix.ssl.listen[].enable_http3",
        "apisix.ssl.ssl_trusted_certificate",
        "apisix.ssl.ssl_trusted_combined_path",
        "apisix.ssl.ssl_protocols",
        "apisix.ssl.ssl_ciphers",
        "apisix.ssl.ssl_session_tickets",
        "apisix.ssl.fallback_sni",
        "apisix.ssl.key_encrypt_salt",
        "nginx_config.user",
        "nginx_config.error_log",
        "nginx_config.enable_cpu_affinity",
        "nginx_config.worker_rlimit_nofile",
        "nginx_config.max_pending_timers",
        "nginx_config.max_running_timers",
        "nginx_config.event",
        "nginx_config.envs",
        "nginx_config.meta",
        "nginx_config.stream",
        "nginx_config.main_configuration_snippet",
        "nginx_config.http_configuration_snippet",
        "nginx_config.http_server_configuration_snippet",
        "nginx_config.http_server_location_configuration_snippet",
        "nginx_config.http_admin_configuration_snippet",
        "nginx_config.http_end_configuration_snippet",
        "nginx_config.stream_configuration_snippet",
        "nginx_config.http.access_log",
        "nginx_config.http.access_log_buffer",
        "nginx_config.http.access_log_format",
        "nginx_config.http.access_log_format_escape",
        "nginx_config.http.client_body_timeout",
        "nginx_config.http.send_timeout",
        "nginx_config.http.underscores_in_headers",
        "nginx_config.http.real_ip_header",
        "nginx_config.http.real_ip_recursive",
        "nginx_config.http.real_ip_from",
        "nginx_config.http.custom_lua_shared_dict",
        "nginx_config.http.lua_shared_dict",
        "nginx_config.http.proxy_ssl_server_name",
        "nginx_config.http.upstream",
        "nginx_config.http.charset",
        "nginx_config.http.variables_hash_max_size",
        "deployment.config_provider",
        "deployment.certs",
        "deployment.fallback_cp",
        "deployment.admin.enable_admin_cors",
        "deployment.admin.enable_admin_ui",
        "deployment.admin.https_admin",
        "deployment.admin.admin_api_mtls",
        "deployment.etcd.resync_delay",
        "deployment.etcd.health_check_timeout",
        "deployment.etcd.use_grpc",
        "stream_plugins",
        "discovery",
        "graphql",
        "ext-plugin",
        "wasm",
        "xrpc",
    ];

    fn is_interior(path: &str) -> bool {
        USED.iter().chain(ACCEPTED_UNUSED).any(|k| {
            k.len() > path.len()
                && k.starts_with(path)
                && matches!(k.as_bytes().get(path.len()), Some(b'.') | Some(b'['))
        })
    }

    fn is_leaf(path: &str) -> bool {
        USED.iter().chain(ACCEPTED_UNUSED).any(|k| *k == path)
    }

    /// Pushes a warning for every key in `user` that Moongate neither uses nor knows from APISIX.
    pub(super) fn check(user: &Node, file: &Path, warnings: &mut Vec<String>) {
        walk(user, "", file, warnings);
    }

    fn walk(node: &Node, path: &str, file: &Path, warnings: &mut Vec<String>) {
        match &node.value {
            Value::Map(entries) => {
                for entry in entries {
                    let child = if path.is_empty() {
                        entry.key.clone()
                    } else {
                        format!("{path}.{}", entry.key)
                    };
                    if is_leaf(&child) && !is_interior(&child) {
                        continue;
                    }
                    if is_interior(&child) {
                        walk(&entry.node, &child, file, warnings);
                        continue;
                    }
                    let at = entry
                        .key_pos
                        .map(|p| format!(" at line {}", p.line))
                        .unwrap_or_default();
                    let shown = child.replace("[]", "");
                    warnings.push(format!(
                        "unknown configuration key \"{shown}\" in {}{at} (ignored)",
                        file.display()
                    ));
                }
            }
            Value::Seq(items) => {
                let item_path = format!("{path}[]");
                for item in items {
                    if matches!(item.value, Value::Map(_)) {
                        walk(item, &item_path, file, warnings);
                    }
                }
            }
            _ => {}
        }
    }

    #[cfg(test)]
    pub(super) fn all_known(path: &str) -> bool {
        is_leaf(path) || is_interior(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn from_yaml(text: &str) -> Result<Loaded, ConfigError> {
        load_str(Some((Path::new("conf/config.yaml"), text)), &no_env())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn defaults_load_without_a_file() {
        let loaded = load_str(None, &no_env()).expect("defaults load");
        let c = &loaded.config;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.source, None);
        assert_eq!(
            c.node_listen_addrs(),
            vec![addr("0.0.0.0:9080"), addr("0.0.0.0:9081")]
        );
        assert_eq!(c.ssl_listen_addrs(), vec![addr("0.0.0.0:9443")]);
        assert_eq!(c.admin_addr(), Some(addr("127.0.0.1:9180")));
        assert!(c.node_listeners().iter().all(|l| l.enable_http2));
        assert_eq!(c.apisix.router.http, HttpRouter::RadixtreeHostUri);
        assert_eq!(c.apisix.router.ssl, SslRouter::RadixtreeSni);
        assert_eq!(c.client_max_body_size(), None);
        assert_eq!(c.client_header_timeout(), Duration::from_secs(60));
        assert_eq!(c.keepalive_timeout(), Duration::from_secs(60));
        assert_eq!(c.shutdown_grace(), Duration::from_secs(240));
        assert_eq!(c.nginx_config.worker_processes, WorkerProcesses::Auto);
        assert!(c.worker_threads() >= 1);
        assert_eq!(c.role(), Role::Traditional);
        assert_eq!(c.config_provider(), ConfigProvider::Embedded);
        assert_eq!(c.data_dir(), Path::new(".moongate"));
        assert_eq!(c.plugins_dir(), Path::new("plugins"));
        assert_eq!(c.log_filter(), "warn");
        let keys = c.admin_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].name.as_str(), keys[0].role),
            ("admin", AdminRole::Admin)
        );
        assert!(keys[0].key.matches(WELL_KNOWN_ADMIN_KEY));
        assert!(c.deployment.admin.admin_key_required);
        assert_eq!(c.allow_admin().len(), 2);
        assert!(
            c.allow_admin()
                .iter()
                .any(|n| n.contains(&"::1".parse::<IpAddr>().expect("ip")))
        );
        assert_eq!(c.plugins, None, "every plugin file is enabled by default");
        assert_eq!(c.deployment.etcd.prefix, "/apisix");
        assert_eq!(c.deployment.etcd.timeout, Duration::from_secs(30));
        assert!(c.plugin_attr("prometheus").is_some());
    }

    #[test]
    fn default_impl_matches_defaults_yaml() {
        let c = Config::default();
        assert_eq!(c.node_listen_addrs().len(), 2);
    }

    #[test]
    fn every_key_in_defaults_yaml_is_known() {
        let tree = tree::parse(DEFAULTS_YAML, Origin::Defaults, Path::new("defaults"))
            .expect("parse")
            .expect("doc");
        let mut warnings = Vec::new();
        known_keys::check(&tree, Path::new("defaults"), &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(known_keys::all_known("nginx_config.http.lua_shared_dict"));
    }

    #[test]
    fn user_file_merges_over_defaults() {
        let loaded = from_yaml(
            "apisix:\n  node_listen:\n    - 8080\n    - \"127.0.0.1:8081\"\n    - {ip: \"::1\", port: 8082, enable_http2: false}\n  ssl:\n    enable: false\nnginx_config:\n  http:\n    client_max_body_size: 64m\n",
        )
        .expect("load");
        let c = &loaded.config;
        assert_eq!(
            loaded.source.as_deref(),
            Some(Path::new("conf/config.yaml"))
        );
        assert_eq!(
            c.node_listen_addrs(),
            vec![
                addr("0.0.0.0:8080"),
                addr("127.0.0.1:8081"),
                addr("[::1]:8082")
            ]
        );
        assert!(!c.node_listeners()[2].enable_http2);
        assert!(c.node_listeners()[0].enable_http2);
        assert!(c.ssl_listen_addrs().is_empty());
        assert_eq!(c.client_max_body_size(), Some(64 << 20));
        // Sibling keys of the overridden ones keep their defaults.
        assert_eq!(c.client_header_timeout(), Duration::from_secs(60));
        assert!(c.apisix.enable_admin);
        assert_eq!(c.apisix.ssl.listen.len(), 1);
    }

    #[test]
    fn plugins_list_replaces_the_default_list() {
        let c = from_yaml("plugins:\n  - aws-lambda\n  - key-auth\n")
            .expect("load")
            .config;
        assert_eq!(
            c.plugins,
            Some(vec!["aws-lambda".to_owned(), "key-auth".to_owned()])
        );
    }

    #[test]
    fn plugin_attr_merges_per_plugin() {
        let c = from_yaml("plugin_attr:\n  prometheus:\n    export_addr:\n      port: 9092\n  log-rotate:\n    interval: 3600\n")
            .expect("load")
            .config;
        let prom = c.plugin_attr("prometheus").expect("prometheus");
        assert_eq!(prom["export_addr"]["port"], 9092);
        assert_eq!(prom["export_addr"]["ip"], "127.0.0.1");
        assert_eq!(prom["export_uri"], "/apisix/prometheus/metrics");
        assert_eq!(
            c.plugin_attr("log-rotate").expect("log-rotate")["interval"],
            3600
        );
    }

    #[test]
    fn empty_and_comment_only_files_run_on_defaults() {
        for text in ["", "# nothing here\n", "apisix:\n"] {
            let loaded = from_yaml(text).expect("load");
            assert_eq!(loaded.config.node_listen_addrs().len(), 2, "{text:?}");
        }
    }

    #[test]
    fn env_substitution_with_and_without_default() {
        let env = env_of(&[("PORT", "7000"), ("EMPTY", "")]);
        let text = "apisix:\n  node_listen:\n    - ${{PORT}}\n    - ${{ OTHER := 7001 }}\n    - ${{EMPTY:=7002}}\n# - ${{NOT_SET}}\n";
        let loaded = load_str(Some((Path::new("c.yaml"), text)), &env).expect("load");
        assert_eq!(
            loaded.config.node_listen_addrs(),
            vec![
                addr("0.0.0.0:7000"),
                addr("0.0.0.0:7001"),
                addr("0.0.0.0:7002")
            ]
        );
    }

    #[test]
    fn env_substitution_missing_var_names_it() {
        let text = "deployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: ${{ADMIN_SECRET}}\n";
        let err = load_str(Some((Path::new("c.yaml"), text)), &no_env()).expect_err("must fail");
        match &err {
            ConfigError::MissingEnvVar { var, line, .. } => {
                assert_eq!(var, "ADMIN_SECRET");
                assert_eq!(*line, 5);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("\"ADMIN_SECRET\""), "{err}");
        assert!(
            err.to_string().contains("${{ADMIN_SECRET:=default}}"),
            "{err}"
        );
        let err = load_str(Some((Path::new("c.yaml"), "a: ${{BROKEN\n")), &no_env())
            .expect_err("must fail");
        assert!(
            matches!(err, ConfigError::BadEnvReference { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn env_overrides_apply_over_the_file() {
        let env = env_of(&[
            (env::NODE_LISTEN, "9000, 127.0.0.1:9001"),
            (env::ADMIN_LISTEN, "127.0.0.1:9999"),
            (env::ADMIN_KEY, "0123456789abcdef0123456789abcdef"),
            (env::PLUGINS_DIR, "/opt/plugins"),
            (env::WORKERS, "3"),
        ]);
        let text = "apisix:\n  node_listen: [1234]\nnginx_config:\n  worker_processes: 1\n";
        let c = load_str(Some((Path::new("c.yaml"), text)), &env)
            .expect("load")
            .config;
        assert_eq!(
            c.node_listen_addrs(),
            vec![addr("0.0.0.0:9000"), addr("127.0.0.1:9001")]
        );
        assert_eq!(c.admin_addr(), Some(addr("127.0.0.1:9999")));
        assert!(
            c.admin_keys()[0]
                .key
                .matches("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(c.plugins_dir(), Path::new("/opt/plugins"));
        assert_eq!(c.worker_threads(), 3);

        let err = load_str(None, &env_of(&[(env::WORKERS, "0")])).expect_err("0 workers");
        assert!(
            matches!(&err, ConfigError::InvalidEnv { var, .. } if var == env::WORKERS),
            "{err:?}"
        );
        let err = load_str(None, &env_of(&[(env::NODE_LISTEN, "80000")])).expect_err("bad port");
        assert!(err.to_string().contains("MOONGATE_NODE_LISTEN"), "{err}");
        let err = load_str(None, &env_of(&[(env::ADMIN_LISTEN, "nope")])).expect_err("bad addr");
        assert!(err.to_string().contains("MOONGATE_ADMIN_LISTEN"), "{err}");
    }

    #[test]
    fn unknown_keys_warn_and_known_unused_keys_do_not() {
        let text = "apisix:\n  foo: 1\n  enable_control: true\n  extra_lua_path: \"/x/?.lua\"\n  node_listen:\n    - {port: 9080, bogus: 1}\nnginx_config:\n  http:\n    lua_shared_dict:\n      x: 10m\nplugin_attr:\n  anything:\n    goes: here\nbar: {}\n";
        let loaded = from_yaml(text).expect("load");
        assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
        assert_eq!(
            loaded.warnings[0],
            "unknown configuration key \"apisix.foo\" in conf/config.yaml at line 2 (ignored)"
        );
        assert!(
            loaded.warnings[1].contains("\"apisix.node_listen.bogus\""),
            "{:?}",
            loaded.warnings
        );
        assert!(
            loaded.warnings[2].contains("\"bar\""),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn invalid_port_names_key_line_and_column() {
        let err = from_yaml("apisix:\n  node_listen:\n    - 70000\n").expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "invalid value for \"apisix.node_listen\" in conf/config.yaml (line 3, column 7): expected a port number between 0 and 65535 (0 picks a free port), got 70000"
        );
        let err = from_yaml("deployment:\n  admin:\n    admin_listen:\n      port: 65536\n")
            .expect_err("must fail");
        assert!(
            matches!(err, ConfigError::InvalidValue { ref key, .. } if key == "deployment.admin.admin_listen.port"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        let cases: &[(&str, &str)] = &[
            (
                "apisix:\n  router:\n    http: radixtree_magic\n",
                "apisix.router.http",
            ),
            ("apisix:\n  enable_http2: maybe\n", "apisix.enable_http2"),
            ("deployment:\n  role: leader\n", "deployment.role"),
            (
                "deployment:\n  admin:\n    admin_listen:\n      ip: localhost\n",
                "deployment.admin.admin_listen.ip",
            ),
            (
                "deployment:\n  admin:\n    allow_admin:\n      - 10.0.0.0/33\n",
                "deployment.admin.allow_admin",
            ),
            (
                "nginx_config:\n  worker_processes: 0\n",
                "nginx_config.worker_processes",
            ),
            (
                "nginx_config:\n  http:\n    keepalive_timeout: 10 parsecs\n",
                "nginx_config.http.keepalive_timeout",
            ),
            (
                "nginx_config:\n  http:\n    client_max_body_size: lots\n",
                "nginx_config.http.client_max_body_size",
            ),
            (
                "deployment:\n  admin:\n    admin_key:\n      - {name: a, key: k, role: root}\n",
                "deployment.admin.admin_key.role",
            ),
            (
                "deployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: embedded\n",
                "deployment.role_data_plane.config_provider",
            ),
            (
                "deployment:\n  admin:\n    admin_api_version: v2\n",
                "deployment.admin.admin_api_version",
            ),
        ];
        for (text, key) in cases {
            match from_yaml(text) {
                Err(ConfigError::InvalidValue {
                    key: got, position, ..
                }) => {
                    assert_eq!(&got, key, "{text}");
                    assert!(position.is_some(), "{text}");
                }
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn yaml_syntax_error_names_line_and_column() {
        let err = from_yaml("apisix:\n  node_listen: [9080\n  foo: 1\n").expect_err("must fail");
        match &err {
            ConfigError::Syntax { path, position, .. } => {
                assert_eq!(path, Path::new("conf/config.yaml"));
                assert_eq!(position.map(|p| p.line), Some(3));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("invalid YAML in conf/config.yaml (line 3, column "),
            "{err}"
        );
        let err = from_yaml("- 1\n- 2\n").expect_err("list at top");
        assert!(matches!(err, ConfigError::NotAMapping { .. }), "{err:?}");
    }

    #[test]
    fn default_key_on_a_public_address_is_refused() {
        let err = from_yaml("deployment:\n  admin:\n    admin_listen:\n      ip: 0.0.0.0\n")
            .expect_err("must fail");
        assert!(
            matches!(err, ConfigError::DefaultAdminKeyExposed { addr: a } if a == addr("0.0.0.0:9180"))
        );
        assert_eq!(
            err.to_string(),
            "the Admin API listens on 0.0.0.0:9180 with the well-known default admin key; set deployment.admin.admin_key to a secret key or listen on 127.0.0.1"
        );
        let env = env_of(&[(env::ADMIN_LISTEN, "0.0.0.0:9180")]);
        assert!(matches!(
            load_str(None, &env),
            Err(ConfigError::DefaultAdminKeyExposed { .. })
        ));
    }

    #[test]
    fn default_key_on_loopback_or_with_admin_off_is_fine() {
        from_yaml("deployment:\n  admin:\n    admin_listen:\n      ip: 127.0.0.1\n")
            .expect("loopback is fine");
        from_yaml("apisix:\n  enable_admin: false\ndeployment:\n  admin:\n    admin_listen:\n      ip: 0.0.0.0\n")
            .expect("admin disabled");
        let own_key = "deployment:\n  admin:\n    admin_listen: {ip: 0.0.0.0, port: 9180}\n    admin_key:\n      - {name: admin, key: 5f3c2d1e0a9b8c7d6e5f4a3b2c1d0e9f, role: admin}\n";
        let c = from_yaml(own_key).expect("own key on 0.0.0.0").config;
        assert_eq!(c.admin_addr(), Some(addr("0.0.0.0:9180")));
    }

    #[test]
    fn empty_admin_key_is_generated_and_reported() {
        let text = "deployment:\n  admin:\n    admin_key:\n      - name: admin\n        key: ''\n        role: admin\n";
        let loaded = from_yaml(text).expect("load");
        let generated = loaded.config.admin_keys()[0].key.clone();
        assert_eq!(generated.expose().len(), 32);
        assert!(generated.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            loaded.config.admin_keys()[0]
                .key
                .matches(generated.expose())
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains(generated.expose()));
        assert!(loaded.warnings[0].contains("not written back"));
        // Debug output never shows keys.
        let debug = format!("{:?}", loaded.config);
        assert!(!debug.contains(generated.expose()), "{debug}");
        assert!(!format!("{:?}", Config::default()).contains(WELL_KNOWN_ADMIN_KEY));
        assert!(
            !loaded
                .config
                .effective_summary()
                .contains(generated.expose())
        );
    }

    #[test]
    fn data_encryption_keys_must_be_16_characters() {
        let err =
            from_yaml("apisix:\n  data_encryption:\n    keyring: [qeddd145sfvddff3, short]\n")
                .map(|_| ())
                .map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.contains("apisix.data_encryption.keyring[1]")),
            "{err:?}"
        );
        let c = from_yaml(
            "apisix:\n  data_encryption:\n    enable_encrypt_fields: false\n    keyring: []\n",
        )
        .map(|l| l.config);
        assert!(c.is_ok_and(|c| c.encryption_keys().is_none()));
        let c = from_yaml("").map(|l| l.config);
        assert!(c.is_ok_and(|c| c.encryption_keys() == Some(vec!["qeddd145sfvddff3".to_owned()])));
    }

    #[test]
    fn etcd_password_is_redacted() {
        let c = from_yaml("deployment:\n  etcd:\n    user: root\n    password: hunter2-secret\n")
            .expect("load")
            .config;
        assert_eq!(
            c.deployment.etcd.password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        assert!(!format!("{c:?}").contains("hunter2-secret"));
    }

    #[test]
    fn duplicate_listen_addresses_are_refused() {
        let err = from_yaml("apisix:\n  node_listen: [9443]\n").expect_err("clash with ssl");
        assert!(
            matches!(err, ConfigError::DuplicateListen { .. }),
            "{err:?}"
        );
        let err = from_yaml("apisix:\n  node_listen: [9180]\n").expect_err("clash with admin");
        assert!(
            err.to_string().contains("0.0.0.0:9180") || err.to_string().contains("127.0.0.1:9180"),
            "{err}"
        );
    }

    #[test]
    fn explicit_missing_path_is_an_error() {
        let err =
            load(Some(Path::new("/nonexistent/moongate.yaml")), &no_env()).expect_err("missing");
        assert!(matches!(err, ConfigError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "apisix:\n  node_listen: [7777]\n").expect("write");
        let loaded = load(Some(&path), &no_env()).expect("load");
        assert_eq!(loaded.source.as_deref(), Some(path.as_path()));
        assert_eq!(
            loaded.config.node_listen_addrs(),
            vec![addr("0.0.0.0:7777")]
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        for bad in [
            "",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "10 s",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let c = from_yaml(
            "nginx_config:\n  worker_shutdown_timeout: 10\n  http:\n    keepalive_timeout: 500ms\n",
        )
        .expect("load")
        .config;
        assert_eq!(c.shutdown_grace(), Duration::from_secs(10));
        assert_eq!(c.keepalive_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64m"), Ok(Some(64 * 1024 * 1024)));
        assert_eq!(parse_size("1k"), Ok(Some(1024)));
        assert_eq!(parse_size("1K"), Ok(Some(1024)));
        assert_eq!(parse_size("2g"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("1024"), Ok(Some(1024)));
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size("0m"), Ok(None));
        for bad in ["", "m", "1.5m", "-1", "10x", "1 m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        let c = from_yaml("nginx_config:\n  http:\n    client_max_body_size: 1048576\n")
            .expect("load")
            .config;
        assert_eq!(c.client_max_body_size(), Some(1 << 20));
        let c = from_yaml("nginx_config:\n  http:\n    client_max_body_size: 0\n")
            .expect("load")
            .config;
        assert_eq!(c.client_max_body_size(), None);
    }

    #[test]
    fn listen_entries_parse() {
        assert_eq!(
            ListenEntry::parse("9080"),
            Ok(ListenEntry {
                ip: None,
                port: 9080,
                enable_http2: None
            })
        );
        assert_eq!(
            ListenEntry::parse("[::]:9080").map(|e| e.addr()),
            Ok(addr("[::]:9080"))
        );
        assert_eq!(
            ListenEntry::parse("0").map(|e| e.port),
            Ok(0),
            "0 picks a free port"
        );
        assert!(ListenEntry::parse("host:80").is_err());
        assert!(
            ListenEntry::parse("1.2.3.4:70000")
                .expect_err("range")
                .contains("70000")
        );
    }

    #[test]
    fn yaml11_booleans_and_unquoted_numbers_are_accepted() {
        let text = "apisix:\n  enable_http2: off\ndeployment:\n  admin:\n    admin_key:\n      - {name: admin, key: 12345678901234567890, role: admin}\n";
        let c = from_yaml(text).expect("load").config;
        assert!(!c.apisix.enable_http2);
        assert!(c.admin_keys()[0].key.matches("12345678901234567890"));
    }

    #[test]
    fn shipped_config_yaml_runs_on_defaults() {
        let text = include_str!("../../conf/config.yaml");
        let loaded = from_yaml(text).expect("shipped config.yaml loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(
            loaded.config.effective_summary(),
            Config::default().effective_summary()
        );
    }

    #[test]
    fn config_example_uncommented_equals_the_defaults() {
        let example = include_str!("../../conf/config.yaml.example");
        let start = example
            .find("\n#apisix:\n")
            .expect("example has an apisix section")
            + 1;
        let uncommented: String = example[start..]
            .lines()
            .map(|line| format!("{}\n", line.strip_prefix('#').unwrap_or(line)))
            .collect();
        let loaded = from_yaml(&uncommented).expect("uncommented example loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        let d = Config::default();
        assert_eq!(c.effective_summary(), d.effective_summary());
        assert_eq!(c.plugin_attr, d.plugin_attr);
        assert_eq!(c.deployment.etcd.host, d.deployment.etcd.host);
        assert_eq!(
            c.deployment.etcd.watch_timeout,
            d.deployment.etcd.watch_timeout
        );
        assert!(c.admin_keys()[0].key.matches(WELL_KNOWN_ADMIN_KEY));
    }

    #[test]
    fn summary_mentions_the_essentials() {
        let s = Config::default().effective_summary();
        for needle in [
            "0.0.0.0:9080",
            "0.0.0.0:9443",
            "127.0.0.1:9180",
            "traditional",
            "embedded",
            "radixtree_host_uri",
        ] {
            assert!(s.contains(needle), "{needle} in {s}");
        }
    }
}
