//! Ports: a MAC and addresses on a network, for a server NIC or a network's DHCP namespace.

use super::model::PortCreate;
use super::runtime;
use crate::net::model::{NetStatus, Network, Port, DHCP_OWNER};
use crate::ops::security_groups::model::{check_pairs, PortUpdate};
use crate::ops::{OpError, Services};
use crate::state::{AllocError, IpRequest, NewPort, PortChange, PortFilter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::Ipv4Addr;
use utoipa::ToSchema;

/// A port, or 404.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such port.
pub async fn get(services: &Services, id: &str) -> Result<Port, OpError> {
    services
        .store()
        .get_port(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "port",
            id: id.to_string(),
        })
}

/// Ports: all, of one network, or of one device.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn list(services: &Services, filter: PortFilter) -> Result<Vec<Port>, OpError> {
    Ok(services.store().list_ports(filter).await?)
}

/// Maps an allocation failure to 400 (the request is wrong) or 409 (the state refuses it).
pub fn alloc_error(e: AllocError) -> OpError {
    match e {
        AllocError::Store(e) => OpError::Store(e),
        e @ (AllocError::AddressInUse { .. }
        | AllocError::Exhausted { .. }
        | AllocError::MacInUse { .. }) => OpError::Conflict(e.to_string()),
        e @ (AllocError::NoSubnet { .. }
        | AllocError::OutsideSubnets { .. }
        | AllocError::Reserved { .. }) => OpError::InvalidInput(e.to_string()),
    }
}

/// Records a port on a network with its addresses, under the network lock.
///
/// # Errors
/// 400 for an unknown network or bad addresses; 409 for taken addresses or MAC.
pub(crate) async fn allocate(services: &Services, new: NewPort) -> Result<Port, OpError> {
    let _guard = services.network_lock().lock().await;
    let network = services
        .store()
        .get_network(&new.network_id)
        .await?
        .ok_or_else(|| OpError::unknown("network_id", &new.network_id, "network"))?;
    if network.status == NetStatus::Deleting {
        return Err(OpError::Conflict(format!(
            "network {} is being deleted",
            network.id
        )));
    }
    crate::ops::fleet::ipam::create_port(services, &network, new).await
}

/// Creates an unbound port (`POST /v1/ports`).
///
/// # Errors
/// 400 for bad input; 409 for a taken address or MAC.
pub async fn create(services: &Services, req: PortCreate) -> Result<Port, OpError> {
    let mac = req.validate()?;
    let security = security_fields(
        services,
        &PortUpdate {
            name: None,
            security_groups: req.security_groups.clone(),
            port_security_enabled: req.port_security_enabled,
            allowed_address_pairs: req.allowed_address_pairs.clone(),
        },
        None,
    )
    .await?;
    let mut ips = Vec::new();
    for want in req.fixed_ips.clone().unwrap_or_default() {
        let subnet = match &want.subnet_id {
            Some(subnet_id) => {
                let subnet = super::subnets::get(services, subnet_id)
                    .await
                    .map_err(|_| OpError::unknown("subnet_id", subnet_id, "subnet"))?;
                if subnet.network_id != req.network_id {
                    return Err(OpError::InvalidInput(format!(
                        "subnet_id {subnet_id:?} is not a subnet of network {}",
                        req.network_id
                    )));
                }
                Some(subnet)
            }
            None => None,
        };
        ips.push(match (want.ip_address, subnet) {
            (Some(ip), Some(subnet)) => {
                if !subnet.prefix().contains(ip) {
                    return Err(OpError::InvalidInput(format!(
                        "ip_address {ip} is outside subnet {} ({})",
                        subnet.id, subnet.cidr
                    )));
                }
                IpRequest::Fixed(ip)
            }
            (Some(ip), None) => IpRequest::Fixed(ip),
            (None, Some(subnet)) => IpRequest::InSubnet(subnet.id),
            (None, None) => IpRequest::Any,
        });
    }
    if req.fixed_ips.is_none() {
        ips.push(IpRequest::Any);
    }
    let port = allocate(
        services,
        NewPort {
            id: req
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            network_id: req.network_id.clone(),
            name: req.name.clone(),
            mac_address: mac,
            ips,
            device_id: String::new(),
            device_owner: String::new(),
            security_groups: security.security_groups.unwrap_or_default(),
            port_security_enabled: security.port_security_enabled.unwrap_or(true),
            allowed_address_pairs: security.allowed_address_pairs.unwrap_or_default(),
            exclude: Vec::new(),
        },
    )
    .await?;
    // Its MAC is leased at once, bound or not (as neutron's DHCP agent does).
    runtime::refresh(services, &port.network_id).await;
    let _ = services
        .events()
        .publish(
            "port.created",
            "port",
            &port.id,
            json!({ "network_id": port.network_id }),
        )
        .await;
    Ok(port)
}

/// Resolves and checks the port-security fields of a new port (`current` `None`: every field
/// comes back set, defaulted) or of a change to `current` (only what changes comes back set).
///
/// # Errors
/// 400 for bad fields; 404 (`unknown_reference`) for an unknown group; 409 for the DHCP port,
/// or for turning port security off while the port keeps groups or address pairs.
async fn security_fields(
    services: &Services,
    req: &PortUpdate,
    current: Option<&Port>,
) -> Result<PortChange, OpError> {
    req.validate()?;
    if current.is_some_and(|p| p.device_owner == DHCP_OWNER)
        && (req.security_groups.is_some()
            || req.port_security_enabled.is_some()
            || req.allowed_address_pairs.is_some())
    {
        return Err(OpError::Conflict(
            "the DHCP port is trusted by the firewall; its security cannot be changed".into(),
        ));
    }
    let mut groups = None;
    if let Some(wanted) = &req.security_groups {
        for g in wanted {
            if services.store().get_security_group(g).await?.is_none() {
                return Err(OpError::unknown("security_groups", g, "security group"));
            }
        }
        groups = Some(wanted.clone());
    }
    let enabled = req
        .port_security_enabled
        .or(current.map(|p| p.port_security_enabled))
        .unwrap_or(true);
    if current.is_none() && groups.is_none() {
        groups = Some(if enabled {
            vec![crate::ops::security_groups::default_id(services).await?]
        } else {
            Vec::new()
        });
    }
    let pairs = match &req.allowed_address_pairs {
        Some(p) => Some(check_pairs(
            p,
            current.map_or("", |c| c.mac_address.as_str()),
        )?),
        None => None,
    };
    let keeps_groups = groups
        .as_ref()
        .or(current.map(|p| &p.security_groups))
        .is_some_and(|g| !g.is_empty());
    let keeps_pairs = pairs
        .as_ref()
        .or(current.map(|p| &p.allowed_address_pairs))
        .is_some_and(|p| !p.is_empty());
    if !enabled && keeps_groups {
        return Err(OpError::Conflict(
            "port_security_enabled false needs the port to have no security groups: set security_groups to [] as well".into(),
        ));
    }
    if !enabled && keeps_pairs {
        return Err(OpError::Conflict(
            "allowed_address_pairs need port security: set allowed_address_pairs to [] as well"
                .into(),
        ));
    }
    Ok(PortChange {
        name: req.name.clone(),
        security_groups: groups,
        port_security_enabled: if current.is_none() {
            Some(enabled)
        } else {
            req.port_security_enabled
        },
        allowed_address_pairs: if current.is_none() {
            Some(pairs.unwrap_or_default())
        } else {
            pairs
        },
    })
}

/// Changes a port's name, security groups, port security or allowed address pairs
/// (`PATCH /v1/ports/{id}`), and programs the firewall.
///
/// # Errors
/// 404 for an unknown port; 400/404/409 as [`security_fields`] says.
pub async fn update(services: &Services, id: &str, req: PortUpdate) -> Result<Port, OpError> {
    let _guard = services.network_lock().lock().await;
    let port = get(services, id).await?;
    let change = security_fields(services, &req, Some(&port)).await?;
    let port = services
        .store()
        .update_port(id, change)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "port",
            id: id.to_string(),
        })?;
    drop(_guard);
    crate::ops::security_groups::apply::sync(services).await?;
    runtime::refresh(services, &port.network_id).await;
    let _ = services
        .events()
        .publish(
            "port.updated",
            "port",
            id,
            json!({
                "network_id": port.network_id,
                "security_groups": port.security_groups,
                "port_security_enabled": port.port_security_enabled,
            }),
        )
        .await;
    Ok(port)
}

/// Deletes an unbound port.
///
/// # Errors
/// 404 for an unknown port; 409 when a server or the DHCP service uses it.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let port = get(services, id).await?;
    if port.device_owner == DHCP_OWNER {
        return Err(OpError::Conflict(format!(
            "port {id} is the DHCP port of network {}; it goes with the network or its DHCP subnets",
            port.network_id
        )));
    }
    if !port.device_id.is_empty() {
        return Err(OpError::Conflict(format!(
            "port {id} is attached to server {}; detach it first",
            port.device_id
        )));
    }
    crate::ops::fleet::ipam::delete_port(services, &port).await?;
    runtime::refresh(services, &port.network_id).await;
    let _ = services
        .events()
        .publish(
            "port.deleted",
            "port",
            id,
            json!({ "network_id": port.network_id }),
        )
        .await;
    Ok(())
}

/// One NIC a new server asks for (`networks` in the server request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// A network to get a new port on.
    #[serde(default)]
    pub network_id: Option<String>,
    /// An existing unbound port to use.
    #[serde(default)]
    pub port_id: Option<String>,
    /// A specific address on `network_id`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub fixed_ip: Option<Ipv4Addr>,
}

impl NetworkRequest {
    /// Checks the combination of fields.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] unless exactly one of `network_id` and `port_id` is given
    /// (`fixed_ip` only with `network_id`).
    pub fn validate(&self) -> Result<(), OpError> {
        match (&self.network_id, &self.port_id, &self.fixed_ip) {
            (Some(_), None, _) | (None, Some(_), None) => Ok(()),
            _ => Err(OpError::InvalidInput(
                "each networks entry needs network_id (optionally with fixed_ip) or port_id".into(),
            )),
        }
    }
}

/// A NIC of a server: its port, whether the server created it (and so deletes it), and what
/// the domain XML needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerNic {
    /// The port.
    pub port_id: String,
    /// Created for the server (deleted with it) rather than given by the caller.
    pub created: bool,
    /// The port's network.
    pub network_id: String,
    /// The port's MAC.
    pub mac: String,
    /// The network's bridge.
    pub bridge: String,
    /// The host tap device.
    pub tap: String,
    /// The network's MTU.
    pub mtu: u32,
    /// The port's addresses.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub fixed_ips: Vec<Ipv4Addr>,
}

impl ServerNic {
    /// The NIC of `port` on `network` (which must be ACTIVE: its bridge is needed).
    pub(crate) fn new(port: &Port, network: &Network, created: bool) -> Result<Self, OpError> {
        let bridge = match (&network.bridge, network.status) {
            (Some(b), NetStatus::Active) => b.clone(),
            _ => {
                return Err(OpError::Conflict(format!(
                    "network {} is not ACTIVE (status {}{})",
                    network.id,
                    network.status.as_str(),
                    network
                        .fault
                        .as_deref()
                        .map(|f| format!(": {f}"))
                        .unwrap_or_default()
                )))
            }
        };
        Ok(Self {
            port_id: port.id.clone(),
            created,
            network_id: network.id.clone(),
            mac: port.mac_address.clone(),
            bridge,
            tap: crate::net::model::tap_name(&port.id),
            mtu: network.mtu,
            fixed_ips: port.fixed_ips.iter().map(|f| f.ip_address).collect(),
        })
    }

    /// The NIC as the domain XML describes it.
    pub fn domain_nic(&self) -> crate::compute::Nic {
        crate::compute::Nic {
            mac: self.mac.clone(),
            bridge: self.bridge.clone(),
            tap: self.tap.clone(),
            mtu: Some(self.mtu),
        }
    }
}

/// Binds (or creates and binds) the port one NIC request asks for.
///
/// # Errors
/// 400/409 as for ports; 409 when a given port is already in use.
pub async fn bind_for_server(
    services: &Services,
    server_id: &str,
    owner: &str,
    req: &NetworkRequest,
    groups: &[String],
) -> Result<(Port, ServerNic), OpError> {
    req.validate()?;
    if let Some(port_id) = &req.port_id {
        let _guard = services.network_lock().lock().await;
        let port = services
            .store()
            .get_port(port_id)
            .await?
            .ok_or_else(|| OpError::unknown("port_id", port_id, "port"))?;
        if !port.device_id.is_empty() || port.device_owner == DHCP_OWNER {
            return Err(OpError::Conflict(format!(
                "port {port_id} is already in use by {}",
                if port.device_id.is_empty() {
                    &port.device_owner
                } else {
                    &port.device_id
                }
            )));
        }
        services
            .store()
            .bind_port(port_id, server_id, owner, NetStatus::Build)
            .await?;
        drop(_guard);
        let port = get(services, port_id).await?;
        let network = super::get(services, &port.network_id).await?;
        let nic = match ServerNic::new(&port, &network, false) {
            Ok(nic) => nic,
            Err(e) => {
                services
                    .store()
                    .bind_port(port_id, "", "", NetStatus::Build)
                    .await?;
                return Err(e);
            }
        };
        return Ok((port, nic));
    }
    let network_id = req.network_id.clone().unwrap_or_default();
    let network = services
        .store()
        .get_network(&network_id)
        .await?
        .ok_or_else(|| OpError::unknown("network_id", &network_id, "network"))?;
    let port = allocate(
        services,
        NewPort {
            id: uuid::Uuid::new_v4().to_string(),
            network_id,
            name: String::new(),
            mac_address: None,
            ips: vec![req.fixed_ip.map_or(IpRequest::Any, IpRequest::Fixed)],
            device_id: server_id.to_string(),
            device_owner: owner.to_string(),
            security_groups: groups.to_vec(),
            port_security_enabled: true,
            allowed_address_pairs: Vec::new(),
            exclude: Vec::new(),
        },
    )
    .await?;
    match ServerNic::new(&port, &network, true) {
        Ok(nic) => Ok((port, nic)),
        Err(e) => {
            crate::ops::fleet::ipam::delete_port(services, &port).await?;
            Err(e)
        }
    }
}

/// Lets go of a server's NIC: deletes a port the server created, unbinds a given one.
/// Missing ports are fine (idempotent).
///
/// # Errors
/// [`OpError::Store`] when the store cannot be written.
pub async fn release_for_server(services: &Services, nic: &ServerNic) -> Result<(), OpError> {
    // Both store calls do nothing for a port that is gone.
    if nic.created {
        if let Some(port) = services.store().get_port(&nic.port_id).await? {
            crate::ops::fleet::ipam::delete_port(services, &port).await?;
        }
    } else {
        services
            .store()
            .bind_port(&nic.port_id, "", "", NetStatus::Build)
            .await?;
    }
    runtime::refresh(services, &nic.network_id).await;
    Ok(())
}
