//! Volumes that travel with a migrating server.
//!
//! Only volumes on storage both nodes reach (an NFS share: QEMU's own NFS client, or a file
//! on a mounted share) can follow a live migration: the destination's driver of the same
//! backend must find the volume on its shares, and libvirt leaves such disks out of the copy
//! (`cache=none`, not in `migrate_disks`). The destination *adopts* the volume's record and
//! its snapshots' (same ids), the source forgets them once the guest runs there; the data
//! never moves. A block device of this node (LVM) is refused with the reason.

use super::wire::{IncomingRequest, VolumeOffer};
use crate::ops::servers::ServerSpec;
use crate::ops::volumes::attach::{AttachedVolume, VolumeDisk};
use crate::ops::volumes::{driver, volume_ref};
use crate::ops::{OpError, Services};

/// Most snapshots of one volume a peer may hand over.
const MAX_SNAPSHOTS: usize = 10_000;

/// The boot volume, then the data volumes, of a server.
fn attached(spec: &ServerSpec) -> impl Iterator<Item = &AttachedVolume> {
    spec.boot_volume.iter().chain(spec.volumes.iter())
}

/// Whether a volume disk is reached the same way from every node (a share).
fn shared(disk: &VolumeDisk) -> bool {
    matches!(disk, VolumeDisk::Nfs { .. } | VolumeDisk::File { .. })
}

/// Refuses a server with a volume local to this node.
///
/// # Errors
/// [`OpError::Conflict`] naming the volume.
pub(crate) fn check_movable(spec: &ServerSpec) -> Result<(), OpError> {
    match attached(spec).find(|v| !shared(&v.disk)) {
        Some(local) => Err(OpError::Conflict(format!(
            "volume {} ({}) is a block device of this node; only volumes on shared storage \
             (NFS) follow a live migration: detach it first",
            local.volume_id, local.device
        ))),
        None => Ok(()),
    }
}

/// The records of the server's volumes and their snapshots, for the destination to adopt.
///
/// # Errors
/// [`OpError::Conflict`] when a volume's record is missing or not in use by the server.
pub(crate) async fn offers(
    services: &Services,
    server_id: &str,
    spec: &ServerSpec,
) -> Result<Vec<VolumeOffer>, OpError> {
    let mut offers = Vec::new();
    for v in attached(spec) {
        let volume = services
            .store()
            .get_volume(&v.volume_id)
            .await?
            .filter(|r| r.attached_to.as_deref() == Some(server_id) && r.status == "in-use")
            .ok_or_else(|| {
                OpError::Conflict(format!(
                    "volume {} of the server is not in use by it here",
                    v.volume_id
                ))
            })?;
        let snapshots = services.store().list_snapshots(Some(&v.volume_id)).await?;
        offers.push(VolumeOffer { volume, snapshots });
    }
    Ok(offers)
}

/// Checks that the offered volumes are exactly the server's, on shared storage, in use by it.
///
/// # Errors
/// [`OpError::InvalidInput`] or [`OpError::Conflict`] naming what is wrong.
pub(crate) fn check_offers(req: &IncomingRequest) -> Result<(), OpError> {
    check_movable(&req.spec)?;
    let bad = |m: String| Err(OpError::InvalidInput(m));
    let wanted: Vec<&AttachedVolume> = attached(&req.spec).collect();
    if wanted.len() != req.volumes.len()
        || wanted
            .iter()
            .zip(&req.volumes)
            .any(|(a, o)| a.volume_id != o.volume.id)
    {
        return bad("the volumes offered are not the server's".into());
    }
    for (a, offer) in wanted.iter().zip(&req.volumes) {
        let v = &offer.volume;
        if uuid::Uuid::parse_str(&v.id).is_err() {
            return bad(format!("volume id {:?} is not a UUID", v.id));
        }
        if v.attached_to.as_deref() != Some(req.server_id.as_str())
            || v.device.as_deref() != Some(a.device.as_str())
            || v.status != "in-use"
        {
            return bad(format!("volume {} is not in use by the server", v.id));
        }
        if v.size_gb == 0 || v.size_gb > crate::ops::volumes::MAX_SIZE_GB {
            return bad(format!("volume {} has a size of {} GiB", v.id, v.size_gb));
        }
        if offer.snapshots.len() > MAX_SNAPSHOTS {
            return bad(format!("volume {} has too many snapshots", v.id));
        }
        if !plain_text(&v.name) || !plain_text(&v.volume_type) || v.volume_type.is_empty() {
            return bad(format!("volume {} has an unusable name or type", v.id));
        }
        if v.image_id
            .as_deref()
            .is_some_and(|i| uuid::Uuid::parse_str(i).is_err())
        {
            return bad(format!("volume {} names no image by UUID", v.id));
        }
        for s in &offer.snapshots {
            if s.volume_id != v.id || uuid::Uuid::parse_str(&s.id).is_err() {
                return bad(format!("snapshot {:?} is not volume {}'s", s.id, v.id));
            }
            if !matches!(s.status.as_str(), "available" | "error")
                || s.size_gb == 0
                || s.size_gb > v.size_gb
                || !plain_text(&s.name)
            {
                return bad(format!(
                    "snapshot {} is not a settled snapshot of volume {}",
                    s.id, v.id
                ));
            }
        }
    }
    let mut ids: Vec<&str> = req.volumes.iter().map(|o| o.volume.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return bad("a volume is offered twice".into());
    }
    Ok(())
}

/// At most 255 characters, no control characters (as the API takes names).
fn plain_text(text: &str) -> bool {
    text.chars().count() <= 255 && !text.chars().any(char::is_control)
}

/// Adopts the offered volumes: this node's driver of the same backend must find each on its
/// shares; its record and its snapshots' are stored here (in use by the server), and the
/// spec reaches each disk as this node does.
///
/// # Errors
/// [`OpError::Conflict`] when this node lacks the backend, its driver cannot find the volume,
/// or an id is taken here by something else.
pub(crate) async fn adopt(
    services: &Services,
    req: &IncomingRequest,
    spec: &mut ServerSpec,
) -> Result<(), OpError> {
    let store = services.store();
    for offer in &req.volumes {
        let v = &offer.volume;
        if driver::plugin(services, &v.backend).is_err() {
            return Err(OpError::Conflict(format!(
                "volume {} is on backend {:?}, which this node does not have",
                v.id, v.backend
            )));
        }
        if let Some(here) = store.get_volume(&v.id).await? {
            if here.attached_to.as_deref() != Some(req.server_id.as_str()) {
                return Err(OpError::Conflict(format!(
                    "volume {} already exists on this node",
                    v.id
                )));
            }
        }
        for s in &offer.snapshots {
            if let Some(here) = store.get_snapshot(&s.id).await? {
                if here.volume_id != v.id {
                    return Err(OpError::Conflict(format!(
                        "snapshot {} already exists on this node",
                        s.id
                    )));
                }
            }
        }
        let vref = volume_ref(v);
        let connection = driver::call(services, &v.backend, move |p| async move {
            p.connection_info(&vref).await
        })
        .await
        .map_err(|e| {
            OpError::Conflict(format!(
                "backend {} of this node cannot reach volume {}: {}",
                v.backend,
                v.id,
                crate::api::error::chain(&e)
            ))
        })?;
        let disk = VolumeDisk::from_connection(&connection);
        if !shared(&disk) {
            return Err(OpError::Conflict(format!(
                "backend {} of this node reaches volume {} as a local block device, not on a \
                 share",
                v.backend, v.id
            )));
        }
        for a in spec.boot_volume.iter_mut().chain(spec.volumes.iter_mut()) {
            if a.volume_id == v.id {
                a.disk = disk.clone();
            }
        }
        let mut record = v.clone();
        record.updated_at = crate::state::now_rfc3339();
        store.put_volume(record).await?;
        for s in &offer.snapshots {
            store.put_snapshot(s.clone()).await?;
        }
    }
    Ok(())
}

/// Forgets the records of volumes (and their snapshots) that are attached to `server_id` —
/// never the data, which stays on the share for the node that has the server.
///
/// # Errors
/// [`crate::state::StoreError`] when the store cannot be written.
pub(crate) async fn forget(
    services: &Services,
    server_id: &str,
    volume_ids: &[String],
) -> Result<(), crate::state::StoreError> {
    let store = services.store();
    for id in volume_ids {
        let Some(volume) = store.get_volume(id).await? else {
            continue;
        };
        if volume.attached_to.as_deref() != Some(server_id) {
            continue;
        }
        for s in store.list_snapshots(Some(id)).await? {
            store.delete_snapshot(&s.id).await?;
        }
        store.delete_volume(id).await?;
    }
    Ok(())
}

/// The ids of the server's volumes.
pub(crate) fn ids(spec: &ServerSpec) -> Vec<String> {
    attached(spec).map(|v| v.volume_id.clone()).collect()
}
