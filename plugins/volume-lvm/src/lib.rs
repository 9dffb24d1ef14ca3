//! LVM volume driver: what cinder's LVM driver does, as a component.
//!
//! Volumes are logical volumes `volume-<id>` of one volume group (`volume_group`, default
//! `cinder-volumes`). When the thin pool `<vg>-pool` exists (or `thin_pool` names another),
//! volumes are thin LVs in it and snapshots and clones are thin snapshots; otherwise volumes
//! are thick LVs, snapshots are copy-on-write snapshots as large as their origin, and clones
//! and volumes from snapshots are new LVs filled by a block copy (`lv-copy`). Snapshot LVs are
//! named after the snapshot with a leading `_` when the name starts with `snapshot` (cinder
//! escapes those so they cannot clash with LVM's own names).
//!
//! A volume with snapshots is not deleted (`in-use`); a volume that does not fit is refused
//! up front with `no-space`, naming the backend and its free capacity. Capacity follows
//! cinder: thick → the group's size and free space, ratio 1.0; thin → the pool's size and
//! what its data does not use, ratio `max_over_subscription_ratio`; provisioned = the sizes of
//! all LVs (the pool excluded). Connection info is the block device `/dev/<vg>/volume-<id>`.
//!
//! Needs `grants = ["log", "lvm"]` and `[plugins.lvm] volume_groups = ["<vg>"]`.

mod settings;
#[cfg(test)]
mod tests;

use hyperlet_plugin_sdk::prelude::*;
use hyperlet_plugin_sdk::volume::{errors, Lv, LvCreateRequest};
pub use settings::{LvmSettings, LvmType};

const GIB: u64 = 1 << 30;

/// The LV name of a snapshot: cinder's `_escape_snapshot`.
pub fn snapshot_lv_name(snapshot_name: &str) -> String {
    if snapshot_name.starts_with("snapshot") {
        format!("_{snapshot_name}")
    } else {
        snapshot_name.to_owned()
    }
}

/// The driver.
pub struct LvmDriver {
    settings: LvmSettings,
    /// Thin or thick, decided once when the driver is configured (as cinder decides at
    /// setup): a thin pool created later is used after the next reload.
    thin: bool,
}

fn gib_up(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

impl LvmDriver {
    fn vg(&self) -> &str {
        &self.settings.volume_group
    }

    /// Whether volumes are thin: the pool exists (auto) or is required (thin).
    fn thin(&self) -> Result<bool, PluginError> {
        if self.settings.lvm_type == LvmType::Thick {
            return Ok(false);
        }
        let pool = lvm::thin_pool_info(self.vg(), &self.settings.thin_pool)?;
        match (self.settings.lvm_type, pool) {
            (LvmType::Thin, None) => Err(PluginError::new(
                errors::FAILED,
                format!(
                    "lvm_type = thin but volume group {} has no thin pool {}",
                    self.vg(),
                    self.settings.thin_pool
                ),
            )),
            (_, pool) => Ok(pool.is_some()),
        }
    }

    fn list(&self) -> Result<Vec<Lv>, PluginError> {
        lvm::lv_list(self.vg())
    }

    /// Refuses a thick allocation of `size_gb` that the group cannot hold.
    fn check_room(&self, name: &str, size_gb: u64) -> Result<(), PluginError> {
        let vg = lvm::vg_info(self.vg())?;
        if size_gb.saturating_mul(GIB) > vg.free_bytes {
            return Err(PluginError::new(
                errors::NO_SPACE,
                format!(
                    "Backend {} (volume group {}) has {:.2} GiB free; {name} needs {size_gb} GiB",
                    self.settings.backend_name,
                    self.vg(),
                    vg.free_bytes as f64 / GIB as f64
                ),
            ));
        }
        Ok(())
    }

    /// Creates the LV with one LVM command. Only when that fails does a thick allocation ask
    /// the group for its free space, so a full backend still answers `no-space` with the
    /// figures (`lvcreate` itself refuses an allocation the group cannot hold).
    fn create_lv(&self, name: &str, size_gb: u64, thin: bool) -> Result<(), PluginError> {
        let created = lvm::lv_create(&LvCreateRequest {
            vg: self.vg().to_owned(),
            name: name.to_owned(),
            size_gb,
            thin_pool: thin.then(|| self.settings.thin_pool.clone()),
        });
        match created {
            Err(e) if !thin => {
                self.check_room(name, size_gb)?;
                Err(e)
            }
            other => other,
        }
    }

    /// A thin snapshot `name` of `origin`, grown to `size_gb` when that is larger.
    fn thin_copy(&self, origin: &str, name: &str, size_gb: u64) -> Result<(), PluginError> {
        lvm::lv_snapshot(self.vg(), origin, name, None)?;
        let origin_gb = self
            .list()?
            .iter()
            .find(|lv| lv.name == name)
            .map_or(0, |lv| gib_up(lv.size_bytes));
        if size_gb > origin_gb {
            lvm::lv_extend(self.vg(), name, size_gb)?;
        }
        Ok(())
    }

    /// A new thick LV `name` of `size_gb` holding a block copy of `source`.
    fn thick_copy(&self, source: &str, name: &str, size_gb: u64) -> Result<(), PluginError> {
        self.create_lv(name, size_gb, false)?;
        if let Err(e) = lvm::lv_copy(self.vg(), source, name) {
            let _ = lvm::lv_remove(self.vg(), name);
            return Err(e);
        }
        Ok(())
    }

    fn size_gb_of(&self, lvs: &[Lv], name: &str) -> Result<u64, PluginError> {
        lvs.iter()
            .find(|lv| lv.name == name)
            .map(|lv| gib_up(lv.size_bytes))
            .ok_or_else(|| {
                PluginError::new(
                    errors::NOT_FOUND,
                    format!("Logical volume {}/{name} does not exist", self.vg()),
                )
            })
    }
}

impl VolumeDriver for LvmDriver {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let mut driver = Self {
            settings: LvmSettings::from_settings(settings)?,
            thin: false,
        };
        // The group must be there (and granted); a required pool too.
        lvm::vg_info(driver.vg())?;
        let thin = driver.thin()?;
        driver.thin = thin;
        log::info!(
            "LVM driver on volume group {} ({})",
            driver.vg(),
            if thin { "thin" } else { "thick" }
        );
        Ok(driver)
    }

    fn create(&self, volume: &Volume) -> Result<(), PluginError> {
        self.create_lv(&volume.name, volume.size_gb, self.thin)
    }

    fn delete(&self, volume: &Volume) -> Result<(), PluginError> {
        let lvs = self.list()?;
        if !lvs.iter().any(|lv| lv.name == volume.name) {
            return Ok(());
        }
        let snapshots: Vec<&str> = lvs
            .iter()
            .filter(|lv| lv.origin.as_deref() == Some(volume.name.as_str()))
            .map(|lv| lv.name.as_str())
            .collect();
        if !snapshots.is_empty() {
            return Err(PluginError::new(
                errors::IN_USE,
                format!(
                    "Volume {} has snapshots ({}); delete them first",
                    volume.id,
                    snapshots.join(", ")
                ),
            ));
        }
        lvm::lv_remove(self.vg(), &volume.name)
    }

    fn extend(&self, volume: &Volume, new_size_gb: u64) -> Result<(), PluginError> {
        let lvs = self.list()?;
        let current = self.size_gb_of(&lvs, &volume.name)?;
        if new_size_gb > current && !self.thin {
            self.check_room(&volume.name, new_size_gb - current)?;
        }
        lvm::lv_extend(self.vg(), &volume.name, new_size_gb)
    }

    fn create_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError> {
        let name = snapshot_lv_name(&snapshot.name);
        let lvs = self.list()?;
        let origin_gb = self.size_gb_of(&lvs, &snapshot.volume.name)?;
        if self.thin {
            lvm::lv_snapshot(self.vg(), &snapshot.volume.name, &name, None)
        } else {
            self.check_room(&name, origin_gb)?;
            lvm::lv_snapshot(self.vg(), &snapshot.volume.name, &name, Some(origin_gb))
        }
    }

    fn delete_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError> {
        let name = snapshot_lv_name(&snapshot.name);
        if !self.list()?.iter().any(|lv| lv.name == name) {
            return Ok(());
        }
        lvm::lv_remove(self.vg(), &name)
    }

    fn create_from_snapshot(
        &self,
        volume: &Volume,
        snapshot: &Snapshot,
    ) -> Result<(), PluginError> {
        let source = snapshot_lv_name(&snapshot.name);
        let lvs = self.list()?;
        let source_gb = self.size_gb_of(&lvs, &snapshot.volume.name)?;
        self.size_gb_of(&lvs, &source)?;
        let size_gb = volume.size_gb.max(source_gb);
        if self.thin {
            self.thin_copy(&source, &volume.name, size_gb)
        } else {
            self.thick_copy(&source, &volume.name, size_gb)
        }
    }

    fn clone_volume(&self, volume: &Volume, source: &Volume) -> Result<(), PluginError> {
        let lvs = self.list()?;
        let source_gb = self.size_gb_of(&lvs, &source.name)?;
        let size_gb = volume.size_gb.max(source_gb);
        if self.thin {
            return self.thin_copy(&source.name, &volume.name, size_gb);
        }
        // As cinder: copy from a temporary snapshot, so a source in use is copied consistently.
        let temp = format!("clone-snap-{}", volume.id);
        self.check_room(&temp, source_gb)?;
        lvm::lv_snapshot(self.vg(), &source.name, &temp, Some(source_gb))?;
        let copied = self.thick_copy(&temp, &volume.name, size_gb);
        let removed = lvm::lv_remove(self.vg(), &temp);
        copied?;
        removed
    }

    fn connection_info(&self, volume: &Volume) -> Result<ConnectionInfo, PluginError> {
        self.size_gb_of(&self.list()?, &volume.name)?;
        Ok(ConnectionInfo::Block(format!(
            "/dev/{}/{}",
            self.vg(),
            volume.name
        )))
    }

    fn capacity_stats(&self) -> Result<CapacityStats, PluginError> {
        let lvs = self.list()?;
        let provisioned: u64 = lvs
            .iter()
            .filter(|lv| lv.name != self.settings.thin_pool)
            .fold(0u64, |sum, lv| sum.saturating_add(lv.size_bytes));
        let thin = self.thin;
        let (total, free, ratio) = if thin {
            let pool =
                lvm::thin_pool_info(self.vg(), &self.settings.thin_pool)?.ok_or_else(|| {
                    PluginError::new(errors::FAILED, "The thin pool disappeared".to_owned())
                })?;
            (
                pool.size_bytes,
                pool.size_bytes - pool.used_bytes.min(pool.size_bytes),
                self.settings.max_over_subscription_ratio,
            )
        } else {
            let vg = lvm::vg_info(self.vg())?;
            (vg.size_bytes, vg.free_bytes, 1.0)
        };
        Ok(CapacityStats {
            backend_name: self.settings.backend_name.clone(),
            total_gb: total / GIB,
            free_gb: free / GIB,
            provisioned_gb: gib_up(provisioned),
            thin_provisioning: thin,
            max_over_subscription_ratio: ratio,
        })
    }
}

hyperlet_plugin_sdk::export_volume_driver!(LvmDriver);
