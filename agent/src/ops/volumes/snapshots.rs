//! Snapshots of volumes.

use super::{driver, get as get_volume, snapshot_ref};
use crate::ops::{OpError, Services};
use crate::state::Snapshot;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// `POST /v1/snapshots`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// The volume.
    pub volume_id: String,
    /// Name.
    #[serde(default)]
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

/// Takes a snapshot of an available (or in-use) volume.
///
/// # Errors
/// 400 for an unknown volume or a bad name; 409 when the volume is busy or the backend refuses.
pub async fn create(services: &Services, req: SnapshotCreate) -> Result<Snapshot, OpError> {
    if req.name.chars().count() > 255 || req.name.chars().any(char::is_control) {
        return Err(OpError::InvalidInput(
            "name must have at most 255 characters and no control characters".into(),
        ));
    }
    let lock = super::volume_lock(services, &req.volume_id);
    let _guard = lock.lock().await;
    let volume = get_volume(services, &req.volume_id).await.map_err(|_| {
        OpError::InvalidInput(format!("volume_id {} is not a volume", req.volume_id))
    })?;
    if !matches!(volume.status.as_str(), "available" | "in-use") {
        return Err(OpError::Conflict(format!(
            "volume {} is {}; snapshots need an available or in-use volume",
            volume.id, volume.status
        )));
    }
    let now = crate::state::now_rfc3339();
    let mut snap = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: volume.id.clone(),
        name: req.name,
        size_gb: volume.size_gb,
        status: "creating".into(),
        error: None,
        created_at: now.clone(),
        updated_at: now,
    };
    services.store().put_snapshot(snap.clone()).await?;
    let sref = snapshot_ref(&snap, &volume);
    match driver::call(services, &volume.backend, move |p| async move {
        p.snapshot_create(&sref).await
    })
    .await
    {
        Ok(()) => {
            snap.status = "available".into();
            snap.updated_at = crate::state::now_rfc3339();
            services.store().put_snapshot(snap.clone()).await?;
            let _ = services
                .events()
                .publish(
                    "snapshot.created",
                    "snapshot",
                    &snap.id,
                    json!({ "volume_id": snap.volume_id }),
                )
                .await;
            Ok(snap)
        }
        Err(e) => {
            // Nothing half-created: the driver cleans up a failed snapshot; forget the record.
            services.store().delete_snapshot(&snap.id).await?;
            Err(e)
        }
    }
}

/// Deletes a snapshot.
///
/// # Errors
/// 404 for an unknown snapshot; 409 when the backend refuses (e.g. volumes depend on it).
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let snap = get(services, id).await?;
    let lock = super::volume_lock(services, &snap.volume_id);
    let _guard = lock.lock().await;
    let volume = get_volume(services, &snap.volume_id).await?;
    let sref = snapshot_ref(&snap, &volume);
    driver::call(services, &volume.backend, move |p| async move {
        p.snapshot_delete(&sref).await
    })
    .await?;
    services.store().delete_snapshot(id).await?;
    let _ = services
        .events()
        .publish(
            "snapshot.deleted",
            "snapshot",
            id,
            json!({ "volume_id": snap.volume_id }),
        )
        .await;
    Ok(())
}
