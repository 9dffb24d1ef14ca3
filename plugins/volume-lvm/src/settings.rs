//! The driver's settings (cinder's `[lvm]` backend options).

use hyperlet_plugin_sdk::prelude::*;

/// Thin or thick provisioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LvmType {
    /// Thin when the thin pool exists, else thick (cinder's `lvm_type = auto`).
    Auto,
    /// Always thick LVs.
    Thick,
    /// Always thin LVs in the thin pool (which must exist).
    Thin,
}

/// What the driver is configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct LvmSettings {
    /// The volume group (`volume_group`, default `cinder-volumes`).
    pub volume_group: String,
    /// The thin pool (`thin_pool`, default `<volume_group>-pool`).
    pub thin_pool: String,
    /// `lvm_type`: `auto` (default), `thick` or `thin`.
    pub lvm_type: LvmType,
    /// `volume_backend_name`, default `LVM`.
    pub backend_name: String,
    /// `max_over_subscription_ratio` for thin provisioning, default 20.0 (thick reports 1.0).
    pub max_over_subscription_ratio: f64,
}

impl LvmSettings {
    /// Reads the settings.
    ///
    /// # Errors
    ///
    /// `bad-setting` for an unknown key or a bad value.
    pub fn from_settings(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[
            "volume_group",
            "thin_pool",
            "lvm_type",
            "volume_backend_name",
            "max_over_subscription_ratio",
        ])?;
        let volume_group = settings
            .get_str("volume_group", "cinder-volumes")
            .to_owned();
        let thin_pool = settings
            .get("thin_pool")
            .map_or_else(|| format!("{volume_group}-pool"), str::to_owned);
        let lvm_type = match settings.get_str("lvm_type", "auto") {
            "auto" => LvmType::Auto,
            "thick" | "default" => LvmType::Thick,
            "thin" => LvmType::Thin,
            other => {
                return Err(PluginError::bad_setting(format!(
                    "Setting lvm_type = {other:?} must be auto, thick or thin"
                )))
            }
        };
        let ratio = settings.get_f64("max_over_subscription_ratio", 20.0)?;
        if ratio < 1.0 {
            return Err(PluginError::bad_setting(format!(
                "Setting max_over_subscription_ratio = {ratio} must be at least 1.0"
            )));
        }
        Ok(Self {
            volume_group,
            thin_pool,
            lvm_type,
            backend_name: settings.get_str("volume_backend_name", "LVM").to_owned(),
            max_over_subscription_ratio: ratio,
        })
    }
}
