//! This agent as a fleet member: who it is (name, tunnel address, API URL), its node record
//! from live figures, and the registration task the daemon starts when `[fleet]` is set.

pub mod ipam;
pub mod l2pop;

use crate::config::{Config, FleetConfig, PluginKind};
use crate::fleet::keys::{self, Keys};
use crate::fleet::record::{Capabilities, NodeRecord};
use crate::fleet::registry::{Connection, RecordFuture, RecordSource, Registration};
use crate::fleet::FleetError;
use crate::ops::{host, scheduler, servers, Services};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Who this node is in the fleet, resolved once at start.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node name (`fleet.node_name` or the hostname).
    pub name: String,
    /// VXLAN source address.
    pub tunnel_ip: IpAddr,
    /// The API URL controllers and peers use.
    pub api_url: String,
}

/// The local address of the route to the first endpoint (no packet is sent: a UDP socket is
/// only connected).
async fn route_source(fleet: &FleetConfig) -> Result<IpAddr, FleetError> {
    let endpoint = &fleet.endpoints[0];
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let fail = |reason: String| FleetError::Setup {
        setting: "fleet.tunnel_ip",
        reason: format!("cannot find the route to {endpoint} ({reason}); set fleet.tunnel_ip"),
    };
    let addr: SocketAddr = tokio::time::timeout(
        fleet.call_timeout(),
        tokio::net::lookup_host(hostport.to_string()),
    )
    .await
    .map_err(|_| fail("name lookup timed out".into()))?
    .map_err(|e| fail(e.to_string()))?
    .next()
    .ok_or_else(|| fail("the name has no address".into()))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| fail(e.to_string()))?;
    socket.connect(addr).map_err(|e| fail(e.to_string()))?;
    Ok(socket.local_addr().map_err(|e| fail(e.to_string()))?.ip())
}

/// This node's name: `fleet.node_name`, else the hostname.
///
/// # Errors
/// [`FleetError::Setup`] when the hostname cannot be read or is not a valid node name.
pub fn node_name(fleet: &FleetConfig) -> Result<String, FleetError> {
    if let Some(name) = &fleet.node_name {
        return Ok(name.clone());
    }
    let name = crate::host::hostname().map_err(|e| FleetError::Setup {
        setting: "fleet.node_name",
        reason: format!("cannot read the hostname: {e}"),
    })?;
    keys::check_node_name(&name).map_err(|reason| FleetError::Setup {
        setting: "fleet.node_name",
        reason: format!("the hostname is not a node name ({reason}); set fleet.node_name"),
    })?;
    Ok(name)
}

/// Turns fleet-wide address claims on when `[fleet]` is set. Called before anything can
/// allocate an address (journal recovery, network restore, the API).
///
/// # Errors
/// [`FleetError::Setup`] when the node name cannot be found.
pub fn enable_claims(services: &Services) -> Result<(), FleetError> {
    if let Some(fleet) = &services.config().fleet {
        services.set_fleet_ipam(ipam::FleetIpam::new(fleet, &node_name(fleet)?));
    }
    Ok(())
}

/// Resolves this node's identity: the configured values, else the hostname, the route to etcd
/// and the listening address.
///
/// # Errors
/// [`FleetError::Setup`] when the hostname is not a valid node name or no route is found.
pub async fn identity(
    config: &Config,
    fleet: &FleetConfig,
    listening: SocketAddr,
) -> Result<Identity, FleetError> {
    let name = node_name(fleet)?;
    let tunnel_ip = match fleet.tunnel_ip {
        Some(ip) => ip,
        None => route_source(fleet).await?,
    };
    let api_url = match &fleet.advertise_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let ip = if listening.ip().is_unspecified() {
                tunnel_ip
            } else {
                listening.ip()
            };
            let scheme = if config.tls.enabled() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", SocketAddr::new(ip, listening.port()))
        }
    };
    Ok(Identity {
        name,
        tunnel_ip,
        api_url,
    })
}

/// This node's record from live figures.
///
/// # Errors
/// A message when host facts or the store cannot be read.
pub async fn node_record(services: &Services, identity: &Identity) -> Result<NodeRecord, String> {
    let err = |e: crate::ops::OpError| crate::api::error::chain(&e);
    let status = host::service_status(services).await.map_err(err)?;
    let all = servers::list(services).await.map_err(err)?;
    let capacity = scheduler::this_node_with(services, &all)
        .await
        .map_err(err)?;
    let servers = all
        .iter()
        .filter(|s| s.status != servers::ServerStatus::Deleted)
        .count();
    let config = services.config();
    let fleet = config.fleet.clone().unwrap_or_default();
    let names = |kind| -> Vec<String> {
        services
            .plugins()
            .chain(kind)
            .into_iter()
            .filter(|(_, loaded)| loaded.is_ok())
            .map(|(name, _)| name)
            .collect()
    };
    let network_backends = names(PluginKind::NetworkBackend);
    let mut network_types = vec!["local".to_string()];
    if !network_backends.is_empty() {
        network_types.extend(["flat", "vlan", "vxlan"].map(String::from));
    }
    Ok(NodeRecord {
        name: identity.name.clone(),
        node_id: services.node_id().to_string(),
        region: fleet.region,
        availability_zone: config.availability_zone.clone(),
        api_url: identity.api_url.clone(),
        tunnel_ip: identity.tunnel_ip.to_string(),
        libvirt_uri: config.migration.peer_token_file.as_ref().map(|_| {
            config
                .migration
                .advertised_libvirt_uri(&identity.tunnel_ip.to_string())
        }),
        version: crate::VERSION.to_string(),
        enabled: status.enabled,
        disabled_reason: status.disabled_reason,
        capabilities: Capabilities {
            domain_type: services.domain_type().as_str().to_string(),
            network_types,
            network_backends,
            volume_backends: names(PluginKind::VolumeDriver),
        },
        capacity: crate::sched::HostState {
            name: identity.name.clone(),
            ..capacity
        },
        servers: u32::try_from(servers).unwrap_or(u32::MAX),
        started_at: chrono::DateTime::<chrono::Utc>::from(
            std::time::SystemTime::now() - services.started().elapsed(),
        )
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        updated_at: String::new(),
    })
}

struct AgentRecords {
    services: Services,
    identity: Identity,
}

impl RecordSource for AgentRecords {
    fn record(&self) -> RecordFuture<'_> {
        Box::pin(node_record(&self.services, &self.identity))
    }
}

/// Starts registering this node (when `[fleet]` is set): resolves its identity, reports the
/// link as connecting, and returns the task, which revokes the lease when `stop` is
/// cancelled. Events on the agent (anything changing) make the record be compared sooner.
///
/// # Errors
/// [`FleetError::Setup`] when the identity cannot be resolved.
pub async fn start(
    services: &Services,
    listening: SocketAddr,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, FleetError> {
    let config = services.config();
    let Some(fleet) = config.fleet.clone() else {
        return Ok(None);
    };
    let identity = identity(config, &fleet, listening).await?;
    services.fleet_link().begin(
        &identity.name,
        &fleet.endpoints,
        &identity.api_url,
        &identity.tunnel_ip.to_string(),
    );
    tracing::info!(node = %identity.name, api_url = %identity.api_url, tunnel_ip = %identity.tunnel_ip, "joining the fleet");
    let changed = Arc::new(tokio::sync::Notify::new());
    let l2_changed = Arc::new(tokio::sync::Notify::new());
    {
        let changed = changed.clone();
        let l2_changed = l2_changed.clone();
        let mut events = services.events().subscribe();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            changed.notify_one();
                            l2_changed.notify_one();
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    let l2pop = l2pop::L2Pop {
        services: services.clone(),
        fleet: fleet.clone(),
        identity: identity.clone(),
        changed: l2_changed,
    };
    let l2pop = tokio::spawn(l2pop.run(stop.clone()));
    let claims = tokio::spawn(ipam::keep_reconciled(services.clone(), stop.clone()));
    let registration = Registration {
        connection: Connection::Config(Box::new(fleet.clone())),
        keys: Keys::new(&fleet.prefix),
        name: identity.name.clone(),
        node_id: services.node_id().to_string(),
        ttl: i64::try_from(fleet.lease_ttl_secs).unwrap_or(15),
        link: services.fleet_link().clone(),
        source: Arc::new(AgentRecords {
            services: services.clone(),
            identity,
        }),
        changed,
    };
    let registration = tokio::spawn(registration.run(stop));
    Ok(Some(tokio::spawn(async move {
        let _ = registration.await;
        let _ = l2pop.await;
        let _ = claims.await;
    })))
}
