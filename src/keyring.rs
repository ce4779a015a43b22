//! Plugin conf fields encrypted at rest, as APISIX's `apisix.data_encryption` does: each field named
//! in a plugin schema's `encrypt_fields` (dotted paths such as `authorization.iam.secretkey`) is
//! stored as base64(AES-128-CBC(value)), with a 16-byte keyring key as both key and IV and PKCS#7
//! padding. The first key encrypts; every key is tried to decrypt, so keys can be rotated by adding
//! the new one first. A value no key decrypts is left as it is (it was stored before encryption was
//! turned on, or by hand).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::schema::ResourceKind;
use crate::validate::{PluginCatalog, SchemaType};

type Encryptor = cbc::Encryptor<aes::Aes128>;
type Decryptor = cbc::Decryptor<aes::Aes128>;

/// The keys, each 16 bytes.
#[derive(Clone)]
pub(crate) struct Keyring {
    keys: Vec<[u8; 16]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// A keyring from 16-character keys (checked when the configuration loads); `None` when empty.
    pub(crate) fn new(keys: &[String]) -> Option<Keyring> {
        let keys: Vec<[u8; 16]> = keys
            .iter()
            .filter_map(|k| <[u8; 16]>::try_from(k.as_bytes()).ok())
            .collect();
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// base64(AES-128-CBC(text)) with the first key.
    pub(crate) fn encrypt(&self, text: &str) -> String {
        let key = &self.keys[0];
        let sealed =
            Encryptor::new(key.into(), key.into()).encrypt_padded_vec_mut::<Pkcs7>(text.as_bytes());
        B64.encode(sealed)
    }

    /// The plaintext, with the first key that decrypts it to UTF-8; `None` when none does.
    pub(crate) fn decrypt(&self, sealed: &str) -> Option<String> {
        let bytes = B64.decode(sealed).ok()?;
        self.keys.iter().find_map(|key| {
            let plain = Decryptor::new(key.into(), key.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&bytes)
                .ok()?;
            String::from_utf8(plain).ok()
        })
    }

    /// Encrypts the string fields of `conf` at the dotted `paths`.
    pub(crate) fn encrypt_fields(&self, conf: &mut Value, paths: &[String]) {
        for path in paths {
            if let Some(Value::String(text)) = field_mut(conf, path) {
                *text = self.encrypt(text);
            }
        }
    }

    /// Decrypts the string fields of `conf` at the dotted `paths`; fields no key decrypts stay.
    pub(crate) fn decrypt_fields(&self, conf: &mut Value, paths: &[String]) {
        for path in paths {
            if let Some(Value::String(text)) = field_mut(conf, path)
                && let Some(plain) = self.decrypt(text)
            {
                *text = plain;
            }
        }
    }
}

/// Whether [`Keyring::seal_object`] encrypts (before storing) or decrypts (before showing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    Close,
    Open,
}

impl Keyring {
    /// Encrypts or decrypts the `encrypt_fields` of every plugin conf of a stored object (the object
    /// itself for plugin metadata, whose id is the plugin name), with the schemas of `plugins`.
    pub(crate) fn seal_object(
        &self,
        plugins: &dyn PluginCatalog,
        kind: ResourceKind,
        id: &str,
        value: &mut Value,
        direction: Seal,
    ) {
        let apply = |name: &str, conf: &mut Value, schema_type: SchemaType| {
            let Some(schema) = plugins.schema(name, schema_type) else {
                return;
            };
            let fields = encrypt_fields_of(&schema);
            match direction {
                Seal::Close => self.encrypt_fields(conf, &fields),
                Seal::Open => self.decrypt_fields(conf, &fields),
            }
        };
        match kind {
            ResourceKind::PluginMetadata => apply(id, value, SchemaType::Metadata),
            ResourceKind::Ssl | ResourceKind::Upstream => {}
            _ => {
                let schema_type = if kind == ResourceKind::Consumer {
                    SchemaType::Consumer
                } else {
                    SchemaType::Route
                };
                if let Some(Value::Object(confs)) = value.get_mut("plugins") {
                    for (name, conf) in confs.iter_mut() {
                        apply(name, conf, schema_type);
                    }
                }
            }
        }
    }
}

fn field_mut<'a>(conf: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(conf, |node, segment| node.get_mut(segment))
}

/// The `encrypt_fields` of a plugin schema.
pub(crate) fn encrypt_fields_of(schema: &Value) -> Vec<String> {
    schema
        .get("encrypt_fields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::new(&keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>())
            .unwrap_or_else(|| Keyring { keys: Vec::new() })
    }

    #[test]
    fn matches_apisix_aes_128_cbc_with_the_key_as_iv() {
        // The same bytes as `openssl enc -aes-128-cbc -K <hex key> -iv <hex key> -a`, which is what
        // APISIX's resty.aes call produces, for the keyring key of APISIX's own test.
        let keyring = ring(&["edd1c9f0985e76a2"]);
        let sealed = keyring.encrypt("test-api-key");
        assert_eq!(sealed, "KmjDqNkKEE39RiuQS4o2wg==");
        assert_eq!(keyring.decrypt(&sealed).as_deref(), Some("test-api-key"));
    }

    #[test]
    fn every_key_is_tried_and_unknown_values_stay() {
        let old = ring(&["qeddd145sfvddff3"]);
        let rotated = ring(&["edd1c9f0985e76a2", "qeddd145sfvddff3"]);
        let sealed = old.encrypt("secret");
        assert_eq!(rotated.decrypt(&sealed).as_deref(), Some("secret"));
        assert_eq!(rotated.decrypt("not base64 !"), None);
        let mut conf =
            json!({"authorization": {"iam": {"secretkey": sealed, "accesskey": "plain"}}});
        let paths = vec![
            "authorization.iam.secretkey".to_owned(),
            "authorization.iam.accesskey".to_owned(),
            "authorization.apikey".to_owned(),
        ];
        rotated.decrypt_fields(&mut conf, &paths);
        assert_eq!(
            conf,
            json!({"authorization": {"iam": {"secretkey": "secret", "accesskey": "plain"}}})
        );
        rotated.encrypt_fields(&mut conf, &paths);
        assert_ne!(conf["authorization"]["iam"]["secretkey"], "secret");
        rotated.decrypt_fields(&mut conf, &paths);
        assert_eq!(conf["authorization"]["iam"]["accesskey"], "plain");
    }

    #[test]
    fn keys_must_be_16_bytes() {
        assert!(Keyring::new(&["short".to_owned()]).is_none());
        assert!(Keyring::new(&[]).is_none());
    }
}
