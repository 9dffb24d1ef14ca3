//! Network, subnet and port records, and IP address allocation (`networks`, `subnets`,
//! `ports`, `ip_allocations` tables).
//!
//! Addresses are allocated inside one transaction on the store's single connection, and the
//! `(subnet_id, ip_address)` primary key makes a duplicate impossible even if two requests
//! race: concurrent port creations can never get the same address.

use super::{now_rfc3339, Store, StoreError};
use crate::net::model::{
    AllocationPool, FixedIp, HostRoute, NetStatus, Network, NetworkType, Port, Subnet,
};
use crate::net::security::AddressPair;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Why a port could not be created or given addresses; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address is already allocated to another port.
    #[error("IP address {ip} is already in use on subnet {subnet_id}")]
    AddressInUse {
        /// The subnet.
        subnet_id: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// Every address of the subnet's pools is taken.
    #[error("No free IP address left in the allocation pools of subnet {subnet_id}")]
    Exhausted {
        /// The subnet.
        subnet_id: String,
    },
    /// The network has no subnet to allocate from.
    #[error("Network {network_id} has no subnet to allocate an address from")]
    NoSubnet {
        /// The network.
        network_id: String,
    },
    /// The address is not inside any subnet of the network.
    #[error("IP address {ip} is not inside any subnet of network {network_id}")]
    OutsideSubnets {
        /// The network.
        network_id: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// The address is the subnet's network, broadcast or gateway address.
    #[error(
        "IP address {ip} is reserved on subnet {subnet_id} (network, broadcast or gateway address)"
    )]
    Reserved {
        /// The subnet.
        subnet_id: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// The MAC address is used by another port.
    #[error("MAC address {mac} is already in use by port {port_id}")]
    MacInUse {
        /// The MAC.
        mac: String,
        /// The port using it.
        port_id: String,
    },
}

/// What one address request of a new port asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpRequest {
    /// Any free address of the network's first subnet that has one.
    Any,
    /// This address (the subnet is found from it).
    Fixed(Ipv4Addr),
    /// Any free address of this subnet.
    InSubnet(String),
}

/// A port to create.
#[derive(Debug, Clone)]
pub struct NewPort {
    /// Id (UUID).
    pub id: String,
    /// The network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// MAC address; generated (`fa:16:3e:…`, unique) when `None`.
    pub mac_address: Option<String>,
    /// Addresses wanted.
    pub ips: Vec<IpRequest>,
    /// User.
    pub device_id: String,
    /// User kind.
    pub device_owner: String,
    /// Security groups (ids, checked by the caller).
    pub security_groups: Vec<String>,
    /// Port security.
    pub port_security_enabled: bool,
    /// Allowed address pairs (checked by the caller).
    pub allowed_address_pairs: Vec<AddressPair>,
    /// Addresses never to hand out (subnet id, address): taken on another node of the fleet.
    pub exclude: Vec<(String, Ipv4Addr)>,
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("network records serialise")
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
        .map_err(|e| {
            tracing::error!(what, error = %e, "corrupt network record");
            e
        })
}

fn parse_status(text: &str) -> rusqlite::Result<NetStatus> {
    NetStatus::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown status {text:?}").into(),
        )
    })
}

fn parse_ip(text: &str) -> rusqlite::Result<Ipv4Addr> {
    text.parse().map_err(|e: std::net::AddrParseError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const NETWORK_COLUMNS: &str = "id, name, network_type, physical_network, segmentation_id, mtu, \
     backend, bridge, status, fault, created_at, updated_at";

fn network_from_row(r: &Row<'_>) -> rusqlite::Result<Network> {
    let kind: String = r.get(2)?;
    let status: String = r.get(8)?;
    Ok(Network {
        id: r.get(0)?,
        name: r.get(1)?,
        network_type: NetworkType::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown network type {kind:?}").into(),
            )
        })?,
        physical_network: r.get(3)?,
        segmentation_id: r.get(4)?,
        mtu: r.get(5)?,
        backend: r.get(6)?,
        bridge: r.get(7)?,
        status: parse_status(&status)?,
        fault: r.get(9)?,
        subnets: Vec::new(),
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

fn with_subnet_ids(conn: &Connection, mut network: Network) -> rusqlite::Result<Network> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM subnets WHERE network_id = ?1 ORDER BY created_at, id")?;
    network.subnets = stmt
        .query_map([&network.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(network)
}

const SUBNET_COLUMNS: &str = "id, network_id, name, cidr, gateway_ip, allocation_pools, \
     dns_nameservers, host_routes, enable_dhcp, created_at, updated_at";

fn subnet_from_row(r: &Row<'_>) -> rusqlite::Result<Subnet> {
    let gateway: Option<String> = r.get(4)?;
    let pools: String = r.get(5)?;
    let dns: String = r.get(6)?;
    let routes: String = r.get(7)?;
    Ok(Subnet {
        id: r.get(0)?,
        network_id: r.get(1)?,
        name: r.get(2)?,
        cidr: r.get(3)?,
        gateway_ip: gateway.as_deref().map(parse_ip).transpose()?,
        allocation_pools: parse_json::<Vec<AllocationPool>>(&pools, "allocation_pools")?,
        dns_nameservers: parse_json::<Vec<Ipv4Addr>>(&dns, "dns_nameservers")?,
        host_routes: parse_json::<Vec<HostRoute>>(&routes, "host_routes")?,
        enable_dhcp: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

const PORT_COLUMNS: &str = "id, network_id, name, mac_address, device_id, device_owner, status, \
     created_at, updated_at, port_security_enabled, allowed_address_pairs";

fn port_from_row(r: &Row<'_>) -> rusqlite::Result<Port> {
    let id: String = r.get(0)?;
    let status: String = r.get(6)?;
    let pairs: String = r.get(10)?;
    Ok(Port {
        device_name: crate::net::model::tap_name(&id),
        id,
        network_id: r.get(1)?,
        name: r.get(2)?,
        mac_address: r.get(3)?,
        fixed_ips: Vec::new(),
        device_id: r.get(4)?,
        device_owner: r.get(5)?,
        security_groups: Vec::new(),
        port_security_enabled: r.get(9)?,
        allowed_address_pairs: parse_json(&pairs, "allowed_address_pairs")?,
        status: parse_status(&status)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// Fills in a port's addresses and security groups.
fn with_fixed_ips(conn: &Connection, mut port: Port) -> rusqlite::Result<Port> {
    let mut groups = conn.prepare_cached(
        "SELECT security_group_id FROM port_security_groups WHERE port_id = ?1 ORDER BY position",
    )?;
    port.security_groups = groups
        .query_map([&port.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT a.subnet_id, a.ip_address FROM ip_allocations a JOIN subnets s ON s.id = a.subnet_id
         WHERE a.port_id = ?1 ORDER BY s.created_at, a.ip_address",
    )?;
    port.fixed_ips = stmt
        .query_map([&port.id], |r| {
            let ip: String = r.get(1)?;
            Ok(FixedIp {
                subnet_id: r.get(0)?,
                ip_address: parse_ip(&ip)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(port)
}

fn query_ports(conn: &Connection, filter: &str, arg: &str) -> rusqlite::Result<Vec<Port>> {
    let sql = format!("SELECT {PORT_COLUMNS} FROM ports {filter} ORDER BY created_at, id");
    let mut stmt = conn.prepare(&sql)?;
    let rows: Vec<Port> = if filter.is_empty() {
        stmt.query_map([], port_from_row)?
            .collect::<rusqlite::Result<_>>()?
    } else {
        stmt.query_map([arg], port_from_row)?
            .collect::<rusqlite::Result<_>>()?
    };
    rows.into_iter().map(|p| with_fixed_ips(conn, p)).collect()
}

/// A random MAC in OpenStack's `fa:16:3e` prefix.
pub fn random_mac() -> String {
    let tail: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", tail[0], tail[1], tail[2])
}

fn allocate(
    tx: &Transaction<'_>,
    network_id: &str,
    request: &IpRequest,
    taken_now: &mut HashSet<(String, Ipv4Addr)>,
) -> Result<FixedIp, AllocError> {
    let subnets: Vec<Subnet> = {
        let mut stmt = tx
            .prepare_cached(&format!(
            "SELECT {SUBNET_COLUMNS} FROM subnets WHERE network_id = ?1 ORDER BY created_at, id"
        ))
            .map_err(StoreError::from)?;
        let rows = stmt
            .query_map([network_id], subnet_from_row)
            .map_err(StoreError::from)?
            .collect::<rusqlite::Result<_>>()
            .map_err(StoreError::from)?;
        rows
    };
    if subnets.is_empty() {
        return Err(AllocError::NoSubnet {
            network_id: network_id.to_string(),
        });
    }
    let used = |subnet_id: &str| -> Result<HashSet<Ipv4Addr>, AllocError> {
        let mut stmt = tx
            .prepare_cached("SELECT ip_address FROM ip_allocations WHERE subnet_id = ?1")
            .map_err(StoreError::from)?;
        let rows: Vec<String> = stmt
            .query_map([subnet_id], |r| r.get(0))
            .map_err(StoreError::from)?
            .collect::<rusqlite::Result<_>>()
            .map_err(StoreError::from)?;
        Ok(rows.iter().filter_map(|t| t.parse().ok()).collect())
    };
    match request {
        IpRequest::Fixed(ip) => {
            let subnet = subnets
                .iter()
                .find(|s| s.prefix().contains(*ip))
                .ok_or_else(|| AllocError::OutsideSubnets {
                    network_id: network_id.to_string(),
                    ip: *ip,
                })?;
            let prefix = subnet.prefix();
            let (first, last) = prefix.hosts();
            if *ip < first || *ip > last || subnet.gateway_ip == Some(*ip) {
                return Err(AllocError::Reserved {
                    subnet_id: subnet.id.clone(),
                    ip: *ip,
                });
            }
            if used(&subnet.id)?.contains(ip) || taken_now.contains(&(subnet.id.clone(), *ip)) {
                return Err(AllocError::AddressInUse {
                    subnet_id: subnet.id.clone(),
                    ip: *ip,
                });
            }
            taken_now.insert((subnet.id.clone(), *ip));
            Ok(FixedIp {
                subnet_id: subnet.id.clone(),
                ip_address: *ip,
            })
        }
        IpRequest::Any | IpRequest::InSubnet(_) => {
            let only = match request {
                IpRequest::InSubnet(id) => Some(id.as_str()),
                _ => None,
            };
            for subnet in subnets.iter().filter(|s| only.is_none_or(|id| s.id == id)) {
                let used = used(&subnet.id)?;
                for pool in &subnet.allocation_pools {
                    let (start, end) = (u32::from(pool.start), u32::from(pool.end));
                    for n in start..=end {
                        let ip = Ipv4Addr::from(n);
                        if Some(ip) == subnet.gateway_ip
                            || used.contains(&ip)
                            || taken_now.contains(&(subnet.id.clone(), ip))
                        {
                            continue;
                        }
                        taken_now.insert((subnet.id.clone(), ip));
                        return Ok(FixedIp {
                            subnet_id: subnet.id.clone(),
                            ip_address: ip,
                        });
                    }
                }
            }
            Err(AllocError::Exhausted {
                subnet_id: subnets
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

impl Store {
    /// Inserts a network row (its subnets are inserted separately).
    ///
    /// # Errors
    /// [`StoreError`]; a duplicate segment violates `networks_segment` (a constraint error).
    pub async fn insert_network(&self, n: Network) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO networks ({NETWORK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    n.id,
                    n.name,
                    n.network_type.as_str(),
                    n.physical_network,
                    n.segmentation_id,
                    n.mtu,
                    n.backend,
                    n.bridge,
                    n.status.as_str(),
                    n.fault,
                    n.created_at,
                    n.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The network using a segment, if any (flat: per physical network; vlan: per physical
    /// network and VLAN id; vxlan: per VNI). Local networks have no segment: always `None`,
    /// as the unique index on segments leaves them out too.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn network_by_segment(&self, n: &Network) -> Result<Option<String>, StoreError> {
        let (kind, phys, seg) = (
            n.network_type.as_str().to_string(),
            n.physical_network.clone().unwrap_or_default(),
            n.segmentation_id.map_or(-1, i64::from),
        );
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id FROM networks WHERE network_type = ?1
                       AND network_type IN ('vlan', 'vxlan', 'flat')
                       AND COALESCE(physical_network, '') = ?2 AND COALESCE(segmentation_id, -1) = ?3",
                    params![kind, phys, seg],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// One network with its subnet ids.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_network(&self, id: &str) -> Result<Option<Network>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE id = ?1"),
                    [&id],
                    network_from_row,
                )
                .optional()?;
            Ok(row.map(|n| with_subnet_ids(conn, n)).transpose()?)
        })
        .await
    }

    /// Every network, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_networks(&self) -> Result<Vec<Network>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {NETWORK_COLUMNS} FROM networks ORDER BY created_at, id"
            ))?;
            let rows: Vec<Network> = stmt
                .query_map([], network_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows
                .into_iter()
                .map(|n| with_subnet_ids(conn, n))
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Records a network's lifecycle, bridge and fault. A network being deleted stays
    /// `DELETING` (a setup that was running when the delete began cannot revive it); use
    /// [`Store::fail_network`] to end a delete.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn set_network_state(
        &self,
        id: &str,
        status: NetStatus,
        bridge: Option<String>,
        fault: Option<String>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute(
                "UPDATE networks SET status = ?2, bridge = COALESCE(?3, bridge), fault = ?4, updated_at = ?5
                 WHERE id = ?1 AND (status != 'DELETING' OR ?2 = 'DELETING')",
                params![id, status.as_str(), bridge, fault, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Leaves a network `ERROR` with `fault`, whatever its status (a create or delete failed).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn fail_network(&self, id: &str, fault: &str) -> Result<(), StoreError> {
        let (id, fault) = (id.to_string(), fault.to_string());
        self.call(move |conn| {
            conn.execute(
                "UPDATE networks SET status = 'ERROR', fault = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, fault, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a network with its subnets, ports and addresses, in one transaction.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM ip_allocations WHERE subnet_id IN (SELECT id FROM subnets WHERE network_id = ?1)",
                [&id],
            )?;
            tx.execute("DELETE FROM ports WHERE network_id = ?1", [&id])?;
            tx.execute("DELETE FROM subnets WHERE network_id = ?1", [&id])?;
            tx.execute("DELETE FROM networks WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Inserts a subnet.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn insert_subnet(&self, s: Subnet) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO subnets ({SUBNET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    s.id,
                    s.network_id,
                    s.name,
                    s.cidr,
                    s.gateway_ip.map(|g| g.to_string()),
                    json_text(&s.allocation_pools),
                    json_text(&s.dns_nameservers),
                    json_text(&s.host_routes),
                    s.enable_dhcp,
                    s.created_at,
                    s.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// One subnet.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_subnet(&self, id: &str) -> Result<Option<Subnet>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {SUBNET_COLUMNS} FROM subnets WHERE id = ?1"),
                    [&id],
                    subnet_from_row,
                )
                .optional()?)
        })
        .await
    }

    /// Subnets, oldest first; only those of `network_id` when given.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_subnets(&self, network_id: Option<&str>) -> Result<Vec<Subnet>, StoreError> {
        let network_id = network_id.map(str::to_string);
        self.call(move |conn| {
            let (filter, arg) = match &network_id {
                Some(n) => ("WHERE network_id = ?1", n.as_str()),
                None => ("", ""),
            };
            let mut stmt = conn.prepare(&format!(
                "SELECT {SUBNET_COLUMNS} FROM subnets {filter} ORDER BY created_at, id"
            ))?;
            let rows = if filter.is_empty() {
                stmt.query_map([], subnet_from_row)?
                    .collect::<rusqlite::Result<_>>()?
            } else {
                stmt.query_map([arg], subnet_from_row)?
                    .collect::<rusqlite::Result<_>>()?
            };
            Ok(rows)
        })
        .await
    }

    /// Removes a subnet and the addresses allocated from it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_subnet(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM ip_allocations WHERE subnet_id = ?1", [&id])?;
            tx.execute("DELETE FROM subnets WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Number of addresses allocated from a subnet to ports other than DHCP ports.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn subnet_allocations_in_use(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM ip_allocations a JOIN ports p ON p.id = a.port_id
                 WHERE a.subnet_id = ?1 AND p.device_owner != ?2",
                params![id, crate::net::model::DHCP_OWNER],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Creates a port and allocates its addresses in one transaction.
    ///
    /// # Errors
    /// [`AllocError`] naming the address, subnet or MAC at fault; nothing is stored then.
    pub async fn create_port(&self, new: NewPort) -> Result<Port, AllocError> {
        self.call(move |conn| Ok(create_port_tx(conn, &new)))
            .await
            .map_err(AllocError::Store)?
    }

    /// One port with its addresses.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_port(&self, id: &str) -> Result<Option<Port>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| Ok(query_ports(conn, "WHERE id = ?1", &id)?.pop()))
            .await
    }

    /// Ports, oldest first: all, of one network, or of one device.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_ports(&self, filter: PortFilter) -> Result<Vec<Port>, StoreError> {
        self.call(move |conn| {
            Ok(match &filter {
                PortFilter::All => query_ports(conn, "", "")?,
                PortFilter::Network(n) => query_ports(conn, "WHERE network_id = ?1", n)?,
                PortFilter::Device(d) => query_ports(conn, "WHERE device_id = ?1", d)?,
            })
        })
        .await
    }

    /// Binds a port to a device (or unbinds it with empty strings).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn bind_port(
        &self,
        id: &str,
        device_id: &str,
        device_owner: &str,
        status: NetStatus,
    ) -> Result<(), StoreError> {
        let (id, device_id, device_owner) = (
            id.to_string(),
            device_id.to_string(),
            device_owner.to_string(),
        );
        self.call(move |conn| {
            conn.execute(
                "UPDATE ports SET device_id = ?2, device_owner = ?3, status = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, device_id, device_owner, status.as_str(), now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a port and frees its addresses.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_port(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM ports WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// The password a guest posted to the metadata service.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn instance_password_blocking(
        &self,
        server_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.call_blocking(|conn| {
            Ok(conn
                .query_row(
                    "SELECT password FROM instance_passwords WHERE server_id = ?1",
                    [server_id],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    /// Stores a guest's password once. Returns `false` when one was already stored.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub fn set_instance_password_blocking(
        &self,
        server_id: &str,
        password: &str,
    ) -> Result<bool, StoreError> {
        self.call_blocking(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO instance_passwords (server_id, password, created_at) VALUES (?1, ?2, ?3)",
                params![server_id, password, now_rfc3339()],
            )?;
            Ok(n == 1)
        })
    }
}

/// Which ports [`Store::list_ports`] returns.
#[derive(Debug, Clone)]
pub enum PortFilter {
    /// Every port.
    All,
    /// The ports of one network.
    Network(String),
    /// The ports of one device (server).
    Device(String),
}

fn create_port_tx(conn: &mut Connection, new: &NewPort) -> Result<Port, AllocError> {
    let tx = conn.transaction().map_err(StoreError::from)?;
    let mac = match &new.mac_address {
        Some(mac) => {
            let owner: Option<String> = tx
                .query_row("SELECT id FROM ports WHERE mac_address = ?1", [mac], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(StoreError::from)?;
            if let Some(port_id) = owner {
                return Err(AllocError::MacInUse {
                    mac: mac.clone(),
                    port_id,
                });
            }
            mac.clone()
        }
        None => loop {
            let mac = random_mac();
            let exists: bool = tx
                .query_row("SELECT 1 FROM ports WHERE mac_address = ?1", [&mac], |_| {
                    Ok(true)
                })
                .optional()
                .map_err(StoreError::from)?
                .unwrap_or(false);
            if !exists {
                break mac;
            }
        },
    };
    let mut taken: HashSet<(String, Ipv4Addr)> = new.exclude.iter().cloned().collect();
    let mut fixed = Vec::new();
    for request in &new.ips {
        fixed.push(allocate(&tx, &new.network_id, request, &mut taken)?);
    }
    let now = now_rfc3339();
    tx.execute(
        &format!(
            "INSERT INTO ports ({PORT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            new.id,
            new.network_id,
            new.name,
            mac,
            new.device_id,
            new.device_owner,
            NetStatus::Build.as_str(),
            now,
            now,
            new.port_security_enabled,
            json_text(
                &new.allowed_address_pairs
                    .iter()
                    .map(|p| AddressPair {
                        ip_address: p.ip_address.clone(),
                        mac_address: if p.mac_address.is_empty() {
                            mac.clone()
                        } else {
                            p.mac_address.clone()
                        },
                    })
                    .collect::<Vec<_>>()
            ),
        ],
    )
    .map_err(StoreError::from)?;
    super::security_groups::set_port_groups(&tx, &new.id, &new.security_groups)?;
    for ip in &fixed {
        tx.execute(
            "INSERT INTO ip_allocations (subnet_id, ip_address, port_id) VALUES (?1, ?2, ?3)",
            params![ip.subnet_id, ip.ip_address.to_string(), new.id],
        )
        .map_err(StoreError::from)?;
    }
    let port = with_fixed_ips(
        &tx,
        port_from_row_by_id(&tx, &new.id).map_err(StoreError::from)?,
    )
    .map_err(StoreError::from)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(port)
}

fn port_from_row_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Port> {
    conn.query_row(
        &format!("SELECT {PORT_COLUMNS} FROM ports WHERE id = ?1"),
        [id],
        port_from_row,
    )
}

/// One port with its addresses and groups (inside a caller's transaction).
pub(super) fn port_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Port> {
    with_fixed_ips(conn, port_from_row_by_id(conn, id)?)
}
