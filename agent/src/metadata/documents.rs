//! The per-server documents, rendered once and shared by every request.
//!
//! `meta_data.json`, `network_data.json`, `vendor_data.json` and the user data are the same
//! for every request of a server, except `meta_data.json`'s `random_seed` (512 fresh random
//! bytes per answer, as nova). So [`Documents`] holds `meta_data.json` split around the seed's
//! value and the other files as ready bodies; [`DocumentCache`] keeps them per port and
//! renders again only when the source hands out metadata that differs from what they were
//! rendered from.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use rand::RngCore;
use serde_json::{json, Value};

use super::source::InstanceMetadata;

/// The size of `random_seed` before base64, as nova.
const RANDOM_SEED_BYTES: usize = 512;

/// The most ports whose documents are kept; the cache starts over when it is full.
const MAX_CACHED: usize = 4096;

/// The rendered documents of one server's port.
#[derive(Debug)]
pub(crate) struct Documents {
    /// `meta_data.json` up to and including the opening quote of `random_seed`'s value.
    meta_head: String,
    /// `meta_data.json` from the closing quote of `random_seed`'s value.
    meta_tail: String,
    /// `network_data.json`.
    pub(crate) network_data: Bytes,
    /// `vendor_data.json`.
    pub(crate) vendor_data: Bytes,
    /// The raw user data, if any.
    pub(crate) user_data: Option<Bytes>,
}

impl Documents {
    /// Renders every document of `md`.
    pub(crate) fn render(md: &InstanceMetadata) -> Self {
        let keys: Vec<Value> = md
            .public_keys
            .iter()
            .map(|(name, key)| json!({"name": name, "type": "ssh", "data": key}))
            .collect();
        // serde_json's objects sort their keys: every key but `uuid` comes before
        // `random_seed`, so the document is `{<head>,"random_seed":"<seed>","uuid":<uuid>}`.
        let head = json!({
            "availability_zone": md.availability_zone,
            "devices": [],
            "hostname": md.hostname,
            "keys": keys,
            "launch_index": md.launch_index,
            "meta": md.meta,
            "name": md.name,
            "project_id": md.project_id,
            "public_keys": md.public_keys,
        });
        let head = head.to_string();
        let head = head.strip_suffix('}').unwrap_or(&head);
        let meta_head = format!("{head},\"random_seed\":\"");
        let meta_tail = format!("\",\"uuid\":{}}}", Value::from(md.uuid.as_str()));
        Self {
            meta_head,
            meta_tail,
            network_data: Bytes::from(md.network_data.to_string()),
            vendor_data: Bytes::from(md.vendor_data.to_string()),
            user_data: md.user_data.as_deref().map(Bytes::copy_from_slice),
        }
    }

    /// `meta_data.json` with a fresh `random_seed`.
    pub(crate) fn meta_data(&self) -> Bytes {
        let mut seed = [0u8; RANDOM_SEED_BYTES];
        rand::thread_rng().fill_bytes(&mut seed);
        let engine = base64::engine::general_purpose::STANDARD;
        let mut body = String::with_capacity(
            self.meta_head.len() + self.meta_tail.len() + RANDOM_SEED_BYTES.div_ceil(3) * 4,
        );
        body.push_str(&self.meta_head);
        engine.encode_string(seed, &mut body);
        body.push_str(&self.meta_tail);
        Bytes::from(body)
    }
}

/// Rendered documents per port, with the metadata they came from. A cache belongs to one
/// network, where an address is one port's: entries are keyed by the address alone (no
/// allocation per lookup), and an entry whose metadata differs (another server now holds the
/// address, or its metadata changed) is rendered again.
#[derive(Debug, Default)]
pub(crate) struct DocumentCache {
    entries: RwLock<HashMap<Ipv4Addr, Cached>>,
}

/// One cache entry.
#[derive(Debug, Clone)]
struct Cached {
    /// What `documents` were rendered from.
    from: Arc<InstanceMetadata>,
    documents: Arc<Documents>,
}

impl Cached {
    /// Whether these documents belong to `md`: the same allocation, or equal contents.
    fn matches(&self, md: &Arc<InstanceMetadata>) -> bool {
        Arc::ptr_eq(&self.from, md) || *self.from == **md
    }
}

impl DocumentCache {
    /// The documents of `md`, rendered now unless the cache holds them already.
    pub(crate) fn get(&self, md: &Arc<InstanceMetadata>) -> Arc<Documents> {
        let key = md.local_ipv4;
        let same = |cached: &Cached| Arc::ptr_eq(&cached.from, md);
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = entries.get(&key).filter(|c| same(c)) {
                return cached.documents.clone();
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = entries.get_mut(&key).filter(|c| c.matches(md)) {
            // Equal metadata in a new allocation (the source rebuilt its tables): keep the
            // documents, remember the new allocation so the next lookup is a pointer compare.
            cached.from = md.clone();
            return cached.documents.clone();
        }
        if entries.len() >= MAX_CACHED && !entries.contains_key(&key) {
            entries.clear();
        }
        let documents = Arc::new(Documents::render(md));
        entries.insert(
            key,
            Cached {
                from: md.clone(),
                documents: documents.clone(),
            },
        );
        documents
    }

    /// How many ports are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::fake::server;

    /// What `meta_data.json` was before it was pre-rendered: one `json!` document.
    fn reference(md: &InstanceMetadata, seed: &str) -> Value {
        let keys: Vec<Value> = md
            .public_keys
            .iter()
            .map(|(name, key)| json!({"name": name, "type": "ssh", "data": key}))
            .collect();
        json!({
            "uuid": md.uuid,
            "name": md.name,
            "hostname": md.hostname,
            "public_keys": md.public_keys,
            "keys": keys,
            "launch_index": md.launch_index,
            "availability_zone": md.availability_zone,
            "project_id": md.project_id,
            "random_seed": seed,
            "meta": md.meta,
            "devices": [],
        })
    }

    #[test]
    fn meta_data_is_the_same_document_with_a_fresh_seed() {
        let mut md = server(1, 10);
        // Values that need escaping, and a meta key named like the seed.
        md.name = "we\"b\\1\n".into();
        md.meta.insert("random_seed".into(), "\",\"x\":\"".into());
        let docs = Documents::render(&md);
        let first = docs.meta_data();
        let second = docs.meta_data();
        let a: Value = serde_json::from_slice(&first).unwrap();
        let b: Value = serde_json::from_slice(&second).unwrap();
        let seed = a["random_seed"].as_str().unwrap().to_owned();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&seed)
            .unwrap();
        assert_eq!(raw.len(), RANDOM_SEED_BYTES);
        assert_ne!(a["random_seed"], b["random_seed"]);
        // Byte for byte what serializing the whole document gives.
        assert_eq!(
            String::from_utf8(first.to_vec()).unwrap(),
            reference(&md, &seed).to_string()
        );
        assert_eq!(docs.network_data, md.network_data.to_string());
        assert_eq!(docs.vendor_data, md.vendor_data.to_string());
        assert_eq!(docs.user_data.as_deref(), md.user_data.as_deref());
        let mut without_keys = md.clone();
        without_keys.public_keys.clear();
        without_keys.meta.clear();
        let docs = Documents::render(&without_keys);
        let c: Value = serde_json::from_slice(&docs.meta_data()).unwrap();
        let seed = c["random_seed"].as_str().unwrap().to_owned();
        assert_eq!(c, reference(&without_keys, &seed));
    }

    #[test]
    fn the_cache_renders_again_only_when_the_metadata_changes() {
        let cache = DocumentCache::default();
        let one = Arc::new(server(1, 10));
        let first = cache.get(&one);
        assert!(Arc::ptr_eq(&first, &cache.get(&one)));
        // Equal contents in a new allocation: the same documents.
        let rebuilt = Arc::new(server(1, 10));
        assert!(Arc::ptr_eq(&first, &cache.get(&rebuilt)));
        // Changed contents: new documents.
        let mut changed = server(1, 10);
        changed.vendor_data = json!({"changed": true});
        let changed = Arc::new(changed);
        let second = cache.get(&changed);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.vendor_data, r#"{"changed":true}"#);
        // Another port of the same server is its own entry.
        let mut other_port = server(1, 10);
        other_port.local_ipv4 = Ipv4Addr::new(198, 51, 100, 20);
        cache.get(&Arc::new(other_port));
        assert_eq!(cache.len(), 2);
    }
}
