//! The network model shared by the API, the store and the network backends.

use super::cidr::Ipv4Cidr;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
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
    /// Parses the name as the API spells it.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "flat" => Self::Flat,
            "vlan" => Self::Vlan,
            "vxlan" => Self::Vxlan,
            "local" => Self::Local,
            _ => return None,
        })
    }

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

/// Lifecycle of a network, a subnet's DHCP service or a port (neutron's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NetStatus {
    /// Recorded; the host side is being set up.
    Build,
    /// Set up on the host.
    Active,
    /// Being torn down.
    Deleting,
    /// Setting up failed; `fault` says why. The agent retries at its next start.
    Error,
}

impl NetStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "BUILD",
            Self::Active => "ACTIVE",
            Self::Deleting => "DELETING",
            Self::Error => "ERROR",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "BUILD" => Self::Build,
            "ACTIVE" => Self::Active,
            "DELETING" => Self::Deleting,
            "ERROR" => Self::Error,
            _ => return None,
        })
    }
}

/// A network (neutron's network with its provider attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// Id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// flat, vlan, vxlan or local.
    pub network_type: NetworkType,
    /// Physical network label (flat, vlan).
    pub physical_network: Option<String>,
    /// VLAN id or VNI.
    pub segmentation_id: Option<u32>,
    /// MTU.
    pub mtu: u32,
    /// The network backend plugin serving it.
    pub backend: String,
    /// The bridge guests plug into, once set up.
    pub bridge: Option<String>,
    /// Lifecycle.
    pub status: NetStatus,
    /// Why the network is in ERROR.
    pub fault: Option<String>,
    /// Ids of its subnets.
    pub subnets: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl Network {
    /// What the backend is told about this network.
    pub fn backend_view(&self) -> BackendNetwork {
        BackendNetwork {
            id: self.id.clone(),
            network_type: self.network_type,
            physical_network: self.physical_network.clone(),
            segmentation_id: self.segmentation_id,
            mtu: self.mtu,
        }
    }
}

/// A range of addresses a subnet allocates from (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllocationPool {
    /// First address.
    #[schema(value_type = String, format = Ipv4, example = "198.51.100.10")]
    pub start: Ipv4Addr,
    /// Last address.
    #[schema(value_type = String, format = Ipv4, example = "198.51.100.200")]
    pub end: Ipv4Addr,
}

/// A static route handed to guests by DHCP (option 121).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostRoute {
    /// Destination prefix, e.g. `203.0.113.0/24`.
    pub destination: String,
    /// Next hop.
    #[schema(value_type = String, format = Ipv4)]
    pub nexthop: Ipv4Addr,
}

/// An IPv4 subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subnet {
    /// Id (UUID).
    pub id: String,
    /// The network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// The prefix, e.g. `198.51.100.0/24`.
    pub cidr: String,
    /// The gateway guests are told about; none for an isolated subnet.
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub gateway_ip: Option<Ipv4Addr>,
    /// Where addresses are allocated from.
    pub allocation_pools: Vec<AllocationPool>,
    /// DNS servers handed out by DHCP.
    #[schema(value_type = Vec<String>)]
    pub dns_nameservers: Vec<Ipv4Addr>,
    /// Extra routes handed out by DHCP.
    pub host_routes: Vec<HostRoute>,
    /// Whether the agent serves DHCP (and metadata) on it.
    pub enable_dhcp: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl Subnet {
    /// The parsed prefix (validated when the subnet was created).
    pub fn prefix(&self) -> Ipv4Cidr {
        self.cidr
            .parse()
            .unwrap_or_else(|_| Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 32))
    }
}

/// One address of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FixedIp {
    /// The subnet the address belongs to.
    pub subnet_id: String,
    /// The address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip_address: Ipv4Addr,
}

/// A port: a MAC and addresses on a network, used by a server NIC or the DHCP namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Port {
    /// Id (UUID).
    pub id: String,
    /// The network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// MAC address, `fa:16:3e:xx:xx:xx` unless given.
    pub mac_address: String,
    /// Addresses.
    pub fixed_ips: Vec<FixedIp>,
    /// The server (or network, for DHCP ports) using it; empty when unbound.
    pub device_id: String,
    /// `compute:<zone>` for server NICs, `network:dhcp` for DHCP ports.
    pub device_owner: String,
    /// The host device (`tap<id[:11]>`).
    pub device_name: String,
    /// Security groups (ids) whose rules filter its traffic.
    pub security_groups: Vec<String>,
    /// Anti-spoofing and security groups apply (`false` only with no groups: the port may use
    /// any address and receives anything).
    pub port_security_enabled: bool,
    /// Other addresses (and MACs) it may send from.
    pub allowed_address_pairs: Vec<super::security::AddressPair>,
    /// Lifecycle.
    pub status: NetStatus,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// `device_owner` of DHCP ports.
pub const DHCP_OWNER: &str = "network:dhcp";

/// The bridge neutron's linux-bridge agent names for a network: `brq` + the first 11
/// characters of its id.
pub fn bridge_name(network_id: &str) -> String {
    format!("brq{}", prefix11(network_id))
}

/// How every port's host-side device is named: the firewall treats a bridge member with this
/// prefix as a guest's, so no other device may carry it.
pub const TAP_PREFIX: &str = "tap";

/// The host-side device of a port: [`TAP_PREFIX`] + the first 11 characters of the port id.
pub fn tap_name(port_id: &str) -> String {
    format!("{TAP_PREFIX}{}", prefix11(port_id))
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
        assert_eq!(
            dhcp_namespace(id),
            "qdhcp-4e1b0a9c-1234-4000-8000-000000000001"
        );
        assert!(crate::net::validate_ifname(&bridge_name(id)).is_ok());
    }
}
