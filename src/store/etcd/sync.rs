//! Keeps the store in step with etcd: a watch on the prefix from the last applied revision, applied
//! change by change; a full re-read when history was compacted; while etcd is unreachable the last
//! good configuration keeps serving and the connection is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Event, WatchMessage};
use super::{Decoded, EtcdError, Remote};
use crate::store::{Store, Synced};
use crate::validate::PluginCatalog;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Whether etcd is reachable; each change of state is logged once.
struct Link {
    up: bool,
    endpoints: String,
}

impl Link {
    fn down(&mut self, err: &EtcdError) {
        if std::mem::replace(&mut self.up, false) {
            tracing::warn!(
                etcd = %self.endpoints,
                error = %err,
                "lost etcd; serving the last configuration and retrying"
            );
        } else {
            tracing::debug!(error = %err, "etcd still unreachable");
        }
    }

    fn up(&mut self) {
        if !std::mem::replace(&mut self.up, true) {
            tracing::info!(etcd = %self.endpoints, "etcd is reachable again; watching for changes");
        }
    }
}

/// Watches etcd from `revision + 1` until `cancel` fires.
pub(crate) fn spawn(
    store: Arc<Store>,
    remote: Arc<Remote>,
    plugins: Arc<dyn PluginCatalog>,
    revision: u64,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut link = Link {
            up: true,
            endpoints: remote.endpoints(),
        };
        let mut backoff = BACKOFF_START;
        // `None` asks for a full re-read before watching again.
        let mut revision = Some(revision);
        while !cancel.is_cancelled() {
            let from = match revision {
                Some(r) => r,
                None => match resync(&store, &remote, plugins.as_ref()).await {
                    Ok(r) => {
                        link.up();
                        backoff = BACKOFF_START;
                        revision = Some(r);
                        r
                    }
                    Err(err) => {
                        link.down(&err);
                        pause(&cancel, &mut backoff).await;
                        continue;
                    }
                },
            };
            let mut watch = match remote.watch(from + 1).await {
                Ok(watch) => watch,
                Err(err) => {
                    link.down(&err);
                    pause(&cancel, &mut backoff).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = tokio::time::timeout(remote.watch_timeout, watch.next()) => next,
                };
                match next {
                    // Quiet for `watch_timeout`: re-create the watch from the same revision, which
                    // also notices a connection that died silently.
                    Err(_) => break,
                    Ok(Ok(WatchMessage::Created { .. })) => {
                        link.up();
                        backoff = BACKOFF_START;
                    }
                    Ok(Ok(WatchMessage::Events {
                        events,
                        revision: at,
                    })) => {
                        apply(&store, &remote, plugins.as_ref(), events, at).await;
                        revision = Some(revision.map_or(at, |r| r.max(at)));
                    }
                    Ok(Err(EtcdError::Compacted { compact_revision })) => {
                        tracing::info!(
                            compact_revision,
                            "etcd history was compacted past the last applied change; reading everything again"
                        );
                        revision = None;
                        break;
                    }
                    Ok(Err(err)) => {
                        link.down(&err);
                        pause(&cancel, &mut backoff).await;
                        break;
                    }
                }
            }
        }
    })
}

/// Re-reads every resource and publishes them; returns the revision read at.
async fn resync(
    store: &Store,
    remote: &Remote,
    plugins: &dyn PluginCatalog,
) -> Result<u64, EtcdError> {
    let previous = store.snapshot();
    let state = remote.load(Some(plugins), Some(&previous.state)).await?;
    let revision = state.revision();
    if let Err(err) = store.replace(state).await {
        tracing::error!(error = %err, "the configuration read from etcd cannot be served; keeping the previous one");
    }
    Ok(revision)
}

/// Checks and applies one batch of watch events. An invalid new key is left out, an invalid update
/// keeps the previous value; both are logged.
async fn apply(
    store: &Store,
    remote: &Remote,
    plugins: &dyn PluginCatalog,
    events: Vec<Event>,
    revision: u64,
) {
    let mut changes = Vec::with_capacity(events.len());
    for event in events {
        match event {
            Event::Put(kv) => match remote.decode(&kv, Some(plugins)) {
                Ok(Decoded::Item(kind, item)) => changes.push(Synced::Put(kind, item)),
                Ok(Decoded::Ignored) => {}
                Err(reason) => {
                    tracing::error!("failed to check item data of [{}] err: {reason}", kv.key);
                }
            },
            Event::Delete { key, .. } => {
                if let Some((kind, id)) = remote.parse_key(&key) {
                    changes.push(Synced::Delete(kind, id));
                }
            }
        }
    }
    store.apply_synced(changes, revision).await;
}

async fn pause(cancel: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}
