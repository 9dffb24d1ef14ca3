//! The plain types of the volume service: what a driver is asked to act on and what it
//! answers (the Rust side of `hyperlet:volume/types`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A volume to create or act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeRef {
    /// The volume's id (a UUID).
    pub id: String,
    /// The backend object's name, `volume-<id>` (cinder's `volume_name_template`).
    pub name: String,
    /// Size, GiB.
    pub size_gb: u64,
}

impl VolumeRef {
    /// A volume named by cinder's template, `volume-<id>`.
    pub fn new(id: impl Into<String>, size_gb: u64) -> Self {
        let id = id.into();
        Self {
            name: format!("volume-{id}"),
            id,
            size_gb,
        }
    }
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotRef {
    /// The snapshot's id (a UUID).
    pub id: String,
    /// The backend object's name, `snapshot-<id>`.
    pub name: String,
    /// The volume it was taken from.
    pub volume: VolumeRef,
}

impl SnapshotRef {
    /// A snapshot of `volume` named by cinder's template, `snapshot-<id>`.
    pub fn new(id: impl Into<String>, volume: VolumeRef) -> Self {
        let id = id.into();
        Self {
            name: format!("snapshot-{id}"),
            id,
            volume,
        }
    }
}

/// Formats of a file-backed volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw bytes (a sparse file).
    Raw,
    /// QEMU copy-on-write v2.
    Qcow2,
}

impl DiskFormat {
    /// The name `qemu-img` and libvirt use (`raw`, `qcow2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a hypervisor on this node reaches a volume (cinder's `initialize_connection`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VolumeConnection {
    /// A block device, e.g. `/dev/cinder-volumes/volume-<id>`.
    Block {
        /// The device path.
        path: String,
    },
    /// A file on an NFS share, attached through the kernel mount or QEMU's libnfs driver
    /// (libvirt `<disk type='network'><source protocol='nfs' name='{path}'><host name='{host}'/>`).
    Nfs {
        /// The NFS server.
        host: String,
        /// The file's path as exported by the server, e.g. `/srv/nfs/abc/volume-<id>`.
        path: String,
        /// The file's format.
        format: DiskFormat,
    },
    /// A local file.
    File {
        /// Absolute path on the node.
        path: String,
        /// The file's format.
        format: DiskFormat,
    },
}

impl std::fmt::Display for VolumeConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Block { path } => write!(f, "block device {path:?}"),
            Self::Nfs { host, path, format } => write!(f, "{format} NFS file {host}:{path:?}"),
            Self::File { path, format } => write!(f, "{format} file {path:?}"),
        }
    }
}

/// Capacity of a backend, for the scheduler (cinder's `get_volume_stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapacityStats {
    /// The backend's name (`volume_backend_name`).
    pub backend_name: String,
    /// Total capacity, GiB.
    pub total_gb: u64,
    /// Free capacity, GiB.
    pub free_gb: u64,
    /// Capacity promised to volumes, GiB (more than `total_gb` when thin-provisioned).
    pub provisioned_gb: u64,
    /// The backend over-commits (thin provisioning).
    pub thin_provisioning: bool,
    /// Ratio of provisioned to total capacity the backend accepts.
    pub max_over_subscription_ratio: f64,
}
