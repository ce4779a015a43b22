//! The `moongate` binary as a child process on loopback ports, for tests that signal, kill, limit
//! or read the log of the real process.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::ADMIN_KEY;

/// How the child is started.
#[derive(Debug, Clone, Copy)]
pub struct Spawn<'a> {
    /// `Some`: the child's environment holds only `PATH`, `RUST_LOG` and these variables.
    /// `None`: it inherits the test's environment.
    pub env: Option<&'a [(&'a str, &'a str)]>,
    pub rust_log: &'a str,
    /// `ulimit -f` in KiB, with SIGXFSZ ignored: a write that would grow a file past it fails
    /// with EFBIG instead of killing the process.
    pub file_limit_kib: Option<u64>,
}

impl Default for Spawn<'_> {
    fn default() -> Self {
        Spawn {
            env: None,
            rust_log: "info",
            file_limit_kib: None,
        }
    }
}

/// A running child, killed when dropped. Its store is `<dir>/store`; its plugins are the
/// repository's `plugins/`.
pub struct GatewayProcess {
    pub child: tokio::process::Child,
    pub http: String,
    pub admin: String,
    pub client: reqwest::Client,
    log: Arc<Mutex<String>>,
    drain: tokio::task::JoinHandle<()>,
}

impl GatewayProcess {
    pub async fn spawn(dir: &Path) -> GatewayProcess {
        Self::spawn_with(dir, Spawn::default()).await
    }

    pub async fn spawn_with(dir: &Path, how: Spawn<'_>) -> GatewayProcess {
        let cfg = dir.join("config.yaml");
        std::fs::write(
            &cfg,
            format!(
                "apisix:\n  node_listen: [\"127.0.0.1:0\"]\n  ssl:\n    enable: false\n  data_dir: \"{}\"\n  plugins_dir: \"{}\"\nnginx_config:\n  worker_processes: 1\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: 0}}\n    admin_key: [{{name: admin, key: {ADMIN_KEY}, role: admin}}]\n",
                dir.join("store").display(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/plugins"),
            ),
        )
        .expect("write config");
        let binary = env!("CARGO_BIN_EXE_moongate");
        let mut cmd = match how.file_limit_kib {
            None => tokio::process::Command::new(binary),
            Some(kib) => {
                let mut cmd = tokio::process::Command::new("bash");
                cmd.arg("-c")
                    .arg(r#"trap '' XFSZ; ulimit -f "$1"; shift; exec "$@""#)
                    .arg("moongate")
                    .arg(kib.to_string())
                    .arg(binary);
                cmd
            }
        };
        cmd.arg("-c").arg(&cfg);
        if let Some(env) = how.env {
            cmd.env_clear().envs(env.iter().copied());
            if let Some(path) = std::env::var_os("PATH") {
                cmd.env("PATH", path);
            }
        }
        let mut child = cmd
            .env("RUST_LOG", how.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn moongate");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let plain = strip_ansi(&line);
                push_line(&log, &plain);
                if plain.contains("moongate started") {
                    return Some(plain);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(started) = started else {
            let log = log.lock().expect("log buffer").clone();
            panic!("moongate did not log its start:\n{log}");
        };
        // Keep reading stderr, so the child never blocks on a full pipe and the log stays whole.
        let sink = log.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                push_line(&sink, &strip_ansi(&line));
            }
        });
        GatewayProcess {
            child,
            http: between(&started, "http=[", "]"),
            admin: between(&started, "admin=Some(", ")"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            log,
            drain,
        }
    }

    /// An Admin API call with the admin key: the status and the body (JSON, or a string).
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("http://{}/apisix/admin{path}", self.admin);
        super::admin_request(&self.client, &url, method, body).await
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGTERM, then waits (up to 20 s) for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status")
    }

    /// Kills the child and returns everything it wrote to stderr.
    pub async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.drain).await;
        self.log.lock().expect("log buffer").clone()
    }
}

fn push_line(buffer: &Mutex<String>, line: &str) {
    let mut buffer = buffer.lock().expect("log buffer");
    buffer.push_str(line);
    buffer.push('\n');
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .map(|i| i + start.len())
        .unwrap_or_else(|| panic!("{start:?} in {text:?}"));
    let to = text[from..]
        .find(end)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("{end:?} in {text:?}"));
    text[from..to].to_owned()
}
