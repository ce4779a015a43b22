//! etcd mode (`config_provider: etcd`): resources live in etcd under APISIX's key layout
//! (`{prefix}/routes/1`, `{prefix}/upstreams/...`, `{prefix}/consumers/{username}`) with APISIX's
//! JSON values, so Moongate and APISIX can share one etcd.
//!
//! Admin writes go to etcd and become visible when the watch delivers them back ([`sync`]), so every
//! gateway on the same prefix, this one included, applies the same changes in the same order.

mod client;
pub(crate) mod sync;

use std::time::Duration;

use serde_json::Value;

use client::{Client, KeyValue};
pub(crate) use client::{ClientOptions, EtcdError, TlsOptions};

use super::model::{ConfigState, Item, item_key};
use crate::schema::ResourceKind;
use crate::validate::PluginCatalog;

/// How `Remote` reaches etcd and where it keeps resources.
#[derive(Clone)]
pub(crate) struct RemoteOptions {
    pub(crate) client: ClientOptions,
    /// `deployment.etcd.prefix`, e.g. `/apisix`.
    pub(crate) prefix: String,
    /// A watch that delivers nothing for this long is re-created (`deployment.etcd.watch_timeout`).
    pub(crate) watch_timeout: Duration,
}

/// The resources under one etcd prefix.
pub(crate) struct Remote {
    client: Client,
    /// Without the trailing slash.
    prefix: String,
    watch_timeout: Duration,
    timeout: Duration,
}

/// What a key under the prefix holds, as far as the store is concerned.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// A resource this gateway serves.
    Item(ResourceKind, Item),
    /// A key Moongate does not serve (`/gen_id`, `/plugins`, consumer credentials, APISIX's
    /// `init_dir` placeholders, resource types it does not know).
    Ignored,
}

impl Remote {
    pub(crate) fn new(options: RemoteOptions) -> Result<Remote, String> {
        let timeout = options.client.timeout;
        Ok(Remote {
            client: Client::new(options.client)?,
            prefix: options.prefix.trim_end_matches('/').to_owned(),
            watch_timeout: options.watch_timeout,
            timeout,
        })
    }

    /// The configured endpoints, for messages.
    pub(crate) fn endpoints(&self) -> String {
        self.client.endpoints()
    }

    /// Bounds each call to etcd.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The etcd key of a resource.
    pub(crate) fn key(&self, kind: ResourceKind, id: &str) -> String {
        format!("{}/{}/{}", self.prefix, kind.collection(), id)
    }

    fn watched_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The resource a key names, if it names one (`{prefix}/{collection}/{id}`, id without `/`).
    pub(crate) fn parse_key(&self, key: &str) -> Option<(ResourceKind, String)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (collection, id) = rest.split_once('/')?;
        if id.is_empty() || id.contains('/') {
            return None;
        }
        Some((ResourceKind::from_collection(collection)?, id.to_owned()))
    }

    /// Decodes and checks one key-value pair as an Admin write is checked. `Err` is the reason an
    /// item is refused, as logged.
    pub(crate) fn decode(
        &self,
        kv: &KeyValue,
        plugins: Option<&dyn PluginCatalog>,
    ) -> Result<Decoded, String> {
        let Some((kind, id)) = self.parse_key(&kv.key) else {
            return Ok(Decoded::Ignored);
        };
        if kv.value.is_empty() || kv.value.as_ref() == b"init_dir" {
            return Ok(Decoded::Ignored);
        }
        let mut value: Value =
            serde_json::from_slice(&kv.value).map_err(|e| format!("invalid JSON: {e}"))?;
        crate::validate::check_item(kind, &id, &mut value, plugins)?;
        Ok(Decoded::Item(
            kind,
            Item {
                key: item_key(kind, &id),
                value,
                created_index: kv.create_revision,
                modified_index: kv.mod_revision,
            },
        ))
    }

    /// Reads every resource under the prefix. An invalid item is logged and left out, or, when
    /// `previous` holds a valid version of it, that version is kept (as APISIX keeps the last valid
    /// value of an updated key).
    pub(crate) async fn load(
        &self,
        plugins: Option<&dyn PluginCatalog>,
        previous: Option<&ConfigState>,
    ) -> Result<ConfigState, EtcdError> {
        let (revision, kvs) = self.client.range_prefix(&self.watched_prefix()).await?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            match self.decode(kv, plugins) {
                Ok(Decoded::Item(kind, item)) => items.push((kind, item)),
                Ok(Decoded::Ignored) => {}
                Err(reason) => {
                    tracing::error!("failed to check item data of [{}] err: {reason}", kv.key);
                    let kept = self
                        .parse_key(&kv.key)
                        .and_then(|(kind, id)| Some((kind, previous?.get(kind, &id)?)));
                    if let Some((kind, item)) = kept {
                        items.push((kind, Item::clone(item)));
                    }
                }
            }
        }
        Ok(ConfigState::from_items(revision, items))
    }

    /// Stores a resource's value; returns the revision of the write.
    pub(crate) async fn put(
        &self,
        kind: ResourceKind,
        id: &str,
        value: &Value,
    ) -> Result<u64, EtcdError> {
        let bytes = serde_json::to_vec(value).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        self.client.put(&self.key(kind, id), &bytes).await
    }

    /// Deletes a resource; returns the revision after the delete.
    pub(crate) async fn delete(&self, kind: ResourceKind, id: &str) -> Result<u64, EtcdError> {
        self.client
            .delete(&self.key(kind, id))
            .await
            .map(|(revision, _)| revision)
    }

    /// A new 20-digit id, unique across every gateway on this etcd: the revision of a write to
    /// `{prefix}/gen_id`, as APISIX generates POST ids.
    pub(crate) async fn next_id(&self) -> Result<String, EtcdError> {
        let revision = self
            .client
            .put(&format!("{}/gen_id", self.prefix), b"1")
            .await?;
        Ok(format!("{revision:020}"))
    }

    async fn watch(&self, start_revision: u64) -> Result<client::Watch, EtcdError> {
        self.client
            .watch(&self.watched_prefix(), start_revision)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn remote(prefix: &str) -> Result<Remote, String> {
        Remote::new(RemoteOptions {
            client: ClientOptions {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                timeout: Duration::from_secs(1),
                credentials: None,
                tls: TlsOptions::default(),
            },
            prefix: prefix.into(),
            watch_timeout: Duration::from_secs(50),
        })
    }

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(value),
            create_revision: 4,
            mod_revision: 7,
        }
    }

    #[test]
    fn keys_follow_apisix_layout() -> Result<(), String> {
        let r = remote("/apisix/")?;
        assert_eq!(r.key(ResourceKind::Route, "1"), "/apisix/routes/1");
        assert_eq!(
            r.parse_key("/apisix/consumers/jack"),
            Some((ResourceKind::Consumer, "jack".into()))
        );
        assert_eq!(
            r.parse_key("/apisix/plugin_metadata/aws-lambda"),
            Some((ResourceKind::PluginMetadata, "aws-lambda".into()))
        );
        assert_eq!(r.parse_key("/apisix/consumers/jack/credentials/1"), None);
        assert_eq!(r.parse_key("/apisix/routes/"), None);
        assert_eq!(r.parse_key("/apisix/gen_id"), None);
        assert_eq!(r.parse_key("/apisixx/routes/1"), None);
        assert_eq!(r.parse_key("/apisix/protos/1"), None);
        Ok(())
    }

    #[test]
    fn decode_checks_items_and_ignores_what_is_not_served() -> Result<(), String> {
        let r = remote("/apisix")?;
        let Decoded::Item(kind, item) = r.decode(
            &kv(
                "/apisix/routes/7",
                br#"{"uri":"/a","upstream":{"nodes":{"127.0.0.1:1980":1},"type":"roundrobin"}}"#,
            ),
            None,
        )?
        else {
            return Err("expected an item".into());
        };
        assert_eq!(kind, ResourceKind::Route);
        assert_eq!(item.key, "/apisix/routes/7");
        assert_eq!(item.value.get("id"), Some(&json!("7")));
        assert_eq!((item.created_index, item.modified_index), (4, 7));
        assert_eq!(
            r.decode(&kv("/apisix/routes/", b"init_dir"), None)?,
            Decoded::Ignored
        );
        assert_eq!(
            r.decode(&kv("/apisix/gen_id", b"1"), None)?,
            Decoded::Ignored
        );
        let err = r.decode(&kv("/apisix/routes/8", br#"{"uri":1}"#), None);
        assert!(err.as_ref().is_err_and(|e| e.contains("uri")), "{err:?}");
        assert!(r.decode(&kv("/apisix/routes/9", b"{"), None).is_err());
        Ok(())
    }
}
