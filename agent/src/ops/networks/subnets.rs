//! Subnets: IPv4 prefixes of a network, with pools, DNS and routes for DHCP.

use super::model::SubnetCreate;
use super::runtime;
use crate::net::model::{NetStatus, Subnet};
use crate::ops::{OpError, Services};
use crate::state::now_rfc3339;
use serde_json::json;

/// A subnet, or 404.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such subnet.
pub async fn get(services: &Services, id: &str) -> Result<Subnet, OpError> {
    services
        .store()
        .get_subnet(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "subnet",
            id: id.to_string(),
        })
}

/// Subnets, of one network when given.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn list(services: &Services, network_id: Option<&str>) -> Result<Vec<Subnet>, OpError> {
    Ok(services.store().list_subnets(network_id).await?)
}

/// Validates and records a subnet, then brings the network's DHCP service in line.
///
/// # Errors
/// 400 for a bad request or a prefix overlapping another subnet of the network; 404 for an
/// unknown network; 409 while the network is being deleted.
pub async fn create(services: &Services, req: SubnetCreate) -> Result<Subnet, OpError> {
    let valid = req.validate()?;
    let subnet = {
        let _guard = services.network_lock().lock().await;
        let network = services
            .store()
            .get_network(&req.network_id)
            .await?
            .ok_or_else(|| OpError::unknown("network_id", &req.network_id, "network"))?;
        if network.status == NetStatus::Deleting {
            return Err(OpError::Conflict(format!(
                "network {} is being deleted",
                network.id
            )));
        }
        for other in services.store().list_subnets(Some(&network.id)).await? {
            if other.prefix().overlaps(&valid.cidr) {
                return Err(OpError::InvalidInput(format!(
                    "cidr {} overlaps subnet {} ({}) of network {}",
                    valid.cidr, other.id, other.cidr, network.id
                )));
            }
        }
        let now = now_rfc3339();
        let subnet = Subnet {
            id: req
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            network_id: network.id.clone(),
            name: req.name.clone(),
            cidr: valid.cidr.to_string(),
            gateway_ip: valid.gateway_ip,
            allocation_pools: valid.allocation_pools,
            dns_nameservers: req.dns_nameservers.clone(),
            host_routes: req.host_routes.clone(),
            enable_dhcp: req.enable_dhcp,
            created_at: now.clone(),
            updated_at: now,
        };
        services.store().insert_subnet(subnet.clone()).await?;
        subnet
    };
    if let Err(e) = runtime::sync_network(services, &subnet.network_id).await {
        // Undo: the DHCP port's address on this subnet goes with it.
        let _guard = services.network_lock().lock().await;
        services.store().delete_subnet(&subnet.id).await?;
        drop(_guard);
        let _ = runtime::sync_network(services, &subnet.network_id).await;
        return Err(e);
    }
    let _ = services
        .events()
        .publish(
            "subnet.created",
            "subnet",
            &subnet.id,
            json!({ "cidr": subnet.cidr }),
        )
        .await;
    Ok(subnet)
}

/// Deletes a subnet no port but the DHCP port has an address on.
///
/// # Errors
/// 404 for an unknown subnet; 409 while ports use its addresses.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let subnet = get(services, id).await?;
    {
        let _guard = services.network_lock().lock().await;
        let used = services.store().subnet_allocations_in_use(id).await?;
        if used > 0 {
            return Err(OpError::Conflict(format!(
                "subnet {id} has {used} address(es) allocated to ports; delete those ports first"
            )));
        }
        services.store().delete_subnet(id).await?;
    }
    runtime::sync_network(services, &subnet.network_id).await?;
    let _ = services
        .events()
        .publish(
            "subnet.deleted",
            "subnet",
            id,
            json!({ "cidr": subnet.cidr }),
        )
        .await;
    Ok(())
}
