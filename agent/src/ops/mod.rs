//! Typed operations shared by every front.
//!
//! The REST handlers, the CLI (through REST) and internal callers all run the functions here,
//! so behaviour cannot drift between fronts. An operation takes the [`Services`] (the agent's
//! long-lived parts) and typed arguments, and returns a typed result or an [`OpError`].
//! Multi-step mutations run under the [`crate::state::Journal`].

pub mod background;
pub mod consoles;
pub mod fleet;
pub mod host;
pub mod idempotent;
pub mod images;
pub mod migration;
pub mod networks;
pub mod scheduler;
pub mod security_groups;
pub mod servers;
pub mod volumes;

use crate::auth::AdminToken;
use crate::compute::{ComputeError, DomainType, Libvirt};
use crate::config::Config;
use crate::host::{HostError, KvmProbe};
use crate::image::ImageCache;
use crate::metrics::HttpMetrics;
use crate::state::{EventLog, Journal, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Errors of typed operations. The REST layer maps each variant to one HTTP status in
/// `api::error::status_of`.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading host facts failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The resource does not exist.
    #[error("No {kind} with id {id}")]
    NotFound {
        /// Resource kind (`image`, `server`, …).
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A field of the request names something that does not exist (a well-formed reference
    /// to nothing, as neutron's and cinder's 404s); nothing was changed.
    #[error("{field} {value:?} names no {kind}{hint}")]
    UnknownReference {
        /// The request field (`image_id`, `network_id`, …).
        field: &'static str,
        /// What it said.
        value: String,
        /// What it should name (`image`, `network`, …).
        kind: &'static str,
        /// What exists instead (`; configured: …`), or empty.
        hint: String,
    },
    /// The request conflicts with the resource's current state; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// The scheduler chain failed.
    #[error(transparent)]
    Sched(#[from] crate::sched::SchedError),
    /// The image cache refused or failed.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The caller's input is not acceptable; nothing was changed.
    #[error("{0}")]
    InvalidInput(String),
    /// The hypervisor failed or timed out.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// A plugin (network backend, volume driver) failed.
    #[error(transparent)]
    Plugin(Box<crate::plugin::PluginError>),
    /// A volume host operation (LVM, NFS, qemu-img) failed.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// Host networking (namespaces, links, DHCP, metadata) failed.
    #[error("Host networking failed: {0}")]
    Network(String),
    /// Background work ended before it could answer (it panicked or the agent is stopping).
    #[error("{0}")]
    Interrupted(String),
    /// The fleet's etcd is needed (fleet-wide addresses) and did not answer; nothing changed.
    #[error("The fleet is unavailable: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    /// A console could not be handed out or opened.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
}

impl OpError {
    /// [`OpError::UnknownReference`]: `field` said `value`, which names no `kind`.
    pub fn unknown(field: &'static str, value: &str, kind: &'static str) -> Self {
        Self::UnknownReference {
            field,
            value: value.to_string(),
            kind,
            hint: String::new(),
        }
    }

    /// [`OpError::unknown`] with a hint at what exists (`configured: a, b`).
    pub fn unknown_among(
        field: &'static str,
        value: &str,
        kind: &'static str,
        known: &[String],
    ) -> Self {
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Self::UnknownReference {
            field,
            value: value.to_string(),
            kind,
            hint: format!("; configured: {known}"),
        }
    }
}

/// The agent's long-lived parts, shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<ServicesInner>,
}

struct ServicesInner {
    config: Config,
    store: Store,
    journal: Journal,
    events: EventLog,
    libvirt: Libvirt,
    kvm: KvmProbe,
    domain_type: DomainType,
    hypervisor: host::HypervisorMonitor,
    metrics: HttpMetrics,
    images: ImageCache,
    node_id: String,
    plugins: Arc<crate::plugin::PluginRegistry>,
    server_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    net_runtime: networks::runtime::NetRuntime,
    firewall: security_groups::apply::Firewall,
    fleet: Arc<crate::fleet::link::FleetLink>,
    fleet_ipam: std::sync::OnceLock<Arc<fleet::ipam::FleetIpam>>,
    admission: tokio::sync::Mutex<()>,
    idempotent_creates: tokio::sync::Mutex<()>,
    migrations: migration::Migrations,
    consoles: crate::console::Consoles,
    token: AdminToken,
    started: Instant,
    shutdown: CancellationToken,
}

/// The parts [`Services::new`] is built from.
pub struct ServicesParts {
    /// Validated settings.
    pub config: Config,
    /// The opened store.
    pub store: Store,
    /// The admin token.
    pub token: AdminToken,
    /// The KVM probe result.
    pub kvm: KvmProbe,
    /// The domain type chosen from config and probe.
    pub domain_type: DomainType,
    /// Cancelled when the agent shuts down.
    pub shutdown: CancellationToken,
    /// The image cache.
    pub images: ImageCache,
    /// This node's id (tags the domains it owns).
    pub node_id: String,
    /// The loaded plugins.
    pub plugins: Arc<crate::plugin::PluginRegistry>,
}

impl Services {
    /// Assembles the services from their parts.
    pub fn new(parts: ServicesParts) -> Self {
        let ServicesParts {
            config,
            store,
            token,
            kvm,
            domain_type,
            shutdown,
            images,
            node_id,
            plugins,
        } = parts;
        let libvirt = Libvirt::new(
            config.hypervisor.uri.clone(),
            config.hypervisor.workers,
            config.hypervisor.call_timeout(),
            config.hypervisor.lifecycle_timeout(),
        );
        let config_slots = config.migration.max_concurrent;
        let consoles = crate::console::Consoles::new(
            &config.consoles,
            &config.hypervisor.uri,
            config.hypervisor.call_timeout(),
        );
        let journal = Journal::new(store.clone());
        let events = EventLog::new(store.clone(), config.events.backlog);
        let firewall = security_groups::apply::Firewall::new(
            &config.firewall.table_prefix,
            &config.state_dir,
            std::time::Duration::from_secs(config.firewall.nft_timeout_secs),
        );
        Self {
            inner: Arc::new(ServicesInner {
                hypervisor: host::HypervisorMonitor::new(
                    libvirt.clone(),
                    config.hypervisor.version_timeout(),
                ),
                config,
                store,
                journal,
                events,
                libvirt,
                kvm,
                domain_type,
                metrics: HttpMetrics::default(),
                images,
                node_id,
                plugins,
                server_locks: Mutex::default(),
                net_runtime: networks::runtime::NetRuntime::default(),
                firewall,
                fleet: Arc::new(crate::fleet::link::FleetLink::standalone()),
                fleet_ipam: std::sync::OnceLock::new(),
                admission: tokio::sync::Mutex::new(()),
                idempotent_creates: tokio::sync::Mutex::new(()),
                migrations: migration::Migrations::new(config_slots),
                consoles,
                token,
                started: Instant::now(),
                shutdown,
            }),
        }
    }

    /// Console URLs and sessions.
    pub fn consoles(&self) -> &crate::console::Consoles {
        &self.inner.consoles
    }

    /// Migrations in flight and the fleet's peer token.
    pub fn migrations(&self) -> &migration::Migrations {
        &self.inner.migrations
    }

    /// Serializes creates that chose their own id (see [`idempotent`]).
    pub fn idempotent_creates(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.idempotent_creates
    }

    /// Fleet-wide address claims (set when the node joins a fleet).
    pub fn fleet_ipam(&self) -> Option<Arc<fleet::ipam::FleetIpam>> {
        self.inner.fleet_ipam.get().cloned()
    }

    /// Turns fleet-wide address claims on (once, when the node joins its fleet).
    pub fn set_fleet_ipam(&self, ipam: fleet::ipam::FleetIpam) {
        let _ = self.inner.fleet_ipam.set(Arc::new(ipam));
    }

    /// This node's link to the fleet (standalone without `[fleet]`).
    pub fn fleet_link(&self) -> &Arc<crate::fleet::link::FleetLink> {
        &self.inner.fleet
    }

    /// The security group applier.
    pub fn firewall(&self) -> &security_groups::apply::Firewall {
        &self.inner.firewall
    }
    /// The validated settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    /// The embedded store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// The operation journal.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }
    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }
    /// The libvirt endpoint.
    pub fn libvirt(&self) -> &Libvirt {
        &self.inner.libvirt
    }
    /// The KVM probe made at startup.
    pub fn kvm(&self) -> &KvmProbe {
        &self.inner.kvm
    }
    /// The domain type in use.
    pub fn domain_type(&self) -> DomainType {
        self.inner.domain_type
    }
    /// The cached hypervisor status.
    pub fn hypervisor(&self) -> &host::HypervisorMonitor {
        &self.inner.hypervisor
    }
    /// HTTP metrics.
    pub fn metrics(&self) -> &HttpMetrics {
        &self.inner.metrics
    }
    /// The image cache.
    pub fn images(&self) -> &ImageCache {
        &self.inner.images
    }
    /// The loaded plugins.
    pub fn plugins(&self) -> &Arc<crate::plugin::PluginRegistry> {
        &self.inner.plugins
    }
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }
    /// The lock serialising operations on one server.
    pub fn server_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .server_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }
    /// Per-network host services (namespaces, DHCP, metadata).
    pub fn net_runtime(&self) -> &networks::runtime::NetRuntime {
        &self.inner.net_runtime
    }
    /// The lock every network, subnet and port mutation of the store holds.
    pub fn network_lock(&self) -> &tokio::sync::Mutex<()> {
        self.inner.net_runtime.lock()
    }
    /// The lock making capacity checks and server inserts atomic.
    pub fn admission(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.admission
    }
    /// The admin token.
    pub fn token(&self) -> &AdminToken {
        &self.inner.token
    }
    /// When the agent started.
    pub fn started(&self) -> Instant {
        self.inner.started
    }
    /// Cancelled when the agent shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
