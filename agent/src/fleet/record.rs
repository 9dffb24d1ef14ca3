//! What a node publishes: the node record (`<prefix>/nodes/<name>`) and its liveness key
//! (`<prefix>/alive/<name>`).

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
    /// VXLAN source address of the node.
    pub tunnel_ip: String,
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
