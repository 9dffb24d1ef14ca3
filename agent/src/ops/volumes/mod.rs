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
//! Extend, delete, snapshots, attach and detach answer 202 too, with the transitional status,
//! and run detached under the journal (`volume.extend`, `volume.delete`, `snapshot.create`,
//! `snapshot.delete`, `volume.attach`, `volume.detach`).
//!
//! * `types` — volume types; `driver` — calls into the drivers and their error mapping;
//! * `extend`, `delete` — the journaled extend and delete;
//! * `snapshots` — snapshots; `attach` — attach/detach on servers and the disk XML;
//!   `plug` — their journaled hot-plug and the settling on what libvirt has;
//! * `recover` — volumes a crash left mid-way, put right at startup.

pub mod attach;
mod delete;
pub mod driver;
mod extend;
pub(crate) mod plug;
pub mod recover;
pub mod snapshots;
pub mod types;

pub use delete::{delete, DELETE_KIND};
pub use extend::{extend, EXTEND_KIND};

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
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// Size, GiB (1–16384).
    #[schema(minimum = 1, maximum = 16_384)]
    pub size_gb: i64,
    /// Name (at most 255 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
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
        let stats = driver::call(
            services,
            &name,
            move |p| async move { p.capacity_stats().await },
        )
        .await;
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
///
/// The driver's figures are untrusted: a sum that overflows does not fit, and the thin limit
/// (total × ratio, both checked finite by the plugin host) saturates at `f64::MAX`.
fn check_capacity(backend: &str, stats: &CapacityStats, size_gb: u64) -> Result<(), OpError> {
    let fits = if stats.thin_provisioning {
        let limit = (stats.total_gb as f64 * stats.max_over_subscription_ratio).min(f64::MAX);
        match stats.provisioned_gb.checked_add(size_gb) {
            Some(wanted) => wanted as f64 <= limit && stats.free_gb > 0,
            None => false,
        }
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
                OpError::NotFound { id, .. } => OpError::unknown("image_id", &id, "image"),
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
        let snap = snapshots::get(services, snapshot_id)
            .await
            .map_err(|_| OpError::unknown("snapshot_id", snapshot_id, "snapshot"))?;
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
        let src = get(services, volume_id)
            .await
            .map_err(|_| OpError::unknown("source_volid", volume_id, "volume"))?;
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
    let stats = driver::call(services, &backend, move |p| async move {
        p.capacity_stats().await
    })
    .await?;
    check_capacity(&backend, &stats, size_gb)?;
    let now = crate::state::now_rfc3339();
    let volume = Volume {
        id: req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
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
                        driver::call(services, &backend, move |p| async move {
                            p.volume_create(&v).await
                        })
                        .await
                    }
                    VolumeSource::Snapshot { snapshot_id } => {
                        let snap = snapshots::get(services, snapshot_id).await?;
                        let origin = get(services, &snap.volume_id).await?;
                        let (v, s) = (vref.clone(), snapshot_ref(&snap, &origin));
                        driver::call(services, &backend, move |p| async move {
                            p.volume_from_snapshot(&v, &s).await
                        })
                        .await
                    }
                    VolumeSource::Volume { volume_id } => {
                        let src = volume_ref(&get(services, volume_id).await?);
                        let v = vref.clone();
                        driver::call(services, &backend, move |p| async move {
                            p.volume_clone(&v, &src).await
                        })
                        .await
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
                let connection = driver::call(services, &backend, move |p| async move {
                    p.connection_info(&v).await
                })
                .await?;
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
                    driver::call(services, &backend, move |p| async move {
                        p.volume_delete(&v).await
                    })
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
    services.journal().register(Arc::new(extend::ExtendHandler {
        services: services.clone(),
    }));
    services.journal().register(Arc::new(delete::DeleteHandler {
        services: services.clone(),
    }));
    snapshots::register(services);
    plug::register(services);
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

    #[test]
    fn extreme_figures_give_an_answer_not_a_panic() {
        let max = u64::MAX;
        // provisioned + size overflows: it does not fit (409), no panic.
        let err = check_capacity("rogue", &stats(max, max, max, true, f64::MAX), 1).unwrap_err();
        assert!(matches!(err, OpError::Conflict(_)), "{err}");
        assert!(err.to_string().contains(&max.to_string()), "{err}");
        // total × ratio beyond f64: saturates, a small volume fits.
        assert!(check_capacity("rogue", &stats(max, 1, 0, true, f64::MAX), 1).is_ok());
        assert!(check_capacity("rogue", &stats(max, max, 0, false, 1.0), max).is_ok());
    }
}
