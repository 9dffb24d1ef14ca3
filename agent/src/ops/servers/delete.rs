//! Server delete: DELETED at once, then destroy, undefine, remove files, forget — journaled
//! and resumed (not rolled back) after a crash, since every step is idempotent.

use super::model::{ServerSpec, ServerStatus};
use super::{load, set_status, Server};
use crate::ops::{OpError, Services};
use crate::state::RestartPolicy;
use crate::state::{OperationHandler, OperationRecord, StepRecord, UndoFuture};
use serde_json::json;

/// Journal kind of a server delete.
pub const KIND: &str = "server.delete";

/// Marks the server DELETED and removes it in the background.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such server.
pub async fn delete(services: &Services, id: &str) -> Result<Server, OpError> {
    let loaded = load(services, id).await?;
    if loaded.status != ServerStatus::Deleted {
        set_status(services, id, ServerStatus::Deleted, Some("deleting"), None).await?;
    }
    services
        .consoles()
        .end_server(id, crate::console::CloseReason::ServerDeleted);
    let view = super::get(services, id).await?;
    let services = services.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let lock = services.server_lock(&id);
        let _guard = lock.lock().await;
        // Reload: a build that held the lock may have changed the spec.
        let spec = match load(&services, &id).await {
            Ok(loaded) => loaded.spec,
            Err(_) => return, // already gone
        };
        if let Err(e) = run(&services, &id, &spec).await {
            let fault = format!("delete failed: {}", crate::api::error::chain(&e));
            tracing::warn!(server_id = %id, %fault);
            let _ = set_status(&services, &id, ServerStatus::Error, None, Some(&fault)).await;
        }
    });
    Ok(view)
}

async fn run(services: &Services, id: &str, spec: &ServerSpec) -> Result<(), OpError> {
    let mut op = services
        .journal()
        .begin(KIND, id, json!({ "spec": spec }))
        .await?;
    steps(services, id, spec, Some(&mut op)).await?;
    op.complete().await?;
    Ok(())
}

/// The delete steps; recorded in the journal when `op` is given (not on resume).
async fn steps(
    services: &Services,
    id: &str,
    spec: &ServerSpec,
    mut op: Option<&mut crate::state::Operation>,
) -> Result<(), OpError> {
    let libvirt = services.libvirt();
    let domain = spec.domain_name.as_str();
    if let Some(op) = op.as_deref_mut() {
        op.record_step("undefine", json!({ "domain": domain }))
            .await?;
    }
    libvirt.undefine(domain).await?;
    if let Some(op) = op.as_deref_mut() {
        op.record_step("remove_files", json!({ "dir": spec.dir }))
            .await?;
    }
    super::build::remove_dir(spec).map_err(OpError::Conflict)?;
    if let Some(from) = &spec.migrated_from {
        // An unconfirmed cold migration: the old node may drop the disks it kept for a
        // revert. Best effort: a node that is away keeps them (nothing refers to them).
        if let Err(e) = crate::ops::migration::cold::drop_kept(services, id, from).await {
            tracing::warn!(server_id = %id, node = %from.node, error = %e, "the old node could not drop the disks it kept for a revert");
        }
    }
    // libvirt's own per-domain log (QEMU's stderr).
    let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{domain}.log"));
    if let Some(op) = op.as_deref_mut() {
        op.record_step("release_ports", json!({})).await?;
    }
    for nic in &spec.nics {
        crate::ops::networks::ports::release_for_server(services, nic).await?;
    }
    for volume in spec.boot_volume.iter().chain(spec.volumes.iter()) {
        crate::ops::volumes::attach::release(services, &volume.volume_id).await?;
    }
    if let Some(op) = op {
        op.record_step("forget", json!({})).await?;
    }
    services.store().delete_server(id).await?;
    let _ = services
        .events()
        .publish(
            "server.deleted",
            "server",
            id,
            json!({ "status": "DELETED" }),
        )
        .await;
    Ok(())
}

/// Finishes a delete interrupted by a crash.
pub(crate) struct DeleteHandler {
    services: Services,
}

impl DeleteHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

impl OperationHandler for DeleteHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn undo<'a>(&'a self, _op: &'a OperationRecord, _step: &'a StepRecord) -> UndoFuture<'a> {
        // A delete is never rolled back: every step is idempotent and resumed instead.
        Box::pin(async { Ok(()) })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let spec: ServerSpec = serde_json::from_value(op.input["spec"].clone())
                .map_err(|e| format!("delete journal input unreadable: {e}"))?;
            steps(&self.services, &op.resource_id, &spec, None)
                .await
                .map_err(|e| crate::api::error::chain(&e))
        })
    }
}
