//! The kernel's IPv4 neighbour (ARP) table, read over rtnetlink.
//!
//! The metadata service identifies a caller by the MAC address the kernel learned for the
//! caller's IPv4 address in the network's namespace: once a TCP connection is established the
//! kernel has answered the SYN, so it holds a usable entry for the peer. A [`Neighbours`] is one
//! rtnetlink connection bound to one namespace (the socket is opened on a thread that entered
//! it); every dump has a deadline ([`DEFAULT_TIMEOUT`], see [`Neighbours::with_timeout`]).
//!
//! The kernel runs one dump at a time per netlink socket (a second one fails with `EBUSY`), so
//! a [`Neighbours`] serialises its dumps. Many callers asking at once share dumps through
//! [`Neighbours::ipv4_mac_since`]: a caller that needs the table as it was at some instant
//! (when its TCP connection was accepted, say) takes the newest dump that started at or after
//! that instant, waiting for the one in flight or starting the next one itself — never an
//! older answer, so sharing does not weaken what the table says about a caller.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::net::NetError> {
//! use hyperlet::net::neigh::Neighbours;
//!
//! let table = Neighbours::in_namespace("qdhcp-4e1b0a9c-0000-4000-8000-000000000001").await?;
//! if let Some(mac) = table.ipv4_mac("198.51.100.10".parse().unwrap()).await? {
//!     println!("198.51.100.10 is at {}", hyperlet::net::neigh::format_mac(&mac));
//! }
//! # Ok(()) }
//! ```

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::{netns, NetError};

/// The deadline of one neighbour dump unless [`Neighbours::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// One IPv4 neighbour entry that has a link-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The interface index the entry belongs to.
    pub ifindex: u32,
    /// The neighbour's IPv4 address.
    pub address: Ipv4Addr,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Whether the kernel considers the entry usable (reachable, stale, delay, probe or
    /// permanent) rather than incomplete or failed.
    pub usable: bool,
}

/// One rtnetlink connection for reading the neighbour table of one network namespace.
///
/// Dropping it stops the connection task. Dumps through one value are serialised (the kernel
/// allows one per socket), so it can be shared by concurrent tasks.
#[derive(Debug)]
pub struct Neighbours {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    timeout: Duration,
    namespace: Option<String>,
    /// Held while a dump runs.
    dumping: tokio::sync::Mutex<()>,
    /// The newest successful dump and when it started.
    latest: Mutex<Option<Snapshot>>,
}

/// One dump of the table.
#[derive(Debug, Clone)]
struct Snapshot {
    /// When the dump was asked for: it reflects the table at least as of then.
    started: Instant,
    entries: Arc<Vec<NeighbourEntry>>,
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Neighbours {
    /// Opens a connection in the host namespace (the namespace of the calling process).
    ///
    /// # Errors
    ///
    /// [`NetError::Sys`] when the netlink socket cannot be opened.
    pub async fn host() -> Result<Self, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::sys("open a netlink socket", e))?;
        Ok(Self::new(handle, tokio::spawn(connection), None))
    }

    /// Opens a connection inside the named namespace: the socket is created on a thread that
    /// entered it (registered with the current tokio runtime), so every dump reads that
    /// namespace's table.
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`], [`NetError::NamespaceNotFound`], or [`NetError::Sys`] when
    /// entering the namespace or opening the socket fails.
    pub async fn in_namespace(name: &str) -> Result<Self, NetError> {
        netns::validate_name(name)?;
        let op = format!("open a netlink socket in namespace {name}");
        let runtime = tokio::runtime::Handle::current();
        let ns = name.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            netns::run_in(&ns, move || {
                // The socket is created here, inside the namespace, and registered with the
                // caller's runtime so it can be served from there.
                let _entered = runtime.enter();
                rtnetlink::new_connection()
            })
        })
        .await
        .map_err(|e| NetError::Thread {
            op: op.clone(),
            reason: e.to_string(),
        })??;
        let (connection, handle, _) = opened.map_err(|e| NetError::sys(op, e))?;
        Ok(Self::new(
            handle,
            tokio::spawn(connection),
            Some(name.to_owned()),
        ))
    }

    fn new(
        handle: Handle,
        connection: tokio::task::JoinHandle<()>,
        namespace: Option<String>,
    ) -> Self {
        Self {
            handle,
            connection,
            timeout: DEFAULT_TIMEOUT,
            namespace,
            dumping: tokio::sync::Mutex::new(()),
            latest: Mutex::new(None),
        }
    }

    /// Sets the deadline of every later dump.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The namespace this connection reads; `None` for the host namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Every IPv4 neighbour entry that carries a link-layer address of 6 bytes, from a dump
    /// started now (after any dump in flight on this connection has finished; the deadline
    /// covers the wait too).
    ///
    /// # Errors
    ///
    /// [`NetError::Netlink`], [`NetError::PermissionDenied`] or [`NetError::Timeout`].
    pub async fn ipv4_entries(&self) -> Result<Vec<NeighbourEntry>, NetError> {
        let entries = self.fresh_snapshot(Instant::now()).await?.entries;
        Ok(Arc::unwrap_or_clone(entries))
    }

    /// The MAC address of `address` from a dump that started at or after `since`: the newest
    /// such dump when there is one, else the one in flight if it started late enough, else a
    /// new one. Concurrent callers share dumps this way instead of each running its own. The
    /// same rules as [`Neighbours::ipv4_mac`] apply.
    ///
    /// # Errors
    ///
    /// As [`Neighbours::ipv4_entries`] (the deadline covers waiting for other dumps too).
    pub async fn ipv4_mac_since(
        &self,
        address: Ipv4Addr,
        since: Instant,
    ) -> Result<Option<[u8; 6]>, NetError> {
        let snapshot = self.fresh_snapshot(since).await?;
        Ok(unique_mac(&snapshot.entries, address))
    }

    /// The newest snapshot whose dump started at or after `since`, dumping when needed.
    async fn fresh_snapshot(&self, since: Instant) -> Result<Snapshot, NetError> {
        if let Some(s) = self.latest_since(since) {
            return Ok(s);
        }
        let op = self.describe("dump the IPv4 neighbour table");
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Ok(_dumping) = tokio::time::timeout_at(deadline, self.dumping.lock()).await else {
            return Err(NetError::Timeout {
                op,
                after: self.timeout,
            });
        };
        // The dump we waited for may be recent enough.
        if let Some(s) = self.latest_since(since) {
            return Ok(s);
        }
        let started = Instant::now();
        let entries = Arc::new(self.dump(op, deadline).await?);
        let snapshot = Snapshot { started, entries };
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The stored snapshot if its dump started at or after `since`.
    fn latest_since(&self, since: Instant) -> Option<Snapshot> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| s.started >= since)
            .cloned()
    }

    /// One dump; the caller holds `dumping`.
    async fn dump(
        &self,
        op: String,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<NeighbourEntry>, NetError> {
        let dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_filter_map(|msg| async move { Ok(entry(&msg)) })
            .try_collect::<Vec<_>>();
        match tokio::time::timeout_at(deadline, dump).await {
            Err(_) => Err(NetError::Timeout {
                op,
                after: self.timeout,
            }),
            Ok(Ok(entries)) => Ok(entries),
            Ok(Err(e)) => Err(match &e {
                rtnetlink::Error::NetlinkError(msg)
                    if matches!(
                        msg.to_io().raw_os_error(),
                        Some(libc::EPERM) | Some(libc::EACCES)
                    ) =>
                {
                    NetError::PermissionDenied { op }
                }
                _ => NetError::Netlink { op, source: e },
            }),
        }
    }

    /// The MAC address of `address` in this namespace's neighbour table, from usable entries
    /// only. `None` when there is no such entry, and also when several interfaces hold
    /// different MACs for the address: the caller cannot be told apart then.
    ///
    /// # Errors
    ///
    /// As [`Neighbours::ipv4_entries`].
    pub async fn ipv4_mac(&self, address: Ipv4Addr) -> Result<Option<[u8; 6]>, NetError> {
        self.ipv4_mac_since(address, Instant::now()).await
    }

    /// `op`, with the namespace it ran in.
    fn describe(&self, op: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{op} (in namespace {ns})"),
            None => op.to_owned(),
        }
    }
}

/// The one MAC that usable entries give for `address`, if they agree.
fn unique_mac(entries: &[NeighbourEntry], address: Ipv4Addr) -> Option<[u8; 6]> {
    let mut found = None;
    for e in entries.iter().filter(|e| e.usable && e.address == address) {
        match found {
            None => found = Some(e.mac),
            Some(mac) if mac == e.mac => {}
            Some(_) => return None,
        }
    }
    found
}

/// The entry a neighbour message describes, when it is IPv4 with a 6-byte, non-zero MAC.
fn entry(msg: &NeighbourMessage) -> Option<NeighbourEntry> {
    let mut address = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => address = Some(*ip),
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
            }
            _ => {}
        }
    }
    let mac = mac.filter(|m| m != &[0; 6])?;
    Some(NeighbourEntry {
        ifindex: msg.header.ifindex,
        address: address?,
        mac,
        usable: matches!(
            msg.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        ),
    })
}

/// `aa:bb:cc:dd:ee:ff`, lowercase.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case); `None` unless it is exactly six hex pairs.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(address: [u8; 4], mac: u8, usable: bool) -> NeighbourEntry {
        NeighbourEntry {
            ifindex: 2,
            address: Ipv4Addr::from(address),
            mac: [0xfa, 0x16, 0x3e, 0, 0, mac],
            usable,
        }
    }

    #[test]
    fn the_mac_must_be_unique_among_usable_entries() {
        let ip = Ipv4Addr::new(198, 51, 100, 10);
        assert_eq!(unique_mac(&[], ip), None);
        assert_eq!(
            unique_mac(&[e([198, 51, 100, 10], 1, true)], ip),
            Some([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        // Failed or incomplete entries do not count.
        assert_eq!(unique_mac(&[e([198, 51, 100, 10], 1, false)], ip), None);
        assert_eq!(
            unique_mac(
                &[
                    e([198, 51, 100, 10], 1, false),
                    e([198, 51, 100, 10], 2, true)
                ],
                ip
            ),
            Some([0xfa, 0x16, 0x3e, 0, 0, 2])
        );
        // Two interfaces disagree: ambiguous.
        assert_eq!(
            unique_mac(
                &[
                    e([198, 51, 100, 10], 1, true),
                    e([198, 51, 100, 10], 2, true)
                ],
                ip
            ),
            None
        );
        assert_eq!(unique_mac(&[e([198, 51, 100, 11], 1, true)], ip), None);
    }

    #[test]
    fn macs_format_and_parse() {
        let mac = [0xfa, 0x16, 0x3e, 0x0a, 0xbc, 0x01];
        assert_eq!(format_mac(&mac), "fa:16:3e:0a:bc:01");
        assert_eq!(parse_mac("FA:16:3E:0A:BC:01"), Some(mac));
        for bad in [
            "",
            "fa:16:3e:0a:bc",
            "fa:16:3e:0a:bc:01:02",
            "fa:16:3e:0a:bc:1",
            "zz:16:3e:0a:bc:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
