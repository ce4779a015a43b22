//! The configuration store: every resource, persisted by a backend, served to the data plane as one
//! immutable [`Snapshot`] swapped atomically on each change.
//!
//! Writers are serialized; each change is applied to the pure [`ConfigState`], compiled into a new
//! snapshot (which validates it), persisted, and only then made visible. A failure at any step leaves
//! the previous snapshot serving and nothing half-applied. In etcd mode a change is checked the same
//! way, written to etcd, and made visible when the watch delivers it back, as on every other gateway.

pub(crate) mod embedded;
pub(crate) mod etcd;
pub(crate) mod model;
mod snapshot;
pub(crate) mod yaml;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::schema::ResourceKind;
pub(crate) use model::{Change, ConfigState, Item};
pub(crate) use snapshot::{RouteEntry, Snapshot, SnapshotSettings};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("Key not found")]
    NotFound { kind: ResourceKind, id: String },
    #[error("failed to fetch {} info by {} id [{id}], response code: 404", target.label(), target.label())]
    MissingReference { target: ResourceKind, id: String },
    #[error("can not delete this {}, {} [{user_id}] is still using it now", kind.label(), user.label())]
    StillReferenced {
        kind: ResourceKind,
        user: ResourceKind,
        user_id: String,
    },
    #[error("{reason}")]
    Invalid {
        kind: ResourceKind,
        id: String,
        reason: String,
    },
    #[error("config store failure: {0}")]
    Backend(String),
}

impl ResourceKind {
    /// The name used in APISIX's messages (`upstream`, `plugin config`).
    pub(crate) fn label(self) -> String {
        self.name().replace('_', " ")
    }
}

/// Where resources are persisted.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Reads every stored resource.
    fn load(&self) -> Result<ConfigState, StoreError>;
    /// Durably records changes, all or none, and the revision they reach.
    fn commit(&self, changes: &[Committed<'_>], revision: u64) -> Result<(), StoreError>;
}

/// One change as persisted: `item` is the new value, or `None` for a deletion.
pub(crate) struct Committed<'a> {
    pub(crate) kind: ResourceKind,
    pub(crate) id: &'a str,
    pub(crate) item: Option<&'a Item>,
}

/// Where writes go.
pub(crate) enum Persistence {
    /// Persisted here, then published at once (the embedded database, the read-only standalone file).
    Local(Arc<dyn Backend>),
    /// Written to etcd and published when the watch delivers the change back.
    Etcd(Arc<etcd::Remote>),
}

/// A change read from etcd, already checked.
#[derive(Debug)]
pub(crate) enum Synced {
    Put(ResourceKind, Item),
    Delete(ResourceKind, String),
}

/// The store: where writes go, the current state for writers, and the snapshot readers see.
pub(crate) struct Store {
    persistence: Persistence,
    writer: tokio::sync::Mutex<ConfigState>,
    current: Arc<ArcSwap<Snapshot>>,
    settings: SnapshotSettings,
    /// The highest revision published, which an etcd write waits for.
    applied: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Loads every resource from a local backend and builds the first snapshot.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        settings: SnapshotSettings,
    ) -> Result<Store, StoreError> {
        let state = backend.load()?;
        Store::with_state(Persistence::Local(backend), state, settings)
    }

    /// A store whose first state was already read (from etcd).
    pub(crate) fn with_state(
        persistence: Persistence,
        state: ConfigState,
        settings: SnapshotSettings,
    ) -> Result<Store, StoreError> {
        let snapshot = Snapshot::build(state.clone(), 1, &settings, None)?;
        Ok(Store {
            persistence,
            applied: tokio::sync::watch::Sender::new(state.revision()),
            writer: tokio::sync::Mutex::new(state),
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            settings,
        })
    }

    /// The snapshot current now; a request loads it once and uses it throughout.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The swap cell itself, for readers that must see each change (the TLS certificate resolver).
    pub(crate) fn shared(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    /// Applies one change: validate, persist, then publish. Returns the stored item for a put.
    pub(crate) async fn write(&self, change: Change) -> Result<Option<Arc<Item>>, StoreError> {
        match &self.persistence {
            Persistence::Local(backend) => {
                let mut state = self.writer.lock().await;
                self.commit_locked(backend, &mut state, change).await
            }
            Persistence::Etcd(remote) => self.write_remote(remote, change).await,
        }
    }

    /// Stores a new object under a generated id (APISIX's 20-digit POST ids).
    pub(crate) async fn create(
        &self,
        kind: ResourceKind,
        mut value: Value,
    ) -> Result<Arc<Item>, StoreError> {
        let id = match &self.persistence {
            Persistence::Local(_) => format!("{:020}", self.writer.lock().await.revision() + 1),
            Persistence::Etcd(remote) => remote.next_id().await.map_err(etcd_error)?,
        };
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), Value::String(id.clone()));
        }
        let item = self.write(Change::Put { kind, id, value }).await?;
        item.ok_or_else(|| StoreError::Backend("put returned no item".into()))
    }

    /// Publishes a complete new state (a standalone file reload, an etcd re-read): builds its
    /// snapshot with the next generation and swaps it in, without a backend write. On error the
    /// current snapshot stays.
    pub(crate) async fn replace(&self, next: ConfigState) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        let revision = next.revision();
        let snapshot = self.next_snapshot(&next)?;
        let generation = snapshot.generation;
        *state = next;
        self.current.store(Arc::new(snapshot));
        self.applied.send_modify(|r| *r = (*r).max(revision));
        Ok(generation)
    }

    /// Publishes changes read from etcd at `revision`. If the batch cannot be compiled as a whole,
    /// each change is tried alone and the ones that cannot be served are logged and left out.
    pub(crate) async fn apply_synced(&self, changes: Vec<Synced>, revision: u64) {
        let mut state = self.writer.lock().await;
        if !changes.is_empty() {
            let next = state.with_synced(&changes, revision);
            match self.next_snapshot(&next) {
                Ok(snapshot) => {
                    *state = next;
                    self.current.store(Arc::new(snapshot));
                }
                Err(_) => {
                    for change in changes {
                        let next = state.with_synced(std::slice::from_ref(&change), revision);
                        match self.next_snapshot(&next) {
                            Ok(snapshot) => {
                                *state = next;
                                self.current.store(Arc::new(snapshot));
                            }
                            Err(err) => tracing::error!(
                                error = %err,
                                "a change read from etcd cannot be served; keeping the previous value: {change:?}"
                            ),
                        }
                    }
                }
            }
        }
        state.advance(revision);
        self.applied.send_modify(|r| *r = (*r).max(revision));
    }

    /// An etcd write: checked against the current state, written to etcd, then awaited until the
    /// watch has published it (bounded by the etcd timeout), so a read after a 2xx sees it.
    async fn write_remote(
        &self,
        remote: &etcd::Remote,
        change: Change,
    ) -> Result<Option<Arc<Item>>, StoreError> {
        let (kind, id) = change.target();
        let (checked, created_index) = {
            let state = self.writer.lock().await;
            let created_index = state.get(kind, &id).map(|i| i.created_index);
            (state.apply(change)?.1, created_index)
        };
        let revision = match &checked {
            Some(item) => remote.put(kind, &id, &item.value).await,
            None => remote.delete(kind, &id).await,
        }
        .map_err(etcd_error)?;
        let mut applied = self.applied.subscribe();
        let published =
            tokio::time::timeout(remote.timeout(), applied.wait_for(|r| *r >= revision))
                .await
                .is_ok_and(|r| r.is_ok());
        if !published {
            tracing::warn!(
                revision,
                "the write reached etcd but the watch has not delivered it yet"
            );
        }
        Ok(checked.map(|item| {
            self.snapshot()
                .state
                .get(kind, &id)
                .filter(|current| current.modified_index >= revision)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Item {
                        created_index: created_index.unwrap_or(revision),
                        modified_index: revision,
                        ..Item::clone(&item)
                    })
                })
        }))
    }

    async fn commit_locked(
        &self,
        backend: &Arc<dyn Backend>,
        state: &mut ConfigState,
        change: Change,
    ) -> Result<Option<Arc<Item>>, StoreError> {
        let (kind, id) = change.target();
        let (next, item) = state.apply(change)?;
        self.publish(backend, state, next, vec![(kind, id, item.clone())])
            .await?;
        Ok(item)
    }

    /// Applies changes in order as one write (`moongate import`): all are checked, persisted and
    /// published together, with one snapshot build, or none is. An etcd store takes them one by
    /// one. On error, the key of the change that failed, when one did.
    pub(crate) async fn write_all(
        &self,
        changes: Vec<Change>,
    ) -> Result<(), (Option<String>, StoreError)> {
        let failed = |kind, id: &str| Some(model::item_key(kind, id));
        let Persistence::Local(backend) = &self.persistence else {
            for change in changes {
                let (kind, id) = change.target();
                self.write(change)
                    .await
                    .map_err(|err| (failed(kind, &id), err))?;
            }
            return Ok(());
        };
        let mut state = self.writer.lock().await;
        let mut next = state.clone();
        let mut applied = Vec::with_capacity(changes.len());
        for change in changes {
            let (kind, id) = change.target();
            match next.apply_in_place(change) {
                Ok(item) => applied.push((kind, id, item)),
                Err(err) => return Err((failed(kind, &id), err)),
            }
        }
        self.publish(backend, &mut state, next, applied)
            .await
            .map_err(|err| (None, err))
    }

    /// The snapshot of `next`, one generation after the current one, reusing what it compiled for
    /// the objects that did not change. Callers hold the writer lock.
    fn next_snapshot(&self, next: &ConfigState) -> Result<Snapshot, StoreError> {
        let current = self.current.load_full();
        Snapshot::build(
            next.clone(),
            current.generation + 1,
            &self.settings,
            Some(&current),
        )
    }

    /// Builds the snapshot of `next`, persists `changes`, then makes `next` current.
    async fn publish(
        &self,
        backend: &Arc<dyn Backend>,
        state: &mut ConfigState,
        next: ConfigState,
        changes: Vec<(ResourceKind, String, Option<Arc<Item>>)>,
    ) -> Result<(), StoreError> {
        let snapshot = self.next_snapshot(&next)?;
        let backend = backend.clone();
        let revision = next.revision();
        tokio::task::spawn_blocking(move || {
            let committed: Vec<Committed<'_>> = changes
                .iter()
                .map(|(kind, id, item)| Committed {
                    kind: *kind,
                    id,
                    item: item.as_deref(),
                })
                .collect();
            backend.commit(&committed, revision)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        *state = next;
        self.current.store(Arc::new(snapshot));
        Ok(())
    }
}

fn etcd_error(err: etcd::EtcdError) -> StoreError {
    StoreError::Backend(err.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn put(kind: ResourceKind, id: &str, value: Value) -> Change {
        Change::Put {
            kind,
            id: id.to_owned(),
            value,
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        let backend = embedded::EmbeddedBackend::open(dir).expect("backend");
        let settings = SnapshotSettings {
            router_mode: crate::router::RouterMode::HostUri,
        };
        Store::open(Arc::new(backend), settings).expect("store")
    }

    #[tokio::test]
    async fn each_snapshot_published_from_a_refused_etcd_batch_has_its_own_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let start = store.snapshot().generation;
        let upstream = |id: &str, value: Value| {
            Synced::Put(
                ResourceKind::Upstream,
                Item {
                    key: model::item_key(ResourceKind::Upstream, id),
                    value,
                    created_index: 1,
                    modified_index: 1,
                },
            )
        };
        // The batch cannot be compiled whole: each change is published alone, and the bad one left
        // out. Caches keyed on the generation (the consumer lists plugins read) must see each
        // published snapshot as new.
        store
            .apply_synced(
                vec![
                    upstream(
                        "bad",
                        json!({"scheme": "gopher", "nodes": {"10.0.0.3:80": 1}}),
                    ),
                    upstream("a", json!({"nodes": {"10.0.0.1:80": 1}})),
                    upstream("b", json!({"nodes": {"10.0.0.2:80": 1}})),
                ],
                1,
            )
            .await;
        let snapshot = store.snapshot();
        assert!(snapshot.state.get(ResourceKind::Upstream, "bad").is_none());
        assert!(snapshot.state.get(ResourceKind::Upstream, "a").is_some());
        assert!(snapshot.state.get(ResourceKind::Upstream, "b").is_some());
        assert_eq!(snapshot.generation, start + 2);
    }

    #[tokio::test]
    async fn a_batch_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let upstream = || {
            put(
                ResourceKind::Upstream,
                "u",
                json!({"nodes": {"10.0.0.1:80": 1}}),
            )
        };

        // The second change names an upstream that does not exist: nothing is kept.
        let refused = store
            .write_all(vec![
                upstream(),
                put(
                    ResourceKind::Route,
                    "r",
                    json!({"uri": "/r", "upstream_id": "missing"}),
                ),
            ])
            .await;
        let (key, err) = refused.expect_err("refused");
        assert_eq!(key.as_deref(), Some("/apisix/routes/r"));
        assert!(matches!(err, StoreError::MissingReference { .. }), "{err}");
        assert!(
            store
                .snapshot()
                .state
                .get(ResourceKind::Upstream, "u")
                .is_none()
        );

        store
            .write_all(vec![
                upstream(),
                put(
                    ResourceKind::Route,
                    "r",
                    json!({"uri": "/r", "upstream_id": "u"}),
                ),
            ])
            .await
            .expect("written");
        let snapshot = store.snapshot();
        assert_eq!(snapshot.router.len(), 1);
        assert_eq!(snapshot.state.revision(), 2);
        drop(store);

        let reopened = open(dir.path());
        let state = &reopened.snapshot().state;
        assert!(state.get(ResourceKind::Route, "r").is_some());
        assert!(state.get(ResourceKind::Upstream, "u").is_some());
        assert_eq!(state.revision(), 2);
    }
}
