//! Networks, subnets and ports: the neutron half of the agent.
//!
//! The store is the desired state; the host follows it. Every mutation first records what it
//! wants (a network in BUILD or DELETING, a subnet, a port), then makes the host match by
//! calling [`runtime::sync_network`], which is idempotent: the network backend plugin ensures
//! the bridge, and when the network has a DHCP-enabled subnet the agent ensures the DHCP port,
//! the `qdhcp-<net-id>` namespace with its veth, and the native DHCP and metadata servers. At
//! startup [`runtime::restore`] runs the same sync for every stored network, which finishes
//! whatever a crash interrupted (a network left in BUILD is built, one left in DELETING is
//! removed) and rebuilds namespaces, DHCP and metadata from the store.
//!
//! * `model` — requests and their validation;
//! * `backend` — calls into the network backend plugins;
//! * `subnets`, `ports` — the other two resources;
//! * `runtime` — namespaces, DHCP and metadata servers per network.

pub mod backend;
pub mod model;
pub mod ports;
pub mod runtime;
pub mod subnets;

use crate::net::model::{NetStatus, Network, DHCP_OWNER};
use crate::ops::{OpError, Services};
use crate::state::{now_rfc3339, PortFilter};
use model::NetworkCreate;
use serde_json::json;

/// A network, or 404.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such network.
pub async fn get(services: &Services, id: &str) -> Result<Network, OpError> {
    services
        .store()
        .get_network(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "network",
            id: id.to_string(),
        })
}

/// Every network.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn list(services: &Services) -> Result<Vec<Network>, OpError> {
    Ok(services.store().list_networks().await?)
}

/// Validates a network, asks its backend whether it can serve it, records it and sets it up.
///
/// # Errors
/// 400 for bad attributes, an unknown backend or a backend refusal; 409 when the segment is
/// used by another network; 502 when the backend fails to set it up (nothing is left behind).
pub async fn create(services: &Services, req: NetworkCreate) -> Result<Network, OpError> {
    req.validate()?;
    let backend_name = backend::resolve(services, req.backend.as_deref())?;
    let now = now_rfc3339();
    let network = Network {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        network_type: req.kind(),
        physical_network: req.physical_network.clone(),
        segmentation_id: req.segmentation_id,
        mtu: req.mtu(),
        backend: backend_name.clone(),
        bridge: None,
        status: NetStatus::Build,
        fault: None,
        subnets: Vec::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    backend::validate(services, &backend_name, &network.backend_view()).await?;
    {
        let _guard = services.network_lock().lock().await;
        if let Some(other) = services.store().network_by_segment(&network).await? {
            return Err(OpError::Conflict(format!(
                "network {other} already uses this segment ({} {}{})",
                network.network_type.as_str(),
                network.physical_network.as_deref().unwrap_or(""),
                network
                    .segmentation_id
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            )));
        }
        services.store().insert_network(network.clone()).await?;
    }
    if let Err(e) = runtime::sync_network(services, &network.id).await {
        // Nothing half-created: take down what the backend may have made, forget the record.
        let _ = backend::delete(services, &backend_name, &network.backend_view()).await;
        services.store().delete_network(&network.id).await?;
        return Err(e);
    }
    let _ = services
        .events()
        .publish(
            "network.created",
            "network",
            &network.id,
            json!({ "name": network.name }),
        )
        .await;
    get(services, &network.id).await
}

/// Deletes a network that no server uses: its namespace, DHCP port, bridge and records.
///
/// # Errors
/// 404 for an unknown network; 409 while ports other than the DHCP port exist.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let network = get(services, id).await?;
    {
        let _guard = services.network_lock().lock().await;
        let ports = services
            .store()
            .list_ports(PortFilter::Network(id.to_string()))
            .await?;
        let in_use: Vec<&str> = ports
            .iter()
            .filter(|p| p.device_owner != DHCP_OWNER)
            .map(|p| p.id.as_str())
            .collect();
        if !in_use.is_empty() {
            return Err(OpError::Conflict(format!(
                "network {id} is in use by {} port(s): {}; delete them (or their servers) first",
                in_use.len(),
                in_use.join(", ")
            )));
        }
        services
            .store()
            .set_network_state(id, NetStatus::Deleting, None, None)
            .await?;
    }
    runtime::sync_network(services, id).await?;
    let _ = services
        .events()
        .publish(
            "network.deleted",
            "network",
            id,
            json!({ "name": network.name }),
        )
        .await;
    Ok(())
}
