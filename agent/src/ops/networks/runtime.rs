//! What runs on the host for each network: the backend's bridge, and for networks with a
//! DHCP-enabled subnet the `qdhcp-<net-id>` namespace with the DHCP port's veth
//! (`tap…` on the bridge ↔ `ns-…` in the namespace holding the port's addresses and
//! 169.254.169.254/32), the native DHCP server and the metadata server.
//!
//! [`sync_network`] makes the host match the store for one network and is idempotent;
//! [`restore`] runs it for every network at startup. The DHCP and metadata servers read
//! in-memory tables ([`NetworkTables`]) that [`refresh`] rebuilds from the store whenever a
//! port of the network changes, so a DHCP packet or metadata request never waits on the store.

use super::backend;
use crate::dhcp::{DhcpServer, DhcpStats, HostRoute as DhcpRoute, Lease, LeaseSource};
use crate::metadata::{
    InstanceMetadata, MetadataOptions, MetadataServer, MetadataSource, MetadataStats,
    SetPasswordError,
};
use crate::net::links::Netlink;
use crate::net::model::{
    dhcp_namespace, ns_device_name, tap_name, NetStatus, Network, Port, Subnet, DHCP_OWNER,
};
use crate::net::neigh::parse_mac;
use crate::net::{netns, Ipv4Cidr, NetError};
use crate::ops::{OpError, Services};
use crate::state::{IpRequest, NewPort, PortFilter, Store};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The metadata service address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The project every server of this node belongs to in metadata (the agent is single-tenant;
/// a controller that needs projects keeps them itself).
pub const PROJECT_ID: &str = "default";
/// DHCP lease time handed out (neutron's `dhcp_lease_duration`).
pub const LEASE_TIME: Duration = Duration::from_secs(86_400);

/// Per-network host services and the lock serialising topology changes.
#[derive(Default)]
pub struct NetRuntime {
    lock: tokio::sync::Mutex<()>,
    sync: tokio::sync::Mutex<()>,
    running: std::sync::Mutex<HashMap<String, Arc<Running>>>,
}

impl NetRuntime {
    /// The lock every network, subnet and port mutation of the store holds.
    pub fn lock(&self) -> &tokio::sync::Mutex<()> {
        &self.lock
    }

    fn get(&self, id: &str) -> Option<Arc<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn take(&self, id: &str) -> Option<Arc<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// The counters of every network's running DHCP and metadata servers, by network id
    /// (for `GET /metrics`; a server restarted by a sync starts again from zero). Never waits:
    /// a server that a sync is starting or stopping right now is left out of this snapshot.
    pub fn counters(&self) -> Vec<NetworkCounters> {
        let mut all: Vec<(String, Arc<Running>)> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(all.len());
        for (network_id, running) in all {
            let dhcp = running
                .dhcp
                .try_lock()
                .ok()
                .and_then(|d| d.as_ref().map(DhcpServer::stats));
            let metadata = running
                .metadata
                .try_lock()
                .ok()
                .and_then(|m| m.as_ref().map(MetadataServer::stats));
            out.push(NetworkCounters {
                network_id,
                dhcp,
                metadata,
            });
        }
        out
    }

    /// Stops every server (agent shutdown).
    pub async fn stop_all(&self) {
        let all: Vec<Arc<Running>> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for running in all {
            running.stop().await;
        }
    }
}

/// The counters of one network's DHCP and metadata servers (`None`: not running).
#[derive(Debug, Clone)]
pub struct NetworkCounters {
    /// The network.
    pub network_id: String,
    /// Its DHCP server's counters.
    pub dhcp: Option<DhcpStats>,
    /// Its metadata server's counters.
    pub metadata: Option<MetadataStats>,
}

/// The DHCP and metadata servers of one network, and what they were set up for.
struct Running {
    dhcp: tokio::sync::Mutex<Option<DhcpServer>>,
    metadata: tokio::sync::Mutex<Option<MetadataServer>>,
    tables: Arc<NetworkTables>,
    /// Bridge, MTU and DHCP port addresses the namespace was built for.
    signature: String,
}

impl Running {
    async fn stop(&self) {
        if let Some(m) = self.metadata.lock().await.take() {
            m.stop().await;
        }
        if let Some(d) = self.dhcp.lock().await.take() {
            d.stop().await;
        }
    }
}

/// What the DHCP and metadata servers of one network answer from.
pub struct NetworkTables {
    network_id: String,
    store: Store,
    leases: RwLock<HashMap<[u8; 6], Lease>>,
    instances: RwLock<HashMap<Ipv4Addr, PortInstance>>,
    /// Rebuilds asked for so far (each [`refresh`] call takes the next number).
    requested: AtomicU64,
    /// Held while the tables are rebuilt: one rebuild at a time, so an older read of the
    /// store can never overwrite a newer one. Holds the last request number a finished
    /// rebuild covered.
    rebuilt: tokio::sync::Mutex<u64>,
}

impl NetworkTables {
    fn new(network_id: &str, store: Store) -> Self {
        Self {
            network_id: network_id.to_string(),
            store,
            leases: RwLock::default(),
            instances: RwLock::default(),
            requested: AtomicU64::new(0),
            rebuilt: tokio::sync::Mutex::new(0),
        }
    }
}

/// The MAC of a port and the metadata of the server behind it.
type PortInstance = ([u8; 6], Arc<InstanceMetadata>);

impl LeaseSource for NetworkTables {
    fn lease_for(&self, mac: [u8; 6]) -> Option<Lease> {
        self.leases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&mac)
            .cloned()
    }
}

impl MetadataSource for NetworkTables {
    fn identify(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Option<Arc<InstanceMetadata>> {
        if network_id != self.network_id {
            return None;
        }
        let instances = self.instances.read().unwrap_or_else(|p| p.into_inner());
        let (port_mac, meta) = instances.get(&ip)?;
        match mac {
            Some(m) if m == *port_mac => Some(meta.clone()),
            _ => None,
        }
    }

    fn password(&self, server_id: &str) -> Option<String> {
        self.store
            .instance_password_blocking(server_id)
            .unwrap_or_else(|e| {
                tracing::warn!(server_id, error = %e, "cannot read the instance password");
                None
            })
    }

    fn set_password(&self, server_id: &str, password: &str) -> Result<(), SetPasswordError> {
        match self
            .store
            .set_instance_password_blocking(server_id, password)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SetPasswordError::AlreadySet),
            Err(e) => Err(SetPasswordError::Store(e.to_string())),
        }
    }
}

fn net_err(e: NetError) -> OpError {
    OpError::Network(crate::api::error::chain(&e))
}

/// A hostname from a server name, as nova derives one: lowercase letters, digits and `-`,
/// at most 63 characters.
pub fn hostname_of(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "server".into()
    } else {
        trimmed
    }
}

/// Makes the host match the store for one network. Idempotent; safe after a crash. Runs on
/// a task of its own, so a caller that is dropped (a request past its deadline, a client
/// that went away) never cuts a sync in half.
///
/// # Errors
/// [`OpError::Plugin`] when the backend fails (the network goes to ERROR with the fault),
/// [`OpError::Network`] when the namespace or the servers cannot be set up.
pub async fn sync_network(services: &Services, id: &str) -> Result<(), OpError> {
    let (services, id) = (services.clone(), id.to_string());
    tokio::spawn(async move {
        let result = sync_now(&services, &id).await;
        // The bridge and the DHCP port may have come or gone.
        if let Err(e) = crate::ops::security_groups::apply::sync(&services).await {
            tracing::warn!(network_id = %id, error = %crate::api::error::chain(&e), "cannot program the firewall");
        }
        result
    })
    .await
    .unwrap_or_else(|e| Err(OpError::Interrupted(format!("the network sync ended: {e}"))))
}

async fn sync_now(services: &Services, id: &str) -> Result<(), OpError> {
    let runtime = services.net_runtime();
    let _sync = runtime.sync.lock().await;
    let Some(network) = services.store().get_network(id).await? else {
        if let Some(running) = runtime.take(id) {
            running.stop().await;
        }
        return Ok(());
    };
    if network.status == NetStatus::Deleting {
        if let Some(running) = runtime.take(id) {
            running.stop().await;
        }
        teardown_namespace(&network).await?;
        backend::delete(services, &network.backend, &network.backend_view()).await?;
        services.store().delete_network(id).await?;
        return Ok(());
    }
    let bridge = match backend::ensure(services, &network.backend, &network.backend_view()).await {
        Ok(bridge) => bridge,
        Err(e) => {
            let fault = crate::api::error::chain(&e);
            services
                .store()
                .set_network_state(id, NetStatus::Error, None, Some(fault))
                .await?;
            return Err(e);
        }
    };
    services
        .store()
        .set_network_state(id, NetStatus::Active, Some(bridge.clone()), None)
        .await?;
    let subnets: Vec<Subnet> = services
        .store()
        .list_subnets(Some(id))
        .await?
        .into_iter()
        .filter(|s| s.enable_dhcp)
        .collect();
    let dhcp_port = ensure_dhcp_port(services, &network, &subnets).await?;
    let Some(dhcp_port) = dhcp_port else {
        if let Some(running) = runtime.take(id) {
            running.stop().await;
        }
        return teardown_namespace(&network).await;
    };
    let signature = format!(
        "{bridge}|{}|{}|{:?}",
        network.mtu, dhcp_port.id, dhcp_port.fixed_ips
    );
    if let Some(running) = runtime.get(id) {
        if running.signature == signature {
            drop(_sync);
            refresh(services, id).await;
            return Ok(());
        }
        runtime.take(id);
        running.stop().await;
    }
    // Not running in this process: whatever is on the host is a leftover; rebuild it.
    teardown_namespace(&network).await?;
    let server_ip = build_namespace(&network, &bridge, &dhcp_port, &subnets).await?;
    let tables = Arc::new(NetworkTables::new(id, services.store().clone()));
    fill_tables(services, &network, &tables, Some(server_ip)).await?;
    let namespace = dhcp_namespace(id);
    let device = ns_device_name(&dhcp_port.id);
    let dhcp = DhcpServer::start(&namespace, &device, server_ip, tables.clone())
        .await
        .map_err(|e| OpError::Network(crate::api::error::chain(&e)))?;
    let metadata = MetadataServer::start(
        &namespace,
        id,
        SocketAddr::from((METADATA_IP, 80)),
        tables.clone(),
        metadata_options(services),
    )
    .await
    .map_err(|e| OpError::Network(crate::api::error::chain(&e)))?;
    services
        .store()
        .bind_port(&dhcp_port.id, id, DHCP_OWNER, NetStatus::Active)
        .await?;
    runtime
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id.to_string(),
            Arc::new(Running {
                dhcp: tokio::sync::Mutex::new(Some(dhcp)),
                metadata: tokio::sync::Mutex::new(Some(metadata)),
                tables,
                signature,
            }),
        );
    // A port changed while the servers started refreshed no tables (none were running yet).
    refresh(services, id).await;
    tracing::info!(network_id = id, namespace, "DHCP and metadata serving");
    Ok(())
}

/// The metadata service's limits and token mode, from `[metadata]`.
fn metadata_options(services: &Services) -> MetadataOptions {
    let md = &services.config().metadata;
    MetadataOptions {
        require_tokens: md.require_tokens,
        requests_per_second: md.requests_per_second,
        burst: md.burst,
    }
}

/// The MAC of a network's DHCP/metadata port: the same on every node (derived from the network
/// id), so a guest that moves to another node still reaches 169.254.169.254 at the MAC in its
/// ARP cache, served there by that node's own namespace. The firewall keeps every node's copy
/// off the uplinks (`net::firewall`), so the shared MAC is never seen on a wire or tunnel.
pub fn dhcp_mac(network: &Network) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(network.id.as_bytes());
    // fa:16:3f: locally administered, unicast, apart from the guests' fa:16:3e.
    format!("fa:16:3f:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// The DHCP port with one address on every DHCP-enabled subnet, created or re-created as
/// needed; `None` (and any DHCP port deleted) when no subnet has DHCP.
async fn ensure_dhcp_port(
    services: &Services,
    network: &Network,
    subnets: &[Subnet],
) -> Result<Option<Port>, OpError> {
    let _guard = services.network_lock().lock().await;
    let ports = services
        .store()
        .list_ports(PortFilter::Network(network.id.clone()))
        .await?;
    let mut existing: Vec<Port> = ports
        .into_iter()
        .filter(|p| p.device_owner == DHCP_OWNER)
        .collect();
    let wanted: Vec<&str> = subnets.iter().map(|s| s.id.as_str()).collect();
    if let Some(port) = existing.first() {
        let have: Vec<&str> = port
            .fixed_ips
            .iter()
            .map(|f| f.subnet_id.as_str())
            .collect();
        if have == wanted && existing.len() == 1 {
            return Ok(existing.pop());
        }
    }
    for port in &existing {
        crate::ops::fleet::ipam::delete_port(services, port).await?;
    }
    if subnets.is_empty() {
        return Ok(None);
    }
    let port = crate::ops::fleet::ipam::create_port(
        services,
        network,
        NewPort {
            id: uuid::Uuid::new_v4().to_string(),
            network_id: network.id.clone(),
            name: String::new(),
            mac_address: Some(dhcp_mac(network)),
            ips: subnets
                .iter()
                .map(|s| IpRequest::InSubnet(s.id.clone()))
                .collect(),
            device_id: network.id.clone(),
            device_owner: DHCP_OWNER.into(),
            // Trusted by the firewall (its answers must reach every port).
            security_groups: Vec::new(),
            port_security_enabled: false,
            allowed_address_pairs: Vec::new(),
            exclude: Vec::new(),
        },
    )
    .await?;
    Ok(Some(port))
}

/// Creates the namespace, the veth, enslaves the host end and addresses the namespace end.
/// Returns the address the DHCP server answers from.
async fn build_namespace(
    network: &Network,
    bridge: &str,
    port: &Port,
    subnets: &[Subnet],
) -> Result<Ipv4Addr, OpError> {
    let namespace = dhcp_namespace(&network.id);
    let tap = tap_name(&port.id);
    let device = ns_device_name(&port.id);
    let ns = namespace.clone();
    tokio::task::spawn_blocking(move || netns::create(&ns))
        .await
        .map_err(|e| OpError::Network(e.to_string()))?
        .map_err(net_err)?;
    let host = Netlink::host().await.map_err(net_err)?;
    host.create_veth(&tap, &device, Some(&namespace))
        .await
        .map_err(net_err)?;
    host.set_mtu(&tap, network.mtu).await.map_err(net_err)?;
    host.set_master(&tap, bridge).await.map_err(net_err)?;
    host.set_up(&tap).await.map_err(net_err)?;
    let inside = Netlink::in_namespace(&namespace).await.map_err(net_err)?;
    inside.set_up("lo").await.map_err(net_err)?;
    inside
        .set_mtu(&device, network.mtu)
        .await
        .map_err(net_err)?;
    if let Some(mac) = parse_mac(&port.mac_address) {
        inside.set_mac(&device, mac).await.map_err(net_err)?;
    }
    let mut first = None;
    for fixed in &port.fixed_ips {
        let prefix = subnets
            .iter()
            .find(|s| s.id == fixed.subnet_id)
            .map_or(24, |s| s.prefix().prefix_len());
        inside
            .add_ipv4(&device, fixed.ip_address, prefix)
            .await
            .map_err(net_err)?;
        first.get_or_insert(fixed.ip_address);
    }
    inside
        .add_ipv4(&device, METADATA_IP, 32)
        .await
        .map_err(net_err)?;
    inside.set_up(&device).await.map_err(net_err)?;
    first.ok_or_else(|| OpError::Network("the DHCP port has no address".into()))
}

/// Removes the network's namespace (which takes the veth pair with it). Idempotent.
async fn teardown_namespace(network: &Network) -> Result<(), OpError> {
    let namespace = dhcp_namespace(&network.id);
    tokio::task::spawn_blocking(move || match netns::delete(&namespace) {
        Ok(()) | Err(NetError::NamespaceNotFound(_)) => Ok(()),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| OpError::Network(e.to_string()))?
    .map_err(net_err)
}

/// Rebuilds the DHCP and metadata tables of a network from the store, after the caller
/// changed a port there. Failures are logged: the tables keep their previous contents.
///
/// Single flight: rebuilds of one network run one at a time, and a caller whose change a
/// rebuild that started after it already read returns without another one. So concurrent
/// callers (20 servers booting at once) never overwrite a newer table with an older read of
/// the store, and each returns only once its change is being served.
pub async fn refresh(services: &Services, network_id: &str) {
    if let Err(e) = crate::ops::security_groups::apply::sync(services).await {
        tracing::warn!(network_id, error = %crate::api::error::chain(&e), "cannot program the firewall");
    }
    let Some(running) = services.net_runtime().get(network_id) else {
        return;
    };
    let tables = &running.tables;
    let wanted = tables.requested.fetch_add(1, Ordering::SeqCst) + 1;
    let mut covered = tables.rebuilt.lock().await;
    if *covered >= wanted {
        return;
    }
    // Every request made until now is covered by a read of the store that starts now.
    let upto = tables.requested.load(Ordering::SeqCst);
    let network = match services.store().get_network(network_id).await {
        Ok(Some(n)) => n,
        _ => return,
    };
    match fill_tables(services, &network, tables, None).await {
        Ok(()) => *covered = upto,
        Err(e) => {
            tracing::warn!(network_id, error = %crate::api::error::chain(&e), "cannot refresh DHCP and metadata tables");
        }
    }
}

async fn fill_tables(
    services: &Services,
    network: &Network,
    tables: &NetworkTables,
    server_ip: Option<Ipv4Addr>,
) -> Result<(), OpError> {
    let subnets: HashMap<String, Subnet> = services
        .store()
        .list_subnets(Some(&network.id))
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let ports = services
        .store()
        .list_ports(PortFilter::Network(network.id.clone()))
        .await?;
    let server_ip = match server_ip {
        Some(ip) => Some(ip),
        None => ports
            .iter()
            .find(|p| p.device_owner == DHCP_OWNER)
            .and_then(|p| p.fixed_ips.first().map(|f| f.ip_address)),
    };
    let mut leases = HashMap::new();
    let mut instances = HashMap::new();
    for port in ports.iter().filter(|p| p.device_owner != DHCP_OWNER) {
        let Some(mac) = parse_mac(&port.mac_address) else {
            continue;
        };
        let Some(fixed) = port
            .fixed_ips
            .iter()
            .find(|f| subnets.get(&f.subnet_id).is_some_and(|s| s.enable_dhcp))
        else {
            continue;
        };
        let subnet = &subnets[&fixed.subnet_id];
        // One store read per bound port: the row and its spec together.
        let server = if port.device_id.is_empty() {
            None
        } else {
            crate::ops::servers::load(services, &port.device_id)
                .await
                .ok()
        };
        let hostname = server.as_ref().map(|s| hostname_of(&s.row.name));
        let mut routes: Vec<DhcpRoute> = subnet
            .host_routes
            .iter()
            .filter_map(|r| {
                let dest: Ipv4Cidr = r.destination.parse().ok()?;
                Some(DhcpRoute {
                    destination: dest.network(),
                    prefix_len: dest.prefix_len(),
                    nexthop: r.nexthop,
                })
            })
            .collect();
        if server_ip.is_some() {
            // On-link (RFC 3442 router 0.0.0.0): the guest asks ARP for 169.254.169.254 itself
            // and this node's namespace answers, on whichever node the guest runs now.
            routes.push(DhcpRoute {
                destination: METADATA_IP,
                prefix_len: 32,
                nexthop: Ipv4Addr::UNSPECIFIED,
            });
        }
        leases.insert(
            mac,
            Lease {
                mac,
                ip: fixed.ip_address,
                prefix_len: subnet.prefix().prefix_len(),
                gateway: subnet.gateway_ip,
                dns: subnet.dns_nameservers.clone(),
                mtu: u16::try_from(network.mtu).ok(),
                hostname: hostname.clone(),
                domain_name: None,
                host_routes: routes,
                lease_time: LEASE_TIME,
            },
        );
        if let Some(loaded) = server {
            let (server, spec) = (loaded.view(), loaded.spec);
            instances.insert(
                fixed.ip_address,
                (
                    mac,
                    Arc::new(instance_metadata(
                        network,
                        &server,
                        &spec,
                        port,
                        fixed.ip_address,
                        &subnets,
                    )),
                ),
            );
        }
    }
    *tables.leases.write().unwrap_or_else(|p| p.into_inner()) = leases;
    *tables.instances.write().unwrap_or_else(|p| p.into_inner()) = instances;
    Ok(())
}

fn instance_metadata(
    network: &Network,
    server: &crate::ops::servers::Server,
    spec: &crate::ops::servers::ServerSpec,
    port: &Port,
    ip: Ipv4Addr,
    subnets: &HashMap<String, Subnet>,
) -> InstanceMetadata {
    use base64::Engine;
    let user_data = spec.user_data.as_deref().and_then(|u| {
        base64::engine::general_purpose::STANDARD
            .decode(u.trim())
            .ok()
    });
    let f = &spec.flavor;
    InstanceMetadata {
        uuid: server.id.clone(),
        name: server.name.clone(),
        hostname: hostname_of(&server.name),
        availability_zone: server.availability_zone.clone(),
        project_id: PROJECT_ID.into(),
        launch_index: 0,
        instance_type: format!("v{}-r{}-d{}", f.vcpus, f.ram_mb, f.disk_gb),
        image_id: spec.image_id.clone(),
        public_keys: spec.public_keys.clone(),
        user_data,
        meta: spec.metadata.clone(),
        local_ipv4: ip,
        mac: port.mac_address.clone(),
        network_data: network_data(network, port, subnets),
        vendor_data: serde_json::json!({}),
    }
}

/// The OpenStack `network_data.json` of one port (links, networks, services), as nova
/// renders it for an IPv4 subnet configured by DHCP.
fn network_data(
    network: &Network,
    port: &Port,
    subnets: &HashMap<String, Subnet>,
) -> serde_json::Value {
    let link_id = port.device_name.clone();
    let mut networks = Vec::new();
    let mut dns = Vec::new();
    for (i, fixed) in port.fixed_ips.iter().enumerate() {
        let Some(subnet) = subnets.get(&fixed.subnet_id) else {
            continue;
        };
        let prefix = subnet.prefix();
        let mut routes = Vec::new();
        if let Some(gw) = subnet.gateway_ip {
            routes.push(serde_json::json!({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gw.to_string()}));
        }
        for r in &subnet.host_routes {
            if let Ok(dest) = r.destination.parse::<Ipv4Cidr>() {
                routes.push(serde_json::json!({"network": dest.network().to_string(), "netmask": dest.netmask().to_string(), "gateway": r.nexthop.to_string()}));
            }
        }
        for d in &subnet.dns_nameservers {
            dns.push(serde_json::json!({"type": "dns", "address": d.to_string()}));
        }
        networks.push(serde_json::json!({
            "id": format!("network{i}"),
            "type": if subnet.enable_dhcp { "ipv4_dhcp" } else { "ipv4" },
            "link": link_id,
            "ip_address": fixed.ip_address.to_string(),
            "netmask": prefix.netmask().to_string(),
            "routes": routes,
            "network_id": network.id,
            "services": subnet.dns_nameservers.iter().map(|d| serde_json::json!({"type": "dns", "address": d.to_string()})).collect::<Vec<_>>(),
        }));
    }
    let links = vec![serde_json::json!({
        "id": link_id,
        "vif_id": port.id,
        "type": "bridge",
        "mtu": network.mtu,
        "ethernet_mac_address": port.mac_address,
    })];
    serde_json::json!({ "links": links, "networks": networks, "services": dns })
}

/// Sets up every stored network at startup (finishing interrupted creates and deletes).
/// A network that fails is left in ERROR with its fault; the others go on.
pub async fn restore(services: &Services) {
    let networks = match services.store().list_networks().await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot list networks to restore");
            return;
        }
    };
    for network in networks {
        if let Err(e) = sync_network(services, &network.id).await {
            tracing::warn!(network_id = %network.id, error = %crate::api::error::chain(&e), "cannot restore network");
        }
    }
}
