//! Volumes on servers: hot attach and detach (`/v1/servers/{id}/volumes`), and the disk a
//! volume becomes in the domain XML. The checks run in the request; the hot-plug runs in the
//! background under the journal (`plug.rs`).

use super::plug::{self, Held, Plug};
use super::{driver, get as get_volume, volume_ref};
use crate::compute::{Disk, DiskSource};
use crate::ops::servers::{ServerSpec, ServerStatus};
use crate::ops::{OpError, Services};
use crate::state::Volume;
use crate::volume::{DiskFormat, VolumeConnection};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// How the hypervisor reaches a volume, as kept in a server's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VolumeDisk {
    /// A block device on this node.
    Block {
        /// Device path.
        path: String,
    },
    /// A file on an NFS share (QEMU's userspace NFS client).
    Nfs {
        /// Server.
        host: String,
        /// Exported path of the file.
        path: String,
        /// raw or qcow2.
        format: String,
    },
    /// A file on this node.
    File {
        /// Path.
        path: String,
        /// raw or qcow2.
        format: String,
    },
}

fn format_name(f: DiskFormat) -> String {
    match f {
        DiskFormat::Raw => "raw".into(),
        DiskFormat::Qcow2 => "qcow2".into(),
    }
}

impl VolumeDisk {
    /// From a driver's connection info.
    pub fn from_connection(c: &VolumeConnection) -> Self {
        match c {
            VolumeConnection::Block { path } => Self::Block { path: path.clone() },
            VolumeConnection::Nfs { host, path, format } => Self::Nfs {
                host: host.clone(),
                path: path.clone(),
                format: format_name(*format),
            },
            VolumeConnection::File { path, format } => Self::File {
                path: path.clone(),
                format: format_name(*format),
            },
        }
    }

    /// The disk in the domain XML.
    pub fn disk(&self, target: &str, serial: &str) -> Disk {
        let source = match self {
            Self::Block { path } => DiskSource::Block {
                dev: PathBuf::from(path),
            },
            Self::Nfs { host, path, format } => DiskSource::Nfs {
                host: host.clone(),
                path: path.clone(),
                format: format.clone(),
            },
            Self::File { path, format } => DiskSource::ShareFile {
                path: PathBuf::from(path),
                format: format.clone(),
            },
        };
        Disk {
            target: target.to_string(),
            source,
            serial: Some(serial.chars().take(20).collect()),
            read_only: false,
        }
    }
}

/// A volume attached to a server, as kept in its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachedVolume {
    /// The volume.
    pub volume_id: String,
    /// Guest device (`vdb`, …).
    pub device: String,
    /// How the hypervisor reaches it.
    pub disk: VolumeDisk,
}

/// Guest devices the server's own disks use (root, ephemeral, swap).
pub fn own_devices(spec: &ServerSpec) -> Vec<String> {
    let mut used = vec!["vda".to_string()];
    let mut next = b'b';
    if spec.flavor.ephemeral_gb > 0 {
        used.push(format!("vd{}", next as char));
        next += 1;
    }
    if spec.flavor.swap_mb > 0 {
        used.push(format!("vd{}", next as char));
    }
    used
}

fn free_device(spec: &ServerSpec) -> Result<String, OpError> {
    let mut used = own_devices(spec);
    used.extend(spec.volumes.iter().map(|v| v.device.clone()));
    (b'b'..=b'z')
        .map(|c| format!("vd{}", c as char))
        .find(|d| !used.contains(d))
        .ok_or_else(|| OpError::Conflict("no free disk device (vdb–vdz all used)".into()))
}

fn check_status(status: ServerStatus) -> Result<(), OpError> {
    match status {
        ServerStatus::Active | ServerStatus::Shutoff | ServerStatus::Paused => Ok(()),
        other => Err(OpError::Conflict(format!(
            "volumes can be attached to and detached from ACTIVE, PAUSED or SHUTOFF servers, not {}",
            other.as_str()
        ))),
    }
}

/// Attaches an available volume to a server: answers with the volume `attaching` (its device
/// reserved) and hot-plugs it in the background (journaled as `volume.attach`); the volume
/// becomes `in-use`, or `available` again with the error.
///
/// # Errors
/// 404 for an unknown server; 400 for an unknown volume; 409 when the volume is not available
/// or the server cannot change now. Nothing changes then.
pub async fn attach(
    services: &Services,
    server_id: &str,
    volume_id: &str,
) -> Result<Volume, OpError> {
    // The server's lock, then the volume's: no other server attaches it, and no snapshot,
    // extend or delete runs on it, until the background work is over.
    let held = Held::take(services, server_id, volume_id).await;
    let loaded = crate::ops::servers::load(services, server_id).await?;
    check_status(loaded.status)?;
    let volume = get_volume(services, volume_id)
        .await
        .map_err(|_| OpError::unknown("volume_id", volume_id, "volume"))?;
    if volume.status != "available" {
        return Err(OpError::Conflict(format!(
            "volume {volume_id} is {}{}",
            volume.status,
            volume
                .attached_to
                .as_deref()
                .map(|s| format!(" (attached to server {s})"))
                .unwrap_or_default()
        )));
    }
    let plug = Plug {
        server_id: server_id.to_string(),
        domain: loaded.spec.domain_name.clone(),
        volume_id: volume_id.to_string(),
        device: free_device(&loaded.spec)?,
    };
    plug::start_attach(services, plug, volume, held).await
}

/// Detaches a volume from a server: answers with the volume `detaching` and hot-unplugs it in
/// the background (journaled as `volume.detach`); the volume becomes `available` once the
/// guest released the disk, or `in-use` again with the error.
///
/// # Errors
/// 404 for an unknown server or a volume not attached to it; 409 when the server cannot
/// change now or the volume is its root disk. Nothing changes then.
pub async fn detach(
    services: &Services,
    server_id: &str,
    volume_id: &str,
) -> Result<Volume, OpError> {
    let held = Held::take(services, server_id, volume_id).await;
    let loaded = crate::ops::servers::load(services, server_id).await?;
    check_status(loaded.status)?;
    if loaded
        .spec
        .boot_volume
        .as_ref()
        .is_some_and(|b| b.volume_id == volume_id)
    {
        return Err(OpError::Conflict(format!(
            "volume {volume_id} is the root disk of server {server_id}; it stays attached until the server is deleted"
        )));
    }
    let Some(attached) = loaded
        .spec
        .volumes
        .iter()
        .find(|v| v.volume_id == volume_id)
        .cloned()
    else {
        return Err(OpError::NotFound {
            kind: "attached volume",
            id: volume_id.to_string(),
        });
    };
    let volume = get_volume(services, volume_id).await?;
    if volume.status != "in-use" {
        return Err(OpError::Conflict(format!(
            "volume {volume_id} is {}; only in-use volumes can be detached",
            volume.status
        )));
    }
    let plug = Plug {
        server_id: server_id.to_string(),
        domain: loaded.spec.domain_name.clone(),
        volume_id: volume_id.to_string(),
        device: attached.device.clone(),
    };
    plug::start_detach(services, plug, attached.disk, held).await
}

/// Marks a volume available and unattached (detach, or its server was deleted). Missing
/// volumes are fine.
///
/// # Errors
/// [`OpError::Store`].
pub async fn release(services: &Services, volume_id: &str) -> Result<(), OpError> {
    if let Some(mut volume) = services.store().get_volume(volume_id).await? {
        volume.status = "available".into();
        volume.attached_to = None;
        volume.device = None;
        volume.error = None;
        volume.updated_at = crate::state::now_rfc3339();
        services.store().put_volume(volume).await?;
    }
    Ok(())
}

/// The image a bootable volume was made from (its kernel, ramdisk and command line are the
/// server's).
///
/// # Errors
/// 400 for an unknown volume or one not made from an image; 409 when it is not available.
pub async fn boot_image(services: &Services, volume_id: &str) -> Result<String, OpError> {
    let volume = get_volume(services, volume_id)
        .await
        .map_err(|_| OpError::unknown("boot_volume_id", volume_id, "volume"))?;
    if volume.status != "available" {
        return Err(OpError::Conflict(format!(
            "volume {volume_id} is {}; a server boots only from an available volume",
            volume.status
        )));
    }
    volume
        .image_id
        .clone()
        .filter(|_| volume.bootable)
        .ok_or_else(|| {
            OpError::InvalidInput(format!(
                "volume {volume_id} is not bootable: create it from an image (image_id)"
            ))
        })
}

/// Marks a bootable volume in use by a new server as its `vda` and returns how to reach it.
///
/// # Errors
/// 409 when it is no longer available; the driver's errors.
pub async fn reserve_boot(
    services: &Services,
    server_id: &str,
    volume_id: &str,
) -> Result<AttachedVolume, OpError> {
    let lock = super::volume_lock(services, volume_id);
    let _guard = lock.lock().await;
    let volume = get_volume(services, volume_id).await?;
    if volume.status != "available" {
        return Err(OpError::Conflict(format!(
            "volume {volume_id} is {}",
            volume.status
        )));
    }
    let v = volume_ref(&volume);
    let connection = driver::call(services, &volume.backend, move |p| async move {
        p.connection_info(&v).await
    })
    .await?;
    let mut volume = volume;
    volume.status = "in-use".into();
    volume.attached_to = Some(server_id.to_string());
    volume.device = Some("vda".into());
    volume.updated_at = crate::state::now_rfc3339();
    services.store().put_volume(volume).await?;
    Ok(AttachedVolume {
        volume_id: volume_id.to_string(),
        device: "vda".into(),
        disk: VolumeDisk::from_connection(&connection),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_become_disks() {
        let nfs = VolumeDisk::from_connection(&VolumeConnection::Nfs {
            host: "127.0.0.1".into(),
            path: "/srv/nfs/a/volume-1".into(),
            format: DiskFormat::Qcow2,
        });
        let xml = nfs
            .disk("vdb", "4e1b0a9c-0000-4000-8000-000000000001")
            .to_xml();
        assert!(xml.contains("type=\"network\""), "{xml}");
        assert!(xml.contains("protocol=\"nfs\""), "{xml}");
        assert!(xml.contains("type=\"qcow2\""), "{xml}");
        assert!(!xml.contains("io=\"native\""), "{xml}");
        assert!(
            xml.contains("<serial>4e1b0a9c-0000-4000-8</serial>"),
            "{xml}"
        );
        let block = VolumeDisk::from_connection(&VolumeConnection::Block {
            path: "/dev/cinder-volumes/volume-1".into(),
        });
        let xml = block.disk("vdc", "x").to_xml();
        assert!(xml.contains("type=\"block\""), "{xml}");
        assert!(
            xml.contains("dev=\"/dev/cinder-volumes/volume-1\""),
            "{xml}"
        );
        assert!(xml.contains("dev=\"vdc\""), "{xml}");
    }
}
