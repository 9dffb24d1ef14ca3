//! Volumes: the cinder-volume half of the agent.
//!
//! Volume drivers (LVM, NFS, third-party arrays) are sandboxed WebAssembly components of the
//! `hyperlet:volume` world (`wit/volume/volume.wit`), loaded by the plugin registry as
//! `kind = "volume-driver"` (see [`crate::plugin`]). A driver decides *what* to do; every
//! privileged step goes through a host interface the agent grants with parameters, and the host
//! validates each argument against that grant before running anything.
//!
//! This module holds the host side of those interfaces, natively and independent of the plugin
//! runtime, so it is usable and testable on its own:
//!
//! * [`Lvm`] — the `lvm` interface: logical volumes on the volume groups a driver is granted.
//!   The LVM tools run as argv (never a shell) with a deadline and machine-readable output.
//! * [`Files`] — the `files` interface: files on the granted NFS shares, through a kernel
//!   mount (`access = "mount"`) or the agent's own NFSv3 client (`access = "libnfs"`, no
//!   mount; [`nfs`]).
//! * [`QemuImg`] — the `qemu-img` interface: images on those shares (`nfs://` URLs for QEMU's
//!   libnfs driver, or paths under the mount), explicit formats, backing chains kept inside
//!   the share.
//! * [`copy_image_to`] — writes an image of the image cache into a volume (create a volume
//!   from an image).
//! * [`model`] — the plain types the volume service and the drivers exchange ([`VolumeRef`],
//!   [`SnapshotRef`], [`VolumeConnection`], [`CapacityStats`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::volume::VolumeError> {
//! use hyperlet::volume::Lvm;
//! use std::time::Duration;
//!
//! let lvm = Lvm::new(["cinder-volumes"])?.with_deadline(Duration::from_secs(30));
//! lvm.lv_create("cinder-volumes", "volume-4e1b0a9c-0000-4000-8000-000000000001", 10, None)
//!     .await?;
//! lvm.lv_extend("cinder-volumes", "volume-4e1b0a9c-0000-4000-8000-000000000001", 20).await?;
//! let free = lvm.vg_info("cinder-volumes").await?.free_bytes;
//! // Refused before any command runs: the group is not granted.
//! assert!(lvm.vg_info("vg-root").await.is_err());
//! # let _ = free; Ok(()) }
//! ```

use std::io;
use std::path::PathBuf;

mod answer;
mod command;
mod copy;
mod files;
mod lvm;
pub mod model;
mod mount;
mod names;
pub mod nfs;
mod owner;
mod qemu_img;
mod share_dir;
mod workers;

pub use answer::check_connection;
pub use copy::{copy_image_to, copy_image_to_with_deadline, COPY_DEADLINE};
pub use files::{FileStat, Files, ShareStats, ToolFile};
pub use lvm::{LvInfo, Lvm, ThinPoolInfo, VgInfo};
pub use model::{CapacityStats, DiskFormat, SnapshotRef, VolumeConnection, VolumeRef};
pub use names::{check_file_name, Share};
pub use qemu_img::{ImageInfo, QemuImg};

/// Errors of the volume host interfaces. [`VolumeError::code`] is the plugin-error code a
/// driver sees.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume group is not in the driver's grant; nothing was run.
    #[error("VG {vg} is not granted to this driver (granted: {granted})")]
    NotGranted {
        /// The volume group asked for.
        vg: String,
        /// The granted groups, comma-separated (`none` when empty).
        granted: String,
    },
    /// The share is not in the driver's grant; nothing was run.
    #[error("Share {share} is not granted to this driver (granted: {granted})")]
    ShareNotGranted {
        /// The share asked for.
        share: String,
        /// The granted shares, comma-separated.
        granted: String,
    },
    /// A name would reach outside what is granted (`/`, `..`); nothing was run.
    #[error("Invalid {what} name {name:?}: it would leave {within}")]
    Escape {
        /// "file", "logical volume", …
        what: &'static str,
        /// The name as given.
        name: String,
        /// What it would leave.
        within: &'static str,
    },
    /// A volume group, logical volume, thin pool or file name was refused; nothing was run.
    #[error("Invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "volume group", "logical volume", "thin pool" or "file".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A share was refused (grant parameters or a driver's argument).
    #[error("Invalid share {share:?}: {reason}")]
    InvalidShare {
        /// The share as given.
        share: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A size was refused; nothing was run.
    #[error("Invalid size {size_gb} GiB: {reason}")]
    InvalidSize {
        /// The size as given.
        size_gb: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An argument was refused; nothing was run.
    #[error("Invalid request: {0}")]
    Invalid(String),
    /// An extend asked for less than the current size.
    #[error("Refusing to shrink {vg}/{name} from {current_bytes} bytes to {requested_gb} GiB")]
    Shrink {
        /// The volume group.
        vg: String,
        /// The logical volume.
        name: String,
        /// The LV's size now, bytes.
        current_bytes: u64,
        /// The size asked for, GiB.
        requested_gb: u64,
    },
    /// A resize asked for less than the image's current virtual size.
    #[error("Refusing to shrink image {name} from {current_bytes} bytes to {requested_gb} GiB")]
    ShrinkImage {
        /// The image's name in its share.
        name: String,
        /// Its virtual size now, bytes.
        current_bytes: u64,
        /// The size asked for, GiB.
        requested_gb: u64,
    },
    /// The logical volume does not exist.
    #[error("Logical volume {vg}/{name} does not exist")]
    LvNotFound {
        /// The volume group.
        vg: String,
        /// The logical volume.
        name: String,
    },
    /// The logical volume is the origin of snapshots and cannot be removed before them.
    #[error("Logical volume {vg}/{name} has snapshots ({snapshots}); remove them first")]
    InUse {
        /// The volume group.
        vg: String,
        /// The logical volume.
        name: String,
        /// Its snapshots, comma-separated.
        snapshots: String,
    },
    /// The file does not exist in the share.
    #[error("File {name} does not exist on share {share}")]
    FileNotFound {
        /// The share.
        share: String,
        /// The file.
        name: String,
    },
    /// The file already exists in the share.
    #[error("File {name} already exists on share {share}")]
    FileExists {
        /// The share.
        share: String,
        /// The file.
        name: String,
    },
    /// An image's backing chain or data file leaves its share; nothing was run on it.
    #[error("Image {name} on share {share} refers to {reference:?}, which is outside the share")]
    OutsideShare {
        /// The share.
        share: String,
        /// The image.
        name: String,
        /// The backing or data file it names.
        reference: String,
    },
    /// A driver answered a connection to something outside its grants (another volume group,
    /// a device that is not the LV it names, a file outside its shares or not its volume's);
    /// nothing was attached or written.
    #[error("Refused connection {answer}: {reason}")]
    RefusedConnection {
        /// The connection as the driver answered it.
        answer: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file of the share is not a plain file the host may use (a symbolic link, a hard link,
    /// a directory, a device); nothing was done to it or to what it points at.
    #[error(
        "File {name} on share {share} is {what}; only regular files with a single link are used"
    )]
    NotPlainFile {
        /// The share.
        share: String,
        /// The file.
        name: String,
        /// What it is instead, e.g. `a symbolic link`.
        what: String,
    },
    /// Every worker for calls on mounted shares is busy (a share may be hung); nothing was
    /// started.
    #[error(
        "All {workers} workers for mounted shares are busy (a share may be hung); try again later"
    )]
    WorkersBusy {
        /// How many workers there are.
        workers: usize,
    },
    /// A tool reading an untrusted file was stopped at its resource limits.
    #[error(transparent)]
    OverLimit(crate::tool::ToolError),
    /// A logical volume's device node is missing: LVM has not activated it on this host.
    #[error("Logical volume device {path} does not exist: the LV is not active on this host")]
    NotActive {
        /// The device path.
        path: String,
    },
    /// The share could not be mounted or is not mounted.
    #[error("Share {share} is not usable at {mount_point}: {reason}")]
    Mount {
        /// The share.
        share: String,
        /// Its mount point.
        mount_point: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tool could not be started.
    #[error("Cannot run {tool} (install {package})")]
    ToolMissing {
        /// The tool, e.g. `lvcreate`.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// A tool exited with an error.
    #[error("{tool} failed: {stderr}")]
    CommandFailed {
        /// The tool, e.g. `lvcreate`.
        tool: &'static str,
        /// What it printed on stderr (LVM's activation warnings left out).
        stderr: String,
    },
    /// A tool or NFS operation overran its deadline (a tool is killed).
    #[error("{tool} did not finish within {secs} s")]
    Timeout {
        /// The tool, e.g. `lvcreate`, or the NFS operation.
        tool: &'static str,
        /// The deadline, seconds.
        secs: f64,
    },
    /// A tool's report could not be parsed.
    #[error("Unexpected {tool} output {line:?}")]
    Parse {
        /// The tool, e.g. `vgs`.
        tool: &'static str,
        /// The line that did not parse.
        line: String,
    },
    /// An NFS operation failed.
    #[error("NFS {op} on share {share} failed")]
    Nfs {
        /// The share.
        share: String,
        /// What was done, e.g. `create volume-1`.
        op: String,
        /// The client's error.
        #[source]
        source: nfs::NfsError,
    },
    /// A local file operation failed (mounted shares, images).
    #[error("Cannot {op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    /// The plugin-error code for a driver: `denied` (outside the grant), `invalid`,
    /// `not-found`, `exists`, `in-use`, `no-space`, `unsupported` (the host lacks a tool or
    /// device-mapper) or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotGranted { .. }
            | Self::ShareNotGranted { .. }
            | Self::Escape { .. }
            | Self::OutsideShare { .. }
            | Self::RefusedConnection { .. }
            | Self::NotPlainFile { .. } => "denied",
            Self::InvalidName { .. }
            | Self::InvalidShare { .. }
            | Self::InvalidSize { .. }
            | Self::Invalid(_)
            | Self::Shrink { .. }
            | Self::ShrinkImage { .. }
            | Self::OverLimit(_) => "invalid",
            Self::LvNotFound { .. } | Self::FileNotFound { .. } => "not-found",
            Self::FileExists { .. } => "exists",
            Self::InUse { .. } => "in-use",
            Self::NotActive { .. } | Self::ToolMissing { .. } => "unsupported",
            Self::CommandFailed { stderr, .. } if no_space(stderr) => "no-space",
            Self::Nfs { source, .. } => source.code(),
            Self::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => "no-space",
            Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => "not-found",
            Self::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => "exists",
            _ => "failed",
        }
    }
}

/// Whether a tool's message says the backend is full.
fn no_space(stderr: &str) -> bool {
    let lower = stderr.to_ascii_lowercase();
    lower.contains("insufficient free space") || lower.contains("no space left")
}
