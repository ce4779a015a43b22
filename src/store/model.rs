//! Stored resources in APISIX's JSON shape, the pure state they form, and the changes applied to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::schema::ResourceKind;

impl ResourceKind {
    /// The path segment used by the Admin API and the etcd key layout (`routes`, `ssls`, ...).
    pub(crate) fn collection(self) -> &'static str {
        match self {
            ResourceKind::Route => "routes",
            ResourceKind::Service => "services",
            ResourceKind::Upstream => "upstreams",
            ResourceKind::Consumer => "consumers",
            ResourceKind::Ssl => "ssls",
            ResourceKind::PluginConfig => "plugin_configs",
            ResourceKind::GlobalRule => "global_rules",
            ResourceKind::PluginMetadata => "plugin_metadata",
            ResourceKind::ConsumerGroup => "consumer_groups",
        }
    }

    /// Looks a kind up by its Admin API path segment.
    pub(crate) fn from_collection(name: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.collection() == name)
    }
}

/// One stored object: APISIX's `{key, value, createdIndex, modifiedIndex}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    /// `/apisix/<collection>/<id>`.
    pub(crate) key: String,
    /// The object as written (no schema defaults), with `id`, `create_time` and `update_time`.
    pub(crate) value: Value,
    #[serde(rename = "createdIndex")]
    pub(crate) created_index: u64,
    #[serde(rename = "modifiedIndex")]
    pub(crate) modified_index: u64,
}

impl Item {
    /// The object's id (the last segment of its key).
    pub(crate) fn id(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }
}

/// The key of a resource in APISIX's layout.
pub(crate) fn item_key(kind: ResourceKind, id: &str) -> String {
    format!("/apisix/{}/{}", kind.collection(), id)
}

/// A change to the configuration, as produced by the Admin API or a watcher.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Create or replace one object.
    Put {
        kind: ResourceKind,
        id: String,
        value: Value,
    },
    /// Remove one object.
    Delete { kind: ResourceKind, id: String },
}

impl Change {
    /// The object the change is about.
    pub(crate) fn target(&self) -> (ResourceKind, String) {
        match self {
            Change::Put { kind, id, .. } | Change::Delete { kind, id } => (*kind, id.clone()),
        }
    }
}

/// Every stored object plus the revision counter; pure data, cheap to clone (objects are shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigState {
    revision: u64,
    items: HashMap<ResourceKind, BTreeMap<String, Arc<Item>>>,
}

impl ConfigState {
    /// Rebuilds a state from persisted items.
    pub(crate) fn from_items(
        revision: u64,
        items: impl IntoIterator<Item = (ResourceKind, Item)>,
    ) -> Self {
        let mut state = ConfigState {
            revision,
            items: HashMap::new(),
        };
        for (kind, item) in items {
            state.revision = state.revision.max(item.modified_index);
            state
                .items
                .entry(kind)
                .or_default()
                .insert(item.id().to_owned(), Arc::new(item));
        }
        state
    }

    /// Applies changes read from etcd as they are (etcd is the authority: no reference checks) and
    /// moves the revision up to `revision`.
    pub(crate) fn with_synced(&self, changes: &[super::Synced], revision: u64) -> ConfigState {
        let mut next = self.clone();
        for change in changes {
            match change {
                super::Synced::Put(kind, item) => {
                    next.items
                        .entry(*kind)
                        .or_default()
                        .insert(item.id().to_owned(), Arc::new(item.clone()));
                }
                super::Synced::Delete(kind, id) => {
                    if let Some(map) = next.items.get_mut(kind) {
                        map.remove(id);
                    }
                }
            }
        }
        next.advance(revision);
        next
    }

    /// Moves the revision up to `revision` (a change to a key that is not served still counts).
    pub(crate) fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// The highest revision handed out so far.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// One object.
    pub(crate) fn get(&self, kind: ResourceKind, id: &str) -> Option<&Arc<Item>> {
        self.items.get(&kind)?.get(id)
    }

    /// All objects of a kind, ordered by id.
    pub(crate) fn list(&self, kind: ResourceKind) -> impl Iterator<Item = &Arc<Item>> {
        self.items.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// Applies one change, returning the new state and the stored item (for a put).
    pub(crate) fn apply(
        &self,
        change: Change,
    ) -> Result<(ConfigState, Option<Arc<Item>>), StoreError> {
        let mut next = self.clone();
        let item = next.apply_in_place(change)?;
        Ok((next, item))
    }

    /// Applies one change to this state, returning the stored item (for a put). Referential
    /// integrity is enforced here: a reference to a missing object and the removal of a referenced
    /// object are refused with APISIX's messages, and leave the state as it was.
    pub(crate) fn apply_in_place(
        &mut self,
        change: Change,
    ) -> Result<Option<Arc<Item>>, StoreError> {
        match change {
            Change::Put { kind, id, value } => {
                self.check_references(kind, &value)?;
                self.revision += 1;
                let created_index = self
                    .get(kind, &id)
                    .map_or(self.revision, |old| old.created_index);
                let item = Arc::new(Item {
                    key: item_key(kind, &id),
                    value,
                    created_index,
                    modified_index: self.revision,
                });
                self.items.entry(kind).or_default().insert(id, item.clone());
                Ok(Some(item))
            }
            Change::Delete { kind, id } => {
                if self.get(kind, &id).is_none() {
                    return Err(StoreError::NotFound { kind, id });
                }
                self.check_unreferenced(kind, &id)?;
                self.revision += 1;
                if let Some(map) = self.items.get_mut(&kind) {
                    map.remove(&id);
                }
                Ok(None)
            }
        }
    }

    fn check_references(&self, kind: ResourceKind, value: &Value) -> Result<(), StoreError> {
        let refs: &[(&str, ResourceKind)] = match kind {
            ResourceKind::Route => &[
                ("upstream_id", ResourceKind::Upstream),
                ("service_id", ResourceKind::Service),
                ("plugin_config_id", ResourceKind::PluginConfig),
            ],
            ResourceKind::Service => &[("upstream_id", ResourceKind::Upstream)],
            ResourceKind::Consumer => &[("group_id", ResourceKind::ConsumerGroup)],
            _ => &[],
        };
        for (field, target) in refs {
            if let Some(id) = value.get(*field).and_then(id_of)
                && self.get(*target, &id).is_none()
            {
                return Err(StoreError::MissingReference {
                    target: *target,
                    id,
                });
            }
        }
        Ok(())
    }

    fn check_unreferenced(&self, kind: ResourceKind, id: &str) -> Result<(), StoreError> {
        let (field, users): (&str, &[ResourceKind]) = match kind {
            ResourceKind::Upstream => {
                ("upstream_id", &[ResourceKind::Route, ResourceKind::Service])
            }
            ResourceKind::Service => ("service_id", &[ResourceKind::Route]),
            ResourceKind::PluginConfig => ("plugin_config_id", &[ResourceKind::Route]),
            ResourceKind::ConsumerGroup => ("group_id", &[ResourceKind::Consumer]),
            _ => return Ok(()),
        };
        for user in users {
            if let Some(item) = self
                .list(*user)
                .find(|item| item.value.get(field).and_then(id_of).as_deref() == Some(id))
            {
                return Err(StoreError::StillReferenced {
                    kind,
                    user: *user,
                    user_id: item.id().to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Reads an id that APISIX accepts as either a string or an integer.
pub(crate) fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(
        state: &ConfigState,
        kind: ResourceKind,
        id: &str,
        value: Value,
    ) -> Result<ConfigState, StoreError> {
        state
            .apply(Change::Put {
                kind,
                id: id.into(),
                value,
            })
            .map(|(s, _)| s)
    }

    #[test]
    fn put_assigns_revisions_and_keeps_created_index() -> Result<(), StoreError> {
        let s = put(
            &ConfigState::default(),
            ResourceKind::Upstream,
            "1",
            json!({"a": 1}),
        )?;
        let s = put(&s, ResourceKind::Upstream, "1", json!({"a": 2}))?;
        let item = s.get(ResourceKind::Upstream, "1").cloned();
        let item = item.ok_or(StoreError::NotFound {
            kind: ResourceKind::Upstream,
            id: "1".into(),
        })?;
        assert_eq!(item.created_index, 1);
        assert_eq!(item.modified_index, 2);
        assert_eq!(item.key, "/apisix/upstreams/1");
        assert_eq!(s.revision(), 2);
        Ok(())
    }

    #[test]
    fn route_referencing_missing_upstream_is_refused() {
        let err = put(
            &ConfigState::default(),
            ResourceKind::Route,
            "1",
            json!({"uri": "/", "upstream_id": 7}),
        );
        assert!(matches!(err, Err(StoreError::MissingReference { .. })));
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            msg,
            "failed to fetch upstream info by upstream id [7], response code: 404"
        );
    }

    #[test]
    fn deleting_referenced_upstream_is_refused_and_changes_nothing() -> Result<(), StoreError> {
        let s = put(
            &ConfigState::default(),
            ResourceKind::Upstream,
            "u",
            json!({}),
        )?;
        let s = put(
            &s,
            ResourceKind::Route,
            "r1",
            json!({"uri": "/", "upstream_id": "u"}),
        )?;
        let err = s.apply(Change::Delete {
            kind: ResourceKind::Upstream,
            id: "u".into(),
        });
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            msg,
            "can not delete this upstream, route [r1] is still using it now"
        );
        assert!(s.get(ResourceKind::Upstream, "u").is_some());
        Ok(())
    }

    #[test]
    fn delete_missing_is_not_found() {
        let err = ConfigState::default().apply(Change::Delete {
            kind: ResourceKind::Route,
            id: "9".into(),
        });
        assert!(matches!(err, Err(StoreError::NotFound { .. })));
    }
}
