//! The controller's view of the fleet, read from etcd directly: which nodes exist, which are
//! up, what they hold, and their comings and goings. `hyperlet fleet …` is built on it, and a
//! controller can use it as a library.

use super::etcd::{Etcd, Pages};
use super::keys::Keys;
use super::place::Placeable;
use super::record::{self, HostEntry, Liveness, NodeRecord};
use super::FleetError;
use crate::config::FleetConfig;
use etcd_client::{EventType, WatchOptions};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::BTreeMap;

/// Lease lookups run at once by [`Fleet::nodes`] for heartbeat ages.
const AGE_LOOKUPS: usize = 64;
/// Placement entries per page (about 200 bytes each; larger ones make etcd halve the page).
const ENTRY_PAGE: i64 = 2_000;
/// Liveness key names per page.
const NAME_PAGE: i64 = 5_000;

/// One node as a controller sees it (`hyperlet fleet nodes --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// `up` while its liveness key exists, else `down`.
    pub state: NodeState,
    /// Takes new servers.
    pub enabled: bool,
    /// Why not.
    pub disabled_reason: Option<String>,
    /// Region.
    pub region: String,
    /// Availability zone.
    pub availability_zone: String,
    /// The agent's API URL.
    pub api_url: String,
    /// VXLAN source address.
    pub tunnel_ip: String,
    /// Agent version.
    pub version: String,
    /// Seconds since etcd last heard from the node: from its lease for an up node; for a down
    /// node, since its record was last written (records are refreshed at least once a minute).
    pub heartbeat_age_s: Option<u64>,
    /// The node's stable identity.
    pub node_id: String,
    /// The full record (absent when the node has a liveness key but never wrote a record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<NodeRecord>,
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// The node's lease is alive.
    Up,
    /// The lease ended (the agent stopped, died, or lost etcd for longer than its TTL).
    Down,
}

/// Totals over the fleet (`hyperlet fleet stats`, like `openstack hypervisor stats show`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetStats {
    /// Nodes with a record or a liveness key.
    pub nodes: u64,
    /// Nodes up.
    pub nodes_up: u64,
    /// Nodes down.
    pub nodes_down: u64,
    /// Nodes up but disabled.
    pub nodes_disabled: u64,
    /// Physical CPUs of the up nodes.
    pub vcpus: u64,
    /// vCPUs allocated on the up nodes.
    pub vcpus_used: u64,
    /// Memory of the up nodes (after the host reserve), MiB.
    pub memory_mb: u64,
    /// Memory allocated, MiB.
    pub memory_mb_used: u64,
    /// Memory free right now, MiB.
    pub free_ram_mb: u64,
    /// Disk for servers, GiB.
    pub local_gb: u64,
    /// Disk allocated, GiB.
    pub local_gb_used: u64,
    /// Servers on the up nodes.
    pub running_vms: u64,
}

/// A change seen by [`Fleet::watch`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeEvent {
    /// `up` (a node registered), `down` (its lease ended), `updated` (its record changed) or
    /// `forgotten` (its record was removed).
    pub event: &'static str,
    /// The node.
    pub name: String,
    /// The etcd revision of the change.
    pub revision: i64,
}

/// A connection to one fleet.
pub struct Fleet {
    etcd: Etcd,
    keys: Keys,
}

impl Fleet {
    /// Connects to the fleet a `[fleet]` section (or the CLI's flags) describe.
    ///
    /// # Errors
    /// [`FleetError`] when etcd cannot be reached or the TLS/password files cannot be read.
    pub async fn connect(config: &FleetConfig) -> Result<Self, FleetError> {
        Ok(Self {
            etcd: Etcd::connect(config).await?,
            keys: Keys::new(&config.prefix),
        })
    }

    /// A fleet over an existing client.
    pub fn with(etcd: Etcd, keys: Keys) -> Self {
        Self { etcd, keys }
    }

    /// Records and liveness of every node, read at one revision. Values that are too large
    /// or not JSON are skipped with a warning (a reader never trusts what is in etcd).
    async fn read(
        &self,
    ) -> Result<
        (
            BTreeMap<String, NodeRecord>,
            BTreeMap<String, (Liveness, i64)>,
            i64,
        ),
        FleetError,
    > {
        // Both prefixes at once, at one revision.
        let (nodes, alive_all) = (self.keys.nodes(), self.keys.alive_all());
        let at = self.etcd.revision().await?;
        let (records, alive) = tokio::join!(
            self.etcd.get_prefix_at(&nodes, at),
            self.etcd.get_prefix_at(&alive_all, at)
        );
        let ((records, revision), (alive, _)) = (records?, alive?);
        let nodes_dir = self.keys.nodes();
        let alive_dir = self.keys.alive_all();
        let mut by_name = BTreeMap::new();
        for kv in &records {
            let Some(name) = self.keys.name_in(&nodes_dir, kv.key()) else {
                continue;
            };
            match record::parse::<NodeRecord>(kv.value()) {
                Ok(r) if r.name == name => {
                    by_name.insert(name.to_string(), r);
                }
                Ok(_) => tracing::warn!(node = name, "node record names another node; skipped"),
                Err(e) => {
                    tracing::warn!(node = name, error = %e, "unreadable node record; skipped")
                }
            }
        }
        let mut live = BTreeMap::new();
        for kv in &alive {
            let Some(name) = self.keys.name_in(&alive_dir, kv.key()) else {
                continue;
            };
            match record::parse::<Liveness>(kv.value()) {
                Ok(l) => {
                    live.insert(name.to_string(), (l, kv.lease()));
                }
                Err(e) => {
                    tracing::warn!(node = name, error = %e, "unreadable liveness key; skipped")
                }
            }
        }
        Ok((by_name, live, revision))
    }

    /// Every node as fleet placement sees it, sorted by name: the placement entries and the
    /// names of the live nodes (liveness keys without their values), read at one revision in
    /// large pages, at once. A node with a liveness key but no entry is up without figures
    /// (refused by placement); an unreadable entry is skipped with a warning.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn placement(&self) -> Result<Vec<Placeable>, FleetError> {
        let (hosts_dir, alive_dir) = (self.keys.hosts(), self.keys.alive_all());
        let at = self.etcd.revision().await?;
        let (entries, alive) = tokio::join!(
            self.etcd.read_prefix(
                &hosts_dir,
                at,
                Pages {
                    size: ENTRY_PAGE,
                    keys_only: false
                }
            ),
            self.etcd.read_prefix(
                &alive_dir,
                at,
                Pages {
                    size: NAME_PAGE,
                    keys_only: true
                }
            )
        );
        let ((entries, _), (alive, _)) = (entries?, alive?);
        let live: std::collections::HashSet<&str> = alive
            .iter()
            .filter_map(|kv| self.keys.name_in(&alive_dir, kv.key()))
            .collect();
        let mut nodes = BTreeMap::new();
        for kv in &entries {
            let Some(name) = self.keys.name_in(&hosts_dir, kv.key()) else {
                continue;
            };
            let entry = match record::parse::<HostEntry>(kv.value()).and_then(|entry| {
                match crate::sched::identity_error("its entry", &entry.traits, &entry.metadata) {
                    Some(e) => Err(e),
                    None => Ok(entry),
                }
            }) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(node = name, error = %e, "unreadable placement entry; skipped");
                    continue;
                }
            };
            nodes.insert(
                name,
                Placeable {
                    name: name.to_string(),
                    state: state_of(live.contains(name)),
                    host: Some(entry.host_state(name)),
                    api_url: entry.api_url,
                },
            );
        }
        for name in live {
            nodes.entry(name).or_insert_with(|| Placeable {
                name: name.to_string(),
                state: NodeState::Up,
                api_url: String::new(),
                host: None,
            });
        }
        Ok(nodes.into_values().collect())
    }

    /// Every node, up or down, sorted by name. With `ages`, up nodes' heartbeat ages are read
    /// from their leases (one lookup per up node, [`AGE_LOOKUPS`] at once).
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn nodes(&self, ages: bool) -> Result<Vec<Node>, FleetError> {
        let (records, live, _) = self.read().await?;
        let mut names: Vec<&String> = records.keys().chain(live.keys()).collect();
        names.sort();
        names.dedup();
        let now = chrono::Utc::now();
        let mut nodes: Vec<Node> = names
            .into_iter()
            .map(|name| {
                let record = records.get(name).cloned();
                let liveness = live.get(name);
                let r = record.as_ref();
                let age_down = r
                    .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.updated_at).ok())
                    .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64);
                Node {
                    name: name.clone(),
                    state: state_of(liveness.is_some()),
                    enabled: r.is_none_or(|r| r.enabled),
                    disabled_reason: r.and_then(|r| r.disabled_reason.clone()),
                    region: r.map(|r| r.region.clone()).unwrap_or_default(),
                    availability_zone: r.map(|r| r.availability_zone.clone()).unwrap_or_default(),
                    api_url: r.map(|r| r.api_url.clone()).unwrap_or_default(),
                    tunnel_ip: r.map(|r| r.tunnel_ip.clone()).unwrap_or_default(),
                    version: r.map(|r| r.version.clone()).unwrap_or_default(),
                    heartbeat_age_s: if liveness.is_some() {
                        Some(0)
                    } else {
                        age_down
                    },
                    node_id: liveness
                        .map(|(l, _)| l.node_id.clone())
                        .or_else(|| r.map(|r| r.node_id.clone()))
                        .unwrap_or_default(),
                    record,
                }
            })
            .collect();
        if ages {
            let leases: Vec<(usize, i64)> = nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| live.get(&n.name).map(|(_, lease)| (i, *lease)))
                .collect();
            let found: Vec<(usize, Option<(i64, i64)>)> =
                stream::iter(leases)
                    .map(|(i, lease)| async move {
                        (i, self.etcd.time_to_live(lease).await.ok().flatten())
                    })
                    .buffer_unordered(AGE_LOOKUPS)
                    .collect()
                    .await;
            for (i, ttl) in found {
                nodes[i].heartbeat_age_s =
                    ttl.map(|(left, granted)| (granted - left).max(0).unsigned_abs());
            }
        }
        Ok(nodes)
    }

    /// Totals over the fleet.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn stats(&self) -> Result<FleetStats, FleetError> {
        Ok(stats_of(&self.nodes(false).await?))
    }

    /// Removes a down node's record and its ports on networks spanning nodes (`hyperlet fleet
    /// forget`). An up node is refused unless
    /// `force` (its agent would write the record again within a minute anyway).
    ///
    /// # Errors
    /// [`FleetError::UnknownNode`], [`FleetError::NodeUp`], or an etcd failure.
    pub async fn forget(&self, name: &str, force: bool) -> Result<(), FleetError> {
        super::keys::check_node_name(name).map_err(|_| FleetError::UnknownNode(name.into()))?;
        if !force && self.etcd.get(&self.keys.alive(name)).await?.is_some() {
            return Err(FleetError::NodeUp(name.into()));
        }
        let mut deleted = self.etcd.delete(&self.keys.node(name)).await?
            + self.etcd.delete(&self.keys.alive(name)).await?;
        self.etcd.delete(&self.keys.host(name)).await?;
        // Its ports on networks spanning nodes: peers drop their forwarding entries.
        let (presences, _) = self.etcd.get_prefix(&self.keys.networks()).await?;
        for kv in &presences {
            if let Some((network, node)) = self.keys.parse_network_node(kv.key()) {
                if node == name {
                    deleted += self
                        .etcd
                        .delete(&self.keys.network_node(network, node))
                        .await?;
                }
            }
        }
        if deleted == 0 {
            return Err(FleetError::UnknownNode(name.into()));
        }
        Ok(())
    }

    /// Reports nodes coming up, going down, changing and being forgotten, starting with the
    /// current nodes (as `up`/`down` events), until `on_event` returns `false` or `stop`.
    /// A broken stream is reopened from the last revision seen; when etcd compacted that
    /// revision away, the nodes are read again and the differences reported.
    ///
    /// # Errors
    /// [`FleetError`] when etcd cannot be read at the start.
    pub async fn watch(
        &self,
        mut on_event: impl FnMut(NodeEvent) -> bool,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), FleetError> {
        let (records, live, mut revision) = self.read().await?;
        let mut up: BTreeMap<String, bool> = records.keys().map(|n| (n.clone(), false)).collect();
        for name in live.keys() {
            up.insert(name.clone(), true);
        }
        for (name, is_up) in &up {
            let event = if *is_up { "up" } else { "down" };
            if !on_event(NodeEvent {
                event,
                name: name.clone(),
                revision,
            }) {
                return Ok(());
            }
        }
        let prefix = self.keys.root();
        loop {
            let opened = tokio::time::timeout(
                self.etcd.deadline(),
                self.etcd.client().watch_client().watch(
                    prefix.clone(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
            )
            .await;
            let (_watcher, mut events) = match opened {
                Ok(Ok(pair)) => pair,
                _ => {
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => return Ok(()),
                    }
                }
            };
            loop {
                let message = tokio::select! {
                    m = events.message() => m,
                    () = stop.cancelled() => return Ok(()),
                };
                let resp = match message {
                    Ok(Some(resp)) => resp,
                    _ => break,
                };
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        // The revision is gone: read everything again and report differences.
                        if let Ok((records, live, now)) = self.read().await {
                            let mut next: BTreeMap<String, bool> =
                                records.keys().map(|n| (n.clone(), false)).collect();
                            for name in live.keys() {
                                next.insert(name.clone(), true);
                            }
                            for (name, is_up) in &next {
                                if up.get(name) != Some(is_up) {
                                    let event = if *is_up { "up" } else { "down" };
                                    if !on_event(NodeEvent {
                                        event,
                                        name: name.clone(),
                                        revision: now,
                                    }) {
                                        return Ok(());
                                    }
                                }
                            }
                            for name in up.keys().filter(|n| !next.contains_key(*n)) {
                                if !on_event(NodeEvent {
                                    event: "forgotten",
                                    name: name.clone(),
                                    revision: now,
                                }) {
                                    return Ok(());
                                }
                            }
                            up = next;
                            revision = now;
                        }
                    }
                    break;
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    revision = revision.max(kv.mod_revision());
                    let put = event.event_type() == EventType::Put;
                    let (name, kind) =
                        if let Some(n) = self.keys.name_in(&self.keys.alive_all(), kv.key()) {
                            (n, if put { "up" } else { "down" })
                        } else if let Some(n) = self.keys.name_in(&self.keys.nodes(), kv.key()) {
                            (n, if put { "updated" } else { "forgotten" })
                        } else {
                            continue;
                        };
                    match kind {
                        "up" if up.get(name) == Some(&true) => continue,
                        "up" => {
                            up.insert(name.to_string(), true);
                        }
                        "down" => {
                            up.insert(name.to_string(), false);
                        }
                        "forgotten" => {
                            up.remove(name);
                        }
                        _ => {
                            up.entry(name.to_string()).or_insert(false);
                        }
                    }
                    if !on_event(NodeEvent {
                        event: kind,
                        name: name.to_string(),
                        revision,
                    }) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// `Up` or `Down`.
fn state_of(live: bool) -> NodeState {
    if live {
        NodeState::Up
    } else {
        NodeState::Down
    }
}

/// Totals over `nodes` (capacity of the up nodes only).
pub fn stats_of(nodes: &[Node]) -> FleetStats {
    let mut stats = FleetStats::default();
    for node in nodes {
        stats.nodes += 1;
        if node.state == NodeState::Down {
            stats.nodes_down += 1;
            continue;
        }
        stats.nodes_up += 1;
        if !node.enabled {
            stats.nodes_disabled += 1;
        }
        if let Some(r) = &node.record {
            let c = &r.capacity;
            stats.vcpus += u64::from(c.vcpus_total);
            stats.vcpus_used += u64::from(c.vcpus_used);
            stats.memory_mb += c.ram_total_mb;
            stats.memory_mb_used += c.ram_used_mb;
            stats.free_ram_mb += c.ram_free_mb;
            stats.local_gb += c.disk_total_gb;
            stats.local_gb_used += c.disk_used_gb;
            stats.running_vms += u64::from(r.servers);
        }
    }
    stats
}
