//! The `netlink` grant: which link operations a network backend may ask for.
//!
//! Every call of the `hyperlet:network/netlink` import becomes a [`NetlinkOp`], and
//! [`NetGrant::check`] decides on it before anything is sent to the kernel:
//!
//! * links the plugin **owns** — a name starting with one of `name_prefixes`, or
//!   `<granted physical>.<vid>` with the vid in `vlan_ids` — may be created, deleted, set down,
//!   given an MTU, set up, enslaved and read;
//! * a granted **physical interface** may be read, set up, enslaved and carry VLANs, never be
//!   created, deleted, set down or given an MTU;
//! * `set-master` only enslaves to a bridge named with a granted prefix;
//! * VLAN ids, VNIs and MTUs must be in range, names must pass [`crate::net::validate_ifname`].

use crate::config::NetlinkGrant;
use crate::net::links::VxlanOptions;
use crate::net::validate_ifname;

/// One request of a network backend, as the host will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkOp {
    /// Create a bridge.
    CreateBridge(String),
    /// Create `<parent>.<vid>`.
    CreateVlan {
        /// The physical interface.
        parent: String,
        /// The VLAN id.
        vid: u16,
    },
    /// Create `vxlan-<vni>`.
    CreateVxlan {
        /// The VNI.
        vni: u32,
        /// Local address, underlay device and port.
        options: VxlanOptions,
    },
    /// Enslave `link` to `bridge`.
    SetMaster {
        /// The port.
        link: String,
        /// The bridge.
        bridge: String,
    },
    /// Set a link up.
    SetUp(String),
    /// Set a link down.
    SetDown(String),
    /// Set a link's MTU.
    SetMtu {
        /// The link.
        link: String,
        /// The MTU.
        mtu: u32,
    },
    /// Delete a link.
    Delete(String),
    /// Read a link.
    LinkInfo(String),
}

impl NetlinkOp {
    /// What the operation does, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::CreateBridge(name) => format!("create bridge {name:?}"),
            Self::CreateVlan { parent, vid } => format!("create VLAN {vid} on {parent:?}"),
            Self::CreateVxlan { vni, .. } => format!("create VXLAN {vni}"),
            Self::SetMaster { link, bridge } => format!("enslave {link:?} to {bridge:?}"),
            Self::SetUp(link) => format!("set {link:?} up"),
            Self::SetDown(link) => format!("set {link:?} down"),
            Self::SetMtu { link, mtu } => format!("set the MTU of {link:?} to {mtu}"),
            Self::Delete(link) => format!("delete {link:?}"),
            Self::LinkInfo(link) => format!("read {link:?}"),
        }
    }
}

/// Why a request was refused before reaching the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetGrantError {
    /// The request is outside the grant (plugin-error code `denied`).
    #[error("Denied: {op}: {reason}")]
    Denied {
        /// What was asked.
        op: String,
        /// Which part of the grant is missing.
        reason: String,
    },
    /// An argument is malformed (plugin-error code `invalid`).
    #[error("Invalid request: {op}: {reason}")]
    Invalid {
        /// What was asked.
        op: String,
        /// What is wrong.
        reason: String,
    },
}

impl NetGrantError {
    /// The plugin-error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied { .. } => "denied",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// A plugin's `netlink` grant, ready to check requests.
#[derive(Debug, Clone)]
pub struct NetGrant {
    grant: NetlinkGrant,
}

/// What a name is to the grant.
enum Standing {
    /// A granted physical interface.
    Physical,
    /// Owned through a granted prefix.
    Prefixed,
    /// `<granted physical>.<vid>` with the vid in range.
    VlanOfPhysical,
    /// Nothing the plugin may touch.
    Foreign,
}

impl NetGrant {
    /// Wraps validated grant parameters.
    pub fn new(grant: NetlinkGrant) -> Self {
        Self { grant }
    }

    /// The parameters.
    pub fn parameters(&self) -> &NetlinkGrant {
        &self.grant
    }

    fn physical(&self, name: &str) -> bool {
        self.grant.physical_interfaces.iter().any(|p| p == name)
    }

    fn prefixed(&self, name: &str) -> bool {
        self.grant
            .name_prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()))
    }

    fn vid_granted(&self, vid: u32) -> bool {
        (self.grant.vlan_ids[0]..=self.grant.vlan_ids[1]).contains(&vid)
    }

    fn standing(&self, name: &str) -> Standing {
        if self.physical(name) {
            return Standing::Physical;
        }
        if self.prefixed(name) {
            return Standing::Prefixed;
        }
        if let Some((parent, vid)) = name.rsplit_once('.') {
            let vid_ok =
                !vid.starts_with('0') && vid.parse::<u32>().is_ok_and(|v| self.vid_granted(v));
            if self.physical(parent) && vid_ok {
                return Standing::VlanOfPhysical;
            }
        }
        Standing::Foreign
    }

    fn prefixes(&self) -> String {
        format!("netlink.name_prefixes = {:?}", self.grant.name_prefixes)
    }

    fn physicals(&self) -> String {
        format!(
            "netlink.physical_interfaces = {:?}",
            self.grant.physical_interfaces
        )
    }

    fn vlans(&self) -> String {
        format!("netlink.vlan_ids = {:?}", self.grant.vlan_ids)
    }

    /// Checks one request against the grant.
    ///
    /// # Errors
    /// [`NetGrantError::Denied`] naming the grant parameter that does not cover the request,
    /// [`NetGrantError::Invalid`] for a malformed name, address, port or MTU.
    pub fn check(&self, op: &NetlinkOp) -> Result<(), NetGrantError> {
        let denied = |reason: String| {
            Err(NetGrantError::Denied {
                op: op.describe(),
                reason,
            })
        };
        let invalid = |reason: String| {
            Err(NetGrantError::Invalid {
                op: op.describe(),
                reason,
            })
        };
        for name in op_names(op) {
            if let Err(e) = validate_ifname(name) {
                return invalid(e.to_string());
            }
        }
        // A link the plugin owns: it may change or remove it.
        let owned = |name: &str| match self.standing(name) {
            Standing::Prefixed | Standing::VlanOfPhysical => Ok(()),
            Standing::Physical => denied(format!(
                "{name:?} is a granted physical interface, which a plugin may only read, set up \
                 and enslave ({})",
                self.physicals()
            )),
            Standing::Foreign => denied(format!(
                "{name:?} is not covered by the netlink grant: it starts with no granted prefix \
                 ({}) and is not <physical>.<vid> of a granted interface ({}, {})",
                self.prefixes(),
                self.physicals(),
                self.vlans()
            )),
        };
        // A link the plugin may use: owned, or a granted physical interface.
        let usable = |name: &str| match self.standing(name) {
            Standing::Physical => Ok(()),
            _ => owned(name),
        };
        match op {
            NetlinkOp::CreateBridge(name) => {
                if !self.prefixed(name) || self.physical(name) {
                    return denied(format!(
                        "a bridge must be named with a granted prefix ({}); {name:?} is not",
                        self.prefixes()
                    ));
                }
                Ok(())
            }
            NetlinkOp::CreateVlan { parent, vid } => {
                if !self.physical(parent) {
                    return denied(format!(
                        "VLANs are created on granted physical interfaces only ({}); {parent:?} \
                         is not one",
                        self.physicals()
                    ));
                }
                if !self.vid_granted((*vid).into()) {
                    return denied(format!(
                        "VLAN id {vid} is outside the granted range ({})",
                        self.vlans()
                    ));
                }
                let name = format!("{parent}.{vid}");
                if let Err(e) = validate_ifname(&name) {
                    return invalid(e.to_string());
                }
                Ok(())
            }
            NetlinkOp::CreateVxlan { vni, options } => {
                let [lo, hi] = self.grant.vnis;
                if !(lo..=hi).contains(vni) {
                    return denied(format!(
                        "VNI {vni} is outside the granted range (netlink.vnis = [{lo}, {hi}])"
                    ));
                }
                let name = format!("vxlan-{vni}");
                if !self.prefixed(&name) {
                    return denied(format!(
                        "the link would be named {name:?}, which starts with no granted prefix \
                         ({})",
                        self.prefixes()
                    ));
                }
                if let Some(dev) = &options.dev {
                    if !self.physical(dev) {
                        return denied(format!(
                            "a VXLAN is bound to a granted physical interface only ({}); {dev:?} \
                             is not one",
                            self.physicals()
                        ));
                    }
                }
                if options.port == Some(0) {
                    return invalid("UDP port 0".into());
                }
                Ok(())
            }
            NetlinkOp::SetMaster { link, bridge } => {
                usable(link)?;
                if !self.prefixed(bridge) || self.physical(bridge) {
                    return denied(format!(
                        "links are enslaved only to bridges named with a granted prefix ({}); \
                         {bridge:?} is not",
                        self.prefixes()
                    ));
                }
                if link == bridge {
                    return invalid("a link cannot be enslaved to itself".into());
                }
                Ok(())
            }
            NetlinkOp::SetUp(link) | NetlinkOp::LinkInfo(link) => usable(link),
            NetlinkOp::SetDown(link) | NetlinkOp::Delete(link) => owned(link),
            NetlinkOp::SetMtu { link, mtu } => {
                owned(link)?;
                if !(68..=65535).contains(mtu) {
                    return invalid(format!("MTU {mtu} is outside 68..=65535"));
                }
                Ok(())
            }
        }
    }
}

impl NetGrant {
    /// Checks the bridge a backend answered from `ensure-network` (guests and the DHCP port
    /// are plugged into it) with the rule of a bridge it may create: a granted prefix, never a
    /// granted physical interface.
    ///
    /// # Errors
    /// [`NetGrantError::Denied`] naming `netlink.name_prefixes`, [`NetGrantError::Invalid`]
    /// for a malformed name.
    pub fn check_bridge_answer(&self, name: &str) -> Result<(), NetGrantError> {
        let op = format!("answer bridge {name:?}");
        self.check(&NetlinkOp::CreateBridge(name.to_owned()))
            .map_err(|e| match e {
                NetGrantError::Denied { reason, .. } => NetGrantError::Denied { op, reason },
                NetGrantError::Invalid { reason, .. } => NetGrantError::Invalid { op, reason },
            })
    }
}

/// The interface names an operation mentions.
fn op_names(op: &NetlinkOp) -> Vec<&str> {
    match op {
        NetlinkOp::CreateBridge(n)
        | NetlinkOp::SetUp(n)
        | NetlinkOp::SetDown(n)
        | NetlinkOp::Delete(n)
        | NetlinkOp::LinkInfo(n)
        | NetlinkOp::SetMtu { link: n, .. } => vec![n],
        NetlinkOp::CreateVlan { parent, .. } => vec![parent],
        NetlinkOp::CreateVxlan { options, .. } => options.dev.iter().map(String::as_str).collect(),
        NetlinkOp::SetMaster { link, bridge } => vec![link, bridge],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> NetGrant {
        NetGrant::new(NetlinkGrant {
            physical_interfaces: vec!["eth1".into(), "lo".into()],
            vlan_ids: [100, 200],
            vnis: [1000, 2000],
            ..NetlinkGrant::default()
        })
    }

    fn code(op: NetlinkOp) -> Result<(), (&'static str, String)> {
        grant().check(&op).map_err(|e| (e.code(), e.to_string()))
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn answered_bridges_follow_the_create_rule() {
        assert_eq!(grant().check_bridge_answer("brq4e1b0a9c-12"), Ok(()));
        for bad in ["virbr0", "eth1", "docker0", "eth1.150"] {
            let e = grant().check_bridge_answer(bad).unwrap_err();
            assert_eq!(e.code(), "denied", "{bad}");
            assert!(e.to_string().contains("answer bridge"), "{e}");
            assert!(e.to_string().contains("netlink.name_prefixes"), "{e}");
        }
        assert_eq!(
            grant().check_bridge_answer("a b").unwrap_err().code(),
            "invalid"
        );
    }

    #[test]
    fn owned_links_may_be_managed() {
        assert_eq!(code(NetlinkOp::CreateBridge(s("brq4e1b0a9c-12"))), Ok(()));
        assert_eq!(code(NetlinkOp::Delete(s("brq4e1b0a9c-12"))), Ok(()));
        assert_eq!(code(NetlinkOp::Delete(s("eth1.150"))), Ok(()));
        assert_eq!(code(NetlinkOp::SetDown(s("vxlan-1500"))), Ok(()));
        let mtu = |link: &str, mtu| NetlinkOp::SetMtu { link: s(link), mtu };
        assert_eq!(code(mtu("brqx", 1450)), Ok(()));
        assert_eq!(code(mtu("eth1.100", 9000)), Ok(()));
        assert_eq!(code(mtu("brqx", 67)).unwrap_err().0, "invalid");
        assert_eq!(code(mtu("brqx", 65536)).unwrap_err().0, "invalid");
        let vlan = |vid| NetlinkOp::CreateVlan {
            parent: s("eth1"),
            vid,
        };
        assert_eq!(code(vlan(100)), Ok(()));
        assert_eq!(code(vlan(200)), Ok(()));
        let vxlan = |vni, dev: Option<&str>| NetlinkOp::CreateVxlan {
            vni,
            options: VxlanOptions {
                dev: dev.map(s),
                ..VxlanOptions::default()
            },
        };
        assert_eq!(code(vxlan(1000, Some("lo"))), Ok(()));
        assert_eq!(code(vxlan(2000, None)), Ok(()));
    }

    #[test]
    fn physical_interfaces_are_used_not_managed() {
        assert_eq!(code(NetlinkOp::SetUp(s("eth1"))), Ok(()));
        assert_eq!(code(NetlinkOp::LinkInfo(s("eth1"))), Ok(()));
        let enslave = |link: &str, bridge: &str| NetlinkOp::SetMaster {
            link: s(link),
            bridge: s(bridge),
        };
        assert_eq!(code(enslave("eth1", "brqabc")), Ok(()));
        assert_eq!(code(enslave("eth1.100", "brqabc")), Ok(()));
        for op in [
            NetlinkOp::Delete(s("eth1")),
            NetlinkOp::SetDown(s("eth1")),
            NetlinkOp::SetMtu {
                link: s("eth1"),
                mtu: 1500,
            },
            NetlinkOp::CreateBridge(s("eth1")),
        ] {
            let (code, message) = code(op).unwrap_err();
            assert_eq!(code, "denied");
            assert!(message.contains("netlink."), "{message}");
        }
        let (c, m) = code(enslave("eth1", "eth0")).unwrap_err();
        assert_eq!(c, "denied");
        assert!(m.contains("netlink.name_prefixes"), "{m}");
    }

    #[test]
    fn foreign_links_and_out_of_range_ids_are_denied() {
        let (c, m) = code(NetlinkOp::CreateBridge(s("eth0x"))).unwrap_err();
        assert_eq!(c, "denied");
        assert!(
            m.contains("netlink.name_prefixes = [\"brq\", \"vxlan-\"]"),
            "{m}"
        );
        for op in [
            NetlinkOp::Delete(s("eth0")),
            NetlinkOp::SetUp(s("eth0")),
            NetlinkOp::LinkInfo(s("eth0")),
            NetlinkOp::Delete(s("eth1.99")),
            NetlinkOp::Delete(s("eth1.0150")),
            NetlinkOp::Delete(s("eth2.150")),
            NetlinkOp::SetMaster {
                link: s("eth0"),
                bridge: s("brqx"),
            },
        ] {
            assert_eq!(code(op.clone()).unwrap_err().0, "denied", "{op:?}");
        }
        let (c, m) = code(NetlinkOp::CreateVlan {
            parent: s("eth1"),
            vid: 4000,
        })
        .unwrap_err();
        assert_eq!(c, "denied");
        assert!(m.contains("netlink.vlan_ids = [100, 200]"), "{m}");
        let (c, m) = code(NetlinkOp::CreateVlan {
            parent: s("eth0"),
            vid: 150,
        })
        .unwrap_err();
        assert_eq!(c, "denied");
        assert!(m.contains("netlink.physical_interfaces"), "{m}");
        let vxlan = |vni, dev: Option<&str>| NetlinkOp::CreateVxlan {
            vni,
            options: VxlanOptions {
                dev: dev.map(s),
                ..VxlanOptions::default()
            },
        };
        let (c, m) = code(vxlan(5, None)).unwrap_err();
        assert_eq!(c, "denied");
        assert!(m.contains("netlink.vnis = [1000, 2000]"), "{m}");
        let (c, m) = code(vxlan(1500, Some("eth0"))).unwrap_err();
        assert_eq!(c, "denied");
        assert!(m.contains("netlink.physical_interfaces"), "{m}");
    }

    #[test]
    fn malformed_arguments_are_invalid() {
        for op in [
            NetlinkOp::CreateBridge(s("brq/x")),
            NetlinkOp::CreateBridge(s("brq-much-too-long-name")),
            NetlinkOp::SetUp(s("")),
            NetlinkOp::CreateVxlan {
                vni: 1500,
                options: VxlanOptions {
                    port: Some(0),
                    ..VxlanOptions::default()
                },
            },
        ] {
            assert_eq!(code(op.clone()).unwrap_err().0, "invalid", "{op:?}");
        }
    }

    #[test]
    fn vxlan_needs_its_prefix() {
        let grant = NetGrant::new(NetlinkGrant {
            name_prefixes: vec!["brq".into()],
            ..NetlinkGrant::default()
        });
        let err = grant
            .check(&NetlinkOp::CreateVxlan {
                vni: 7,
                options: VxlanOptions::default(),
            })
            .unwrap_err();
        assert_eq!(err.code(), "denied");
        assert!(err.to_string().contains("\"vxlan-7\""), "{err}");
    }
}
