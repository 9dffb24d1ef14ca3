//! Networks that span nodes: VXLAN forwarding through etcd, as neutron's l2population.
//!
//! Each node publishes, per VXLAN network it has ports on, its tunnel address and those
//! ports (`<prefix>/networks/<network id>/nodes/<name>`, no lease: a node whose agent is down
//! keeps its guests reachable), and deletes the key when its last port on the network goes.
//! Each node mirrors every such key (one prefix watch, resumed from the last revision seen,
//! re-read when etcd compacted it away) and programs its `vxlan-<vni>` links: one flooding
//! entry per peer with ports on the network, one unicast entry per remote port MAC; entries
//! no peer asks for are removed. No multicast is needed.
//!
//! DHCP and metadata stay local: the firewall drops anything between a node's DHCP tap and a
//! tunnel link (`net::firewall`), so every node answers its own ports only.

use super::Identity;
use crate::config::FleetConfig;
use crate::fleet::backoff::Backoff;
use crate::fleet::etcd::Etcd;
use crate::fleet::keys::Keys;
use crate::fleet::record;
use crate::fleet::FleetError;
use crate::net::fdb::{RemoteEntry, FLOOD};
use crate::net::links::Netlink;
use crate::net::model::{NetStatus, NetworkType, DHCP_OWNER};
use crate::ops::Services;
use crate::state::PortFilter;
use etcd_client::{EventType, WatchOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the published keys and the programmed entries are checked without a trigger.
const RECHECK: Duration = Duration::from_secs(10);
/// Most ports one node publishes per network (bounds what a reader accepts, too).
const MAX_PORTS: usize = 4096;

/// One node's ports on one network, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The node.
    pub node: String,
    /// Its tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// The network's VNI on that node.
    pub vni: u32,
    /// Its ports on the network.
    pub ports: Vec<RemotePort>,
}

/// A port as peers need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePort {
    /// Port id.
    pub id: String,
    /// MAC address.
    pub mac: String,
    /// Fixed addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Its server is still arriving here by live migration: peers flood to this node (so the
    /// guest is reached the moment it runs here) but send its MAC to the node it leaves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arriving: bool,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The forwarding entries `presences` (each with the etcd revision it was written at) ask for
/// on a network whose VNI here is `vni`: a flooding entry per peer (not `me`) with at least one
/// port and the same VNI, and one entry per MAC toward the node that published it. A MAC
/// published by two nodes (a server that just moved) goes to the newer publication; when that
/// is `me`'s, no remote entry is made for it.
pub fn desired(me: &str, vni: u32, presences: &[(&Presence, i64)]) -> BTreeSet<RemoteEntry> {
    let mut entries = BTreeSet::new();
    let mut owners: BTreeMap<[u8; 6], (i64, Option<Ipv4Addr>)> = BTreeMap::new();
    for (p, revision) in presences {
        if p.vni != vni || p.ports.is_empty() {
            continue;
        }
        let remote = (p.node != me).then_some(p.tunnel_ip);
        if let Some(dst) = remote {
            entries.insert(RemoteEntry { mac: FLOOD, dst });
        }
        for port in &p.ports {
            let Some(mac) = parse_mac(&port.mac).filter(|m| *m != FLOOD && m[0] & 1 == 0) else {
                continue;
            };
            if port.arriving {
                continue;
            }
            match owners.get(&mac) {
                Some((newer, _)) if newer >= revision => {}
                _ => {
                    owners.insert(mac, (*revision, remote));
                }
            }
        }
    }
    for (mac, (_, dst)) in owners {
        if let Some(dst) = dst {
            entries.insert(RemoteEntry { mac, dst });
        }
    }
    entries
}

/// What the task knows across reconnections.
#[derive(Default)]
struct State {
    /// Every presence in etcd, by (network, node).
    remote: BTreeMap<(String, String), (Presence, i64)>,
    /// The revision `remote` is current at (0: read everything again).
    revision: i64,
    /// What this node last published, by network.
    published: BTreeMap<String, Presence>,
}

/// The l2population task of one agent.
pub struct L2Pop {
    /// The agent.
    pub services: Services,
    /// `[fleet]`.
    pub fleet: FleetConfig,
    /// This node.
    pub identity: Identity,
    /// Notified when ports or networks may have changed.
    pub changed: Arc<Notify>,
}

impl L2Pop {
    /// Runs until `stop`, reconnecting with backoff.
    pub async fn run(self, stop: CancellationToken) {
        let mut state = State::default();
        let mut backoff = Backoff::default();
        loop {
            let began = std::time::Instant::now();
            let result = tokio::select! {
                connected = Etcd::connect(&self.fleet) => match connected {
                    Ok(etcd) => self.session(&etcd, &mut state, &stop).await,
                    Err(e) => Err(e),
                },
                () = stop.cancelled() => return,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %crate::api::error::chain(&e), "l2population: etcd link lost; retrying")
                }
            }
            // A session that held longer than the longest wait worked: start over quickly.
            if began.elapsed() > crate::fleet::backoff::MAX {
                backoff.reset();
            }
            if !backoff.wait(&stop).await {
                return;
            }
        }
    }

    fn keys(&self) -> Keys {
        Keys::new(&self.fleet.prefix)
    }

    async fn session(
        &self,
        etcd: &Etcd,
        state: &mut State,
        stop: &CancellationToken,
    ) -> Result<(), FleetError> {
        let keys = self.keys();
        // One netlink connection for the session's programming.
        let netlink = Netlink::host()
            .await
            .map_err(|e| FleetError::Record(format!("no netlink connection: {e}")))?;
        if state.revision == 0 {
            let (kvs, revision) = etcd.get_prefix(&keys.networks()).await?;
            state.remote.clear();
            for kv in &kvs {
                self.apply(&keys, state, kv.key(), Some(kv.value()), kv.mod_revision());
            }
            state.revision = revision;
        }
        // etcd may have lost what was published (restarted empty): put it all again.
        state.published.clear();
        self.publish(etcd, state).await?;
        self.program(state, &netlink).await;
        let mut watch_client = etcd.client().watch_client();
        let (_watcher, mut events) = etcd
            .call(
                "watch",
                watch_client.watch(
                    keys.networks(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(state.revision + 1),
                    ),
                ),
            )
            .await?;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                message = events.message() => {
                    let resp = message
                        .map_err(|source| FleetError::Etcd { op: "watch", source })?
                        .ok_or_else(|| FleetError::Unreachable {
                            endpoints: self.fleet.endpoints.join(","),
                            reason: "the watch stream ended".into(),
                        })?;
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            state.revision = 0;
                        }
                        return Err(FleetError::Record("the watch was cancelled".into()));
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let value = (event.event_type() == EventType::Put).then(|| kv.value());
                        self.apply(&keys, state, kv.key(), value, kv.mod_revision());
                        state.revision = state.revision.max(kv.mod_revision());
                    }
                    self.program(state, &netlink).await;
                }
                _ = recheck.tick() => {
                    self.publish(etcd, state).await?;
                    self.program(state, &netlink).await;
                }
                () = self.changed.notified() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.publish(etcd, state).await?;
                    self.program(state, &netlink).await;
                }
            }
        }
    }

    /// Records one key's new value (`None`: deleted); values that do not parse or do not
    /// match their key are ignored with a warning.
    fn apply(
        &self,
        keys: &Keys,
        state: &mut State,
        key: &[u8],
        value: Option<&[u8]>,
        revision: i64,
    ) {
        let Some((network, node)) = keys.parse_network_node(key) else {
            return;
        };
        let slot = (network.to_string(), node.to_string());
        match value {
            None => {
                state.remote.remove(&slot);
            }
            Some(bytes) => match record::parse::<Presence>(bytes) {
                Ok(p) if p.node == node && p.ports.len() <= MAX_PORTS => {
                    state.remote.insert(slot, (p, revision));
                }
                Ok(_) => tracing::warn!(
                    network,
                    node,
                    "l2population entry does not match its key or is too large; ignored"
                ),
                Err(e) => {
                    tracing::warn!(network, node, error = %e, "unreadable l2population entry; ignored")
                }
            },
        }
    }

    /// This node's presence on each of its VXLAN networks, from the store. Ports of a server
    /// still arriving by live migration are marked `arriving` until it runs here: until then
    /// its MAC is reached on the source, and floods reach this node.
    async fn local(&self) -> Result<BTreeMap<String, Presence>, FleetError> {
        let store = self.services.store();
        let fail = |e: crate::state::StoreError| FleetError::Record(e.to_string());
        let networks = store.list_networks().await.map_err(fail)?;
        let arriving: std::collections::HashSet<String> = store
            .list_servers()
            .await
            .map_err(fail)?
            .into_iter()
            .filter(|s| s.status == "BUILD" && s.task_state.as_deref() == Some("migrating"))
            .map(|s| s.id)
            .collect();
        let ports = store.list_ports(PortFilter::All).await.map_err(fail)?;
        let Ok(tunnel_ip) = self.identity.tunnel_ip.to_string().parse::<Ipv4Addr>() else {
            return Ok(BTreeMap::new());
        };
        let mut local = BTreeMap::new();
        for network in networks
            .iter()
            .filter(|n| n.network_type == NetworkType::Vxlan && n.status == NetStatus::Active)
        {
            let Some(vni) = network.segmentation_id else {
                continue;
            };
            let mine: Vec<RemotePort> = ports
                .iter()
                .filter(|p| {
                    p.network_id == network.id
                        && p.device_owner != DHCP_OWNER
                        && !p.device_id.is_empty()
                })
                .take(MAX_PORTS)
                .map(|p| RemotePort {
                    id: p.id.clone(),
                    mac: p.mac_address.to_lowercase(),
                    ips: p.fixed_ips.iter().map(|f| f.ip_address).collect(),
                    arriving: arriving.contains(&p.device_id),
                })
                .collect();
            if !mine.is_empty() {
                local.insert(
                    network.id.clone(),
                    Presence {
                        node: self.identity.name.clone(),
                        tunnel_ip,
                        vni,
                        ports: mine,
                    },
                );
            }
        }
        Ok(local)
    }

    /// Puts what changed, deletes what is gone.
    async fn publish(&self, etcd: &Etcd, state: &mut State) -> Result<(), FleetError> {
        let keys = self.keys();
        let local = self.local().await?;
        for (network, presence) in &local {
            if state.published.get(network) != Some(presence) {
                let value =
                    serde_json::to_vec(presence).map_err(|e| FleetError::Record(e.to_string()))?;
                etcd.put(&keys.network_node(network, &self.identity.name), value, 0)
                    .await?;
                state.published.insert(network.clone(), presence.clone());
            }
        }
        let gone: Vec<String> = state
            .published
            .keys()
            .filter(|n| !local.contains_key(*n))
            .cloned()
            .collect();
        for network in gone {
            etcd.delete(&keys.network_node(&network, &self.identity.name))
                .await?;
            tracing::info!(network = %network, "l2population: this node has no ports left on the network");
            state.published.remove(&network);
        }
        // After a reconnect `published` starts empty: keys of networks this node left while
        // etcd was away are removed here.
        let stale: Vec<String> = state
            .remote
            .keys()
            .filter(|(n, node)| node == &self.identity.name && !local.contains_key(n))
            .map(|(n, _)| n.clone())
            .collect();
        for network in stale {
            etcd.delete(&keys.network_node(&network, &self.identity.name))
                .await?;
        }
        Ok(())
    }

    /// Makes every local VXLAN link's remote entries what the peers ask for.
    async fn program(&self, state: &State, netlink: &Netlink) {
        let Ok(networks) = self.services.store().list_networks().await else {
            return;
        };
        for network in networks
            .iter()
            .filter(|n| n.network_type == NetworkType::Vxlan && n.status == NetStatus::Active)
        {
            let Some(vni) = network.segmentation_id else {
                continue;
            };
            let dev = format!("vxlan-{vni}");
            let presences: Vec<(&Presence, i64)> = state
                .remote
                .iter()
                .filter(|((n, _), _)| n == &network.id)
                .map(|(_, (p, revision))| (p, *revision))
                .collect();
            let want = desired(&self.identity.name, vni, &presences);
            let have: BTreeSet<RemoteEntry> = match netlink.fdb_remotes(&dev).await {
                Ok(entries) => entries.into_iter().collect(),
                Err(e) => {
                    tracing::debug!(network = %network.id, error = %e, "l2population: link not readable yet");
                    continue;
                }
            };
            if have != want {
                tracing::info!(
                    network = %network.id,
                    link = %dev,
                    adding = want.difference(&have).count(),
                    removing = have.difference(&want).count(),
                    "l2population: programming forwarding entries"
                );
            }
            for entry in have.difference(&want) {
                if let Err(e) = netlink.fdb_delete(&dev, *entry).await {
                    tracing::warn!(network = %network.id, error = %e, "l2population: cannot remove a forwarding entry");
                }
            }
            for entry in want.difference(&have) {
                if let Err(e) = netlink.fdb_add(&dev, *entry).await {
                    tracing::warn!(network = %network.id, error = %e, "l2population: cannot add a forwarding entry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(node: &str, ip: [u8; 4], vni: u32, macs: &[&str]) -> Presence {
        Presence {
            node: node.into(),
            tunnel_ip: ip.into(),
            vni,
            ports: macs
                .iter()
                .map(|m| RemotePort {
                    id: format!("p-{m}"),
                    mac: (*m).into(),
                    ips: Vec::new(),
                    arriving: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_mac_on_two_nodes_goes_to_the_newer_publication() {
        let a = presence("a", [10, 0, 0, 1], 7, &["fa:16:3e:00:00:01"]);
        let b = presence("b", [10, 0, 0, 2], 7, &["fa:16:3e:00:00:01"]);
        let moved = |from_rev, to_rev| desired("c", 7, &[(&a, from_rev), (&b, to_rev)]);
        let unicast = |want: BTreeSet<RemoteEntry>| {
            want.into_iter()
                .filter(|e| e.mac != FLOOD)
                .map(|e| e.dst)
                .collect::<Vec<_>>()
        };
        assert_eq!(unicast(moved(1, 2)), vec![Ipv4Addr::from([10, 0, 0, 2])]);
        assert_eq!(unicast(moved(3, 2)), vec![Ipv4Addr::from([10, 0, 0, 1])]);
        // On the node that holds the newer one, no remote entry for its own guest.
        assert!(unicast(desired("b", 7, &[(&a, 1), (&b, 2)])).is_empty());
        // Still arriving: floods go to B, the MAC to A, however new B's publication is.
        let mut arriving = b.clone();
        arriving.ports[0].arriving = true;
        let want = desired("c", 7, &[(&a, 1), (&arriving, 9)]);
        assert!(want.contains(&RemoteEntry {
            mac: FLOOD,
            dst: [10, 0, 0, 2].into()
        }));
        assert_eq!(unicast(want), vec![Ipv4Addr::from([10, 0, 0, 1])]);
    }

    #[test]
    fn peers_with_ports_get_a_flood_entry_and_one_per_mac() {
        let me = presence("a", [10, 0, 0, 1], 7, &["fa:16:3e:00:00:01"]);
        let b = presence(
            "b",
            [10, 0, 0, 2],
            7,
            &["fa:16:3e:00:00:02", "fa:16:3e:00:00:03"],
        );
        let empty = presence("c", [10, 0, 0, 3], 7, &[]);
        let other_vni = presence("d", [10, 0, 0, 4], 8, &["fa:16:3e:00:00:04"]);
        let hostile = presence(
            "e",
            [10, 0, 0, 5],
            7,
            &["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "x"],
        );
        let want = desired(
            "a",
            7,
            &[
                (&me, 1),
                (&b, 2),
                (&empty, 3),
                (&other_vni, 4),
                (&hostile, 5),
            ],
        );
        let dst_b: Ipv4Addr = [10, 0, 0, 2].into();
        let dst_e: Ipv4Addr = [10, 0, 0, 5].into();
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            vec![
                RemoteEntry {
                    mac: FLOOD,
                    dst: dst_b
                },
                RemoteEntry {
                    mac: FLOOD,
                    dst: dst_e
                },
                RemoteEntry {
                    mac: [0xfa, 0x16, 0x3e, 0, 0, 2],
                    dst: dst_b
                },
                RemoteEntry {
                    mac: [0xfa, 0x16, 0x3e, 0, 0, 3],
                    dst: dst_b
                },
            ]
        );
    }
}
