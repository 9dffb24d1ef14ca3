//! `host.describe`: what this node is and what it can hold.

use super::{OpError, Services};
use crate::compute::{DomainType, HypervisorInfo, Libvirt};
use crate::host::{self, KvmProbe};
use serde::Serialize;
use std::sync::RwLock;
use std::time::Duration;
use utoipa::ToSchema;

/// The node as reported by `GET /v1/host`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostReport {
    /// The machine's hostname.
    pub hostname: String,
    /// Availability zone this node belongs to.
    pub availability_zone: String,
    /// Version of this agent.
    pub agent_version: String,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// Whether the node takes new servers.
    pub service_status: ServiceStatus,
    /// The hypervisor.
    pub hypervisor: HypervisorReport,
    /// Physical capacity and the limits the allocation ratios give.
    pub capacity: CapacityReport,
    /// The node's link to the fleet (`state: standalone` without `[fleet]`).
    pub fleet: crate::fleet::link::FleetStatus,
    /// Traits scheduler plugins see for this node (config `[host] traits`; default none).
    pub traits: Vec<String>,
    /// Aggregate metadata scheduler plugins see for this node (config `[host] metadata`;
    /// default none).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The hypervisor part of [`HostReport`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HypervisorReport {
    /// Domain type the agent puts into domain XML (`kvm` or `qemu`).
    pub domain_type: DomainType,
    /// Accelerator QEMU runs with (`kvm` or `tcg`).
    pub accelerator: String,
    /// Result of the KVM probe made at startup.
    pub kvm: KvmProbe,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// Whether libvirt answered the last check.
    pub reachable: bool,
    /// Versions reported by libvirt at the last successful check.
    pub versions: Option<HypervisorInfo>,
    /// Why the last check failed.
    pub error: Option<String>,
    /// When libvirt was last checked (RFC 3339).
    pub checked_at: Option<String>,
}

/// Capacity part of [`HostReport`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CapacityReport {
    /// Online physical CPUs.
    pub vcpus: u32,
    /// vCPUs that may be allocated (`vcpus × cpu_allocation_ratio`).
    pub vcpus_limit: u64,
    /// Physical memory, MiB.
    pub memory_mb: u64,
    /// Memory available right now, MiB.
    pub memory_available_mb: u64,
    /// Memory that may be allocated (`(memory_mb − reserved) × ram_allocation_ratio`), MiB.
    pub memory_limit_mb: u64,
    /// Size of the filesystem holding the state directory, GiB.
    pub disk_gb: u64,
    /// Free space on it, GiB.
    pub disk_available_gb: u64,
    /// Disk that may be allocated (`(disk_gb − reserved) × disk_allocation_ratio`), GiB.
    pub disk_limit_gb: u64,
    /// vCPU allocation ratio.
    pub cpu_allocation_ratio: f64,
    /// RAM allocation ratio.
    pub ram_allocation_ratio: f64,
    /// Disk allocation ratio.
    pub disk_allocation_ratio: f64,
    /// Memory kept for the host, MiB.
    pub reserved_host_memory_mb: u64,
    /// Disk kept for the host, GiB.
    pub reserved_host_disk_gb: u64,
}

/// Last known hypervisor status.
#[derive(Debug, Clone, Default)]
struct HypervisorStatus {
    versions: Option<HypervisorInfo>,
    error: Option<String>,
    checked_at: Option<String>,
}

/// Keeps a recent answer from libvirt so `GET /v1/host` never waits on it.
pub struct HypervisorMonitor {
    libvirt: Libvirt,
    version_deadline: Duration,
    status: RwLock<HypervisorStatus>,
}

/// How often the monitor asks libvirt again.
pub const HYPERVISOR_CHECK_INTERVAL: Duration = Duration::from_secs(30);

impl HypervisorMonitor {
    /// A monitor that has not checked yet; `version_deadline` bounds the slow version query.
    pub fn new(libvirt: Libvirt, version_deadline: Duration) -> Self {
        Self {
            libvirt,
            version_deadline,
            status: RwLock::default(),
        }
    }

    /// Asks libvirt now (within its deadlines) and keeps the answer. The hypervisor version
    /// is asked for only until it is known, since answering it can be slow.
    pub async fn refresh(&self) {
        let result = self.libvirt.ping().await;
        let known_version = self.snapshot().versions.and_then(|v| v.hypervisor_version);
        let result = match (result, known_version) {
            (Ok(mut info), Some(version)) => {
                info.hypervisor_version = Some(version);
                Ok(info)
            }
            (Ok(mut info), None) => {
                match self.libvirt.hypervisor_version(self.version_deadline).await {
                    Ok(version) => {
                        info.hypervisor_version = Some(version);
                        Ok(info)
                    }
                    Err(e) => Err(e),
                }
            }
            (Err(e), _) => Err(e),
        };
        let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
        status.checked_at = Some(crate::state::now_rfc3339());
        match result {
            Ok(info) => {
                status.versions = Some(info);
                status.error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "libvirt check failed");
                status.error = Some(e.to_string());
            }
        }
    }

    /// Checks now, then every [`HYPERVISOR_CHECK_INTERVAL`], until `stop` is cancelled.
    pub async fn run(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.refresh() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(HYPERVISOR_CHECK_INTERVAL) => {}
            }
        }
    }

    fn snapshot(&self) -> HypervisorStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Describes the node from live figures.
///
/// # Errors
/// [`OpError::Host`] when `/proc` or the state directory cannot be read, [`OpError::Store`]
/// when the store cannot.
pub async fn describe(services: &Services) -> Result<HostReport, OpError> {
    let service_status = service_status(services).await?;
    let config = services.config();
    let cap = &config.capacity;
    let mem = host::memory()?;
    let disk = host::disk_usage(&config.state_dir)?;
    let vcpus = host::online_cpus();
    let disk_gb = disk.total_bytes / GIB;
    let hv = services.hypervisor().snapshot();
    let domain_type = services.domain_type();
    Ok(HostReport {
        hostname: host::hostname()?,
        availability_zone: config.availability_zone.clone(),
        agent_version: crate::VERSION.to_string(),
        uptime_seconds: services.started().elapsed().as_secs(),
        service_status,
        hypervisor: HypervisorReport {
            domain_type,
            accelerator: domain_type.accelerator().to_string(),
            kvm: services.kvm().clone(),
            libvirt_uri: config.hypervisor.uri.clone(),
            reachable: hv.error.is_none() && hv.versions.is_some(),
            versions: hv.versions,
            error: hv.error,
            checked_at: hv.checked_at,
        },
        capacity: CapacityReport {
            vcpus,
            vcpus_limit: (f64::from(vcpus) * cap.cpu_allocation_ratio).floor() as u64,
            memory_mb: mem.total_mb,
            memory_available_mb: mem.available_mb,
            memory_limit_mb: (mem.total_mb.saturating_sub(cap.reserved_host_memory_mb) as f64
                * cap.ram_allocation_ratio)
                .floor() as u64,
            disk_gb,
            disk_available_gb: disk.available_bytes / GIB,
            disk_limit_gb: (disk_gb.saturating_sub(cap.reserved_host_disk_gb) as f64
                * cap.disk_allocation_ratio)
                .floor() as u64,
            cpu_allocation_ratio: cap.cpu_allocation_ratio,
            ram_allocation_ratio: cap.ram_allocation_ratio,
            disk_allocation_ratio: cap.disk_allocation_ratio,
            reserved_host_memory_mb: cap.reserved_host_memory_mb,
            reserved_host_disk_gb: cap.reserved_host_disk_gb,
        },
        fleet: services.fleet_link().status(),
        traits: config.host.traits.clone(),
        metadata: config.host.metadata.clone(),
    })
}

/// Whether this node takes new servers, as nova's compute service enable/disable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// `true` when the node accepts new servers.
    pub enabled: bool,
    /// Why the node was disabled.
    pub disabled_reason: Option<String>,
    /// When the status last changed (RFC 3339); absent when never changed.
    pub updated_at: Option<String>,
}

impl Default for ServiceStatus {
    fn default() -> Self {
        Self {
            enabled: true,
            disabled_reason: None,
            updated_at: None,
        }
    }
}

/// A change of the node's service status (`PATCH /v1/host`).
#[derive(Debug, Clone, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatusUpdate {
    /// `false` to stop taking new servers, `true` to take them again.
    pub enabled: bool,
    /// Why the node is disabled (only with `enabled: false`; at most 255 characters).
    pub disabled_reason: Option<String>,
}

/// Longest accepted `disabled_reason`, as nova's column.
pub const MAX_REASON_LEN: usize = 255;

impl ServiceStatusUpdate {
    /// Checks the update before anything is changed.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the problem.
    pub fn validate(&self) -> Result<(), OpError> {
        match &self.disabled_reason {
            Some(_) if self.enabled => Err(OpError::InvalidInput(
                "disabled_reason can only be given with enabled: false".into(),
            )),
            Some(r) if r.chars().count() > MAX_REASON_LEN => Err(OpError::InvalidInput(format!(
                "disabled_reason has {} characters; at most {MAX_REASON_LEN} are allowed",
                r.chars().count()
            ))),
            _ => Ok(()),
        }
    }
}

const SERVICE_STATUS_KEY: &str = "host.service_status";

/// The node's current service status.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn service_status(services: &Services) -> Result<ServiceStatus, OpError> {
    Ok(services
        .store()
        .get_setting(SERVICE_STATUS_KEY)
        .await?
        .unwrap_or_default())
}

/// Validates and applies a service status change, and publishes `host.updated`.
///
/// # Errors
/// [`OpError::InvalidInput`] for a bad update (nothing changes), [`OpError::Store`] when the
/// store cannot be written.
pub async fn set_service_status(
    services: &Services,
    update: ServiceStatusUpdate,
) -> Result<ServiceStatus, OpError> {
    update.validate()?;
    let status = ServiceStatus {
        enabled: update.enabled,
        disabled_reason: update.disabled_reason,
        updated_at: Some(crate::state::now_rfc3339()),
    };
    services
        .store()
        .put_setting(SERVICE_STATUS_KEY, &status)
        .await?;
    let hostname = host::hostname().unwrap_or_default();
    services
        .events()
        .publish(
            "host.updated",
            "host",
            &hostname,
            serde_json::json!({ "service_status": &status }),
        )
        .await?;
    Ok(status)
}
