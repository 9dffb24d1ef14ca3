//! Servers: create, show, list, delete, actions, and keeping statuses true to libvirt.
//!
//! * `model.rs` — request/response types, statuses, validation.
//! * `build.rs` — what a server's domain looks like ([`crate::compute::DomainSpec`] from the
//!   server's spec and its images) and the creation of its disks.
//! * `create.rs` — admission (capacity) and the journaled build.
//! * `delete.rs` — the journaled, resumable delete.
//! * `actions.rs` — start, stop, reboot, pause, suspend, rebuild, resize, console, password.
//! * `stats.rs` — live figures through QMP.
//! * `sync.rs` — the loop that follows libvirt (statuses, vanished domains) and adoption.
//!
//! Long work runs in background tasks; the API answers 202 with the transitional status, and
//! every status change is published as a `server.status` event.

mod actions;
pub(crate) mod build;
mod create;
mod delete;
pub mod interfaces;
mod model;
mod stats;
mod sync;

pub(crate) use actions::power_off;
pub(crate) use actions::save_spec;
pub use actions::{action, ActionOutput, ServerAction};
pub use create::create;
pub(crate) use create::{admit, nic_networks};
pub use delete::delete;
pub use model::{
    validate_name, Flavor, MigratedFrom, Server, ServerCreate, ServerSpec, ServerStatus,
};
pub use stats::{stats, ServerStats};
pub use sync::{adopt_and_reconcile, recover_interrupted, run_sync};

use super::{OpError, Services};
use crate::state::ServerRow;
use std::sync::Arc;

/// Registers the journal handlers of server operations. Call before `Journal::recover`.
pub fn register_handlers(services: &Services) {
    services
        .journal()
        .register(Arc::new(create::CreateHandler::new(services.clone())));
    services
        .journal()
        .register(Arc::new(delete::DeleteHandler::new(services.clone())));
    services
        .journal()
        .register(Arc::new(actions::RebuildHandler::new(services.clone())));
    services
        .journal()
        .register(Arc::new(actions::ResizeHandler::new(services.clone())));
}

/// A server row with its decoded spec.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub row: ServerRow,
    pub status: ServerStatus,
    pub spec: ServerSpec,
}

impl Loaded {
    pub(crate) fn view(&self) -> Server {
        Server {
            id: self.row.id.clone(),
            name: self.row.name.clone(),
            status: self.status,
            task_state: self.row.task_state.clone(),
            flavor: self.spec.flavor.clone(),
            image_id: self.row.image_id.clone(),
            key_name: self.spec.key_name.clone(),
            metadata: self.spec.metadata.clone(),
            availability_zone: self.spec.availability_zone.clone(),
            domain_name: self.spec.domain_name.clone(),
            fault: self.row.fault.clone(),
            nics: self.spec.nics.clone(),
            boot_volume_id: self.spec.boot_volume.as_ref().map(|b| b.volume_id.clone()),
            volumes: self.spec.volumes.clone(),
            created_at: self.row.created_at.clone(),
            updated_at: self.row.updated_at.clone(),
            migration: None,
        }
    }
}

fn decode(row: ServerRow) -> Result<Loaded, OpError> {
    let status = ServerStatus::parse(&row.status).ok_or_else(|| {
        OpError::Store(crate::state::StoreError::Corrupt(format!(
            "server {} has status {:?}",
            row.id, row.status
        )))
    })?;
    let spec: ServerSpec = serde_json::from_str(&row.spec).map_err(|e| {
        OpError::Store(crate::state::StoreError::Corrupt(format!(
            "server {} spec: {e}",
            row.id
        )))
    })?;
    Ok(Loaded { row, status, spec })
}

pub(crate) async fn load(services: &Services, id: &str) -> Result<Loaded, OpError> {
    let row = services
        .store()
        .get_server(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "server",
            id: id.to_string(),
        })?;
    decode(row)
}

/// One server.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such server.
pub async fn get(services: &Services, id: &str) -> Result<Server, OpError> {
    let mut server = load(services, id).await?.view();
    server.migration = services.migrations().progress(id);
    Ok(server)
}

/// A server's stored spec (keys, user data, flavor, NICs).
///
/// # Errors
/// [`OpError::NotFound`] when there is no such server.
pub(crate) async fn spec_of(services: &Services, id: &str) -> Result<model::ServerSpec, OpError> {
    Ok(load(services, id).await?.spec)
}

/// All servers.
///
/// # Errors
/// [`OpError::Store`].
pub async fn list(services: &Services) -> Result<Vec<Server>, OpError> {
    let mut out = Vec::new();
    for row in services.store().list_servers().await? {
        out.push(decode(row)?.view());
    }
    Ok(out)
}

/// Sets a server's status and publishes `server.status`.
pub(crate) async fn set_status(
    services: &Services,
    id: &str,
    status: ServerStatus,
    task_state: Option<&str>,
    fault: Option<&str>,
) -> Result<(), OpError> {
    if services
        .store()
        .set_server_status(id, status.as_str(), task_state, fault)
        .await?
    {
        let data = serde_json::json!({
            "status": status, "task_state": task_state, "fault": fault,
        });
        if let Err(e) = services
            .events()
            .publish("server.status", "server", id, data)
            .await
        {
            tracing::warn!(error = %e, "could not publish server.status");
        }
    }
    Ok(())
}
