//! What a node publishes: the node record (`<prefix>/nodes/<name>`), its placement entry
//! (`<prefix>/hosts/<name>`) and its liveness key (`<prefix>/alive/<name>`).

use crate::sched::HostState;
use serde::{Deserialize, Serialize};

/// Largest record or liveness value a reader accepts (a hostile or corrupt key must not make a
/// controller allocate without bound).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The node record: what the node is, what it can do and what it holds. Rewritten when it
/// changes (debounced) and at least once a minute, never on every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRecord {
    /// The node's name in the fleet.
    pub name: String,
    /// The node's stable identity (kept in its store; survives restarts).
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Availability zone.
    pub availability_zone: String,
    /// The agent's API URL for controllers and peers.
    pub api_url: String,
    /// VXLAN source address of the node (also where migrations send a guest's memory).
    pub tunnel_ip: String,
    /// How other nodes' libvirtd reach this node's (`[migration] libvirt_uri`); absent on
    /// nodes that take no migrations.
    #[serde(default)]
    pub libvirt_uri: Option<String>,
    /// Agent version.
    pub version: String,
    /// Whether the node takes new servers.
    pub enabled: bool,
    /// Why it does not.
    pub disabled_reason: Option<String>,
    /// What the node can do.
    pub capabilities: Capabilities,
    /// The node as the scheduler sees it (the same figures `POST /v1/scheduler/evaluate`
    /// uses for this node).
    pub capacity: HostState,
    /// Servers on the node (any status but deleted).
    pub servers: u32,
    /// When the agent started (RFC 3339).
    pub started_at: String,
    /// When the record was written (RFC 3339).
    pub updated_at: String,
}

impl NodeRecord {
    /// Whether two records differ in anything but the write time and the free memory (which
    /// moves all the time; it is refreshed with the once-a-minute rewrite).
    pub fn differs_from(&self, other: &NodeRecord) -> bool {
        let mut a = self.clone();
        a.updated_at.clone_from(&other.updated_at);
        a.capacity.ram_free_mb = other.capacity.ram_free_mb;
        a != *other
    }
}

/// What a node can do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    /// libvirt domain type (`kvm` or `qemu`).
    pub domain_type: String,
    /// Network types the node can create (`flat`, `vlan`, `vxlan`, …).
    pub network_types: Vec<String>,
    /// Network backend plugins loaded.
    pub network_backends: Vec<String>,
    /// Volume backends (driver plugins) loaded.
    pub volume_backends: Vec<String>,
}

/// The liveness key's value (small: it is written at every (re)registration only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The node's stable identity: another agent with the same name but another identity
    /// cannot take the key while it lives.
    pub node_id: String,
    /// When this lease was granted (RFC 3339).
    pub since: String,
}

/// The placement entry: the scheduler's figures of one node and where to reach it, written
/// beside the record in the same transaction. Placement over a whole fleet reads these (about
/// 200 bytes each) instead of the records (about 1 KiB), and the up nodes' liveness keys
/// without their values. One-letter names keep it small; fields added later are optional, so
/// older readers and writers keep working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The agent's API URL.
    #[serde(rename = "u")]
    pub api_url: String,
    /// Takes new servers.
    #[serde(rename = "e")]
    pub enabled: bool,
    /// Availability zone.
    #[serde(rename = "z")]
    pub availability_zone: String,
    /// `[vcpus_total, vcpus_used]`.
    #[serde(rename = "c")]
    pub vcpus: [u32; 2],
    /// `[ram_total_mb, ram_used_mb, ram_free_mb]`.
    #[serde(rename = "r")]
    pub ram_mb: [u64; 3],
    /// `[disk_total_gb, disk_used_gb, volume_free_gb]`.
    #[serde(rename = "d")]
    pub disk_gb: [u64; 3],
    /// Allocation ratios `[cpu, ram, disk]`.
    #[serde(rename = "a")]
    pub ratios: [f32; 3],
    /// `[hypervisor_type, architecture, vm_mode]`.
    #[serde(rename = "t")]
    pub kind: [String; 3],
    /// Traits (`[host] traits`); absent when none.
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<String>,
    /// Aggregate metadata (`[host] metadata`); absent when none.
    #[serde(
        rename = "m",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl HostEntry {
    /// The entry of a record.
    pub fn of(record: &NodeRecord) -> Self {
        let c = &record.capacity;
        Self {
            api_url: record.api_url.clone(),
            enabled: record.enabled,
            availability_zone: record.availability_zone.clone(),
            vcpus: [c.vcpus_total, c.vcpus_used],
            ram_mb: [c.ram_total_mb, c.ram_used_mb, c.ram_free_mb],
            disk_gb: [c.disk_total_gb, c.disk_used_gb, c.volume_free_gb],
            ratios: [
                c.cpu_allocation_ratio,
                c.ram_allocation_ratio,
                c.disk_allocation_ratio,
            ],
            kind: [
                c.hypervisor_type.clone(),
                c.architecture.clone(),
                c.vm_mode.clone(),
            ],
            traits: c.traits.clone(),
            metadata: c.metadata.clone(),
        }
    }

    /// The scheduler's view of the node `name` (heartbeat age 0: only up nodes are ranked).
    pub fn host_state(&self, name: &str) -> HostState {
        let [hypervisor_type, architecture, vm_mode] = self.kind.clone();
        HostState {
            name: name.to_string(),
            enabled: self.enabled,
            heartbeat_age_s: 0,
            vcpus_total: self.vcpus[0],
            vcpus_used: self.vcpus[1],
            ram_total_mb: self.ram_mb[0],
            ram_used_mb: self.ram_mb[1],
            ram_free_mb: self.ram_mb[2],
            disk_total_gb: self.disk_gb[0],
            disk_used_gb: self.disk_gb[1],
            volume_free_gb: self.disk_gb[2],
            cpu_allocation_ratio: self.ratios[0],
            ram_allocation_ratio: self.ratios[1],
            disk_allocation_ratio: self.ratios[2],
            availability_zone: self.availability_zone.clone(),
            hypervisor_type,
            architecture,
            vm_mode,
            traits: self.traits.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// Parses a value read from etcd, bounded in size.
///
/// # Errors
/// A message when the value is too large or not the expected JSON.
pub fn parse<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Result<T, String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {} bytes; at most {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            name: "node-a".into(),
            node_id: "id".into(),
            region: "r1".into(),
            availability_zone: "az-2".into(),
            api_url: "https://10.0.0.1:8443".into(),
            tunnel_ip: "10.0.0.1".into(),
            libvirt_uri: None,
            version: "0.1.0".into(),
            enabled: false,
            disabled_reason: Some("maintenance".into()),
            capabilities: Capabilities::default(),
            capacity: HostState {
                name: "node-a".into(),
                enabled: false,
                heartbeat_age_s: 0,
                vcpus_total: 1,
                vcpus_used: 2,
                ram_total_mb: 3,
                ram_used_mb: 4,
                ram_free_mb: 5,
                disk_total_gb: 6,
                disk_used_gb: 7,
                volume_free_gb: 8,
                cpu_allocation_ratio: 9.0,
                ram_allocation_ratio: 10.0,
                disk_allocation_ratio: 11.0,
                availability_zone: "az-2".into(),
                hypervisor_type: "kvm".into(),
                architecture: "aarch64".into(),
                vm_mode: "xen".into(),
                traits: vec!["CUSTOM_GPU".into()],
                metadata: [("ssd".to_string(), "true".to_string())].into(),
            },
            servers: 3,
            started_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// Every scheduler figure survives the compact entry (a field added to `HostState` but
    /// not to the entry fails here).
    #[test]
    fn the_placement_entry_carries_every_scheduler_figure() {
        let r = record();
        let json = serde_json::to_vec(&HostEntry::of(&r)).unwrap();
        let back: HostEntry = parse(&json).unwrap();
        assert_eq!(back.host_state("node-a"), r.capacity);
        assert_eq!(back.api_url, r.api_url);
        // Without traits and metadata the entry stays as small as before (they are left out).
        let mut bare = r.clone();
        bare.capacity.traits.clear();
        bare.capacity.metadata.clear();
        let json = serde_json::to_vec(&HostEntry::of(&bare)).unwrap();
        assert!(json.len() < 200, "{} bytes", json.len());
        assert_eq!(
            parse::<HostEntry>(&json).unwrap().host_state("node-a"),
            bare.capacity
        );
    }
}
