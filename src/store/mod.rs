//! The configuration store: every resource, persisted by a backend, served to the data plane as one
//! immutable [`Snapshot`] swapped atomically on each change.
//!
//! Writers are serialized; each change is applied to the pure [`ConfigState`], compiled into a new
//! snapshot (which validates it), persisted, and only then made visible. A failure at any step leaves
//! the previous snapshot serving and nothing half-applied.

pub(crate) mod embedded;
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
    /// Durably records one change: `item` is the new value, or `None` for a deletion.
    fn commit(
        &self,
        kind: ResourceKind,
        id: &str,
        item: Option<&Item>,
        revision: u64,
    ) -> Result<(), StoreError>;
}

/// The store: a backend, the current state for writers, and the snapshot readers see.
pub(crate) struct Store {
    backend: Arc<dyn Backend>,
    writer: tokio::sync::Mutex<ConfigState>,
    current: Arc<ArcSwap<Snapshot>>,
    settings: SnapshotSettings,
}

impl Store {
    /// Loads every resource and builds the first snapshot.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        settings: SnapshotSettings,
    ) -> Result<Store, StoreError> {
        let state = backend.load()?;
        let snapshot = Snapshot::build(state.clone(), 1, &settings)?;
        Ok(Store {
            backend,
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
        let mut state = self.writer.lock().await;
        self.commit_locked(&mut state, change).await
    }

    /// Stores a new object under a generated id (APISIX's 20-digit POST ids).
    pub(crate) async fn create(
        &self,
        kind: ResourceKind,
        mut value: Value,
    ) -> Result<Arc<Item>, StoreError> {
        let mut state = self.writer.lock().await;
        let id = format!("{:020}", state.revision() + 1);
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), Value::String(id.clone()));
        }
        let item = self
            .commit_locked(&mut state, Change::Put { kind, id, value })
            .await?;
        item.ok_or_else(|| StoreError::Backend("put returned no item".into()))
    }

    /// Publishes a complete new state (a standalone file reload): builds its snapshot with the next
    /// generation and swaps it in, without a backend write. On error the current snapshot stays.
    pub(crate) async fn replace(&self, next: ConfigState) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        let generation = self.current.load().generation + 1;
        let snapshot = Snapshot::build(next.clone(), generation, &self.settings)?;
        *state = next;
        self.current.store(Arc::new(snapshot));
        Ok(generation)
    }

    async fn commit_locked(
        &self,
        state: &mut ConfigState,
        change: Change,
    ) -> Result<Option<Arc<Item>>, StoreError> {
        let (kind, id) = match &change {
            Change::Put { kind, id, .. } | Change::Delete { kind, id } => (*kind, id.clone()),
        };
        let (next, item) = state.apply(change)?;
        let generation = self.current.load().generation + 1;
        let snapshot = Snapshot::build(next.clone(), generation, &self.settings)?;
        let backend = self.backend.clone();
        let persisted = item.clone();
        let revision = next.revision();
        tokio::task::spawn_blocking(move || {
            backend.commit(kind, &id, persisted.as_deref(), revision)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        *state = next;
        self.current.store(Arc::new(snapshot));
        Ok(item)
    }
}
