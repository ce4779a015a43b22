//! The default backend: an embedded redb database in the data directory.
//!
//! redb commits are durable (fsync'd, copy-on-write B-trees), so every write acknowledged with a 2xx
//! survives a crash or `kill -9`, with no external server.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::model::{ConfigState, Item};
use super::{Backend, Committed, StoreError};
use crate::schema::ResourceKind;

const ITEMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("items");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// Resources kept in `<data_dir>/store.redb`, keyed by their APISIX key.
pub(crate) struct EmbeddedBackend {
    db: Database,
}

impl EmbeddedBackend {
    /// Opens (or creates) the database under `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<EmbeddedBackend, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join("store.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Ok(EmbeddedBackend { db })
    }
}

fn backend_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Backend for EmbeddedBackend {
    fn load(&self) -> Result<ConfigState, StoreError> {
        let txn = self.db.begin_read().map_err(backend_err)?;
        let revision = match txn.open_table(META) {
            Ok(meta) => meta
                .get(REVISION)
                .map_err(backend_err)?
                .map_or(0, |v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(backend_err(e)),
        };
        let table = match txn.open_table(ITEMS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(ConfigState::default()),
            Err(e) => return Err(backend_err(e)),
        };
        let mut items = Vec::new();
        for entry in table.iter().map_err(backend_err)? {
            let (key, value) = entry.map_err(backend_err)?;
            let item: Item = serde_json::from_slice(value.value())
                .map_err(|e| StoreError::Backend(format!("corrupt entry {}: {e}", key.value())))?;
            let kind = item
                .key
                .split('/')
                .nth(2)
                .and_then(ResourceKind::from_collection)
                .ok_or_else(|| StoreError::Backend(format!("unknown key {}", item.key)))?;
            items.push((kind, item));
        }
        Ok(ConfigState::from_items(revision, items))
    }

    fn commit(&self, changes: &[Committed<'_>], revision: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend_err)?;
        {
            let mut table = txn.open_table(ITEMS).map_err(backend_err)?;
            for change in changes {
                let key = super::model::item_key(change.kind, change.id);
                match change.item {
                    Some(item) => {
                        let bytes = serde_json::to_vec(item).map_err(backend_err)?;
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(backend_err)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(backend_err)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(backend_err)?;
            meta.insert(REVISION, revision).map_err(backend_err)?;
        }
        txn.commit().map_err(backend_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Change;
    use serde_json::json;

    #[test]
    fn committed_items_survive_reopen() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(backend_err)?;
        let state = {
            let backend = EmbeddedBackend::open(dir.path())?;
            let (state, item) = ConfigState::default().apply(Change::Put {
                kind: ResourceKind::Upstream,
                id: "1".into(),
                value: json!({"nodes": {"127.0.0.1:80": 1}}),
            })?;
            let put = Committed {
                kind: ResourceKind::Upstream,
                id: "1",
                item: item.as_deref(),
            };
            backend.commit(&[put], state.revision())?;
            state
        };
        let reopened = EmbeddedBackend::open(dir.path())?.load()?;
        assert_eq!(reopened.revision(), state.revision());
        assert_eq!(
            reopened
                .get(ResourceKind::Upstream, "1")
                .map(|i| i.value.clone()),
            Some(json!({"nodes": {"127.0.0.1:80": 1}}))
        );
        let backend = EmbeddedBackend::open(dir.path())?;
        let delete = Committed {
            kind: ResourceKind::Upstream,
            id: "1",
            item: None,
        };
        backend.commit(&[delete], 2)?;
        assert!(backend.load()?.get(ResourceKind::Upstream, "1").is_none());
        Ok(())
    }
}
