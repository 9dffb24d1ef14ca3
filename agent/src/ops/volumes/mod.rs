//! Volumes: the cinder-volume half. Volume types bind names to backends (volume driver
//! plugins); volumes are created empty, from an image, from a snapshot or as a clone, then
//! extended, snapshotted, attached to servers (hot-plug) and deleted.
//!
//! A create answers 202 `creating` and runs under the journal (`volume.create`): the driver
//! step is undone (the backend object deleted) when a later step fails or the agent crashed
//! in between, and the volume goes to `error` naming the cause. Refusals that need no backend
//! work (bad size, unknown type, a full backend, a volume in use) are answered at once and
//! change nothing.
//!
//! * `types` — volume types; `driver` — calls into the drivers and their error mapping;
//! * `snapshots` — snapshots; `attach` — attach/detach on servers and the disk XML;
//! * `recover` — volumes a crash left mid-way, put right at startup.

pub mod attach;
pub mod driver;
pub mod recover;
pub mod snapshots;
pub mod types;

use crate::ops::{OpError, Services};
use crate::state::{
    OperationHandler, OperationRecord, StepRecord, UndoFuture, Volume, VolumeSource,
};
use crate::volume::{CapacityStats, SnapshotRef, VolumeRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;

/// Largest volume, GiB.
pub const MAX_SIZE_GB: u64 = 16 * 1024;
/// Journal kind of a volume create.
pub const CREATE_KIND: &str = "volume.create";

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    /// Size, GiB (1–16384).
    #[schema(minimum = 1, maximum = 16_384)]
    pub size_gb: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Volume type name or id [default: the default type].
    #[serde(default)]
    pub volume_type: Option<String>,
    /// Fill it from this image.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Create it from this snapshot.
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// Clone this volume.
    #[serde(default)]
    pub source_volid: Option<String>,
}

/// A backend as `GET /v1/backends` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Backend {
    /// The driver's configured name (`volume_backend_name`).
    pub name: String,
    /// Capacity, when the driver answered.
    pub total_gb: Option<u64>,
    /// Free capacity.
    pub free_gb: Option<u64>,
    /// Capacity promised to volumes.
    pub provisioned_gb: Option<u64>,
    /// Thin provisioning.
    pub thin_provisioning: Option<bool>,
    /// Over-subscription ratio the backend accepts.
    pub max_over_subscription_ratio: Option<f64>,
    /// Why there are no figures.
    pub error: Option<String>,
}

/// The lock serialising backend work on one volume (snapshots rewrite the volume's info file on
/// NFS; extend, delete and snapshots must not interleave).
pub(crate) fn volume_lock(services: &Services, id: &str) -> Arc<tokio::sync::Mutex<()>> {
    services.server_lock(&format!("volume:{id}"))
}

/// The driver's view of a volume.
pub fn volume_ref(v: &Volume) -> VolumeRef {
    VolumeRef::new(&v.id, v.size_gb)
}

/// The driver's view of a snapshot.
pub fn snapshot_ref(s: &crate::state::Snapshot, v: &Volume) -> SnapshotRef {
    SnapshotRef::new(&s.id, VolumeRef::new(&v.id, s.size_gb))
}

/// A volume, or 404.
///
/// # Errors
/// [`OpError::NotFound`].
pub async fn get(services: &Services, id: &str) -> Result<Volume, OpError> {
    services
        .store()
        .get_volume(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
}

/// Every volume.
///
/// # Errors
/// [`OpError::Store`].
pub async fn list(services: &Services) -> Result<Vec<Volume>, OpError> {
    Ok(services.store().list_volumes(None).await?)
}

/// Every configured backend with its capacity.
///
/// # Errors
/// Never for a failing driver (its error is shown); [`OpError::Store`] otherwise.
pub async fn backends(services: &Services) -> Result<Vec<Backend>, OpError> {
    let mut out = Vec::new();
    for name in services.plugins().volume_driver_names() {
        let stats = driver::call(services, &name, |p| p.capacity_stats()).await;
        out.push(match stats {
            Ok(s) => Backend {
                name,
                total_gb: Some(s.total_gb),
                free_gb: Some(s.free_gb),
                provisioned_gb: Some(s.provisioned_gb),
                thin_provisioning: Some(s.thin_provisioning),
                max_over_subscription_ratio: Some(s.max_over_subscription_ratio),
                error: None,
            },
            Err(e) => Backend {
                name,
                total_gb: None,
                free_gb: None,
                provisioned_gb: None,
                thin_provisioning: None,
                max_over_subscription_ratio: None,
                error: Some(crate::api::error::chain(&e)),
            },
        });
    }
    Ok(out)
}

/// Refuses a volume the backend cannot hold (409 naming the backend and its free capacity).
fn check_capacity(backend: &str, stats: &CapacityStats, size_gb: u64) -> Result<(), OpError> {
    let fits = if stats.thin_provisioning {
        let limit = stats.total_gb as f64 * stats.max_over_subscription_ratio;
        (stats.provisioned_gb + size_gb) as f64 <= limit && stats.free_gb > 0
    } else {
        size_gb <= stats.free_gb
    };
    if fits {
        Ok(())
    } else {
        Err(OpError::Conflict(format!(
            "backend {backend} cannot hold {size_gb} GiB: {} GiB free of {} GiB ({} GiB provisioned{})",
            stats.free_gb,
            stats.total_gb,
            stats.provisioned_gb,
            if stats.thin_provisioning {
                format!(", thin, over-subscription ratio {}", stats.max_over_subscription_ratio)
            } else {
                String::new()
            }
        )))
    }
}

/// Validates a volume request, checks its source and the backend's capacity, records it
/// `creating` and builds it in the background.
///
/// # Errors
/// 400 for a bad size, type or source; 404 for an unknown source; 409 for a full backend or a
/// source in the wrong state. Nothing is created then.
pub async fn create(services: &Services, req: VolumeCreate) -> Result<Volume, OpError> {
    if req.size_gb <= 0 || req.size_gb as u64 > MAX_SIZE_GB {
        return Err(OpError::InvalidInput(format!(
            "size_gb must be 1 to {MAX_SIZE_GB}, not {}",
            req.size_gb
        )));
    }
    let size_gb = req.size_gb as u64;
    if req.name.chars().count() > 255 || req.name.chars().any(char::is_control) {
        return Err(OpError::InvalidInput(
            "name must have at most 255 characters and no control characters".into(),
        ));
    }
    let sources = [&req.image_id, &req.snapshot_id, &req.source_volid]
        .iter()
        .filter(|s| s.is_some())
        .count();
    if sources > 1 {
        return Err(OpError::InvalidInput(
            "give at most one of image_id, snapshot_id and source_volid".into(),
        ));
    }
    let vtype = types::resolve(services, req.volume_type.as_deref()).await?;
    let (source, image_id) = if let Some(image_id) = &req.image_id {
        let image = crate::ops::servers::build::active_image(services, image_id, "source")
            .await
            .map_err(|e| match e {
                OpError::NotFound { id, .. } => {
                    OpError::InvalidInput(format!("image_id {id} is not an image"))
                }
                other => other,
            })?;
        let need = image.virtual_size.unwrap_or(0);
        if need > size_gb << 30 {
            return Err(OpError::InvalidInput(format!(
                "image {image_id} needs {:.1} GiB; size_gb {size_gb} is too small",
                need as f64 / (1u64 << 30) as f64
            )));
        }
        (
            VolumeSource::Image {
                image_id: image_id.clone(),
            },
            Some(image_id.clone()),
        )
    } else if let Some(snapshot_id) = &req.snapshot_id {
        let snap = snapshots::get(services, snapshot_id).await.map_err(|_| {
            OpError::InvalidInput(format!("snapshot_id {snapshot_id} is not a snapshot"))
        })?;
        if snap.status != "available" {
            return Err(OpError::Conflict(format!(
                "snapshot {snapshot_id} is {}",
                snap.status
            )));
        }
        let origin = get(services, &snap.volume_id).await?;
        if origin.backend != vtype.backend {
            return Err(OpError::InvalidInput(format!(
                "snapshot {snapshot_id} is on backend {}, the volume type {} on {}",
                origin.backend, vtype.name, vtype.backend
            )));
        }
        if snap.size_gb > size_gb {
            return Err(OpError::InvalidInput(format!(
                "size_gb {size_gb} is smaller than snapshot {snapshot_id} ({} GiB)",
                snap.size_gb
            )));
        }
        (
            VolumeSource::Snapshot {
                snapshot_id: snapshot_id.clone(),
            },
            origin.image_id.clone(),
        )
    } else if let Some(volume_id) = &req.source_volid {
        let src = get(services, volume_id).await.map_err(|_| {
            OpError::InvalidInput(format!("source_volid {volume_id} is not a volume"))
        })?;
        if src.status != "available" {
            return Err(OpError::Conflict(format!(
                "volume {volume_id} is {}",
                src.status
            )));
        }
        if src.backend != vtype.backend {
            return Err(OpError::InvalidInput(format!(
                "volume {volume_id} is on backend {}, the volume type {} on {}",
                src.backend, vtype.name, vtype.backend
            )));
        }
        if src.size_gb > size_gb {
            return Err(OpError::InvalidInput(format!(
                "size_gb {size_gb} is smaller than volume {volume_id} ({} GiB)",
                src.size_gb
            )));
        }
        (
            VolumeSource::Volume {
                volume_id: volume_id.clone(),
            },
            src.image_id.clone(),
        )
    } else {
        (VolumeSource::Blank, None)
    };
    let backend = vtype.backend.clone();
    let stats = driver::call(services, &backend, |p| p.capacity_stats()).await?;
    check_capacity(&backend, &stats, size_gb)?;
    let now = crate::state::now_rfc3339();
    let volume = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        size_gb,
        volume_type: vtype.name.clone(),
        backend,
        status: "creating".into(),
        source,
        bootable: image_id.is_some(),
        image_id,
        attached_to: None,
        device: None,
        error: None,
        created_at: now.clone(),
        updated_at: now,
    };
    services.store().put_volume(volume.clone()).await?;
    let task_services = services.clone();
    let task_volume = volume.clone();
    tokio::spawn(async move {
        if let Err(e) = build(&task_services, task_volume).await {
            tracing::warn!(error = %crate::api::error::chain(&e), "volume create failed");
        }
    });
    Ok(volume)
}

/// Sets a volume's status (and error), keeping the rest of the record.
pub(crate) async fn set_status(
    services: &Services,
    id: &str,
    status: &str,
    error: Option<String>,
) -> Result<Option<Volume>, OpError> {
    let Some(mut v) = services.store().get_volume(id).await? else {
        return Ok(None);
    };
    v.status = status.into();
    v.error = error;
    v.updated_at = crate::state::now_rfc3339();
    services.store().put_volume(v.clone()).await?;
    let _ = services
        .events()
        .publish("volume.status", "volume", id, json!({ "status": status }))
        .await;
    Ok(Some(v))
}

async fn build(services: &Services, volume: Volume) -> Result<(), OpError> {
    let mut op = services
        .journal()
        .begin(
            CREATE_KIND,
            &volume.id,
            json!({ "backend": volume.backend }),
        )
        .await?;
    let vref = volume_ref(&volume);
    let backend = volume.backend.clone();
    let steps = async {
        op.step("record", json!({}), || async { Ok::<_, OpError>(()) })
            .await?;
        op.step(
            "driver_create",
            json!({ "backend": backend, "size_gb": vref.size_gb }),
            || async {
                match &volume.source {
                    VolumeSource::Blank | VolumeSource::Image { .. } => {
                        let v = vref.clone();
                        driver::call(services, &backend, move |p| p.volume_create(&v)).await
                    }
                    VolumeSource::Snapshot { snapshot_id } => {
                        let snap = snapshots::get(services, snapshot_id).await?;
                        let origin = get(services, &snap.volume_id).await?;
                        let (v, s) = (vref.clone(), snapshot_ref(&snap, &origin));
                        driver::call(services, &backend, move |p| p.volume_from_snapshot(&v, &s))
                            .await
                    }
                    VolumeSource::Volume { volume_id } => {
                        let src = volume_ref(&get(services, volume_id).await?);
                        let v = vref.clone();
                        driver::call(services, &backend, move |p| p.volume_clone(&v, &src)).await
                    }
                }
            },
        )
        .await?;
        if let VolumeSource::Image { image_id } = &volume.source {
            op.step("copy_image", json!({ "image_id": image_id }), || async {
                let image =
                    crate::ops::servers::build::active_image(services, image_id, "source").await?;
                let blob = crate::ops::servers::build::blob_of(services, &image)?;
                let format = image.stored_format.clone().unwrap_or_else(|| "raw".into());
                let v = vref.clone();
                let connection =
                    driver::call(services, &backend, move |p| p.connection_info(&v)).await?;
                Ok::<_, OpError>(crate::volume::copy_image_to(&connection, &blob, &format).await?)
            })
            .await?;
        }
        Ok::<_, OpError>(())
    }
    .await;
    match steps {
        Ok(()) => {
            op.complete().await?;
            set_status(services, &volume.id, "available", None).await?;
            Ok(())
        }
        Err(e) => {
            let error = crate::api::error::chain(&e);
            if let Err(undo) = op.roll_back(&error).await? {
                tracing::error!(volume_id = %volume.id, %undo, "rollback of a failed volume create is incomplete");
            }
            set_status(services, &volume.id, "error", Some(error)).await?;
            Err(e)
        }
    }
}

/// Undoes the steps of an interrupted or failed volume create.
pub(crate) struct CreateHandler {
    services: Services,
}

impl OperationHandler for CreateHandler {
    fn kind(&self) -> &'static str {
        CREATE_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            let id = op.resource_id.as_str();
            match step.name.as_str() {
                "driver_create" => {
                    let backend = step.data["backend"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let v = VolumeRef::new(id, step.data["size_gb"].as_u64().unwrap_or(0));
                    driver::call(services, &backend, move |p| p.volume_delete(&v))
                        .await
                        .map_err(|e| e.to_string())
                }
                "copy_image" => Ok(()),
                "record" => {
                    let error = op
                        .error
                        .clone()
                        .unwrap_or_else(|| "the create was interrupted by an agent restart".into());
                    set_status(services, id, "error", Some(error))
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("unknown step {other}")),
            }
        })
    }
}

/// Registers the journal handlers of volume operations. Call before `Journal::recover`.
pub fn register_handlers(services: &Services) {
    services.journal().register(Arc::new(CreateHandler {
        services: services.clone(),
    }));
}

/// `{"extend": {"new_size_gb": N}}` on an available volume.
///
/// # Errors
/// 400 unless N is larger than the size (and at most the maximum); 409 unless the volume is
/// available or when the backend cannot hold the growth.
pub async fn extend(services: &Services, id: &str, new_size_gb: i64) -> Result<Volume, OpError> {
    let lock = volume_lock(services, id);
    let _guard = lock.lock().await;
    let volume = get(services, id).await?;
    if new_size_gb <= volume.size_gb as i64 || new_size_gb as u64 > MAX_SIZE_GB {
        return Err(OpError::InvalidInput(format!(
            "new_size_gb must be larger than the current {} GiB and at most {MAX_SIZE_GB}, not {new_size_gb}",
            volume.size_gb
        )));
    }
    if volume.status != "available" {
        return Err(OpError::Conflict(format!(
            "volume {id} is {}; only available volumes can be extended",
            volume.status
        )));
    }
    let new_size = new_size_gb as u64;
    let stats = driver::call(services, &volume.backend, |p| p.capacity_stats()).await?;
    check_capacity(&volume.backend, &stats, new_size - volume.size_gb)?;
    set_status(services, id, "extending", None).await?;
    let v = volume_ref(&volume);
    match driver::call(services, &volume.backend, move |p| {
        p.volume_extend(&v, new_size)
    })
    .await
    {
        Ok(()) => {
            let mut v = get(services, id).await?;
            v.size_gb = new_size;
            v.status = "available".into();
            v.updated_at = crate::state::now_rfc3339();
            services.store().put_volume(v.clone()).await?;
            Ok(v)
        }
        Err(e) => {
            set_status(services, id, "available", None).await?;
            Err(e)
        }
    }
}

/// Deletes a volume that is not attached and has no snapshots.
///
/// # Errors
/// 404 for an unknown volume; 409 when attached, with snapshots, or busy.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let lock = volume_lock(services, id);
    let _guard = lock.lock().await;
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
    set_status(services, id, "deleting", None).await?;
    let v = volume_ref(&volume);
    if let Err(e) = driver::call(services, &volume.backend, move |p| p.volume_delete(&v)).await {
        set_status(
            services,
            id,
            "error_deleting",
            Some(crate::api::error::chain(&e)),
        )
        .await?;
        return Err(e);
    }
    services.store().delete_volume(id).await?;
    let _ = services
        .events()
        .publish("volume.deleted", "volume", id, json!({}))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(total: u64, free: u64, provisioned: u64, thin: bool, ratio: f64) -> CapacityStats {
        CapacityStats {
            backend_name: "lvm".into(),
            total_gb: total,
            free_gb: free,
            provisioned_gb: provisioned,
            thin_provisioning: thin,
            max_over_subscription_ratio: ratio,
        }
    }

    #[test]
    fn thick_backends_need_free_space() {
        assert!(check_capacity("lvm", &stats(10, 4, 6, false, 1.0), 4).is_ok());
        let err = check_capacity("lvm", &stats(10, 4, 6, false, 1.0), 5).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OpError::Conflict(_)));
        assert!(
            text.contains("backend lvm") && text.contains("4 GiB free"),
            "{text}"
        );
    }

    #[test]
    fn thin_backends_allow_over_subscription() {
        assert!(check_capacity("nfs", &stats(10, 8, 15, true, 2.0), 5).is_ok());
        assert!(check_capacity("nfs", &stats(10, 8, 16, true, 2.0), 5).is_err());
        assert!(check_capacity("nfs", &stats(10, 0, 1, true, 20.0), 1).is_err());
    }
}
