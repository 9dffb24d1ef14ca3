//! Network backends (`hyperlet:network/network-backend`): the [`NetworkBackend`] trait, the
//! glue [`export_network_backend!`](crate::export_network_backend) calls, and safe wrappers of
//! the host's `netlink` import ([`netlink`]).
//!
//! ```
//! use hyperlet_plugin_sdk::network::{netlink, Network, NetworkBackend, NetworkType};
//! use hyperlet_plugin_sdk::prelude::*;
//!
//! /// Local networks only: one bridge per network, no uplink.
//! struct LocalOnly;
//!
//! impl NetworkBackend for LocalOnly {
//!     fn new(settings: &Settings) -> Result<Self, PluginError> {
//!         settings.check_known(&[])?;
//!         Ok(Self)
//!     }
//!     fn validate(&self, network: &Network) -> Result<(), PluginError> {
//!         match network.network_type {
//!             NetworkType::Local => Ok(()),
//!             other => Err(PluginError::new("unsupported", format!("{other:?} networks are not supported"))),
//!         }
//!     }
//!     fn ensure(&self, network: &Network) -> Result<String, PluginError> {
//!         self.validate(network)?;
//!         let bridge = format!("brq{}", &network.id[..11]);
//!         if netlink::link_info(&bridge)?.is_none() {
//!             netlink::create_bridge(&bridge)?;
//!         }
//!         netlink::set_mtu(&bridge, network.mtu)?;
//!         netlink::set_up(&bridge)?;
//!         Ok(bridge)
//!     }
//!     fn delete(&self, network: &Network) -> Result<(), PluginError> {
//!         let bridge = format!("brq{}", &network.id[..11]);
//!         if netlink::link_info(&bridge)?.is_some() {
//!             netlink::delete_link(&bridge)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! hyperlet_plugin_sdk::export_network_backend!(LocalOnly);
//! ```

use std::cell::RefCell;

use crate::{codes, PluginError, Properties, Settings};

pub use crate::bindings::network::hyperlet::network::types::{LinkInfo, Network, NetworkType};

/// A network backend: turns networks into host plumbing through the [`netlink`] import.
///
/// Export it with [`export_network_backend!`](crate::export_network_backend).
pub trait NetworkBackend: Sized + 'static {
    /// Builds the backend from its settings; called by `configure`, once after loading.
    ///
    /// # Errors
    ///
    /// Return a [`PluginError`] (usually `bad-setting`) to refuse the settings; the agent then
    /// does not load the plugin.
    fn new(settings: &Settings) -> Result<Self, PluginError>;

    /// Whether the backend can serve `network` (type supported, physical network mapped,
    /// segmentation id in range). Must not touch the host: it runs before the network is
    /// stored, and the error's message is shown to the user.
    ///
    /// # Errors
    ///
    /// A [`PluginError`] saying what is wrong with the network.
    fn validate(&self, network: &Network) -> Result<(), PluginError>;

    /// Creates whatever of the network's plumbing is missing, sets its MTU and sets it up;
    /// returns the bridge's name. Must be idempotent.
    ///
    /// # Errors
    ///
    /// A [`PluginError`]; host failures from [`netlink`] can be passed on with `?`.
    fn ensure(&self, network: &Network) -> Result<String, PluginError>;

    /// Removes the bridge and the VLAN/VXLAN link created for the network, never a physical
    /// interface. Must be idempotent: what is already gone is not an error.
    ///
    /// # Errors
    ///
    /// A [`PluginError`]; host failures from [`netlink`] can be passed on with `?`.
    fn delete(&self, network: &Network) -> Result<(), PluginError>;
}

/// `configure` of an exported backend: replaces the instance in `slot`, or empties it when the
/// settings are refused.
///
/// # Errors
///
/// Whatever [`NetworkBackend::new`] returns.
pub fn configure<B: NetworkBackend>(
    slot: &RefCell<Option<B>>,
    settings: Properties,
) -> Result<(), PluginError> {
    *slot.borrow_mut() = None;
    let instance = B::new(&Settings::new(settings))?;
    *slot.borrow_mut() = Some(instance);
    Ok(())
}

fn with_backend<B: NetworkBackend, T>(
    slot: &RefCell<Option<B>>,
    call: impl FnOnce(&B) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let slot = slot.borrow();
    let backend = slot.as_ref().ok_or_else(|| {
        PluginError::new(
            codes::NOT_CONFIGURED,
            "Called before a successful configure",
        )
    })?;
    call(backend)
}

/// `validate-network` of an exported backend.
///
/// # Errors
///
/// `not-configured`, or the backend's own error.
pub fn validate_network<B: NetworkBackend>(
    slot: &RefCell<Option<B>>,
    network: &Network,
) -> Result<(), PluginError> {
    with_backend(slot, |b| b.validate(network))
}

/// `ensure-network` of an exported backend.
///
/// # Errors
///
/// `not-configured`, or the backend's own error.
pub fn ensure_network<B: NetworkBackend>(
    slot: &RefCell<Option<B>>,
    network: &Network,
) -> Result<String, PluginError> {
    with_backend(slot, |b| b.ensure(network))
}

/// `delete-network` of an exported backend.
///
/// # Errors
///
/// `not-configured`, or the backend's own error.
pub fn delete_network<B: NetworkBackend>(
    slot: &RefCell<Option<B>>,
    network: &Network,
) -> Result<(), PluginError> {
    with_backend(slot, |b| b.delete(network))
}

/// The host's `netlink` import: links in the host's network namespace, within the grant the
/// operator gave the plugin (`grants = ["netlink"]` and `[plugins.netlink]`). Every call is
/// checked against the grant before the host does anything; a refused one fails with code
/// `denied` and a message naming the grant parameter that does not cover it.
///
/// Error codes: `denied`, `invalid` (a malformed argument), `unsupported` (the kernel lacks the
/// link kind, e.g. no 8021q for VLANs), `exists`, `not-found`, `failed`.
///
/// Off wasm (unit tests) the calls go to the simulated host of
/// [`testing::netlink`](crate::testing::netlink).
pub mod netlink {
    use super::LinkInfo;
    use crate::PluginError;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::network::hyperlet::network::netlink as host;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::netlink as host;

    /// Creates a bridge (left down).
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn create_bridge(name: &str) -> Result<(), PluginError> {
        host::create_bridge(name)
    }

    /// Creates the VLAN sub-interface `<parent>.<vid>` (left down); returns its name.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn create_vlan(parent: &str, vid: u16) -> Result<String, PluginError> {
        host::create_vlan(parent, vid)
    }

    /// Creates the VXLAN link `vxlan-<vni>` (left down); returns its name. `local` is the
    /// source IPv4 address, `dev` the underlay interface, `port` the UDP port (4789 when
    /// `None`).
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn create_vxlan(
        vni: u32,
        local: Option<&str>,
        dev: Option<&str>,
        port: Option<u16>,
    ) -> Result<String, PluginError> {
        host::create_vxlan(vni, local, dev, port)
    }

    /// Enslaves `link` to `bridge`.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn set_master(link: &str, bridge: &str) -> Result<(), PluginError> {
        host::set_master(link, bridge)
    }

    /// Sets a link up.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn set_up(link: &str) -> Result<(), PluginError> {
        host::set_up(link)
    }

    /// Sets a link down.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn set_down(link: &str) -> Result<(), PluginError> {
        host::set_down(link)
    }

    /// Sets a link's MTU.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn set_mtu(link: &str, mtu: u32) -> Result<(), PluginError> {
        host::set_mtu(link, mtu)
    }

    /// Deletes a link.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn delete_link(link: &str) -> Result<(), PluginError> {
        host::delete_link(link)
    }

    /// A link's state, or `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// See the [module](self) for the codes.
    pub fn link_info(link: &str) -> Result<Option<LinkInfo>, PluginError> {
        host::link_info(link)
    }
}
