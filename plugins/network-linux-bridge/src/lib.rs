//! Linux-bridge network backend: what neutron's linuxbridge agent does, as a component.
//!
//! Every network gets a bridge `brq<first 11 characters of the network id>` (the agent's
//! `net::model::bridge_name` rule), with the network's MTU, and one uplink enslaved to it:
//!
//! | type | uplink |
//! |---|---|
//! | flat | the physical interface the network's `physical_network` maps to |
//! | vlan | `<physical interface>.<segmentation id>` (an 802.1Q sub-interface, created) |
//! | vxlan | `vxlan-<segmentation id>` (a VXLAN link, created) |
//! | local | none |
//!
//! Settings (neutron's `[linux_bridge]`/`[vxlan]` keys):
//!
//! * `physical_interface_mappings` — `physnet1:eth1,physnet2:eth2`;
//! * `vxlan_local_ip` — the tunnels' source IPv4 address; without it vxlan networks are refused;
//! * `vxlan_dev` — the underlay interface tunnels are bound to (optional);
//! * `vxlan_port` — the VXLAN UDP port, default 4789.
//!
//! `ensure` is idempotent: it reads each link first and only creates, re-enslaves, sets the
//! MTU of or ups what is not already so. `delete` removes the bridge and the VLAN/VXLAN link,
//! never a physical interface (deleting the bridge releases it).

mod settings;

use hyperlet_plugin_sdk::network::{netlink, LinkInfo, Network, NetworkBackend, NetworkType};
use hyperlet_plugin_sdk::prelude::*;
pub use settings::BridgeSettings;

/// Error code of a network this backend cannot serve.
pub const INVALID: &str = "invalid";

/// The bridge of a network: `brq` + the first 11 characters of its id (neutron's rule).
pub fn bridge_name(network_id: &str) -> String {
    let end = network_id
        .char_indices()
        .nth(11)
        .map_or(network_id.len(), |(i, _)| i);
    format!("brq{}", &network_id[..end])
}

/// The backend.
pub struct LinuxBridge {
    settings: BridgeSettings,
}

/// What the uplink of a network is.
enum Uplink {
    /// None (local).
    None,
    /// A physical interface (flat): used, never changed beyond up and enslaved.
    Physical(String),
    /// A VLAN sub-interface on a physical interface.
    Vlan {
        /// The physical interface.
        parent: String,
        /// The VLAN id.
        vid: u16,
    },
    /// A VXLAN link.
    Vxlan(u32),
}

impl Uplink {
    /// The uplink's name.
    fn name(&self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Physical(name) => Some(name.clone()),
            Self::Vlan { parent, vid } => Some(format!("{parent}.{vid}")),
            Self::Vxlan(vni) => Some(format!("vxlan-{vni}")),
        }
    }
}

fn invalid(message: String) -> PluginError {
    PluginError::new(INVALID, message)
}

fn check_ifname(what: &str, name: &str) -> Result<(), PluginError> {
    if name.is_empty()
        || name.len() > 15
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic())
    {
        return Err(invalid(format!(
            "{what} {name:?} is not a valid interface name (1-15 printable bytes, no '/' or ':')"
        )));
    }
    Ok(())
}

impl LinuxBridge {
    /// The physical interface of a flat or vlan network.
    fn physical(&self, network: &Network) -> Result<&str, PluginError> {
        let Some(physnet) = network.physical_network.as_deref() else {
            return Err(invalid(format!(
                "A {} network needs a physical network",
                type_name(network.network_type)
            )));
        };
        self.settings.interface(physnet).ok_or_else(|| {
            invalid(format!(
                "Physical network {physnet:?} is not mapped to an interface on this node \
                 (physical_interface_mappings: {})",
                self.settings.mappings_text()
            ))
        })
    }

    /// Checks the network and works out its uplink.
    fn plan(&self, network: &Network) -> Result<Uplink, PluginError> {
        if network.id.is_empty() {
            return Err(invalid("The network has no id".into()));
        }
        check_ifname("The bridge name", &bridge_name(&network.id))?;
        if !(68..=65535).contains(&network.mtu) {
            return Err(invalid(format!(
                "MTU {} is outside 68..=65535",
                network.mtu
            )));
        }
        let kind = type_name(network.network_type);
        let no_physnet = || match &network.physical_network {
            Some(p) => Err(invalid(format!(
                "A {kind} network has no physical network (got {p:?})"
            ))),
            None => Ok(()),
        };
        match network.network_type {
            NetworkType::Local => {
                no_physnet()?;
                if let Some(id) = network.segmentation_id {
                    return Err(invalid(format!(
                        "A local network has no segmentation id (got {id})"
                    )));
                }
                Ok(Uplink::None)
            }
            NetworkType::Flat => {
                if let Some(id) = network.segmentation_id {
                    return Err(invalid(format!(
                        "A flat network has no segmentation id (got {id})"
                    )));
                }
                Ok(Uplink::Physical(self.physical(network)?.to_owned()))
            }
            NetworkType::Vlan => {
                let parent = self.physical(network)?.to_owned();
                let vid = match network.segmentation_id {
                    Some(id @ 1..=4094) => id as u16,
                    Some(id) => return Err(invalid(format!("VLAN id {id} is outside 1..=4094"))),
                    None => return Err(invalid("A vlan network needs a segmentation id".into())),
                };
                check_ifname("The VLAN interface name", &format!("{parent}.{vid}"))?;
                Ok(Uplink::Vlan { parent, vid })
            }
            NetworkType::Vxlan => {
                no_physnet()?;
                if self.settings.vxlan_local_ip.is_none() {
                    return Err(invalid(
                        "VXLAN networks need the backend setting vxlan_local_ip (this node's \
                         tunnel address)"
                            .into(),
                    ));
                }
                match network.segmentation_id {
                    Some(vni @ 1..=16_777_215) => Ok(Uplink::Vxlan(vni)),
                    Some(vni) => Err(invalid(format!("VNI {vni} is outside 1..=16777215"))),
                    None => Err(invalid("A vxlan network needs a segmentation id".into())),
                }
            }
        }
    }

    /// Creates what is missing and brings everything to the network's MTU and up; records the
    /// links it creates in `created`.
    fn build(
        &self,
        network: &Network,
        uplink: &Uplink,
        bridge: &str,
        created: &mut Vec<String>,
    ) -> Result<(), PluginError> {
        if netlink::link_info(bridge)?.is_none() {
            if_created(netlink::create_bridge(bridge), bridge, created)?;
            log::info!("created bridge {bridge} for network {}", network.id);
        }
        if let Some(port) = self.ensure_uplink(uplink, created)? {
            // A physical interface's MTU is the operator's; created links get the network's.
            if !matches!(uplink, Uplink::Physical(_)) && port.mtu != Some(network.mtu) {
                netlink::set_mtu(&port.name, network.mtu)?;
            }
            let bridge_index = netlink::link_info(bridge)?.map(|b| b.index);
            if port.master_index.is_none() || port.master_index != bridge_index {
                netlink::set_master(&port.name, bridge)?;
            }
            if !port.up {
                netlink::set_up(&port.name)?;
            }
        }
        // Last: enslaving a port may have adjusted the bridge's MTU.
        let Some(info) = netlink::link_info(bridge)? else {
            return Err(PluginError::new(
                "failed",
                format!("Bridge {bridge:?} disappeared while it was being set up"),
            ));
        };
        if info.mtu != Some(network.mtu) {
            netlink::set_mtu(bridge, network.mtu)?;
        }
        if !info.up {
            netlink::set_up(bridge)?;
        }
        Ok(())
    }

    /// The uplink's current state, creating it when it is a VLAN or VXLAN link that is missing.
    fn ensure_uplink(
        &self,
        uplink: &Uplink,
        created: &mut Vec<String>,
    ) -> Result<Option<LinkInfo>, PluginError> {
        let Some(name) = uplink.name() else {
            return Ok(None);
        };
        if let Some(info) = netlink::link_info(&name)? {
            return Ok(Some(info));
        }
        match uplink {
            Uplink::None => {}
            Uplink::Physical(name) => {
                return Err(PluginError::new(
                    "not-found",
                    format!("Physical interface {name:?} does not exist on this node"),
                ))
            }
            Uplink::Vlan { parent, vid } => {
                if_created(netlink::create_vlan(parent, *vid).map(drop), &name, created)?;
            }
            Uplink::Vxlan(vni) => {
                let s = &self.settings;
                let result = netlink::create_vxlan(
                    *vni,
                    s.vxlan_local_ip.as_deref(),
                    s.vxlan_dev.as_deref(),
                    Some(s.vxlan_port),
                );
                if_created(result.map(drop), &name, created)?;
            }
        }
        netlink::link_info(&name)?.map(Some).ok_or_else(|| {
            PluginError::new(
                "failed",
                format!("{name:?} was created but the host does not report it"),
            )
        })
    }
}

/// Records a link this call created; a creation that lost a race with another one is fine
/// (and the link is not this call's to undo).
fn if_created(
    result: Result<(), PluginError>,
    name: &str,
    created: &mut Vec<String>,
) -> Result<(), PluginError> {
    match result {
        Ok(()) => {
            created.push(name.to_owned());
            Ok(())
        }
        Err(e) if e.code == "exists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// A deletion of what is already gone is fine.
fn deleted(result: Result<(), PluginError>) -> Result<(), PluginError> {
    match result {
        Err(e) if e.code == "not-found" => Ok(()),
        other => other,
    }
}

fn type_name(t: NetworkType) -> &'static str {
    match t {
        NetworkType::Flat => "flat",
        NetworkType::Vlan => "vlan",
        NetworkType::Vxlan => "vxlan",
        NetworkType::Local => "local",
    }
}

impl NetworkBackend for LinuxBridge {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        Ok(Self {
            settings: BridgeSettings::parse(settings)?,
        })
    }

    fn validate(&self, network: &Network) -> Result<(), PluginError> {
        self.plan(network).map(drop)
    }

    fn ensure(&self, network: &Network) -> Result<String, PluginError> {
        let uplink = self.plan(network)?;
        let bridge = bridge_name(&network.id);
        let mut created = Vec::new();
        let result = self.build(network, &uplink, &bridge, &mut created);
        if let Err(e) = &result {
            // Undo what this call created, newest first; what existed before stays.
            for name in created.iter().rev() {
                if let Err(undo) = netlink::delete_link(name) {
                    log::warn!(
                        "could not remove {name} after a failed ensure: {}",
                        undo.message
                    );
                }
            }
            log::warn!("network {}: {}: {}", network.id, e.code, e.message);
        }
        result.map(|()| bridge)
    }

    fn delete(&self, network: &Network) -> Result<(), PluginError> {
        // What to remove follows from the network alone where it can, so a network whose
        // physical network is no longer mapped still loses its bridge.
        let uplink = match network.network_type {
            NetworkType::Vlan => match (
                network
                    .physical_network
                    .as_deref()
                    .and_then(|p| self.settings.interface(p)),
                network.segmentation_id,
            ) {
                (Some(parent), Some(vid @ 1..=4094)) => Some(format!("{parent}.{vid}")),
                _ => {
                    log::warn!(
                        "network {}: physical network not mapped; its VLAN interface is left",
                        network.id
                    );
                    None
                }
            },
            NetworkType::Vxlan => network
                .segmentation_id
                .filter(|vni| (1..=16_777_215).contains(vni))
                .map(|vni| format!("vxlan-{vni}")),
            NetworkType::Flat | NetworkType::Local => None,
        };
        if let Some(uplink) = uplink {
            if netlink::link_info(&uplink)?.is_some() {
                deleted(netlink::delete_link(&uplink))?;
            }
        }
        let bridge = bridge_name(&network.id);
        if netlink::link_info(&bridge)?.is_some() {
            deleted(netlink::delete_link(&bridge))?;
            log::info!("deleted bridge {bridge} of network {}", network.id);
        }
        Ok(())
    }
}

hyperlet_plugin_sdk::export_network_backend!(LinuxBridge);

#[cfg(test)]
mod tests;
