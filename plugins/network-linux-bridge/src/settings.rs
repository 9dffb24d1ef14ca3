//! The backend's settings.

use hyperlet_plugin_sdk::prelude::*;

/// Parsed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    /// `(physical network, interface)` pairs, in the order given.
    pub mappings: Vec<(String, String)>,
    /// The VXLAN tunnels' source IPv4 address.
    pub vxlan_local_ip: Option<String>,
    /// The VXLAN underlay interface.
    pub vxlan_dev: Option<String>,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
}

const KNOWN: [&str; 4] = [
    "physical_interface_mappings",
    "vxlan_local_ip",
    "vxlan_dev",
    "vxlan_port",
];

impl BridgeSettings {
    /// Parses and checks the settings.
    ///
    /// # Errors
    ///
    /// `bad-setting` naming the key and the value at fault.
    pub fn parse(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&KNOWN)?;
        let mut mappings: Vec<(String, String)> = Vec::new();
        for entry in settings.get_list("physical_interface_mappings") {
            let Some((physnet, iface)) = entry.split_once(':') else {
                return Err(PluginError::bad_setting(format!(
                    "Setting physical_interface_mappings: {entry:?} is not <physical network>:<interface>"
                )));
            };
            let (physnet, iface) = (physnet.trim(), iface.trim());
            if physnet.is_empty() {
                return Err(PluginError::bad_setting(format!(
                    "Setting physical_interface_mappings: {entry:?} has an empty physical network"
                )));
            }
            check_iface("physical_interface_mappings", iface)?;
            if mappings.iter().any(|(p, _)| p == physnet) {
                return Err(PluginError::bad_setting(format!(
                    "Setting physical_interface_mappings: physical network {physnet:?} is mapped twice"
                )));
            }
            mappings.push((physnet.to_owned(), iface.to_owned()));
        }
        let vxlan_local_ip = match settings.get("vxlan_local_ip").map(str::trim) {
            None | Some("") => None,
            Some(ip) => {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(PluginError::bad_setting(format!(
                        "Setting vxlan_local_ip = {ip:?} is not an IPv4 address"
                    )));
                }
                Some(ip.to_owned())
            }
        };
        let vxlan_dev = match settings.get("vxlan_dev").map(str::trim) {
            None | Some("") => None,
            Some(dev) => {
                check_iface("vxlan_dev", dev)?;
                Some(dev.to_owned())
            }
        };
        let port = settings.get_u64("vxlan_port", 4789)?;
        let vxlan_port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            PluginError::bad_setting(format!("Setting vxlan_port = {port} is outside 1..=65535"))
        })?;
        Ok(Self {
            mappings,
            vxlan_local_ip,
            vxlan_dev,
            vxlan_port,
        })
    }

    /// The interface a physical network maps to.
    pub fn interface(&self, physnet: &str) -> Option<&str> {
        self.mappings
            .iter()
            .find(|(p, _)| p == physnet)
            .map(|(_, i)| i.as_str())
    }

    /// The mappings as configured, for messages.
    pub fn mappings_text(&self) -> String {
        if self.mappings.is_empty() {
            return "none".into();
        }
        self.mappings
            .iter()
            .map(|(p, i)| format!("{p}:{i}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn check_iface(key: &str, name: &str) -> Result<(), PluginError> {
    if name.is_empty()
        || name.len() > 15
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic())
    {
        return Err(PluginError::bad_setting(format!(
            "Setting {key}: {name:?} is not a valid interface name (1-15 printable bytes, no '/' or ':')"
        )));
    }
    Ok(())
}
