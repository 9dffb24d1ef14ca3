//! Snapshots of volumes.

use super::{driver, get as get_volume, snapshot_ref};
use crate::ops::{background, OpError, Services};
use crate::state::{
    OperationHandler, OperationRecord, RestartPolicy, Snapshot, StepRecord, UndoFuture,
};
use crate::volume::{SnapshotRef, VolumeRef};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;

/// `POST /v1/snapshots`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// The volume.
    pub volume_id: String,
    /// Name (at most 255 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: String,
}

/// A snapshot, or 404.
///
/// # Errors
/// [`OpError::NotFound`].
pub async fn get(services: &Services, id: &str) -> Result<Snapshot, OpError> {
    services
        .store()
        .get_snapshot(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "snapshot",
            id: id.to_string(),
        })
}

/// Snapshots, of one volume when given.
///
/// # Errors
/// [`OpError::Store`].
pub async fn list(services: &Services, volume_id: Option<&str>) -> Result<Vec<Snapshot>, OpError> {
    Ok(services.store().list_snapshots(volume_id).await?)
}

/// Journal kind of a snapshot create.
pub const CREATE_KIND: &str = "snapshot.create";
/// Journal kind of a snapshot delete.
pub const DELETE_KIND: &str = "snapshot.delete";

/// Sets a snapshot's status (and error) and publishes `snapshot.status`.
async fn set_status(
    services: &Services,
    id: &str,
    status: &str,
    error: Option<String>,
) -> Result<Option<Snapshot>, OpError> {
    let Some(mut snap) = services.store().get_snapshot(id).await? else {
        return Ok(None);
    };
    snap.status = status.into();
    snap.error = error.clone();
    snap.updated_at = crate::state::now_rfc3339();
    services.store().put_snapshot(snap.clone()).await?;
    let _ = services
        .events()
        .publish(
            "snapshot.status",
            "snapshot",
            id,
            json!({ "status": status, "volume_id": snap.volume_id, "error": error }),
        )
        .await;
    Ok(Some(snap))
}

/// Takes a snapshot of an available (or in-use) volume: answers with it `creating`; the
/// driver takes it in the background (journaled as `snapshot.create`: `record` →
/// `driver_create`), then it is `available` — or `error` with the cause, the backend's object
/// removed. A crash in between is rolled back at the next start the same way.
///
/// # Errors
/// 400 for an unknown volume or a bad name; 409 when the volume is busy. Nothing changes then.
pub async fn create(services: &Services, req: SnapshotCreate) -> Result<Snapshot, OpError> {
    if req.name.chars().count() > 255 || req.name.chars().any(char::is_control) {
        return Err(OpError::InvalidInput(
            "name must have at most 255 characters and no control characters".into(),
        ));
    }
    let guard = super::volume_lock(services, &req.volume_id)
        .lock_owned()
        .await;
    let volume = get_volume(services, &req.volume_id)
        .await
        .map_err(|_| OpError::unknown("volume_id", &req.volume_id, "volume"))?;
    if !matches!(volume.status.as_str(), "available" | "in-use") {
        return Err(OpError::Conflict(format!(
            "volume {} is {}; snapshots need an available or in-use volume",
            volume.id, volume.status
        )));
    }
    let now = crate::state::now_rfc3339();
    let snap = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: volume.id.clone(),
        name: req.name,
        size_gb: volume.size_gb,
        status: "creating".into(),
        error: None,
        created_at: now.clone(),
        updated_at: now,
    };
    let services = services.clone();
    background::run(move |answer| async move {
        let _guard = guard;
        let id = snap.id.clone();
        let sref = snapshot_ref(&snap, &volume);
        let input =
            json!({ "backend": volume.backend, "volume_id": volume.id, "size_gb": snap.size_gb });
        let Some(mut op) =
            background::begin_recorded(&services, CREATE_KIND, &id, input, answer, || async {
                services.store().put_snapshot(snap.clone()).await?;
                let _ = services
                    .events()
                    .publish(
                        "snapshot.status",
                        "snapshot",
                        &snap.id,
                        json!({ "status": "creating", "volume_id": snap.volume_id }),
                    )
                    .await;
                Ok::<_, OpError>(snap.clone())
            })
            .await
        else {
            return;
        };
        let result = async {
            op.step("driver_create", json!({}), || {
                driver::call(&services, &volume.backend, move |p| async move {
                    p.snapshot_create(&sref).await
                })
            })
            .await?;
            set_status(&services, &id, "available", None).await?;
            let _ = services
                .events()
                .publish(
                    "snapshot.created",
                    "snapshot",
                    &id,
                    json!({ "volume_id": snap.volume_id }),
                )
                .await;
            Ok(())
        }
        .await;
        background::finish(op, result).await;
    })
    .await
}

/// Deletes a snapshot: answers with it `deleting`; the driver removes it in the background
/// (journaled as `snapshot.delete`), then the record goes (`snapshot.deleted`) — or it is
/// `error_deleting` with the cause (e.g. volumes depend on it). A crash is resumed.
///
/// # Errors
/// 404 for an unknown snapshot; 409 while it is being created or deleted. Nothing changes then.
pub async fn delete(services: &Services, id: &str) -> Result<Snapshot, OpError> {
    let snap = get(services, id).await?;
    let guard = super::volume_lock(services, &snap.volume_id)
        .lock_owned()
        .await;
    let snap = get(services, id).await?;
    if matches!(snap.status.as_str(), "creating" | "deleting") {
        return Err(OpError::Conflict(format!(
            "snapshot {id} is {}; wait until it is available",
            snap.status
        )));
    }
    let volume = get_volume(services, &snap.volume_id).await?;
    let services = services.clone();
    background::run(move |answer| async move {
        let _guard = guard;
        let id = snap.id.clone();
        let sref = snapshot_ref(&snap, &volume);
        let input =
            json!({ "backend": volume.backend, "volume_id": volume.id, "size_gb": snap.size_gb });
        let Some(mut op) =
            background::begin_recorded(&services, DELETE_KIND, &id, input, answer, || async {
                set_status(&services, &id, "deleting", None)
                    .await?
                    .ok_or_else(|| OpError::NotFound {
                        kind: "snapshot",
                        id: id.clone(),
                    })
            })
            .await
        else {
            return;
        };
        let result = async {
            op.step("driver_delete", json!({}), || {
                driver::call(&services, &volume.backend, move |p| async move {
                    p.snapshot_delete(&sref).await
                })
            })
            .await?;
            forget(&services, &id, &snap.volume_id).await
        }
        .await;
        background::finish(op, result).await;
    })
    .await
}

/// Removes a snapshot's record and says so.
async fn forget(services: &Services, id: &str, volume_id: &str) -> Result<(), OpError> {
    services.store().delete_snapshot(id).await?;
    let _ = services
        .events()
        .publish(
            "snapshot.deleted",
            "snapshot",
            id,
            json!({ "volume_id": volume_id }),
        )
        .await;
    Ok(())
}

/// The driver's view of the snapshot an operation works on (from its input).
fn sref_of(op: &OperationRecord) -> (String, SnapshotRef) {
    let backend = op.input["backend"].as_str().unwrap_or_default().to_string();
    let size = op.input["size_gb"].as_u64().unwrap_or(0);
    let volume_id = op.input["volume_id"].as_str().unwrap_or_default();
    (
        backend,
        SnapshotRef::new(&op.resource_id, VolumeRef::new(volume_id, size)),
    )
}

/// Undoes a failed or interrupted snapshot create: the backend's object removed, the record
/// `error` with the cause.
struct CreateHandler {
    services: Services,
}

impl OperationHandler for CreateHandler {
    fn kind(&self) -> &'static str {
        CREATE_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            match step.name.as_str() {
                "driver_create" => {
                    let (backend, sref) = sref_of(op);
                    driver::call(services, &backend, move |p| async move {
                        p.snapshot_delete(&sref).await
                    })
                    .await
                    .map_err(|e| crate::api::error::chain(&e))
                }
                "record" => {
                    let error = op.error.clone().unwrap_or_else(|| {
                        "the snapshot was interrupted by an agent restart".into()
                    });
                    set_status(services, &op.resource_id, "error", Some(error))
                        .await
                        .map(drop)
                        .map_err(|e| crate::api::error::chain(&e))
                }
                _ => Ok(()),
            }
        })
    }
}

/// Settles snapshot deletes: `error_deleting` on failure, resumed after a restart.
struct DeleteHandler {
    services: Services,
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
            let (backend, sref) = sref_of(op);
            let volume_id = sref.volume.id.clone();
            let outcome = match driver::call(services, &backend, move |p| async move {
                p.snapshot_delete(&sref).await
            })
            .await
            {
                Ok(()) => forget(services, &op.resource_id, &volume_id).await,
                Err(e) => set_status(
                    services,
                    &op.resource_id,
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

/// Registers the snapshot handlers.
pub(crate) fn register(services: &Services) {
    services.journal().register(Arc::new(CreateHandler {
        services: services.clone(),
    }));
    services.journal().register(Arc::new(DeleteHandler {
        services: services.clone(),
    }));
}
