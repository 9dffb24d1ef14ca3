//! `scheduler.evaluate`: run the plugin chain for a request, over this node or given hosts.

use super::{host, OpError, Services};
use crate::sched::{self, Evaluation, HostState, RequestSpec};
use serde::Deserialize;
use std::time::Duration;
use utoipa::ToSchema;

/// `POST /v1/scheduler/evaluate` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// What is being placed.
    pub spec: RequestSpec,
    /// Hosts to rank; this node's live state when absent (or null).
    #[serde(default)]
    #[schema(default = json!(null))]
    pub hosts: Option<Vec<HostState>>,
}

/// Most hosts one evaluation takes.
pub const MAX_HOSTS: usize = 100_000;
/// Deadline of a whole chain run.
const CHAIN_DEADLINE: Duration = Duration::from_secs(30);

/// This node as a scheduler host, from live figures and the servers it holds.
///
/// # Errors
/// [`OpError`] when host facts or the store cannot be read.
pub async fn this_node(services: &Services) -> Result<HostState, OpError> {
    this_node_with(services, &super::servers::list(services).await?).await
}

/// [`this_node`] with the servers already read.
///
/// # Errors
/// [`OpError`] when host facts cannot be read.
pub async fn this_node_with(
    services: &Services,
    servers: &[super::servers::Server],
) -> Result<HostState, OpError> {
    let report = host::describe(services).await?;
    let (mut vcpus, mut ram, mut disk) = (0u64, 0u64, 0u64);
    for server in servers {
        if server.status != super::servers::ServerStatus::Deleted {
            vcpus += u64::from(server.flavor.vcpus);
            ram += server.flavor.ram_mb;
            disk += server.flavor.disk_gb + server.flavor.ephemeral_gb;
        }
    }
    let cap = &report.capacity;
    Ok(HostState {
        name: report.hostname.clone(),
        enabled: report.service_status.enabled,
        heartbeat_age_s: 0,
        vcpus_total: cap.vcpus,
        vcpus_used: vcpus as u32,
        ram_total_mb: cap.memory_mb.saturating_sub(cap.reserved_host_memory_mb),
        ram_used_mb: ram,
        ram_free_mb: cap.memory_available_mb,
        disk_total_gb: cap.disk_gb.saturating_sub(cap.reserved_host_disk_gb),
        disk_used_gb: disk,
        volume_free_gb: 0,
        cpu_allocation_ratio: cap.cpu_allocation_ratio as f32,
        ram_allocation_ratio: cap.ram_allocation_ratio as f32,
        disk_allocation_ratio: cap.disk_allocation_ratio as f32,
        availability_zone: report.availability_zone.clone(),
        hypervisor_type: "qemu".into(),
        architecture: std::env::consts::ARCH.into(),
        vm_mode: "hvm".into(),
        traits: services.config().host.traits.clone(),
        metadata: services.config().host.metadata.clone(),
    })
}

/// Runs the chain.
///
/// # Errors
/// [`OpError::InvalidInput`] for too many hosts, [`OpError::Sched`] when a plugin fails.
pub async fn evaluate(services: &Services, req: EvaluateRequest) -> Result<Evaluation, OpError> {
    let hosts = match req.hosts {
        Some(hosts) => {
            if hosts.len() > MAX_HOSTS {
                return Err(OpError::InvalidInput(format!(
                    "{} hosts; at most {MAX_HOSTS} per evaluation",
                    hosts.len()
                )));
            }
            if let Some(e) = sched::hosts_error(&hosts) {
                return Err(OpError::InvalidInput(e));
            }
            hosts
        }
        None => vec![this_node(services).await?],
    };
    Ok(sched::evaluate_async(services.plugins().clone(), req.spec, hosts, CHAIN_DEADLINE).await?)
}

/// Admission control for server create: the chain over this node must pass.
///
/// # Errors
/// [`OpError::Conflict`] with the failing filter and its reason; [`OpError::Sched`] when a
/// plugin fails.
pub async fn admit(services: &Services, spec: RequestSpec) -> Result<(), OpError> {
    if services
        .plugins()
        .chain(crate::config::PluginKind::Filter)
        .is_empty()
    {
        return Ok(());
    }
    let evaluation = evaluate(services, EvaluateRequest { spec, hosts: None }).await?;
    match evaluation.hosts.first() {
        Some(result) if !result.passed => Err(OpError::Conflict(format!(
            "this node refuses the server: filter {} says {}",
            result.failed_by.as_deref().unwrap_or("?"),
            result.reason.as_deref().unwrap_or("no")
        ))),
        _ => Ok(()),
    }
}
