//! Remote forwarding entries of a VXLAN link (`bridge fdb … dev vxlan-N dst IP`), as
//! neutron's l2population programs them: one all-zeros entry per peer node (head-end
//! replication of broadcast, unknown unicast and multicast) and one entry per remote port MAC.
//!
//! Only entries with a destination address are read or touched: they are the remote ones,
//! which only the agent adds on its VXLAN links.

use std::net::Ipv4Addr;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::links::Netlink;
use super::NetError;

/// The MAC of flooding entries.
pub const FLOOD: [u8; 6] = [0; 6];

/// One remote forwarding entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteEntry {
    /// The MAC ([`FLOOD`] for a flooding entry).
    pub mac: [u8; 6],
    /// The peer's tunnel address.
    pub dst: Ipv4Addr,
}

fn message(index: u32, entry: &RemoteEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            entry.dst,
        )));
    msg
}

impl Netlink {
    /// The permanent remote entries (those with a destination) of VXLAN link `dev`.
    ///
    /// # Errors
    /// [`NetError::LinkNotFound`], [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn fdb_remotes(&self, dev: &str) -> Result<Vec<RemoteEntry>, NetError> {
        let index = self.index(dev).await?;
        let op = format!("list forwarding entries of {dev}");
        let mut request = self.handle.neighbours().get();
        request.message_mut().header.family = AddressFamily::Bridge;
        request.message_mut().header.ifindex = index;
        let dump = request.execute().try_collect::<Vec<_>>();
        let messages = self
            .deadline(&op, dump)
            .await?
            .map_err(|e| self.fail(&op, e))?;
        let mut entries = Vec::new();
        // Only permanent entries are the agent's: learned ones (VXLAN links learn) belong to
        // the kernel.
        for msg in messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
        {
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(&mac[..]).ok(),
                _ => None,
            });
            let dst = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                // In a bridge-family message the address comes undecoded.
                NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                    <[u8; 4]>::try_from(&bytes[..]).ok().map(Ipv4Addr::from)
                }
                _ => None,
            });
            if let (Some(mac), Some(dst)) = (mac, dst) {
                entries.push(RemoteEntry { mac, dst });
            }
        }
        entries.sort();
        entries.dedup();
        Ok(entries)
    }

    /// Adds a remote entry to VXLAN link `dev`: flooding entries are appended (one per peer),
    /// unicast ones replace what the MAC had.
    ///
    /// # Errors
    /// [`NetError::LinkNotFound`], [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn fdb_add(&self, dev: &str, entry: RemoteEntry) -> Result<(), NetError> {
        let mode = if entry.mac == FLOOD {
            NLM_F_APPEND
        } else {
            NLM_F_REPLACE
        };
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode;
        self.fdb_request(dev, entry, true, flags).await
    }

    /// Removes a remote entry from VXLAN link `dev` (absent is not an error).
    ///
    /// # Errors
    /// [`NetError::LinkNotFound`], [`NetError::Netlink`] or [`NetError::Timeout`].
    pub async fn fdb_delete(&self, dev: &str, entry: RemoteEntry) -> Result<(), NetError> {
        self.fdb_request(dev, entry, false, NLM_F_REQUEST | NLM_F_ACK)
            .await
    }

    async fn fdb_request(
        &self,
        dev: &str,
        entry: RemoteEntry,
        add: bool,
        flags: u16,
    ) -> Result<(), NetError> {
        let index = self.index(dev).await?;
        let msg = message(index, &entry);
        let mut req = NetlinkMessage::from(if add {
            RouteNetlinkMessage::NewNeighbour(msg)
        } else {
            RouteNetlinkMessage::DelNeighbour(msg)
        });
        req.header.flags = flags;
        let op = format!(
            "{} forwarding entry {} dst {} on {dev}",
            if add { "add" } else { "delete" },
            super::neigh::format_mac(&entry.mac),
            entry.dst
        );
        let mut handle = self.handle.clone();
        let run = async move {
            let mut response = handle.request(req)?;
            while let Some(message) = response.next().await {
                if let NetlinkPayload::Error(err) = message.payload {
                    return Err(rtnetlink::Error::NetlinkError(err));
                }
            }
            Ok(())
        };
        match self.deadline(&op, run).await? {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if !add && e.to_io().raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(self.fail(&op, e)),
        }
    }
}
