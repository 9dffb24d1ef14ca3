//! Ports: a MAC and addresses on a network, for a server NIC or a network's DHCP namespace.

use super::model::PortCreate;
use super::runtime;
use crate::net::model::{NetStatus, Network, Port, DHCP_OWNER};
use crate::ops::{OpError, Services};
use crate::state::{AllocError, IpRequest, NewPort, PortFilter};
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
    services.store().create_port(new).await.map_err(alloc_error)
}

/// Creates an unbound port (`POST /v1/ports`).
///
/// # Errors
/// 400 for bad input; 409 for a taken address or MAC.
pub async fn create(services: &Services, req: PortCreate) -> Result<Port, OpError> {
    let mac = req.validate()?;
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
            id: uuid::Uuid::new_v4().to_string(),
            network_id: req.network_id.clone(),
            name: req.name.clone(),
            mac_address: mac,
            ips,
            device_id: String::new(),
            device_owner: String::new(),
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
    services.store().delete_port(id).await?;
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
    fn new(port: &Port, network: &Network, created: bool) -> Result<Self, OpError> {
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
        },
    )
    .await?;
    match ServerNic::new(&port, &network, true) {
        Ok(nic) => Ok((port, nic)),
        Err(e) => {
            services.store().delete_port(&port.id).await?;
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
        services.store().delete_port(&nic.port_id).await?;
    } else {
        services
            .store()
            .bind_port(&nic.port_id, "", "", NetStatus::Build)
            .await?;
    }
    runtime::refresh(services, &nic.network_id).await;
    Ok(())
}
