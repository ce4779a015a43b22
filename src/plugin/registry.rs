//! What is loaded: plugin sources found on disk and what each plugin declares.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// How plugins are found and run.
#[derive(Debug, Clone)]
pub(crate) struct PluginSettings {
    /// The plugin directory: `<dir>/<name>.lua` (or `<dir>/apisix/plugins/<name>.lua`) is
    /// `apisix.plugins.<name>`, and `<dir>/<name>/<sub>.lua` is `apisix.plugins.<name>.<sub>`.
    pub(crate) dir: PathBuf,
    /// The `plugins:` list; `None` enables every plugin file found.
    pub(crate) enabled: Option<Vec<String>>,
    /// `plugin_attr`, by plugin name.
    pub(crate) attrs: serde_json::Map<String, Value>,
    /// The effective `config.yaml`, for `core.config.local_conf()`.
    pub(crate) local_conf: Value,
    /// Memory one worker VM may use; 0 is unlimited.
    pub(crate) memory_limit: usize,
    /// How long one phase call may run before it is stopped.
    pub(crate) phase_time_limit: Duration,
    /// Worker thread count, for `ngx.worker.count()`.
    pub(crate) workers: usize,
    /// Decrypts conf fields stored encrypted (`apisix.data_encryption`); `None` when that is off.
    pub(crate) keyring: Option<crate::keyring::Keyring>,
}

/// One Lua module's source and the chunk name tracebacks show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) chunk_name: String,
    pub(crate) text: Arc<str>,
}

/// What a loaded plugin declares.
#[derive(Debug, Clone)]
pub(crate) struct PluginInfo {
    pub(crate) name: String,
    pub(crate) priority: i64,
    /// The schema with `_meta` injected.
    pub(crate) schema: Value,
    pub(crate) consumer_schema: Option<Value>,
    pub(crate) metadata_schema: Option<Value>,
}

/// One generation of loaded plugins. Immutable; a reload builds a new one.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) generation: u64,
    /// Module name (`apisix.plugins.x`, `apisix.plugins.x.sub`) to source.
    pub(crate) sources: HashMap<String, Source>,
    /// Loaded plugins, highest priority first.
    pub(crate) plugins: Vec<PluginInfo>,
    /// The last load error of each plugin that failed (the previous version may still be serving).
    pub(crate) errors: BTreeMap<String, String>,
}

impl Registry {
    /// A loaded plugin by name.
    pub(crate) fn get(&self, name: &str) -> Option<&PluginInfo> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// Plugin names defined by the sources (top-level modules only).
    pub(crate) fn plugin_names(sources: &HashMap<String, Source>) -> Vec<String> {
        let mut names: Vec<String> = sources
            .keys()
            .filter_map(|m| m.strip_prefix("apisix.plugins."))
            .filter(|n| !n.contains('.'))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

/// The module name of a plugin file path relative to the plugin directory.
fn module_name(relative: &Path) -> Option<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    parts.push(last.strip_suffix(".lua")?.to_owned());
    if parts.len() > 2 && parts[0] == "apisix" && parts[1] == "plugins" {
        parts.drain(..2);
    }
    if parts.iter().any(|p| p.is_empty() || p.contains('.')) {
        return None;
    }
    Some(format!("apisix.plugins.{}", parts.join(".")))
}

/// Reads every `.lua` file under `dir` (symlinks followed, hidden files skipped).
pub(crate) fn scan(dir: &Path) -> std::io::Result<HashMap<String, Source>> {
    let mut out = HashMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let path = entry.path();
            let file_name = entry.file_name();
            if file_name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(dir) else {
                continue;
            };
            let Some(module) = module_name(relative) else {
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(err) => {
                    tracing::error!(file = %path.display(), error = %err, "cannot read plugin file");
                    continue;
                }
            };
            let chunk_name = format!("@plugins/{}", relative.display());
            out.insert(
                module,
                Source {
                    chunk_name,
                    text: text.into(),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_follow_apisix_layout() {
        assert_eq!(
            module_name(Path::new("aws-lambda.lua")).as_deref(),
            Some("apisix.plugins.aws-lambda")
        );
        assert_eq!(
            module_name(Path::new("foo/bar.lua")).as_deref(),
            Some("apisix.plugins.foo.bar")
        );
        assert_eq!(
            module_name(Path::new("apisix/plugins/foo.lua")).as_deref(),
            Some("apisix.plugins.foo")
        );
        assert_eq!(module_name(Path::new("README.md")), None);
        assert_eq!(module_name(Path::new("a.b.lua")), None);
    }

    #[test]
    fn scan_reads_plugins_and_submodules() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("one.lua"), "return {}")?;
        std::fs::create_dir(dir.path().join("one"))?;
        std::fs::write(dir.path().join("one/helper.lua"), "return {}")?;
        std::fs::write(dir.path().join(".hidden.lua"), "x")?;
        let sources = scan(dir.path())?;
        assert_eq!(sources.len(), 2);
        assert_eq!(sources["apisix.plugins.one"].chunk_name, "@plugins/one.lua");
        assert_eq!(Registry::plugin_names(&sources), vec!["one".to_owned()]);
        Ok(())
    }
}
