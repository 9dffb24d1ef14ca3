//! Volume drivers (`hyperlet:volume/volume-driver`): the [`VolumeDriver`] trait, the glue
//! [`export_volume_driver!`](crate::export_volume_driver) calls, and safe wrappers of the
//! host's `lvm`, `files` and `qemu-img` imports ([`lvm`], [`files`], [`qemu_img`]).
//!
//! A driver imports only what it calls: one that uses only [`lvm`] (and [`log`](crate::log))
//! needs `grants = ["log", "lvm"]` and a `[plugins.lvm]` table; one on NFS shares needs
//! `files` and `qemu-img` and a `[plugins.files]` table.
//!
//! ```
//! use hyperlet_plugin_sdk::prelude::*;
//! use hyperlet_plugin_sdk::volume::{
//!     lvm, CapacityStats, ConnectionInfo, LvCreateRequest, Snapshot, Volume, VolumeDriver,
//! };
//!
//! /// Thick LVs in one volume group, nothing else.
//! struct TinyLvm {
//!     vg: String,
//! }
//!
//! fn unsupported() -> PluginError {
//!     PluginError::new("unsupported", "Snapshots are not supported")
//! }
//!
//! impl VolumeDriver for TinyLvm {
//!     fn new(settings: &Settings) -> Result<Self, PluginError> {
//!         settings.check_known(&["volume_group"])?;
//!         Ok(Self { vg: settings.get_str("volume_group", "cinder-volumes").to_owned() })
//!     }
//!     fn create(&self, v: &Volume) -> Result<(), PluginError> {
//!         lvm::lv_create(&LvCreateRequest {
//!             vg: self.vg.clone(),
//!             name: v.name.clone(),
//!             size_gb: v.size_gb,
//!             thin_pool: None,
//!         })
//!     }
//!     fn delete(&self, v: &Volume) -> Result<(), PluginError> {
//!         match lvm::lv_remove(&self.vg, &v.name) {
//!             Err(e) if e.code == "not-found" => Ok(()),
//!             other => other,
//!         }
//!     }
//!     fn extend(&self, v: &Volume, new_size_gb: u64) -> Result<(), PluginError> {
//!         lvm::lv_extend(&self.vg, &v.name, new_size_gb)
//!     }
//!     fn create_snapshot(&self, _: &Snapshot) -> Result<(), PluginError> { Err(unsupported()) }
//!     fn delete_snapshot(&self, _: &Snapshot) -> Result<(), PluginError> { Err(unsupported()) }
//!     fn create_from_snapshot(&self, _: &Volume, _: &Snapshot) -> Result<(), PluginError> {
//!         Err(unsupported())
//!     }
//!     fn clone_volume(&self, v: &Volume, source: &Volume) -> Result<(), PluginError> {
//!         self.create(v)?;
//!         lvm::lv_copy(&self.vg, &source.name, &v.name)
//!     }
//!     fn connection_info(&self, v: &Volume) -> Result<ConnectionInfo, PluginError> {
//!         Ok(ConnectionInfo::Block(format!("/dev/{}/{}", self.vg, v.name)))
//!     }
//!     fn capacity_stats(&self) -> Result<CapacityStats, PluginError> {
//!         let vg = lvm::vg_info(&self.vg)?;
//!         Ok(CapacityStats {
//!             backend_name: "tiny".into(),
//!             total_gb: vg.size_bytes >> 30,
//!             free_gb: vg.free_bytes >> 30,
//!             provisioned_gb: (vg.size_bytes - vg.free_bytes) >> 30,
//!             thin_provisioning: false,
//!             max_over_subscription_ratio: 1.0,
//!         })
//!     }
//! }
//!
//! hyperlet_plugin_sdk::export_volume_driver!(TinyLvm);
//! ```

use std::cell::RefCell;

use crate::{codes, PluginError, Properties, Settings};

pub use crate::bindings::volume::hyperlet::volume::files::{FileStat, ShareStats};
pub use crate::bindings::volume::hyperlet::volume::lvm::{
    Lv, LvCreateRequest, ThinPoolStats, VgStats,
};
pub use crate::bindings::volume::hyperlet::volume::qemu_img::{BackingFile, ImageInfo};
pub use crate::bindings::volume::hyperlet::volume::types::{
    CapacityStats, ConnectionInfo, DiskFormat, FileLocation, NfsLocation, Snapshot, Volume,
};

/// Error codes the agent maps for volume drivers (see `wit/volume/volume.wit`).
pub mod errors {
    /// A volume that still has snapshots (HTTP 409).
    pub const IN_USE: &str = "in-use";
    /// The backend cannot hold the volume; say which backend and how much is free (HTTP 409).
    pub const NO_SPACE: &str = "no-space";
    /// A request the backend cannot serve (HTTP 400).
    pub const INVALID: &str = "invalid";
    /// Something that should exist does not.
    pub const NOT_FOUND: &str = "not-found";
    /// A host call outside the grant.
    pub const DENIED: &str = "denied";
    /// Anything else.
    pub const FAILED: &str = "failed";
    /// The backend or host cannot do this.
    pub const UNSUPPORTED: &str = "unsupported";
}

/// A volume driver: turns volume requests into backend operations through the host's
/// [`lvm`], [`files`] and [`qemu_img`] imports.
///
/// Export it with [`export_volume_driver!`](crate::export_volume_driver). Sizes are whole GiB.
pub trait VolumeDriver: Sized + 'static {
    /// Builds the driver from its settings; called by `configure`, once after loading. May
    /// check that the backend is usable.
    ///
    /// # Errors
    ///
    /// Return a [`PluginError`] (usually `bad-setting`) to refuse; the agent then does not load
    /// the plugin.
    fn new(settings: &Settings) -> Result<Self, PluginError>;

    /// Creates an empty volume.
    ///
    /// # Errors
    ///
    /// A [`PluginError`]; `no-space` when the backend is full.
    fn create(&self, volume: &Volume) -> Result<(), PluginError>;

    /// Deletes a volume; one that does not exist is not an error, one with snapshots is
    /// refused with `in-use`.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn delete(&self, volume: &Volume) -> Result<(), PluginError>;

    /// Grows a volume to `new_size_gb`.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn extend(&self, volume: &Volume, new_size_gb: u64) -> Result<(), PluginError>;

    /// Takes a snapshot.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn create_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError>;

    /// Deletes a snapshot; one that does not exist is not an error.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn delete_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError>;

    /// Creates `volume` with the contents of `snapshot`.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn create_from_snapshot(&self, volume: &Volume, snapshot: &Snapshot)
        -> Result<(), PluginError>;

    /// Creates `volume` as a copy of `source` (the WIT `clone`).
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn clone_volume(&self, volume: &Volume, source: &Volume) -> Result<(), PluginError>;

    /// How a hypervisor on this node reaches `volume`.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn connection_info(&self, volume: &Volume) -> Result<ConnectionInfo, PluginError>;

    /// The backend's capacity, for the scheduler.
    ///
    /// # Errors
    ///
    /// A [`PluginError`].
    fn capacity_stats(&self) -> Result<CapacityStats, PluginError>;
}

/// `configure` of an exported driver: replaces the instance in `slot`, or empties it when the
/// settings are refused.
///
/// # Errors
///
/// Whatever [`VolumeDriver::new`] returns.
pub fn configure<D: VolumeDriver>(
    slot: &RefCell<Option<D>>,
    settings: Properties,
) -> Result<(), PluginError> {
    *slot.borrow_mut() = None;
    let instance = D::new(&Settings::new(settings))?;
    *slot.borrow_mut() = Some(instance);
    Ok(())
}

/// Runs `call` on the configured driver in `slot` (what the export glue does for every call).
///
/// # Errors
///
/// `not-configured`, or the driver's own error.
pub fn with_driver<D: VolumeDriver, T>(
    slot: &RefCell<Option<D>>,
    call: impl FnOnce(&D) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let slot = slot.borrow();
    let driver = slot.as_ref().ok_or_else(|| {
        PluginError::new(
            codes::NOT_CONFIGURED,
            "Called before a successful configure",
        )
    })?;
    call(driver)
}

/// The host's `lvm` import: logical volumes on the volume groups the operator granted
/// (`grants = ["lvm"]`, `[plugins.lvm] volume_groups`). Every name and size is checked by the
/// host before an LVM tool runs.
///
/// Error codes: `denied` (a group outside the grant, a name with `/` or `..`), `invalid`,
/// `not-found`, `in-use` (removing an origin that has snapshots), `no-space`, `unsupported`
/// (no device-mapper for a copy), `failed`.
///
/// Off wasm (unit tests) the calls go to the simulated host of
/// [`testing::lvm`](crate::testing::lvm).
pub mod lvm {
    use super::{Lv, LvCreateRequest, ThinPoolStats, VgStats};
    use crate::PluginError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::volume::hyperlet::volume::lvm as host;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::lvm as host;

    /// Capacity of a granted volume group.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn vg_info(vg: &str) -> Result<VgStats, PluginError> {
        host::vg_info(vg)
    }

    /// Capacity of thin pool `pool`, or `None` when the group has no LV of that name.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn thin_pool_info(vg: &str, pool: &str) -> Result<Option<ThinPoolStats>, PluginError> {
        host::thin_pool_info(vg, pool)
    }

    /// Creates a logical volume (thick, or thin in `request.thin_pool`).
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_create(request: &LvCreateRequest) -> Result<(), PluginError> {
        host::lv_create(request)
    }

    /// Grows a logical volume.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_extend(vg: &str, name: &str, new_size_gb: u64) -> Result<(), PluginError> {
        host::lv_extend(vg, name, new_size_gb)
    }

    /// Removes a logical volume (`in-use` while it has snapshots).
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_remove(vg: &str, name: &str) -> Result<(), PluginError> {
        host::lv_remove(vg, name)
    }

    /// Takes a snapshot: thick with `size_gb` of room, or thin (of a thin origin) when `None`.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_snapshot(
        vg: &str,
        origin: &str,
        snapshot_name: &str,
        size_gb: Option<u64>,
    ) -> Result<(), PluginError> {
        host::lv_snapshot(vg, origin, snapshot_name, size_gb)
    }

    /// Copies the contents of `source` onto `target` (at least as large), both in `vg`.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_copy(vg: &str, source: &str, target: &str) -> Result<(), PluginError> {
        host::lv_copy(vg, source, target)
    }

    /// The logical volumes of a granted volume group.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn lv_list(vg: &str) -> Result<Vec<Lv>, PluginError> {
        host::lv_list(vg)
    }
}

/// The host's `files` import: files in the top directory of the NFS shares the operator
/// granted (`grants = ["files"]`, `[plugins.files] shares`). Names are single path
/// components; a share outside the grant or a name with `/` or `..` is `denied`.
///
/// Error codes: `denied`, `invalid`, `exists`, `not-found`, `no-space`, `failed`.
///
/// Off wasm the calls go to the simulated host of [`testing::files`](crate::testing::files).
pub mod files {
    use super::{FileStat, ShareStats};
    use crate::PluginError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::volume::hyperlet::volume::files as host;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::files as host;

    /// Creates a sparse file; `exists` when there is one.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn create_sparse(share: &str, name: &str, size_bytes: u64) -> Result<(), PluginError> {
        host::create_sparse(share, name, size_bytes)
    }

    /// Removes a file; a missing one is not an error.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn remove(share: &str, name: &str) -> Result<(), PluginError> {
        host::remove(share, name)
    }

    /// Size of a file, or `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn stat(share: &str, name: &str) -> Result<Option<FileStat>, PluginError> {
        host::stat(share, name)
    }

    /// Writes info file `name` (`*.info`, at most 64 KiB) atomically.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn write_info_file(share: &str, name: &str, contents: &str) -> Result<(), PluginError> {
        host::write_info_file(share, name, contents)
    }

    /// Reads info file `name`, or `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn read_info_file(share: &str, name: &str) -> Result<Option<String>, PluginError> {
        host::read_info_file(share, name)
    }

    /// Capacity of a granted share.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn share_info(share: &str) -> Result<ShareStats, PluginError> {
        host::share_info(share)
    }
}

/// The host's `qemu-img` import: images in the granted shares (`grants = ["qemu-img"]`, the
/// same `[plugins.files]` shares). Formats are always explicit; backing files are named by
/// their name in the same share, and the host refuses any chain that leaves it (`denied`).
///
/// Error codes: `denied`, `invalid` (e.g. shrinking), `exists`, `not-found`, `no-space`,
/// `failed`.
///
/// Off wasm the calls go to the simulated host of
/// [`testing::qemu_img`](crate::testing::qemu_img).
pub mod qemu_img {
    use super::{BackingFile, DiskFormat, ImageInfo};
    use crate::PluginError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::volume::hyperlet::volume::qemu_img as host;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::qemu_img as host;

    /// Creates an image, optionally a qcow2 overlay on `backing`.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn create(
        share: &str,
        name: &str,
        format: DiskFormat,
        size_gb: u64,
        backing: Option<&BackingFile>,
    ) -> Result<(), PluginError> {
        host::create(share, name, format, size_gb, backing)
    }

    /// Copies `source` (with its chain) into a new image `target` of `format`.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn convert(
        share: &str,
        source: &str,
        source_format: DiskFormat,
        target: &str,
        format: DiskFormat,
    ) -> Result<(), PluginError> {
        host::convert(share, source, source_format, target, format)
    }

    /// Inspects an image read as `format` (detected when `None`).
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn info(
        share: &str,
        name: &str,
        format: Option<DiskFormat>,
    ) -> Result<ImageInfo, PluginError> {
        host::info(share, name, format)
    }

    /// Grows an image.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn resize(
        share: &str,
        name: &str,
        format: DiskFormat,
        new_size_gb: u64,
    ) -> Result<(), PluginError> {
        host::resize(share, name, format, new_size_gb)
    }

    /// Writes overlay `name`'s changes into its backing file.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn commit(share: &str, name: &str) -> Result<(), PluginError> {
        host::commit(share, name)
    }

    /// Points overlay `name` at `backing` without copying.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn rebase(share: &str, name: &str, backing: &BackingFile) -> Result<(), PluginError> {
        host::rebase(share, name, backing)
    }
}
