//! Network, subnet and port requests and their validation (everything that needs no lookup).

use crate::net::model::{AllocationPool, HostRoute};
use crate::net::{Ipv4Cidr, NetworkType};
use crate::ops::OpError;
use serde::{Deserialize, Deserializer};
use std::net::Ipv4Addr;
use utoipa::ToSchema;

/// Largest MTU a network may have.
pub const MAX_MTU: u32 = 9000;
/// Smallest MTU a network may have (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// Most DNS servers a subnet hands out (neutron's `max_dns_nameservers`).
pub const MAX_DNS: usize = 5;
/// Most host routes a subnet hands out (neutron's `max_subnet_host_routes`).
pub const MAX_ROUTES: usize = 20;

/// `POST /v1/networks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: String,
    /// flat, vlan, vxlan or local [default: local]. Also accepted as `type`.
    #[serde(default, alias = "type")]
    pub network_type: Option<NetworkType>,
    /// Physical network label (flat and vlan; mapped to an interface by the backend).
    #[serde(default)]
    pub physical_network: Option<String>,
    /// VLAN id (1–4094) or VNI (1–16777215).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16_777_215)]
    pub segmentation_id: Option<u32>,
    /// MTU [default: 1500, 1450 for vxlan].
    #[serde(default)]
    #[schema(minimum = 68, maximum = 9000)]
    pub mtu: Option<u32>,
    /// The network backend plugin [default: the only configured one].
    #[serde(default)]
    pub backend: Option<String>,
}

fn check_name(what: &str, name: &str) -> Result<(), OpError> {
    if name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(OpError::InvalidInput(format!(
            "{what} name must have at most 255 characters and no control characters"
        )));
    }
    Ok(())
}

impl NetworkCreate {
    /// The network type, defaulted.
    pub fn kind(&self) -> NetworkType {
        self.network_type.unwrap_or(NetworkType::Local)
    }

    /// The MTU, defaulted.
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(match self.kind() {
            NetworkType::Vxlan => 1450,
            _ => 1500,
        })
    }

    /// Checks the provider attributes against the network type.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the first problem.
    pub fn validate(&self) -> Result<(), OpError> {
        check_name("network", &self.name)?;
        let bad = |m: String| Err(OpError::InvalidInput(m));
        let kind = self.kind();
        let needs_phys = matches!(kind, NetworkType::Flat | NetworkType::Vlan);
        match (&self.physical_network, needs_phys) {
            (None, true) => {
                return bad(format!(
                    "a {} network needs physical_network",
                    kind.as_str()
                ))
            }
            (Some(_), false) => {
                return bad(format!(
                    "physical_network is not allowed for a {} network",
                    kind.as_str()
                ))
            }
            (Some(p), true)
                if p.is_empty()
                    || p.chars().count() > 64
                    || p.chars().any(|c| c.is_whitespace() || c == ',' || c == ':') =>
            {
                return bad(format!(
                    "physical_network {p:?} must be 1 to 64 characters without spaces, ',' or ':'"
                ))
            }
            _ => {}
        }
        match (kind, self.segmentation_id) {
            (NetworkType::Vlan, None) => {
                return bad("a vlan network needs segmentation_id (the VLAN id, 1 to 4094)".into())
            }
            (NetworkType::Vlan, Some(v)) if !(1..=4094).contains(&v) => {
                return bad(format!("VLAN id {v} is out of range: must be 1 to 4094"))
            }
            (NetworkType::Vxlan, None) => {
                return bad("a vxlan network needs segmentation_id (the VNI, 1 to 16777215)".into())
            }
            (NetworkType::Vxlan, Some(v)) if !(1..=16_777_215).contains(&v) => {
                return bad(format!("VNI {v} is out of range: must be 1 to 16777215"))
            }
            (NetworkType::Flat | NetworkType::Local, Some(_)) => {
                return bad(format!(
                    "segmentation_id is not allowed for a {} network",
                    kind.as_str()
                ))
            }
            _ => {}
        }
        let mtu = self.mtu();
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return bad(format!(
                "mtu {mtu} is out of range: must be {MIN_MTU} to {MAX_MTU}"
            ));
        }
        Ok(())
    }
}

/// Deserialises a field that may be absent (outer `None`) or `null` (inner `None`).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/subnets`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetCreate {
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// The network.
    pub network_id: String,
    /// Name.
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: String,
    /// The IPv4 prefix, e.g. `198.51.100.0/24`.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$"
    )]
    pub cidr: String,
    /// The gateway: absent → the first address; `null` → no gateway. Also accepted as
    /// `gateway`.
    #[serde(default, alias = "gateway", deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub gateway_ip: Option<Option<Ipv4Addr>>,
    /// Address ranges to allocate from [default: every host address but the gateway].
    #[serde(default)]
    pub allocation_pools: Option<Vec<AllocationPool>>,
    /// DNS servers for DHCP (at most 5).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub dns_nameservers: Vec<Ipv4Addr>,
    /// Extra routes for DHCP (at most 20).
    #[serde(default)]
    pub host_routes: Vec<HostRoute>,
    /// Serve DHCP and metadata on it [default: true].
    #[serde(default = "yes")]
    pub enable_dhcp: bool,
}

fn yes() -> bool {
    true
}

/// A subnet request with its defaults filled in and every rule checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSubnet {
    /// The prefix.
    pub cidr: Ipv4Cidr,
    /// The gateway.
    pub gateway_ip: Option<Ipv4Addr>,
    /// The pools.
    pub allocation_pools: Vec<AllocationPool>,
}

impl SubnetCreate {
    /// Checks the request and fills in the gateway and pools.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the first problem.
    pub fn validate(&self) -> Result<ValidSubnet, OpError> {
        let bad = |m: String| OpError::InvalidInput(m);
        check_name("subnet", &self.name)?;
        let cidr: Ipv4Cidr = self.cidr.parse().map_err(|e| bad(format!("cidr: {e}")))?;
        if cidr.prefix_len() > 30 {
            return Err(bad(format!(
                "cidr {cidr} is too small: a subnet needs at least a /30"
            )));
        }
        let (first, last) = cidr.hosts();
        let in_hosts = |ip: Ipv4Addr| ip >= first && ip <= last;
        let gateway_ip = match self.gateway_ip {
            None => Some(first),
            Some(None) => None,
            Some(Some(g)) => {
                if !in_hosts(g) {
                    return Err(bad(format!(
                        "gateway_ip {g} is not a host address of {cidr} ({first} to {last})"
                    )));
                }
                Some(g)
            }
        };
        let allocation_pools = match &self.allocation_pools {
            Some(pools) => {
                if pools.is_empty() {
                    return Err(bad("allocation_pools must not be empty".into()));
                }
                for (i, p) in pools.iter().enumerate() {
                    if !in_hosts(p.start) || !in_hosts(p.end) || p.start > p.end {
                        return Err(bad(format!(
                            "allocation pool {}-{} is not a range of host addresses of {cidr} ({first} to {last})",
                            p.start, p.end
                        )));
                    }
                    if let Some(g) = gateway_ip {
                        if p.start <= g && g <= p.end {
                            return Err(bad(format!(
                                "allocation pool {}-{} contains the gateway {g}",
                                p.start, p.end
                            )));
                        }
                    }
                    for q in &pools[i + 1..] {
                        if p.start <= q.end && q.start <= p.end {
                            return Err(bad(format!(
                                "allocation pools {}-{} and {}-{} overlap",
                                p.start, p.end, q.start, q.end
                            )));
                        }
                    }
                }
                pools.clone()
            }
            None => default_pools(first, last, gateway_ip),
        };
        if self.dns_nameservers.len() > MAX_DNS {
            return Err(bad(format!(
                "at most {MAX_DNS} dns_nameservers are allowed"
            )));
        }
        if self.host_routes.len() > MAX_ROUTES {
            return Err(bad(format!("at most {MAX_ROUTES} host_routes are allowed")));
        }
        for route in &self.host_routes {
            route
                .destination
                .parse::<Ipv4Cidr>()
                .map_err(|e| bad(format!("host route destination: {e}")))?;
            if !cidr.contains(route.nexthop) {
                return Err(bad(format!(
                    "host route nexthop {} is not inside {cidr}",
                    route.nexthop
                )));
            }
        }
        Ok(ValidSubnet {
            cidr,
            gateway_ip,
            allocation_pools,
        })
    }
}

/// Every host address except the gateway, as one or two ranges.
fn default_pools(
    first: Ipv4Addr,
    last: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Vec<AllocationPool> {
    let range = |a: u32, b: u32| AllocationPool {
        start: Ipv4Addr::from(a),
        end: Ipv4Addr::from(b),
    };
    let (f, l) = (u32::from(first), u32::from(last));
    match gateway.map(u32::from) {
        Some(g) if g == f => vec![range(f + 1, l)],
        Some(g) if g == l => vec![range(f, l - 1)],
        Some(g) => vec![range(f, g - 1), range(g + 1, l)],
        None => vec![range(f, l)],
    }
}

/// One address wish of a new port.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedIpRequest {
    /// The subnet to allocate from (any of the network's when absent).
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// This exact address.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ip_address: Option<Ipv4Addr>,
}

/// `POST /v1/ports`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortCreate {
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// The network.
    pub network_id: String,
    /// Name.
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: String,
    /// MAC address [default: generated in fa:16:3e:xx:xx:xx]. Also accepted as `mac`.
    #[serde(default, alias = "mac")]
    #[schema(pattern = "^(?!00:00:00:00:00:00$)[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$")]
    pub mac_address: Option<String>,
    /// Addresses [default: one free address].
    #[serde(default)]
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    /// Security group ids, in order [default: `default`, or none without port security].
    #[serde(default)]
    #[schema(max_items = 16)]
    pub security_groups: Option<Vec<String>>,
    /// Anti-spoofing and security groups [default: true]; false only with no groups (the
    /// port may then use any address: a documented risk).
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// Other addresses (and MACs) the port may send from [default: none].
    #[serde(default)]
    #[schema(max_items = 10)]
    pub allowed_address_pairs: Option<Vec<crate::ops::security_groups::model::AddressPairRequest>>,
}

impl PortCreate {
    /// Checks what needs no lookup; returns the normalised MAC.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the first problem.
    pub fn validate(&self) -> Result<Option<String>, OpError> {
        check_name("port", &self.name)?;
        crate::ops::security_groups::model::PortUpdate {
            name: None,
            security_groups: self.security_groups.clone(),
            port_security_enabled: self.port_security_enabled,
            allowed_address_pairs: None,
        }
        .validate()?;
        if let Some(ips) = &self.fixed_ips {
            if ips.len() > 8 {
                return Err(OpError::InvalidInput("at most 8 fixed_ips per port".into()));
            }
        }
        self.mac_address.as_deref().map(normalise_mac).transpose()
    }
}

/// Checks a MAC address (six hex octets separated by `:`, unicast) and lowercases it.
///
/// # Errors
/// [`OpError::InvalidInput`] for anything else.
pub fn normalise_mac(mac: &str) -> Result<String, OpError> {
    let bad = || {
        OpError::InvalidInput(format!(
            "mac_address {mac:?} is not a unicast MAC like fa:16:3e:12:34:56"
        ))
    };
    let octets: Vec<u8> = mac
        .split(':')
        .map(|o| {
            if o.len() == 2 {
                u8::from_str_radix(o, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        })
        .collect::<Result<_, _>>()?;
    if octets.len() != 6 || octets[0] & 1 == 1 || octets.iter().all(|o| *o == 0) {
        return Err(bad());
    }
    Ok(mac.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(json: serde_json::Value) -> SubnetCreate {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn subnet_defaults() {
        let v = subnet(serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24"}))
            .validate()
            .unwrap();
        assert_eq!(v.gateway_ip, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(
            v.allocation_pools,
            vec![AllocationPool {
                start: Ipv4Addr::new(198, 51, 100, 2),
                end: Ipv4Addr::new(198, 51, 100, 254)
            }]
        );
        let v = subnet(
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "gateway_ip": null}),
        )
        .validate()
        .unwrap();
        assert_eq!(v.gateway_ip, None);
        assert_eq!(v.allocation_pools[0].start, Ipv4Addr::new(198, 51, 100, 1));
    }

    #[test]
    fn subnet_refusals() {
        for body in [
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.1/24"}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/31"}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "gateway_ip": "198.51.101.1"}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "allocation_pools": [{"start": "198.51.100.1", "end": "198.51.100.9"}]}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.101.9"}]}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.20"}, {"start": "198.51.100.15", "end": "198.51.100.30"}]}),
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "host_routes": [{"destination": "x", "nexthop": "198.51.100.1"}]}),
        ] {
            assert!(
                matches!(
                    subnet(body.clone()).validate(),
                    Err(OpError::InvalidInput(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn network_rules() {
        let net = |json: serde_json::Value| {
            serde_json::from_value::<NetworkCreate>(json)
                .unwrap()
                .validate()
        };
        assert!(net(serde_json::json!({"name": "a"})).is_ok());
        assert!(net(serde_json::json!({"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 100})).is_ok());
        assert!(net(serde_json::json!({"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 4095})).is_err());
        assert!(
            net(serde_json::json!({"network_type": "vlan", "physical_network": "physnet1"}))
                .is_err()
        );
        assert!(net(serde_json::json!({"network_type": "flat"})).is_err());
        assert!(
            net(serde_json::json!({"network_type": "vxlan", "segmentation_id": 16777216})).is_err()
        );
        assert!(net(serde_json::json!({"network_type": "local", "segmentation_id": 5})).is_err());
        assert!(net(serde_json::json!({"mtu": 20})).is_err());
        // The shorter names are the same fields.
        let subnet: SubnetCreate = serde_json::from_value(
            serde_json::json!({"network_id": "n", "cidr": "198.51.100.0/24", "gateway": null}),
        )
        .unwrap();
        assert_eq!(subnet.gateway_ip, Some(None));
        let port: PortCreate = serde_json::from_value(
            serde_json::json!({"network_id": "n", "mac": "fa:16:3e:00:00:01"}),
        )
        .unwrap();
        assert_eq!(port.mac_address.as_deref(), Some("fa:16:3e:00:00:01"));
        let aliased: NetworkCreate =
            serde_json::from_value(serde_json::json!({"type": "vxlan", "segmentation_id": 7}))
                .unwrap();
        assert_eq!(aliased.network_type, Some(NetworkType::Vxlan));
        assert!(serde_json::from_value::<NetworkCreate>(
            serde_json::json!({"type": "vxlan", "network_type": "local"})
        )
        .is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalise_mac("FA:16:3E:00:00:01").unwrap(),
            "fa:16:3e:00:00:01"
        );
        assert!(normalise_mac("01:00:5e:00:00:01").is_err());
        assert!(normalise_mac("fa:16:3e:00:00").is_err());
        assert_eq!(
            crate::net::neigh::parse_mac("fa:16:3e:00:00:01"),
            Some([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
    }
}
