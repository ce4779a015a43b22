//! The data plane: worker threads, each with its own current-thread runtime, accepting on every
//! listener (one `SO_REUSEPORT` socket per worker and address, as nginx's `reuseport`), serving
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain ports, ALPN on TLS ports) on the same socket.

mod body;
mod client_body;
pub(crate) mod handler;
mod plugins;
mod uri;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::timeouts::{self, WorkerTimer};

pub(crate) use body::outbound;
pub(crate) use client_body::ClientBody;
pub(crate) use handler::{ConnInfo, DataPlane, Matched, RequestVars};
pub(crate) use uri::encode_path;

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection-level settings shared by every worker.
#[derive(Debug, Clone)]
pub(crate) struct ServeSettings {
    pub(crate) enable_http2: bool,
    /// Bounds reading a request head (slowloris).
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub(crate) grace: Duration,
}

/// One listening address, bound once per worker.
#[derive(Debug)]
pub(crate) struct ListenerSet {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    sockets: Vec<std::net::TcpListener>,
}

/// Binds `addr` `workers` times with `SO_REUSEPORT`; port 0 is resolved by the first bind.
pub(crate) fn bind(addr: SocketAddr, workers: usize, tls: bool) -> io::Result<ListenerSet> {
    let mut sockets = Vec::with_capacity(workers);
    let mut actual = addr;
    for _ in 0..workers.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(actual),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if actual.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&actual.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        actual = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(ListenerSet {
        addr: actual,
        tls,
        sockets,
    })
}

/// Executes hyper's connection tasks on the worker's own thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Starts `listeners[*].sockets.len()` worker threads. Each returns once `cancel` fires and its
/// connections have drained (or the grace period ran out).
pub(crate) fn spawn_workers(
    listeners: Vec<ListenerSet>,
    dp: Arc<DataPlane>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: ServeSettings,
    cancel: CancellationToken,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let workers = listeners.iter().map(|l| l.sockets.len()).max().unwrap_or(0);
    let mut per_worker: Vec<Vec<(std::net::TcpListener, bool)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for set in listeners {
        for (i, socket) in set.sockets.into_iter().enumerate() {
            per_worker[i].push((socket, set.tls));
        }
    }
    let mut handles = Vec::with_capacity(workers);
    for (index, sockets) in per_worker.into_iter().enumerate() {
        let dp = dp.clone();
        let tls = tls.clone();
        let settings = settings.clone();
        let cancel = cancel.clone();
        let handle = std::thread::Builder::new()
            .name(format!("moongate-worker-{index}"))
            .spawn(move || {
                crate::plugin::set_worker_id(index);
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(err) => {
                        tracing::error!(error = %err, worker = index, "cannot start worker runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, run_worker(sockets, dp, tls, settings, cancel));
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

async fn run_worker(
    sockets: Vec<(std::net::TcpListener, bool)>,
    dp: Arc<DataPlane>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: ServeSettings,
    cancel: CancellationToken,
) {
    // The worker's timeouts (hyper's and the upstream exchanges') run on this task; it ends with the
    // worker's LocalSet.
    tokio::task::spawn_local(timeouts::drive());
    let mut loops = Vec::new();
    for (socket, is_tls) in sockets {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(error = %err, "cannot register listener");
                continue;
            }
        };
        let acceptor = if is_tls { tls.clone() } else { None };
        if is_tls && acceptor.is_none() {
            continue;
        }
        loops.push(tokio::task::spawn_local(accept_loop(
            listener,
            dp.clone(),
            acceptor,
            settings.clone(),
            cancel.clone(),
        )));
    }
    for l in loops {
        let _ = l.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    dp: Arc<DataPlane>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: ServeSettings,
    cancel: CancellationToken,
) {
    let graceful = Rc::new(GracefulShutdown::new());
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            local,
            tls: tls.is_some(),
        };
        let dp = dp.clone();
        let settings = settings.clone();
        let graceful = graceful.clone();
        match tls.clone() {
            None => {
                tokio::task::spawn_local(async move {
                    // hyper's header timeout starts once it has seen the first bytes; a client that
                    // sends nothing at all is dropped after the same time.
                    let mut first = [0u8; 1];
                    let peeked =
                        tokio::time::timeout(settings.header_read_timeout, stream.peek(&mut first))
                            .await;
                    match peeked {
                        Ok(Ok(n)) if n > 0 => {
                            serve(TokioIo::new(stream), conn, dp, &settings, &graceful)
                        }
                        _ => tracing::debug!(client = %peer, "nothing received; closed"),
                    }
                });
            }
            Some(acceptor) => {
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve(TokioIo::new(tls_stream), conn, dp, &settings, &graceful)
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(client = %peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    // TLS handshakes still in flight hold a reference; they end within their own timeout.
    for _ in 0..(TLS_HANDSHAKE_TIMEOUT.as_millis() / 50) {
        if Rc::strong_count(&graceful) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match Rc::try_unwrap(graceful) {
        Ok(graceful) => {
            if tokio::time::timeout(settings.grace, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("grace period over, closing remaining connections");
            }
        }
        Err(_) => tracing::warn!("connections still registering at shutdown"),
    }
}

fn serve<I>(
    io: TokioIo<I>,
    conn: ConnInfo,
    dp: Arc<DataPlane>,
    settings: &ServeSettings,
    graceful: &GracefulShutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let peer = Rc::new(handler::PeerHeaders::new(&conn));
    let service = service_fn(move |req| handler::handle(dp.clone(), req, conn, peer.clone()));
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(WorkerTimer)
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(WorkerTimer)
        .max_concurrent_streams(256)
        .keep_alive_interval(None);
    if !settings.enable_http2 {
        builder = builder.http1_only();
    }
    let connection = builder.serve_connection(io, service).into_owned();
    let watched = graceful.watch(connection);
    tokio::task::spawn_local(async move {
        if let Err(err) = watched.await {
            tracing::debug!(client = %conn.peer, error = %err, "connection ended with an error");
        }
    });
}
