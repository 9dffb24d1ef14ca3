//! The calls of a volume driver (`hyperlet:volume/driver`) in the agent's own types
//! ([`crate::volume::model`]). Each runs under the plugin's call deadline.
//!
//! Codes of [`PluginError::Reported`] a driver answers with: `in-use`, `no-space`, `invalid`,
//! `not-found`, `denied`, `failed`, `unsupported` (see `wit/volume/volume.wit`).

use super::bindings::volume::hyperlet::volume::types as wit;
use super::instance::LoadedPlugin;
use super::PluginError;
use crate::volume::{CapacityStats, DiskFormat, SnapshotRef, VolumeConnection, VolumeRef};

fn wit_volume(v: &VolumeRef) -> wit::Volume {
    wit::Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        size_gb: v.size_gb,
    }
}

fn wit_snapshot(s: &SnapshotRef) -> wit::Snapshot {
    wit::Snapshot {
        id: s.id.clone(),
        name: s.name.clone(),
        volume: wit_volume(&s.volume),
    }
}

fn format_of(f: wit::DiskFormat) -> DiskFormat {
    match f {
        wit::DiskFormat::Raw => DiskFormat::Raw,
        wit::DiskFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

/// An absolute path without `..`, NUL or control characters.
fn sane_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control)
}

/// Checks a driver's connection info and turns it into the agent's type.
fn connection(info: wit::ConnectionInfo) -> Result<VolumeConnection, String> {
    match info {
        wit::ConnectionInfo::Block(path) if sane_path(&path) && path.starts_with("/dev/") => {
            Ok(VolumeConnection::Block { path })
        }
        wit::ConnectionInfo::Block(path) => Err(format!(
            "block device {path:?} is not an absolute path under /dev"
        )),
        wit::ConnectionInfo::Nfs(loc) => {
            if !sane_path(&loc.path) {
                return Err(format!("NFS path {:?} is not an absolute path", loc.path));
            }
            if crate::volume::Share::parse(&format!("{}:/", loc.host)).is_err() {
                return Err(format!("NFS server {:?} is not a host", loc.host));
            }
            Ok(VolumeConnection::Nfs {
                host: loc.host,
                path: loc.path,
                format: format_of(loc.format),
            })
        }
        wit::ConnectionInfo::File(loc) if sane_path(&loc.path) => Ok(VolumeConnection::File {
            path: loc.path,
            format: format_of(loc.format),
        }),
        wit::ConnectionInfo::File(loc) => {
            Err(format!("file {:?} is not an absolute path", loc.path))
        }
    }
}

/// Checks a driver's capacity report.
fn capacity(stats: wit::CapacityStats) -> Result<CapacityStats, String> {
    let ratio = stats.max_over_subscription_ratio;
    if !(ratio.is_finite() && ratio >= 1.0) {
        return Err(format!(
            "max over-subscription ratio {ratio} is not a number ≥ 1"
        ));
    }
    if stats.free_gb > stats.total_gb {
        return Err(format!(
            "free capacity {} GiB exceeds the total {} GiB",
            stats.free_gb, stats.total_gb
        ));
    }
    if stats.backend_name.is_empty() {
        return Err("the backend has no name".into());
    }
    Ok(CapacityStats {
        backend_name: stats.backend_name,
        total_gb: stats.total_gb,
        free_gb: stats.free_gb,
        provisioned_gb: stats.provisioned_gb,
        thin_provisioning: stats.thin_provisioning,
        max_over_subscription_ratio: ratio,
    })
}

impl LoadedPlugin {
    /// Creates an empty volume of `v.size_gb` GiB.
    ///
    /// # Errors
    /// [`PluginError::Reported`] with the driver's code (`no-space`, `invalid`, …), a trap or
    /// timeout, or [`PluginError::NotLoaded`] when this plugin is not a volume driver.
    pub async fn volume_create(&self, v: &VolumeRef) -> Result<(), PluginError> {
        let v = wit_volume(v);
        self.call_driver_unit(|d| *d.func_create().func(), (&v,))
            .await
    }

    /// Deletes a volume; one that does not exist is not an error.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`]; code `in-use` while it has snapshots.
    pub async fn volume_delete(&self, v: &VolumeRef) -> Result<(), PluginError> {
        let v = wit_volume(v);
        self.call_driver_unit(|d| *d.func_delete().func(), (&v,))
            .await
    }

    /// Grows a volume to `new_size_gb` GiB.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`].
    pub async fn volume_extend(&self, v: &VolumeRef, new_size_gb: u64) -> Result<(), PluginError> {
        let v = wit_volume(v);
        self.call_driver_unit(|d| *d.func_extend().func(), (&v, new_size_gb))
            .await
    }

    /// Takes a snapshot of `s.volume`.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`].
    pub async fn snapshot_create(&self, s: &SnapshotRef) -> Result<(), PluginError> {
        let s = wit_snapshot(s);
        self.call_driver_unit(|d| *d.func_create_snapshot().func(), (&s,))
            .await
    }

    /// Deletes a snapshot; one that does not exist is not an error.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`].
    pub async fn snapshot_delete(&self, s: &SnapshotRef) -> Result<(), PluginError> {
        let s = wit_snapshot(s);
        self.call_driver_unit(|d| *d.func_delete_snapshot().func(), (&s,))
            .await
    }

    /// Creates volume `v` with the contents of snapshot `s`.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`].
    pub async fn volume_from_snapshot(
        &self,
        v: &VolumeRef,
        s: &SnapshotRef,
    ) -> Result<(), PluginError> {
        let (v, s) = (wit_volume(v), wit_snapshot(s));
        self.call_driver_unit(|d| *d.func_create_from_snapshot().func(), (&v, &s))
            .await
    }

    /// Creates volume `v` as a copy of `source`.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`].
    pub async fn volume_clone(&self, v: &VolumeRef, source: &VolumeRef) -> Result<(), PluginError> {
        let (v, source) = (wit_volume(v), wit_volume(source));
        self.call_driver_unit(|d| *d.func_clone().func(), (&v, &source))
            .await
    }

    /// How a hypervisor on this node reaches `v`. The answer is checked against the driver's
    /// grants before anyone uses it ([`crate::volume::check_connection`]): a block device must
    /// be an LV of a granted volume group, a file `v`'s own file in a granted share.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`]; [`PluginError::BadAnswer`] for a path that is not
    /// absolute (or a block device outside `/dev`), a malformed NFS server, or a connection
    /// outside the grants.
    pub async fn connection_info(&self, v: &VolumeRef) -> Result<VolumeConnection, PluginError> {
        let wit = wit_volume(v);
        let info = self
            .call_driver_connection(|d| *d.func_connection_info().func(), (&wit,))
            .await?;
        let answer = connection(info).map_err(|reason| self.refuse_answer(reason))?;
        let checked = match self.volume_host() {
            Some(host) => host.check_connection(v, &answer).await,
            None => Err(format!("{answer}: the plugin has no volume grants")),
        };
        checked.map_err(|reason| self.refuse_answer(reason))?;
        Ok(answer)
    }

    /// The backend's capacity.
    ///
    /// # Errors
    /// As [`LoadedPlugin::volume_create`]; [`PluginError::BadAnswer`] for a ratio below 1 or
    /// not finite, more free than total capacity, or no backend name.
    pub async fn capacity_stats(&self) -> Result<CapacityStats, PluginError> {
        let stats = self.call_driver_capacity().await?;
        capacity(stats).map_err(|reason| self.refuse_answer(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        assert_eq!(
            connection(wit::ConnectionInfo::Block("/dev/vg/volume-1".into())),
            Ok(VolumeConnection::Block {
                path: "/dev/vg/volume-1".into()
            })
        );
        for bad in ["/etc/shadow", "dev/x", "/dev/../etc/shadow"] {
            assert!(
                connection(wit::ConnectionInfo::Block(bad.into())).is_err(),
                "{bad}"
            );
        }
        let nfs = |host: &str, path: &str| {
            connection(wit::ConnectionInfo::Nfs(wit::NfsLocation {
                host: host.into(),
                path: path.into(),
                format: wit::DiskFormat::Qcow2,
            }))
        };
        assert_eq!(
            nfs("127.0.0.1", "/srv/nfs/volume-1"),
            Ok(VolumeConnection::Nfs {
                host: "127.0.0.1".into(),
                path: "/srv/nfs/volume-1".into(),
                format: DiskFormat::Qcow2
            })
        );
        assert!(nfs("a b", "/x").is_err());
        assert!(nfs("h", "x").is_err());
        let stats = |total, free, ratio| wit::CapacityStats {
            backend_name: "lvm".into(),
            total_gb: total,
            free_gb: free,
            provisioned_gb: 0,
            thin_provisioning: false,
            max_over_subscription_ratio: ratio,
        };
        assert!(capacity(stats(10, 5, 1.0)).is_ok());
        assert!(capacity(stats(10, 11, 1.0)).is_err());
        assert!(capacity(stats(10, 5, f64::NAN)).is_err());
        assert!(capacity(stats(10, 5, 0.5)).is_err());
    }
}
