//! Who the hosts of an evaluation are, as scheduler plugins ask for it (`hosts.identity`, WIT
//! scheduler 1.1): names, traits and metadata, column by column with shared strings sent once.
//! Built lazily — only when a plugin asks — once per evaluation, then cut to the hosts each
//! call's batch holds.

use super::HostState;
use crate::plugin::{HostIdentitySource, WitHostIdentity};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The identity of every host of one evaluation, built on first use.
pub struct Identities {
    hosts: Arc<Vec<HostState>>,
    full: OnceLock<WitHostIdentity>,
}

impl Identities {
    /// The identities of `hosts` (nothing is built yet).
    pub fn new(hosts: Arc<Vec<HostState>>) -> Arc<Self> {
        Arc::new(Self {
            hosts,
            full: OnceLock::new(),
        })
    }

    fn full(&self) -> &WitHostIdentity {
        self.full.get_or_init(|| build(&self.hosts))
    }

    /// What a call over the hosts at `indexes` (in that order) answers.
    pub fn for_call(self: &Arc<Self>, indexes: &[usize]) -> Arc<dyn HostIdentitySource> {
        Arc::new(CallHosts {
            all: self.clone(),
            indexes: indexes.to_vec(),
            answer: OnceLock::new(),
        })
    }
}

/// The hosts of one plugin call: a subset of an evaluation's hosts.
struct CallHosts {
    all: Arc<Identities>,
    indexes: Vec<usize>,
    /// The answer, cut once per call however often the plugin asks.
    answer: OnceLock<WitHostIdentity>,
}

impl HostIdentitySource for CallHosts {
    fn identity(&self) -> WitHostIdentity {
        self.answer
            .get_or_init(|| pick(self.all.full(), &self.indexes))
            .clone()
    }
}

fn intern<'a>(lookup: &mut HashMap<&'a str, u32>, strings: &mut Vec<String>, s: &'a str) -> u32 {
    *lookup.entry(s).or_insert_with(|| {
        strings.push(s.to_string());
        (strings.len() - 1) as u32
    })
}

/// The columnar identity of every host, in order. Traits are sorted and without repeats per
/// host; metadata keys come in ascending order (a `BTreeMap`'s).
pub fn build(hosts: &[HostState]) -> WitHostIdentity {
    let mut strings = Vec::new();
    let mut lookup = HashMap::new();
    let mut id = WitHostIdentity {
        strings: Vec::new(),
        names: Vec::with_capacity(hosts.len()),
        trait_start: Vec::with_capacity(hosts.len() + 1),
        trait_idx: Vec::new(),
        metadata_start: Vec::with_capacity(hosts.len() + 1),
        metadata_key_idx: Vec::new(),
        metadata_value_idx: Vec::new(),
    };
    for host in hosts {
        id.names.push(host.name.clone());
        id.trait_start.push(id.trait_idx.len() as u32);
        let mut traits: Vec<&str> = host.traits.iter().map(String::as_str).collect();
        traits.sort_unstable();
        traits.dedup();
        for t in traits {
            id.trait_idx.push(intern(&mut lookup, &mut strings, t));
        }
        id.metadata_start.push(id.metadata_key_idx.len() as u32);
        for (key, value) in &host.metadata {
            id.metadata_key_idx
                .push(intern(&mut lookup, &mut strings, key));
            id.metadata_value_idx
                .push(intern(&mut lookup, &mut strings, value));
        }
    }
    id.trait_start.push(id.trait_idx.len() as u32);
    id.metadata_start.push(id.metadata_key_idx.len() as u32);
    id.strings = strings;
    id
}

/// The identity of the hosts at `indexes` of `full` (the shared strings kept whole).
pub fn pick(full: &WitHostIdentity, indexes: &[usize]) -> WitHostIdentity {
    if indexes.len() == full.names.len() && indexes.iter().enumerate().all(|(i, &j)| i == j) {
        return full.clone();
    }
    let mut id = WitHostIdentity {
        strings: full.strings.clone(),
        names: Vec::with_capacity(indexes.len()),
        trait_start: Vec::with_capacity(indexes.len() + 1),
        trait_idx: Vec::new(),
        metadata_start: Vec::with_capacity(indexes.len() + 1),
        metadata_key_idx: Vec::new(),
        metadata_value_idx: Vec::new(),
    };
    for &i in indexes {
        id.names.push(full.names[i].clone());
        id.trait_start.push(id.trait_idx.len() as u32);
        let traits = full.trait_start[i] as usize..full.trait_start[i + 1] as usize;
        id.trait_idx.extend_from_slice(&full.trait_idx[traits]);
        id.metadata_start.push(id.metadata_key_idx.len() as u32);
        let meta = full.metadata_start[i] as usize..full.metadata_start[i + 1] as usize;
        id.metadata_key_idx
            .extend_from_slice(&full.metadata_key_idx[meta.clone()]);
        id.metadata_value_idx
            .extend_from_slice(&full.metadata_value_idx[meta]);
    }
    id.trait_start.push(id.trait_idx.len() as u32);
    id.metadata_start.push(id.metadata_key_idx.len() as u32);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, traits: &[&str], metadata: &[(&str, &str)]) -> HostState {
        let mut h: HostState = serde_json::from_value(serde_json::json!({ "name": name })).unwrap();
        h.traits = traits.iter().map(|t| t.to_string()).collect();
        h.metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h
    }

    fn traits_of(id: &WitHostIdentity, i: usize) -> Vec<&str> {
        id.trait_idx[id.trait_start[i] as usize..id.trait_start[i + 1] as usize]
            .iter()
            .map(|&t| id.strings[t as usize].as_str())
            .collect()
    }

    #[test]
    fn columns_share_strings_and_subsets_keep_each_host_whole() {
        let hosts = vec![
            host(
                "a",
                &["CUSTOM_GPU", "HW_CPU_X86_AVX2", "CUSTOM_GPU"],
                &[("ssd", "true")],
            ),
            host("b", &[], &[]),
            host(
                "c",
                &["HW_CPU_X86_AVX2"],
                &[("ssd", "true"), ("tenant", "t1")],
            ),
        ];
        let id = build(&hosts);
        assert_eq!(id.names, ["a", "b", "c"]);
        assert_eq!(id.trait_start, [0, 2, 2, 3]);
        assert_eq!(traits_of(&id, 0), ["CUSTOM_GPU", "HW_CPU_X86_AVX2"]);
        assert!(traits_of(&id, 1).is_empty());
        // Shared strings once: 2 traits, ssd, true, tenant, t1.
        assert_eq!(id.strings.len(), 6);
        assert_eq!(id.metadata_start, [0, 1, 1, 3]);
        let sub = pick(&id, &[2, 0]);
        assert_eq!(sub.names, ["c", "a"]);
        assert_eq!(traits_of(&sub, 0), ["HW_CPU_X86_AVX2"]);
        assert_eq!(traits_of(&sub, 1), ["CUSTOM_GPU", "HW_CPU_X86_AVX2"]);
        assert_eq!(sub.metadata_start, [0, 2, 3]);
        let keys: Vec<&str> = sub
            .metadata_key_idx
            .iter()
            .map(|&k| sub.strings[k as usize].as_str())
            .collect();
        assert_eq!(keys, ["ssd", "tenant", "ssd"]);
        assert_eq!(pick(&id, &[0, 1, 2]).trait_idx, id.trait_idx);
        assert_eq!(pick(&id, &[]).trait_start, [0]);
    }
}
