//! The driver's settings (cinder's NFS backend options).

use hyperlet_plugin_sdk::prelude::*;

/// One configured share, `host:/export`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareName {
    /// As written (what the host's `files` and `qemu-img` calls take).
    pub text: String,
    /// The server (an IPv6 address without brackets).
    pub host: String,
    /// The export path.
    pub export: String,
}

impl ShareName {
    /// Parses `host:/export` or `[v6]:/export`.
    ///
    /// # Errors
    ///
    /// `bad-setting` naming the share.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let bad = || {
            PluginError::bad_setting(format!("Setting nfs_shares: {text:?} is not host:/export"))
        };
        let (host, export) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
                (host, rest.strip_prefix(':').ok_or_else(bad)?)
            }
            None => text.split_once(':').ok_or_else(bad)?,
        };
        if host.is_empty() || !export.starts_with('/') {
            return Err(bad());
        }
        let export = if export.len() > 1 {
            export.trim_end_matches('/')
        } else {
            export
        };
        Ok(Self {
            text: text.to_owned(),
            host: host.to_owned(),
            export: export.to_owned(),
        })
    }

    /// The exported path of file `name`.
    pub fn path_of(&self, name: &str) -> String {
        if self.export == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.export)
        }
    }
}

/// What the driver is configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct NfsSettings {
    /// `nfs_shares`: comma-separated `host:/export` list (required).
    pub shares: Vec<ShareName>,
    /// `nfs_qcow2_volumes`: new volumes are qcow2 files (default false: sparse raw).
    pub qcow2_volumes: bool,
    /// `nfs_oversub_ratio`: allocated/total a share may reach (default 1.0).
    pub oversub_ratio: f64,
    /// `nfs_used_ratio`: used/total above which a share takes no new volume (default 0.95).
    pub used_ratio: f64,
    /// `volume_backend_name`, default `NFS`.
    pub backend_name: String,
}

impl NfsSettings {
    /// Reads the settings.
    ///
    /// # Errors
    ///
    /// `bad-setting` for an unknown key, a missing `nfs_shares`, or a bad value.
    pub fn from_settings(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[
            "nfs_shares",
            "nfs_qcow2_volumes",
            "nfs_oversub_ratio",
            "nfs_used_ratio",
            "volume_backend_name",
        ])?;
        let shares = settings
            .require("nfs_shares")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(ShareName::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if shares.is_empty() {
            return Err(PluginError::bad_setting(
                "Setting nfs_shares lists no share",
            ));
        }
        let oversub_ratio = settings.get_f64("nfs_oversub_ratio", 1.0)?;
        if oversub_ratio <= 0.0 {
            return Err(PluginError::bad_setting(format!(
                "Setting nfs_oversub_ratio = {oversub_ratio} must be greater than 0"
            )));
        }
        let used_ratio = settings.get_f64("nfs_used_ratio", 0.95)?;
        if !(used_ratio > 0.0 && used_ratio <= 1.0) {
            return Err(PluginError::bad_setting(format!(
                "Setting nfs_used_ratio = {used_ratio} must be in (0, 1]"
            )));
        }
        Ok(Self {
            shares,
            qcow2_volumes: settings.get_bool("nfs_qcow2_volumes", false)?,
            oversub_ratio,
            used_ratio,
            backend_name: settings.get_str("volume_backend_name", "NFS").to_owned(),
        })
    }
}
