//! The network model shared by the API, the store and the network backends.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of a network (neutron's `provider:network_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// Untagged traffic on a physical interface (`physical_network` names it).
    Flat,
    /// 802.1Q-tagged traffic on a physical interface: `<phys>.<segmentation_id>`.
    Vlan,
    /// A VXLAN overlay with VNI `segmentation_id`.
    Vxlan,
    /// A bridge with no uplink: only this node's guests and the DHCP/metadata port.
    Local,
}

impl NetworkType {
    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::Vlan => "vlan",
            Self::Vxlan => "vxlan",
            Self::Local => "local",
        }
    }
}

/// What a network backend is told about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendNetwork {
    /// The network's id (a UUID).
    pub id: String,
    /// Its kind.
    pub network_type: NetworkType,
    /// The physical network label (flat and vlan), mapped to an interface by the backend.
    pub physical_network: Option<String>,
    /// VLAN id (vlan) or VNI (vxlan).
    pub segmentation_id: Option<u32>,
    /// The MTU of the network.
    pub mtu: u32,
}

/// The bridge neutron's linux-bridge agent names for a network: `brq` + the first 11
/// characters of its id.
pub fn bridge_name(network_id: &str) -> String {
    format!("brq{}", prefix11(network_id))
}

/// The host-side device of a port: `tap` + the first 11 characters of the port id.
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", prefix11(port_id))
}

/// The namespace-side device of a DHCP port: `ns-` + the first 11 characters of the port id.
pub fn ns_device_name(port_id: &str) -> String {
    format!("ns-{}", prefix11(port_id))
}

/// The DHCP namespace of a network: `qdhcp-<network id>`.
pub fn dhcp_namespace(network_id: &str) -> String {
    format!("qdhcp-{network_id}")
}

fn prefix11(id: &str) -> &str {
    let end = id.char_indices().nth(11).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_neutron() {
        let id = "4e1b0a9c-1234-4000-8000-000000000001";
        assert_eq!(bridge_name(id), "brq4e1b0a9c-12");
        assert_eq!(tap_name(id), "tap4e1b0a9c-12");
        assert_eq!(ns_device_name(id), "ns-4e1b0a9c-12");
        assert_eq!(dhcp_namespace(id), "qdhcp-4e1b0a9c-1234-4000-8000-000000000001");
        assert!(crate::net::validate_ifname(&bridge_name(id)).is_ok());
    }
}
