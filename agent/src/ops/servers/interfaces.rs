//! NIC hot attach and detach on existing servers (`/v1/servers/{id}/interfaces`).

use super::model::ServerStatus;
use super::{load, Server};
use crate::ops::networks::ports::{bind_for_server, release_for_server, NetworkRequest};
use crate::ops::networks::runtime;
use crate::ops::{OpError, Services};
use serde_json::json;

fn check_status(status: ServerStatus) -> Result<(), OpError> {
    match status {
        ServerStatus::Active | ServerStatus::Shutoff | ServerStatus::Paused => Ok(()),
        other => Err(OpError::Conflict(format!(
            "interfaces can be changed on ACTIVE, PAUSED or SHUTOFF servers, not {}",
            other.as_str()
        ))),
    }
}

/// Adds a NIC on a network (or an existing port) to a server; a running guest sees it
/// hot-plugged.
///
/// # Errors
/// 404 for an unknown server; 400/409 as for ports; 409 in a state that cannot change.
pub async fn attach(services: &Services, id: &str, req: NetworkRequest) -> Result<Server, OpError> {
    req.validate()?;
    let lock = services.server_lock(id);
    let _guard = lock.lock().await;
    let loaded = load(services, id).await?;
    check_status(loaded.status)?;
    if loaded.spec.nics.len() >= 16 {
        return Err(OpError::Conflict(
            "a server has at most 16 interfaces".into(),
        ));
    }
    let owner = format!("compute:{}", loaded.spec.availability_zone);
    let groups = vec![crate::ops::security_groups::default_id(services).await?];
    let (_, nic) = bind_for_server(services, id, &owner, &req, &groups).await?;
    if let Err(e) = crate::ops::security_groups::apply::sync(services).await {
        let _ = release_for_server(services, &nic).await;
        return Err(e);
    }
    if let Err(e) = services
        .libvirt()
        .attach_device(&loaded.spec.domain_name, nic.domain_nic().to_xml())
        .await
    {
        let _ = release_for_server(services, &nic).await;
        return Err(e.into());
    }
    let mut spec = loaded.spec.clone();
    spec.nics.push(nic.clone());
    super::save_spec(services, id, &loaded.row.image_id, &spec).await?;
    runtime::refresh(services, &nic.network_id).await;
    let _ = services
        .events()
        .publish(
            "server.interface_attached",
            "server",
            id,
            json!({ "port_id": nic.port_id }),
        )
        .await;
    super::get(services, id).await
}

/// Removes a NIC from a server (hot-unplugged from a running guest) and releases its port:
/// a port the server created is deleted, a given one is unbound.
///
/// # Errors
/// 404 for an unknown server or a port that is not one of its NICs; 409 in a state that
/// cannot change.
pub async fn detach(services: &Services, id: &str, port_id: &str) -> Result<Server, OpError> {
    let lock = services.server_lock(id);
    let _guard = lock.lock().await;
    let loaded = load(services, id).await?;
    check_status(loaded.status)?;
    let Some(nic) = loaded
        .spec
        .nics
        .iter()
        .find(|n| n.port_id == port_id)
        .cloned()
    else {
        return Err(OpError::NotFound {
            kind: "interface",
            id: port_id.to_string(),
        });
    };
    services
        .libvirt()
        .detach_device(&loaded.spec.domain_name, nic.domain_nic().to_xml())
        .await?;
    let mut spec = loaded.spec.clone();
    spec.nics.retain(|n| n.port_id != port_id);
    super::save_spec(services, id, &loaded.row.image_id, &spec).await?;
    release_for_server(services, &nic).await?;
    let _ = services
        .events()
        .publish(
            "server.interface_detached",
            "server",
            id,
            json!({ "port_id": port_id }),
        )
        .await;
    super::get(services, id).await
}
