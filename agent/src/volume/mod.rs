//! Volumes: the cinder-volume half of the agent.
//!
//! Volume drivers (LVM, NFS, third-party arrays) are sandboxed WebAssembly components of the
//! `hyperlet:volume` world (`wit/volume/volume.wit`). A driver decides *what* to do; every
//! privileged step goes through a host interface the agent grants with parameters, and the host
//! validates each argument against that grant before running anything.
//!
//! This module holds the host side of those interfaces, natively and independent of the plugin
//! runtime, so it is usable and testable on its own:
//!
//! * [`Lvm`] — the `lvm` interface: logical volumes on the volume groups a driver is granted.
//!   The LVM tools run as argv (never a shell) with a deadline and machine-readable output.
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

mod lvm;

pub use lvm::{LvInfo, Lvm, VgInfo};

/// Errors of the volume host interfaces.
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
    /// A volume group, logical volume or thin pool name was refused; nothing was run.
    #[error("Invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "volume group", "logical volume" or "thin pool".
        what: &'static str,
        /// The name as given.
        name: String,
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
    /// The logical volume does not exist.
    #[error("Logical volume {vg}/{name} does not exist")]
    LvNotFound {
        /// The volume group.
        vg: String,
        /// The logical volume.
        name: String,
    },
    /// An LVM tool could not be started.
    #[error("Cannot run {tool} (install lvm2)")]
    ToolMissing {
        /// The tool, e.g. `lvcreate`.
        tool: &'static str,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// An LVM tool exited with an error.
    #[error("{tool} failed: {stderr}")]
    CommandFailed {
        /// The tool, e.g. `lvcreate`.
        tool: &'static str,
        /// What it printed on stderr (LVM's activation warnings left out).
        stderr: String,
    },
    /// An LVM tool overran its deadline and was killed.
    #[error("{tool} did not finish within {secs} s")]
    Timeout {
        /// The tool, e.g. `lvcreate`.
        tool: &'static str,
        /// The deadline, seconds.
        secs: f64,
    },
    /// An LVM tool's report could not be parsed.
    #[error("Unexpected {tool} output {line:?}")]
    Parse {
        /// The tool, e.g. `vgs`.
        tool: &'static str,
        /// The line that did not parse.
        line: String,
    },
}
