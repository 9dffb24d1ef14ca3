//! Delete: answered 202 `deleting`, then journaled as `volume.delete` in the background:
//! `record` → `driver_delete` → the record forgotten (`volume.deleted`). A failure leaves the
//! volume `error_deleting` with the cause (delete it again); a crash is resumed (drivers
//! delete idempotently).

use super::{driver, get, set_status, volume_lock, volume_ref};
use crate::ops::{background, OpError, Services};
use crate::state::{
    OperationHandler, OperationRecord, RestartPolicy, StepRecord, UndoFuture, Volume,
};
use crate::volume::VolumeRef;
use serde_json::json;

/// Journal kind of a volume delete.
pub const DELETE_KIND: &str = "volume.delete";

/// Deletes a volume that is not attached and has no snapshots: answers with it `deleting`;
/// the driver removes it in the background.
///
/// # Errors
/// 404 for an unknown volume; 409 when attached, with snapshots, or busy. Nothing changes then.
pub async fn delete(services: &Services, id: &str) -> Result<Volume, OpError> {
    let guard = volume_lock(services, id).lock_owned().await;
    let volume = get(services, id).await?;
    if let Some(server) = &volume.attached_to {
        return Err(OpError::Conflict(format!(
            "volume {id} is attached to server {server}; detach it first"
        )));
    }
    let snaps = services.store().list_snapshots(Some(id)).await?;
    if !snaps.is_empty() {
        return Err(OpError::Conflict(format!(
            "volume {id} has {} snapshot(s); delete them first",
            snaps.len()
        )));
    }
    if !matches!(
        volume.status.as_str(),
        "available" | "error" | "error_deleting"
    ) {
        return Err(OpError::Conflict(format!(
            "volume {id} is {}; wait until it is available",
            volume.status
        )));
    }
    let services = services.clone();
    background::run(move |answer| async move {
        let _guard = guard;
        let id = volume.id.clone();
        let input = json!({ "backend": volume.backend, "size_gb": volume.size_gb });
        let Some(mut op) =
            background::begin_recorded(&services, DELETE_KIND, &id, input, answer, || async {
                set_status(&services, &id, "deleting", None)
                    .await?
                    .ok_or_else(|| OpError::NotFound {
                        kind: "volume",
                        id: id.clone(),
                    })
            })
            .await
        else {
            return;
        };
        let result = async {
            let v = volume_ref(&volume);
            op.step("driver_delete", json!({}), || {
                driver::call(&services, &volume.backend, move |p| p.volume_delete(&v))
            })
            .await?;
            forget(&services, &id).await
        }
        .await;
        background::finish(op, result).await;
    })
    .await
}

/// Removes the record and says so.
async fn forget(services: &Services, id: &str) -> Result<(), OpError> {
    services.store().delete_volume(id).await?;
    let _ = services
        .events()
        .publish("volume.deleted", "volume", id, json!({}))
        .await;
    Ok(())
}

/// Settles deletes: `error_deleting` on failure, resumed after a restart.
pub(crate) struct DeleteHandler {
    /// The agent's services.
    pub services: Services,
}

impl OperationHandler for DeleteHandler {
    fn kind(&self) -> &'static str {
        DELETE_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            if step.name != "record" {
                return Ok(());
            }
            let error = op
                .error
                .clone()
                .unwrap_or_else(|| "the delete was interrupted".into());
            set_status(
                &self.services,
                &op.resource_id,
                "error_deleting",
                Some(error),
            )
            .await
            .map(drop)
            .map_err(|e| crate::api::error::chain(&e))
        })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            let id = op.resource_id.as_str();
            let backend = op.input["backend"].as_str().unwrap_or_default().to_string();
            let v = VolumeRef::new(id, op.input["size_gb"].as_u64().unwrap_or(0));
            let outcome = match driver::call(services, &backend, move |p| p.volume_delete(&v)).await
            {
                Ok(()) => forget(services, id).await,
                Err(e) => set_status(
                    services,
                    id,
                    "error_deleting",
                    Some(crate::api::error::chain(&e)),
                )
                .await
                .map(drop),
            };
            outcome.map_err(|e| crate::api::error::chain(&e))
        })
    }
}
