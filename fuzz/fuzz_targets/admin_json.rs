//! Admin API writes of arbitrary JSON, through the real validation and the real store.
//!
//! The input is a sequence of writes separated by the byte 0xFF (which never occurs in UTF-8 JSON).
//! Each write is `op id body...`: `op % 9` picks the resource kind (route, service, upstream,
//! consumer, ssl, plugin_config, global_rule, plugin_metadata, consumer_group), bit 0x40 makes it a
//! DELETE instead of a PUT, bit 0x80 makes the store's persist step fail; `id % 4` picks the path id
//! (`1`, `2`, `key-auth`, or none: the id comes from the body, as a PUT without id). The body is
//! parsed as JSON, checked as the Admin API checks it (`validate::check_object`, plugin confs
//! against a stand-in catalog), applied to the store state and compiled into a snapshot.
//!
//! Properties: no panic; a refused write answers a non-empty `error_msg` and leaves the published
//! snapshot exactly as it was (same generation, same objects, nothing half-applied); an accepted
//! write publishes exactly one change: the generation and revision move by one, the object is
//! stored as sent and every other object is untouched.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moongate::fuzzing::{AdminModel, resource_kinds};

const IDS: [Option<&str>; 4] = [Some("1"), Some("2"), Some("key-auth"), None];

fuzz_target!(|data: &[u8]| {
    let kinds = resource_kinds();
    let model = AdminModel::new();
    for write in data.split(|b| *b == 0xff).take(16) {
        let [op, id, body @ ..] = write else {
            continue;
        };
        let kind = kinds[usize::from(op % 9)];
        let delete = op & 0x40 != 0;
        let backend_fails = op & 0x80 != 0;
        let id = IDS[usize::from(id % 4)];
        let before = model.fingerprint();
        let result = if delete {
            model.delete(kind, id.unwrap_or("1"), backend_fails)
        } else {
            model.put(kind, id, body, backend_fails)
        };
        let after = model.fingerprint();
        match result {
            Err(message) => {
                assert!(!message.is_empty(), "an empty error_msg");
                assert_eq!(
                    before, after,
                    "a refused write changed the store: {message}"
                );
            }
            Ok(()) => {
                assert!(!backend_fails, "a write whose persist failed was accepted");
                assert_eq!(after.0, before.0 + 1, "one write, one new generation");
                assert_eq!(after.1, before.1 + 1, "one write, one new revision");
                let changed: Vec<_> = after
                    .3
                    .iter()
                    .filter(|item| !before.3.contains(item))
                    .chain(before.3.iter().filter(|item| !after.3.contains(item)))
                    .map(|item| item.0.as_str())
                    .collect();
                assert!(
                    changed.iter().all(|key| *key == changed[0]),
                    "one write changed several objects: {changed:?}"
                );
                if !delete {
                    assert_eq!(changed.len().min(1), 1, "an accepted put stored nothing");
                    let key = changed[0];
                    let stored_id = key.rsplit('/').next().unwrap_or_default();
                    let stored = model.get(kind, stored_id);
                    let sent: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                    let stored = stored.unwrap_or_default();
                    // Stored as sent, plus the fields the Admin API sets itself.
                    if let (Some(sent), Some(stored)) = (sent.as_object(), stored.as_object()) {
                        for (field, value) in sent {
                            if matches!(
                                field.as_str(),
                                "id" | "username" | "create_time" | "update_time"
                            ) {
                                continue;
                            }
                            assert_eq!(stored.get(field), Some(value), "field {field} changed");
                        }
                    }
                }
            }
        }
    }
});
