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
//! * `lifecycle` — network create and delete, journaled in the background;
//! * `model` — requests and their validation;
//! * `backend` — calls into the network backend plugins;
//! * `subnets`, `ports` — the other two resources;
//! * `runtime` — namespaces, DHCP and metadata servers per network.

pub mod backend;
pub mod lifecycle;
pub mod model;
pub mod ports;
pub mod runtime;
pub mod subnets;

pub use lifecycle::{create, delete, register_handlers};

use crate::net::model::Network;
use crate::ops::{OpError, Services};

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
