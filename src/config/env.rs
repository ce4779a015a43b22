//! Environment input to the configuration: `${{VAR}}` substitution in the raw YAML text, and the short list
//! of `MOONGATE_*` overrides applied on top of the file.
//!
//! Nothing here reads the process environment. The caller passes a map (`std::env::vars().collect()` in
//! `main`, a literal map in tests), so tests never mutate global state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{AdminKey, AdminRole, Config, ConfigError, ListenEntry, Secret, WorkerProcesses};

/// Proxy listeners, replacing `apisix.node_listen`: a comma list of ports or `ip:port`.
pub(crate) const NODE_LISTEN: &str = "MOONGATE_NODE_LISTEN";
/// Admin API address, replacing `deployment.admin.admin_listen`: `ip:port`.
pub(crate) const ADMIN_LISTEN: &str = "MOONGATE_ADMIN_LISTEN";
/// Admin API key: replaces the key of the first `role: admin` entry of `deployment.admin.admin_key`.
pub(crate) const ADMIN_KEY: &str = "MOONGATE_ADMIN_KEY";
/// Plugin directory, replacing `apisix.plugins_dir`.
pub(crate) const PLUGINS_DIR: &str = "MOONGATE_PLUGINS_DIR";
/// Worker thread count (`auto` or a number), replacing `nginx_config.worker_processes`.
pub(crate) const WORKERS: &str = "MOONGATE_WORKERS";

/// Every override variable, in the order they are applied.
pub(crate) const OVERRIDES: &[&str] = &[NODE_LISTEN, ADMIN_LISTEN, ADMIN_KEY, PLUGINS_DIR, WORKERS];

/// Why `${{…}}` substitution failed. `line` is 1-based, in the file being substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubstitutionError {
    /// `${{VAR}}` names a variable that is not set, and no `:=default` was given.
    Missing { var: String, line: u64 },
    /// `${{` without a closing `}}`, or a reference whose name is not `[A-Za-z0-9_]+`.
    Malformed { line: u64, message: String },
}

/// Replaces every `${{VAR}}` and `${{VAR:=default}}` in `text` with the variable's value from `env`.
///
/// A variable that is unset, or set to the empty string, takes the default when one is given. An unset
/// variable without a default is an error naming it. Spaces around the name are allowed
/// (`${{ VAR := x }}`), and the default is trimmed. Lines whose first non-blank character is `#` are copied
/// unchanged, so a commented-out reference to an unset variable does not stop start-up.
pub(crate) fn substitute(
    text: &str,
    env: &HashMap<String, String>,
) -> Result<String, SubstitutionError> {
    if !text.contains("${{") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index as u64 + 1;
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                return Err(SubstitutionError::Malformed {
                    line: line_no,
                    message: "\"${{\" without a closing \"}}\"".to_owned(),
                });
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":=") {
                Some((name, default)) => (name.trim(), Some(default.trim())),
                None => (inner.trim(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(SubstitutionError::Malformed {
                    line: line_no,
                    message: format!(
                        "\"${{{{{inner}}}}}\" is not a valid reference; expected ${{{{NAME}}}} or ${{{{NAME:=default}}}}"
                    ),
                });
            }
            match (env.get(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(SubstitutionError::Missing {
                        var: name.to_owned(),
                        line: line_no,
                    });
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Applies the `MOONGATE_*` overrides present in `env` to `config`. Returns the names of the variables
/// that were applied. An empty variable counts as unset.
pub(crate) fn apply_overrides(
    config: &mut Config,
    env: &HashMap<String, String>,
) -> Result<Vec<&'static str>, ConfigError> {
    let mut applied = Vec::new();
    for &var in OVERRIDES {
        let Some(value) = env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            continue;
        };
        let invalid = |message: String| ConfigError::InvalidEnv {
            var: var.to_owned(),
            message,
        };
        match var {
            NODE_LISTEN => {
                let mut entries = Vec::new();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    entries.push(ListenEntry::parse(item).map_err(invalid)?);
                }
                if entries.is_empty() {
                    return Err(invalid(
                        "expected a comma-separated list of ports or ip:port".to_owned(),
                    ));
                }
                config.apisix.node_listen = entries;
            }
            ADMIN_LISTEN => {
                let addr: SocketAddr = value
                    .parse()
                    .map_err(|_| invalid(format!("expected ip:port, got \"{value}\"")))?;
                config.deployment.admin.admin_listen.ip = addr.ip();
                config.deployment.admin.admin_listen.port = addr.port();
            }
            ADMIN_KEY => {
                let keys = &mut config.deployment.admin.admin_key;
                match keys.iter_mut().find(|k| k.role == AdminRole::Admin) {
                    Some(entry) => entry.key = Secret::new(value),
                    None => keys.push(AdminKey {
                        name: "admin".to_owned(),
                        key: Secret::new(value),
                        role: AdminRole::Admin,
                    }),
                }
            }
            PLUGINS_DIR => config.apisix.plugins_dir = PathBuf::from(value),
            WORKERS => {
                config.nginx_config.worker_processes =
                    WorkerProcesses::parse(value).map_err(invalid)?
            }
            _ => {}
        }
        applied.push(var);
    }
    Ok(applied)
}
