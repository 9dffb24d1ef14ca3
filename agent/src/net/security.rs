//! Security group, rule and address-pair records (neutron's shapes), and how a rule reads
//! as a firewall rule.

use super::cidr::Ipv4Cidr;
use super::firewall;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The name of the group every node has from the start and ports get by default.
pub const DEFAULT_GROUP: &str = "default";

/// A security group: a named set of rules that ports opt into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroup {
    /// Id (UUID).
    pub id: String,
    /// Name, unique on this node (`default` is the one every node has).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Its rules, oldest first.
    pub security_group_rules: Vec<SecurityGroupRule>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// Direction of a rule, from the port's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    /// Traffic to the port.
    Ingress,
    /// Traffic from the port.
    Egress,
}

/// One rule: traffic it allows (everything else is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupRule {
    /// Id (UUID).
    pub id: String,
    /// The group it belongs to.
    pub security_group_id: String,
    /// `ingress` or `egress`.
    pub direction: RuleDirection,
    /// `IPv4` (the only one so far).
    pub ethertype: String,
    /// `tcp`, `udp`, `icmp`, or an IP protocol number as text; `null` = any.
    pub protocol: Option<String>,
    /// tcp/udp: first destination port; icmp: the type.
    pub port_range_min: Option<u16>,
    /// tcp/udp: last destination port; icmp: the code.
    pub port_range_max: Option<u16>,
    /// The other end as an IPv4 prefix (normalised: no host bits).
    pub remote_ip_prefix: Option<String>,
    /// The other end as the members of a group.
    pub remote_group_id: Option<String>,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created_at: String,
}

impl SecurityGroupRule {
    /// The same rule for the firewall renderer.
    pub fn firewall_rule(&self) -> firewall::Rule {
        use firewall::Protocol;
        let ports = match (self.port_range_min, self.port_range_max) {
            (Some(lo), hi) => Some((lo, hi.unwrap_or(lo))),
            _ => None,
        };
        let small = |v: Option<u16>| v.and_then(|v| u8::try_from(v).ok());
        let protocol = match self.protocol.as_deref() {
            None => Protocol::Any,
            Some("tcp") => Protocol::Tcp(ports),
            Some("udp") => Protocol::Udp(ports),
            Some("icmp") => Protocol::Icmp(small(self.port_range_min), small(self.port_range_max)),
            Some(n) => n.parse().map_or(Protocol::Any, Protocol::Number),
        };
        let remote = match (&self.remote_ip_prefix, &self.remote_group_id) {
            (Some(p), _) => p
                .parse::<Ipv4Cidr>()
                .map_or(firewall::Remote::Any, firewall::Remote::Prefix),
            (None, Some(g)) => firewall::Remote::Group(g.clone()),
            (None, None) => firewall::Remote::Any,
        };
        firewall::Rule {
            direction: match self.direction {
                RuleDirection::Ingress => firewall::Direction::Ingress,
                RuleDirection::Egress => firewall::Direction::Egress,
            },
            protocol,
            remote,
        }
    }

    /// What makes two rules the same rule (neutron refuses a second one with 409).
    pub fn same_as(&self, other: &SecurityGroupRule) -> bool {
        self.security_group_id == other.security_group_id
            && self.direction == other.direction
            && self.ethertype == other.ethertype
            && self.protocol == other.protocol
            && self.port_range_min == other.port_range_min
            && self.port_range_max == other.port_range_max
            && self.remote_ip_prefix == other.remote_ip_prefix
            && self.remote_group_id == other.remote_group_id
    }
}

/// An address (or prefix) a port may also send from, optionally with another MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressPair {
    /// An IPv4 address or prefix (normalised: no host bits).
    pub ip_address: String,
    /// The MAC it comes with (the port's when not given).
    pub mac_address: String,
}

/// The most security groups a node holds.
pub const MAX_GROUPS: usize = 1000;
/// The most rules one group holds.
pub const MAX_RULES_PER_GROUP: usize = 500;
/// The most groups one port is in.
pub const MAX_GROUPS_PER_PORT: usize = 16;
/// The most allowed address pairs of one port (neutron's `max_allowed_address_pair`).
pub const MAX_ADDRESS_PAIRS: usize = 10;
