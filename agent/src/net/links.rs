//! Links and addresses over rtnetlink, in the host namespace or inside a named one.
//!
//! A [`Netlink`] is one rtnetlink connection bound to one network namespace: the socket is
//! opened on a thread that entered the namespace ([`super::netns::run_in`]) and then served by
//! the tokio runtime, so every request made through it applies inside that namespace. Every
//! request has a deadline ([`DEFAULT_TIMEOUT`], see [`Netlink::with_timeout`]); arguments are
//! validated before anything is sent.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan,
};

use super::{check_range, netns, validate_ifname, NetError};

/// The deadline of one netlink request unless [`Netlink::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The IANA VXLAN UDP port, used when [`VxlanOptions::port`] is not set.
pub const VXLAN_PORT: u16 = 4789;

/// What the kernel reports about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The MTU, when reported.
    pub mtu: Option<u32>,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
    /// The index of the bridge (or other controller) the link is enslaved to.
    pub master: Option<u32>,
    /// The link kind (`bridge`, `veth`, `vlan`, `vxlan`, …) when it has one.
    pub kind: Option<String>,
}

/// Options of a VXLAN link ([`Netlink::create_vxlan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanOptions {
    /// The local (source) IPv4 address of the tunnel.
    pub local: Option<Ipv4Addr>,
    /// The underlay device the tunnel is bound to.
    pub dev: Option<String>,
    /// The UDP destination port; [`VXLAN_PORT`] when unset.
    pub port: Option<u16>,
    /// Whether the VXLAN device learns remote MACs from received packets.
    pub learning: bool,
}

/// One rtnetlink connection in one network namespace.
///
/// Dropping it stops the connection task.
#[derive(Debug)]
pub struct Netlink {
    pub(super) handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    timeout: Duration,
    namespace: Option<String>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The errno a netlink error carries, if any.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}

impl Netlink {
    /// Opens a connection in the host namespace (the namespace of the calling process).
    ///
    /// # Errors
    ///
    /// [`NetError::Sys`] when the netlink socket cannot be opened.
    pub async fn host() -> Result<Self, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::sys("open a netlink socket", e))?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
            timeout: DEFAULT_TIMEOUT,
            namespace: None,
        })
    }

    /// Opens a connection inside the named namespace: the socket is created on a thread that
    /// entered it, so every request through this connection applies there.
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::NamespaceNotFound`], or [`NetError::Sys`] when
    /// entering the namespace or opening the socket fails.
    pub async fn in_namespace(name: &str) -> Result<Self, NetError> {
        netns::validate_name(name)?;
        let ns = name.to_owned();
        let socket = tokio::task::spawn_blocking(move || {
            netns::run_in(&ns, || {
                Socket::new(NETLINK_ROUTE).map(IntoRawFd::into_raw_fd)
            })
        })
        .await
        .map_err(|e| NetError::Thread {
            op: format!("open a netlink socket in namespace {name}"),
            reason: e.to_string(),
        })??
        .map_err(|e| NetError::sys(format!("open a netlink socket in namespace {name}"), e))?;
        // SAFETY: `socket` is a freshly created netlink socket whose ownership was released by
        // `into_raw_fd` above; nothing else holds or closes it. We are on the tokio runtime, which
        // `TokioSocket` needs to register the descriptor.
        let socket = unsafe { TokioSocket::from_raw_fd(socket) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
            timeout: DEFAULT_TIMEOUT,
            namespace: Some(name.to_owned()),
        })
    }

    /// Sets the deadline of every later request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The namespace this connection works in; `None` for the host namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Runs one request under the deadline.
    pub(super) async fn deadline<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<Result<T, rtnetlink::Error>, NetError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| NetError::Timeout {
                op: self.describe(op),
                after: self.timeout,
            })
    }

    /// `op`, with the namespace it ran in.
    fn describe(&self, op: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{op} (in namespace {ns})"),
            None => op.to_owned(),
        }
    }

    /// The generic mapping of a failed request.
    pub(super) fn fail(&self, op: &str, e: rtnetlink::Error) -> NetError {
        match errno(&e) {
            Some(libc::EPERM) | Some(libc::EACCES) => NetError::PermissionDenied {
                op: self.describe(op),
            },
            _ => NetError::Netlink {
                op: self.describe(op),
                source: e,
            },
        }
    }

    /// Looks a link up by name; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>, NetError> {
        validate_ifname(name)?;
        let op = format!("look up link {name}");
        let mut request = std::pin::pin!(self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute());
        match self.deadline(&op, request.try_next()).await? {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.fail(&op, e)),
        }
    }

    /// The index of link `name`.
    ///
    /// # Errors
    ///
    /// [`NetError::LinkNotFound`] when there is no such link, or as [`Netlink::link`].
    pub async fn index(&self, name: &str) -> Result<u32, NetError> {
        self.link(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| NetError::LinkNotFound(name.to_owned()))
    }

    /// Sends a "new link" request for `name`.
    async fn add(&self, name: &str, kind: &'static str, msg: LinkMessage) -> Result<(), NetError> {
        let op = format!("create {kind} {name}");
        match self
            .deadline(&op, self.handle.link().add(msg).execute())
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) => Err(match errno(&e) {
                Some(libc::EEXIST) => NetError::LinkExists(name.to_owned()),
                Some(libc::EOPNOTSUPP) => {
                    let (module, config) = match kind {
                        "vlan" => ("8021q", "CONFIG_VLAN_8021Q"),
                        "vxlan" => ("vxlan", "CONFIG_VXLAN"),
                        "veth" => ("veth", "CONFIG_VETH"),
                        _ => ("bridge", "CONFIG_BRIDGE"),
                    };
                    NetError::Unsupported {
                        kind,
                        module,
                        config,
                    }
                }
                _ => self.fail(&op, e),
            }),
        }
    }

    /// Sends a "set link" request.
    async fn set(&self, op: &str, name: &str, msg: LinkMessage) -> Result<(), NetError> {
        match self
            .deadline(op, self.handle.link().set(msg).execute())
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(NetError::LinkNotFound(name.to_owned()))
            }
            Err(e) => Err(self.fail(op, e)),
        }
    }

    /// Creates a bridge (left down).
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::LinkExists`], [`NetError::Unsupported`],
    /// [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn create_bridge(&self, name: &str) -> Result<(), NetError> {
        validate_ifname(name)?;
        let msg = LinkMessageBuilder::<LinkBridge>::new(name).build();
        self.add(name, "bridge", msg).await
    }

    /// Creates a veth pair `name` ↔ `peer` (both left down). With `peer_namespace`, the peer
    /// end is then moved into that namespace; if the move fails the pair is deleted again.
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`] (for either name or the namespace),
    /// [`NetError::NamespaceNotFound`], [`NetError::LinkExists`], [`NetError::Netlink`] or
    /// [`NetError::Timeout`].
    pub async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        peer_namespace: Option<&str>,
    ) -> Result<(), NetError> {
        validate_ifname(name)?;
        validate_ifname(peer)?;
        if name == peer {
            return Err(NetError::InvalidName {
                what: "interface",
                name: peer.to_owned(),
                reason: "the veth peer must differ from the other end",
            });
        }
        let target = match peer_namespace {
            Some(ns) => {
                let path = netns::path(ns)?;
                Some(File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        NetError::NamespaceNotFound(ns.to_owned())
                    } else {
                        NetError::sys(format!("open {}", path.display()), e)
                    }
                })?)
            }
            None => None,
        };
        self.add(name, "veth", LinkVeth::new(name, peer).build())
            .await?;
        let Some(target) = target else {
            return Ok(());
        };
        let moved = async {
            let index = self.index(peer).await?;
            let msg = LinkUnspec::new_with_index(index)
                .setns_by_fd(target.as_raw_fd())
                .build();
            let op = format!(
                "move veth {peer} into namespace {}",
                peer_namespace.unwrap_or_default()
            );
            self.set(&op, peer, msg).await
        }
        .await;
        if moved.is_err() {
            // Deleting one end deletes both.
            let _ = self.delete(name).await;
        }
        moved
    }

    /// Creates the VLAN `<parent>.<vid>` on `parent` (left down) and returns its name.
    ///
    /// # Errors
    ///
    /// [`NetError::OutOfRange`] unless `vid` is 1–4094, [`NetError::InvalidName`] when the
    /// resulting name is longer than 15 bytes, [`NetError::LinkNotFound`] without the parent,
    /// [`NetError::LinkExists`], [`NetError::Unsupported`] without 8021q, [`NetError::Netlink`]
    /// or [`NetError::Timeout`].
    pub async fn create_vlan(&self, parent: &str, vid: u16) -> Result<String, NetError> {
        check_range("VLAN id", vid.into(), 1, 4094)?;
        validate_ifname(parent)?;
        let name = format!("{parent}.{vid}");
        validate_ifname(&name)?;
        let parent_index = self.index(parent).await?;
        self.add(
            &name,
            "vlan",
            LinkVlan::new(&name, parent_index, vid).build(),
        )
        .await?;
        Ok(name)
    }

    /// Creates the VXLAN `vxlan-<vni>` (left down) and returns its name.
    ///
    /// # Errors
    ///
    /// [`NetError::OutOfRange`] unless `vni` is 1–16777215, [`NetError::LinkNotFound`] when
    /// `options.dev` does not exist, [`NetError::LinkExists`], [`NetError::Unsupported`] without
    /// the vxlan module, [`NetError::Netlink`] (e.g. a local address not configured here) or
    /// [`NetError::Timeout`].
    pub async fn create_vxlan(&self, vni: u32, options: &VxlanOptions) -> Result<String, NetError> {
        check_range("VXLAN VNI", vni.into(), 1, 16_777_215)?;
        if let Some(port) = options.port {
            check_range("VXLAN UDP port", port.into(), 1, 65535)?;
        }
        let name = format!("vxlan-{vni}");
        let mut builder = LinkVxlan::new(&name, vni)
            .port(options.port.unwrap_or(VXLAN_PORT))
            .learning(options.learning);
        if let Some(dev) = &options.dev {
            validate_ifname(dev)?;
            builder = builder.dev(self.index(dev).await?);
        }
        if let Some(local) = options.local {
            builder = builder.local(local);
        }
        self.add(&name, "vxlan", builder.build()).await?;
        Ok(name)
    }

    /// Enslaves `name` to the bridge `bridge` (`ip link set NAME master BRIDGE`).
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::LinkNotFound`] for either link,
    /// [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<(), NetError> {
        validate_ifname(bridge)?;
        let index = self.index(name).await?;
        let bridge_index = self.index(bridge).await?;
        let msg = LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .build();
        self.set(&format!("enslave {name} to {bridge}"), name, msg)
            .await
    }

    /// Sets link `name` administratively up.
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::LinkNotFound`], [`NetError::Netlink`] or
    /// [`NetError::Timeout`].
    pub async fn set_up(&self, name: &str) -> Result<(), NetError> {
        let index = self.index(name).await?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set(&format!("set {name} up"), name, msg).await
    }

    /// Sets link `name` administratively down.
    ///
    /// # Errors
    ///
    /// As [`Netlink::set_up`].
    pub async fn set_down(&self, name: &str) -> Result<(), NetError> {
        let index = self.index(name).await?;
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.set(&format!("set {name} down"), name, msg).await
    }

    /// Sets the Ethernet address of link `name` (e.g. a DHCP port's MAC on its `ns-` device,
    /// as neutron does, so guests' ARP caches stay right across rebuilds).
    ///
    /// # Errors
    ///
    /// [`NetError::Netlink`] when the device refuses it, or as [`Netlink::set_up`].
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), NetError> {
        let index = self.index(name).await?;
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.set(
            &format!(
                "set the address of {name} to {}",
                super::neigh::format_mac(&mac)
            ),
            name,
            msg,
        )
        .await
    }

    /// Sets the MTU of link `name`.
    ///
    /// # Errors
    ///
    /// [`NetError::OutOfRange`] unless `mtu` is 68–65535, [`NetError::Netlink`] when the
    /// device refuses it, or as [`Netlink::set_up`].
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), NetError> {
        check_range("MTU", mtu.into(), 68, 65535)?;
        let index = self.index(name).await?;
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set(&format!("set the MTU of {name} to {mtu}"), name, msg)
            .await
    }

    /// Adds the IPv4 address `address/prefix_len` to link `name`.
    ///
    /// # Errors
    ///
    /// [`NetError::OutOfRange`] unless the prefix is 0–32, [`NetError::LinkNotFound`],
    /// [`NetError::Netlink`] (e.g. the address is already there) or [`NetError::Timeout`].
    pub async fn add_ipv4(
        &self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        check_range("IPv4 prefix length", prefix_len.into(), 0, 32)?;
        let index = self.index(name).await?;
        let op = format!("add address {address}/{prefix_len} to {name}");
        let request = self
            .handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute();
        match self.deadline(&op, request).await? {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(&op, e)),
        }
    }

    /// Deletes link `name` (for a veth, both ends).
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::LinkNotFound`], [`NetError::Netlink`] or
    /// [`NetError::Timeout`].
    pub async fn delete(&self, name: &str) -> Result<(), NetError> {
        let index = self.index(name).await?;
        let op = format!("delete link {name}");
        match self
            .deadline(&op, self.handle.link().del(index).execute())
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(NetError::LinkNotFound(name.to_owned()))
            }
            Err(e) => Err(self.fail(&op, e)),
        }
    }
}

/// Extracts what callers need from a link message.
fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::Controller(index) => info.master = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(kind) = i {
                        info.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}
