//! `GET /v1/servers/{id}/stats`: CPU, memory, disk and NIC figures from libvirt's own
//! statistics calls (never QMP passthrough, which taints the domain).

use super::{build, load, ServerStatus};
use crate::compute::DomainStats;
use crate::ops::{OpError, Services};

/// Live figures of a running server.
pub type ServerStats = DomainStats;

/// Reads the stats of a running server.
///
/// # Errors
/// [`OpError::Conflict`] when the server is not running, compute errors (a timeout when QEMU
/// does not answer within the deadline).
pub async fn stats(services: &Services, id: &str) -> Result<ServerStats, OpError> {
    let loaded = load(services, id).await?;
    if !matches!(
        loaded.status,
        ServerStatus::Active | ServerStatus::Paused | ServerStatus::VerifyResize
    ) {
        return Err(OpError::Conflict(format!(
            "server {id} is {} and has no running QEMU to ask",
            loaded.status.as_str()
        )));
    }
    let disks = build::disks(&loaded.spec)
        .into_iter()
        .map(|d| d.target)
        .collect();
    let taps = loaded.spec.nics.iter().map(|n| n.tap.clone()).collect();
    Ok(services
        .libvirt()
        .stats(&loaded.spec.domain_name, disks, taps)
        .await?)
}
