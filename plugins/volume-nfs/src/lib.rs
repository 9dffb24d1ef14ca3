//! NFS volume driver: what cinder's NFS driver (remotefs) does, as a component.
//!
//! Volumes are files `volume-<id>` on one of the shares in `nfs_shares`: sparse raw files by
//! default, qcow2 with `nfs_qcow2_volumes = true`. A new volume goes to the share with the
//! least allocated that passes cinder's checks (`nfs_used_ratio`: used/total of the file
//! system; `nfs_oversub_ratio`: allocated may reach total × ratio); when none does, the
//! answer is `no-space`, naming the backend and the largest free capacity.
//!
//! Snapshots are a qcow2 overlay chain, recorded in `volume-<id>.info` as cinder does: taking
//! snapshot S creates `volume-<id>.<S>` on top of the active file and makes it active; the
//! snapshot's data is that overlay's backing file. Deleting S commits its overlay into the
//! backing file, and either makes the backing file active (S was the newest) or rebases the
//! next overlay onto it. A volume from a snapshot or a clone is `qemu-img convert` of the
//! chain into a new file on the same share (then grown to the size asked for). A volume with
//! snapshots is not deleted (`in-use`).
//!
//! Connection info: `nfs { host, path: <export>/<active file>, format }`. Capacity: the
//! shares' totals, available space and allocated sizes added up, thin (sparse files), ratio
//! `nfs_oversub_ratio` (at least 1).
//!
//! Needs `grants = ["log", "files", "qemu-img"]` and `[plugins.files] shares = [...]`.

mod info;
mod settings;
#[cfg(test)]
mod tests;

use hyperlet_plugin_sdk::prelude::*;
use hyperlet_plugin_sdk::volume::{errors, BackingFile, NfsLocation};
pub use info::SnapInfo;
pub use settings::{NfsSettings, ShareName};

const GIB: u64 = 1 << 30;

/// The driver.
pub struct NfsDriver {
    settings: NfsSettings,
}

fn info_name(volume: &Volume) -> String {
    format!("{}.info", volume.name)
}

fn parse_format(text: &str) -> Option<DiskFormat> {
    match text {
        "raw" => Some(DiskFormat::Raw),
        "qcow2" => Some(DiskFormat::Qcow2),
        _ => None,
    }
}

fn not_found(volume: &Volume) -> PluginError {
    PluginError::new(
        errors::NOT_FOUND,
        format!("Volume {} is on none of the shares", volume.id),
    )
}

/// Where a volume is and how it looks.
struct Located<'a> {
    share: &'a ShareName,
    info: SnapInfo,
    base_format: DiskFormat,
}

impl Located<'_> {
    fn share(&self) -> &str {
        &self.share.text
    }

    /// The format of `file` of this volume: overlays are qcow2, the base has its own.
    fn format_of(&self, volume: &Volume, file: &str) -> DiskFormat {
        if file == volume.name {
            self.base_format
        } else {
            DiskFormat::Qcow2
        }
    }
}

impl NfsDriver {
    fn new_format(&self) -> DiskFormat {
        if self.settings.qcow2_volumes {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    }

    /// The share holding `volume` (its base file or its info file), with its snapshot map.
    fn locate(&self, volume: &Volume) -> Result<Option<Located<'_>>, PluginError> {
        for share in &self.settings.shares {
            let base = files::stat(&share.text, &volume.name)?;
            let info_text = files::read_info_file(&share.text, &info_name(volume))?;
            if base.is_none() && info_text.is_none() {
                continue;
            }
            let info = match info_text {
                Some(text) => SnapInfo::parse(&info_name(volume), &text)?,
                None => SnapInfo::base(&volume.name),
            };
            let base_format = if base.is_some() {
                let image = qemu_img::info(&share.text, &volume.name, None)?;
                if image.backing_file.is_some() {
                    return Err(PluginError::new(
                        errors::FAILED,
                        format!(
                            "The base file of volume {} names a backing file; refusing to use it",
                            volume.id
                        ),
                    ));
                }
                parse_format(&image.format).ok_or_else(|| {
                    PluginError::new(
                        errors::FAILED,
                        format!("Volume {} is a {} file", volume.id, image.format),
                    )
                })?
            } else {
                DiskFormat::Qcow2
            };
            return Ok(Some(Located {
                share,
                info,
                base_format,
            }));
        }
        Ok(None)
    }

    fn write_info(&self, at: &Located<'_>, volume: &Volume) -> Result<(), PluginError> {
        if at.info.snapshots.is_empty() && at.info.active == volume.name {
            files::remove(at.share(), &info_name(volume))
        } else {
            files::write_info_file(at.share(), &info_name(volume), &at.info.to_json())
        }
    }

    /// Cinder's `_is_share_eligible` for `size_gb` more on `share`; the share's available
    /// bytes when it is.
    fn eligible(
        &self,
        share: &ShareName,
        size_gb: u64,
    ) -> Result<Result<u64, String>, PluginError> {
        let stats = files::share_info(&share.text)?;
        let total = stats.total_bytes as f64;
        if total <= 0.0 {
            return Ok(Err(format!("{}: empty file system", share.text)));
        }
        let used = (stats.total_bytes - stats.available_bytes.min(stats.total_bytes)) as f64;
        let apparent = total * self.settings.oversub_ratio;
        let apparent_available = (apparent - stats.allocated_bytes as f64).max(0.0);
        let requested = (size_gb * GIB) as f64;
        let gib = |b: f64| b / GIB as f64;
        if used / total > self.settings.used_ratio {
            return Ok(Err(format!(
                "{} is {:.0}% used (nfs_used_ratio {})",
                share.text,
                100.0 * used / total,
                self.settings.used_ratio
            )));
        }
        if apparent_available <= requested {
            return Ok(Err(format!(
                "{} has {:.2} GiB free of its apparent capacity",
                share.text,
                gib(apparent_available)
            )));
        }
        if stats.allocated_bytes as f64 / total >= self.settings.oversub_ratio {
            return Ok(Err(format!(
                "{} is allocated beyond nfs_oversub_ratio {}",
                share.text, self.settings.oversub_ratio
            )));
        }
        Ok(Ok(stats.allocated_bytes))
    }

    /// The share for a new volume of `size_gb`: the eligible one with the least allocated.
    fn find_share(&self, volume: &Volume, size_gb: u64) -> Result<&ShareName, PluginError> {
        let mut best: Option<(&ShareName, u64)> = None;
        let mut reasons = Vec::new();
        for share in &self.settings.shares {
            match self.eligible(share, size_gb)? {
                Ok(allocated) => {
                    if best.is_none_or(|(_, a)| allocated < a) {
                        best = Some((share, allocated));
                    }
                }
                Err(reason) => reasons.push(reason),
            }
        }
        best.map(|(s, _)| s).ok_or_else(|| {
            PluginError::new(
                errors::NO_SPACE,
                format!(
                    "Backend {} has no share with room for volume {} ({size_gb} GiB): {}",
                    self.settings.backend_name,
                    volume.id,
                    reasons.join("; ")
                ),
            )
        })
    }

    /// Checks that `share` can take `size_gb` more (a copy stays on its source's share).
    fn check_room(
        &self,
        share: &ShareName,
        volume: &Volume,
        size_gb: u64,
    ) -> Result<(), PluginError> {
        match self.eligible(share, size_gb)? {
            Ok(_) => Ok(()),
            Err(reason) => Err(PluginError::new(
                errors::NO_SPACE,
                format!(
                    "Backend {} cannot hold volume {} ({size_gb} GiB) next to its source: {reason}",
                    self.settings.backend_name, volume.id
                ),
            )),
        }
    }

    /// A new volume file holding the chain up to `source`, grown to `size_gb`.
    fn copy_into(
        &self,
        share: &ShareName,
        source: &str,
        source_format: DiskFormat,
        volume: &Volume,
    ) -> Result<(), PluginError> {
        let format = self.new_format();
        qemu_img::convert(&share.text, source, source_format, &volume.name, format)?;
        let grown = (|| {
            let image = qemu_img::info(&share.text, &volume.name, Some(format))?;
            if volume.size_gb * GIB > image.virtual_size_bytes {
                qemu_img::resize(&share.text, &volume.name, format, volume.size_gb)?;
            }
            Ok(())
        })();
        if grown.is_err() {
            let _ = files::remove(&share.text, &volume.name);
        }
        grown
    }
}

impl VolumeDriver for NfsDriver {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let driver = Self {
            settings: NfsSettings::from_settings(settings)?,
        };
        // Every share must be reachable (and granted).
        for share in &driver.settings.shares {
            files::share_info(&share.text)?;
        }
        log::info!(
            "NFS driver on {} share(s), {} volumes",
            driver.settings.shares.len(),
            if driver.settings.qcow2_volumes {
                "qcow2"
            } else {
                "raw"
            }
        );
        Ok(driver)
    }

    fn create(&self, volume: &Volume) -> Result<(), PluginError> {
        let share = self.find_share(volume, volume.size_gb)?;
        match self.new_format() {
            DiskFormat::Raw => {
                files::create_sparse(&share.text, &volume.name, volume.size_gb * GIB)
            }
            DiskFormat::Qcow2 => qemu_img::create(
                &share.text,
                &volume.name,
                DiskFormat::Qcow2,
                volume.size_gb,
                None,
            ),
        }
    }

    fn delete(&self, volume: &Volume) -> Result<(), PluginError> {
        let Some(at) = self.locate(volume)? else {
            return Ok(());
        };
        if !at.info.snapshots.is_empty() {
            let ids: Vec<&str> = at
                .info
                .snapshots
                .iter()
                .map(|(id, _)| id.as_str())
                .collect();
            return Err(PluginError::new(
                errors::IN_USE,
                format!(
                    "Volume {} has snapshots ({}); delete them first",
                    volume.id,
                    ids.join(", ")
                ),
            ));
        }
        if at.info.active != volume.name {
            files::remove(at.share(), &at.info.active)?;
        }
        files::remove(at.share(), &volume.name)?;
        files::remove(at.share(), &info_name(volume))
    }

    fn extend(&self, volume: &Volume, new_size_gb: u64) -> Result<(), PluginError> {
        let at = self.locate(volume)?.ok_or_else(|| not_found(volume))?;
        let active = at.info.active.clone();
        let format = at.format_of(volume, &active);
        let current = qemu_img::info(at.share(), &active, Some(format))?;
        if new_size_gb * GIB > current.virtual_size_bytes {
            let more = new_size_gb.saturating_sub(current.virtual_size_bytes / GIB);
            self.check_room(at.share, volume, more)?;
        }
        qemu_img::resize(at.share(), &active, format, new_size_gb)
    }

    fn create_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError> {
        let volume = &snapshot.volume;
        let mut at = self.locate(volume)?.ok_or_else(|| not_found(volume))?;
        if at.info.file_of(&snapshot.id).is_some() {
            return Ok(());
        }
        let active = at.info.active.clone();
        let active_format = at.format_of(volume, &active);
        let size = qemu_img::info(at.share(), &active, Some(active_format))?.virtual_size_bytes;
        let overlay = format!("{}.{}", volume.name, snapshot.id);
        qemu_img::create(
            at.share(),
            &overlay,
            DiskFormat::Qcow2,
            size.div_ceil(GIB),
            Some(&BackingFile {
                name: active,
                format: active_format,
            }),
        )?;
        at.info.active = overlay.clone();
        at.info
            .snapshots
            .push((snapshot.id.clone(), overlay.clone()));
        if let Err(e) = self.write_info(&at, volume) {
            let _ = files::remove(at.share(), &overlay);
            return Err(e);
        }
        Ok(())
    }

    fn delete_snapshot(&self, snapshot: &Snapshot) -> Result<(), PluginError> {
        let volume = &snapshot.volume;
        let Some(mut at) = self.locate(volume)? else {
            return Ok(());
        };
        let Some(file) = at.info.file_of(&snapshot.id).map(str::to_owned) else {
            return Ok(());
        };
        let image = qemu_img::info(at.share(), &file, Some(DiskFormat::Qcow2))?;
        let base = image.backing_file.ok_or_else(|| {
            PluginError::new(
                errors::FAILED,
                format!("Snapshot file {file} has no backing file"),
            )
        })?;
        let base_format = at.format_of(volume, &base);
        // The snapshot's changes go down into its backing file…
        qemu_img::commit(at.share(), &file)?;
        if at.info.active == file {
            // …which becomes the active file…
            at.info.active = base;
        } else {
            // …or the next overlay is pointed at it.
            let mut higher = None;
            for (_, other) in &at.info.snapshots {
                if other == &file {
                    continue;
                }
                let info = qemu_img::info(at.share(), other, Some(DiskFormat::Qcow2))?;
                if info.backing_file.as_deref() == Some(file.as_str()) {
                    higher = Some(other.clone());
                }
            }
            let higher = higher.ok_or_else(|| {
                PluginError::new(
                    errors::FAILED,
                    format!("No overlay of volume {} is backed by {file}", volume.id),
                )
            })?;
            qemu_img::rebase(
                at.share(),
                &higher,
                &BackingFile {
                    name: base,
                    format: base_format,
                },
            )?;
        }
        at.info.snapshots.retain(|(id, _)| id != &snapshot.id);
        self.write_info(&at, volume)?;
        files::remove(at.share(), &file)
    }

    fn create_from_snapshot(
        &self,
        volume: &Volume,
        snapshot: &Snapshot,
    ) -> Result<(), PluginError> {
        let source_volume = &snapshot.volume;
        let at = self
            .locate(source_volume)?
            .ok_or_else(|| not_found(source_volume))?;
        let file = at.info.file_of(&snapshot.id).ok_or_else(|| {
            PluginError::new(
                errors::NOT_FOUND,
                format!(
                    "Snapshot {} of volume {} does not exist",
                    snapshot.id, source_volume.id
                ),
            )
        })?;
        // The snapshot's data is what its overlay was created on.
        let overlay = qemu_img::info(at.share(), file, Some(DiskFormat::Qcow2))?;
        let data = overlay.backing_file.ok_or_else(|| {
            PluginError::new(
                errors::FAILED,
                format!("Snapshot file {file} has no backing file"),
            )
        })?;
        let data_format = overlay
            .backing_format
            .as_deref()
            .and_then(parse_format)
            .unwrap_or_else(|| at.format_of(source_volume, &data));
        self.check_room(at.share, volume, volume.size_gb)?;
        self.copy_into(at.share, &data, data_format, volume)
    }

    fn clone_volume(&self, volume: &Volume, source: &Volume) -> Result<(), PluginError> {
        let at = self.locate(source)?.ok_or_else(|| not_found(source))?;
        let active = at.info.active.clone();
        let format = at.format_of(source, &active);
        self.check_room(at.share, volume, volume.size_gb.max(source.size_gb))?;
        self.copy_into(at.share, &active, format, volume)
    }

    fn connection_info(&self, volume: &Volume) -> Result<ConnectionInfo, PluginError> {
        let at = self.locate(volume)?.ok_or_else(|| not_found(volume))?;
        let format = at.format_of(volume, &at.info.active);
        Ok(ConnectionInfo::Nfs(NfsLocation {
            host: at.share.host.clone(),
            path: at.share.path_of(&at.info.active),
            format,
        }))
    }

    fn capacity_stats(&self) -> Result<CapacityStats, PluginError> {
        let (mut total, mut free, mut allocated) = (0u64, 0u64, 0u64);
        for share in &self.settings.shares {
            let stats = files::share_info(&share.text)?;
            total = total.saturating_add(stats.total_bytes);
            free = free.saturating_add(stats.available_bytes.min(stats.total_bytes));
            allocated = allocated.saturating_add(stats.allocated_bytes);
        }
        Ok(CapacityStats {
            backend_name: self.settings.backend_name.clone(),
            total_gb: total / GIB,
            free_gb: free / GIB,
            provisioned_gb: allocated.div_ceil(GIB),
            thin_provisioning: true,
            max_over_subscription_ratio: self.settings.oversub_ratio.max(1.0),
        })
    }
}

hyperlet_plugin_sdk::export_volume_driver!(NfsDriver);
