//! What one trivial Lua plugin costs per request: the same route with and without a plugin that sets
//! a response header, measured side by side in one run (alternating rounds, medians), on loopback.
//! The ratio is the median of each round's plugin/plain ratio: a round pairs two neighbouring
//! measurements, so a slow spell of a shared machine weighs on both.
//!
//! Run with `cargo bench --bench plugin_overhead`. Prints requests per second for both routes, the
//! ratio and how far single rounds spread; the target is a plugin route at ≥ 0.90× the plain route.
//! It also prints the gateway worker's CPU time per request on each route (Linux schedstat).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

// The same allocator as the `moongate` binary, so the bench measures what users run.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONNECTIONS: usize = 16;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 7;

const PLUGIN: &str = r#"
local core = require("apisix.core")
local _M = { version = 0.1, priority = 10, name = "stamp", schema = { type = "object" } }
function _M.header_filter(conf, ctx)
    core.response.set_header("x-stamp", "1")
end
return _M
"#;

async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello world",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What one round of load on one route gave.
struct Round {
    per_second: f64,
    /// The gateway worker's CPU time per request, when the system shows it.
    cpu_us: Option<f64>,
}

/// Nanoseconds the gateway's worker thread has spent on a CPU (Linux schedstat). The bench runs
/// one worker, so the thread named after it is the one that serves both routes.
fn worker_cpu_ns() -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.starts_with("moongate-worke") {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

async fn measure(url: &str, duration: Duration) -> Round {
    let before = worker_cpu_ns();
    let requests = load(url, duration).await;
    let cpu_us = before
        .zip(worker_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1000.0 / requests.max(1) as f64);
    Round {
        per_second: requests as f64 / duration.as_secs_f64(),
        cpu_us,
    }
}

/// Sends requests on `CONNECTIONS` keep-alive connections for `duration`; returns how many were
/// answered.
async fn load(url: &str, duration: Duration) -> u64 {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().expect("uri");
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, uri, done, failed) =
                (client.clone(), uri.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match client.get(uri.clone()).await {
                        Ok(resp) if resp.status() == 200 => {
                            let _ = resp.into_body().collect().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the bench"
    );
    done.load(Ordering::Relaxed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tmp");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        std::fs::write(plugins.join("stamp.lua"), PLUGIN).expect("plugin");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "apisix:\n  node_listen: [\"127.0.0.1:0\"]\n  ssl: {{enable: false}}\n  data_dir: \"{}\"\n  plugins_dir: \"{}\"\nnginx_config:\n  worker_processes: 1\ndeployment:\n  admin:\n    admin_listen: {{ip: 127.0.0.1, port: 0}}\n    admin_key: [{{name: admin, key: bench-admin-key-0123456789abcdef, role: admin}}]\n",
                dir.path().join("store").display(),
                plugins.display()
            ),
        )
        .expect("config");
        let gateway = moongate::Gateway::load(Some(&config), &HashMap::new()).expect("config loads");
        let handle = gateway.start().await.expect("gateway starts");
        let origin = origin().await;
        let admin = handle.admin_addr().expect("admin");
        let http = handle.http_addrs()[0];
        let put = |path: &str, body: String| {
            let path = path.to_owned();
            async move {
                let req = hyper::Request::put(format!("http://{admin}/apisix/admin{path}"))
                    .header("x-api-key", "bench-admin-key-0123456789abcdef")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
                let resp = client.request(req).await.expect("admin");
                assert!(resp.status().is_success(), "admin write failed: {}", resp.status());
            }
        };
        put("/routes/plain", format!(r#"{{"uri":"/plain","upstream":{{"nodes":{{"{origin}":1}}}}}}"#)).await;
        put("/routes/plugin", format!(r#"{{"uri":"/plugin","plugins":{{"stamp":{{}}}},"upstream":{{"nodes":{{"{origin}":1}}}}}}"#)).await;
        let plain_url = format!("http://{http}/plain");
        let plugin_url = format!("http://{http}/plugin");
        // Warm up both paths (connection pools, the worker VM, the plugin chain).
        load(&plain_url, Duration::from_millis(500)).await;
        load(&plugin_url, Duration::from_millis(500)).await;
        let (mut plain, mut plugin, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut plain_cpu, mut plugin_cpu, mut cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let p = measure(&plain_url, ROUND).await;
            let q = measure(&plugin_url, ROUND).await;
            plain.push(p.per_second);
            plugin.push(q.per_second);
            ratios.push(q.per_second / p.per_second);
            if let (Some(a), Some(b)) = (p.cpu_us, q.cpu_us) {
                plain_cpu.push(a);
                plugin_cpu.push(b);
                cpu_ratios.push(a / b);
            }
        }
        let spread = {
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{low:.3}..{high:.3}")
        };
        let (p, q) = (median(plain), median(plugin));
        eprintln!("plain route:            {p:>10.0} req/s (median of {ROUNDS} x {ROUND:?}, {CONNECTIONS} connections)");
        eprintln!("route + 1 Lua plugin:   {q:>10.0} req/s");
        eprintln!("ratio plugin/plain:     {:>10.3}  (median of the rounds' ratios; target >= 0.90)", median(ratios));
        eprintln!("rounds' ratios:         {spread:>10}  (lowest..highest: how much one round moves)");
        // plain/plugin of the worker's CPU per request is the throughput ratio a gateway limited by
        // its own CPU would have; the in-process client and origin still disturb it.
        if !cpu_ratios.is_empty() {
            let (a, b) = (median(plain_cpu), median(plugin_cpu));
            eprintln!("gateway CPU per request: plain {a:.2} us, plugin {b:.2} us (+{:.2} us); plain/plugin {:.3} (median of the rounds)", b - a, median(cpu_ratios));
        }
        handle.shutdown();
        handle.wait().await;
    });
}
