//! `GET /v1/servers/{id}/stats`: CPU, memory and block figures from QMP.

use super::{load, ServerStatus};
use crate::ops::{OpError, Services};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Live figures of a running server, read through QMP.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerStats {
    /// vCPUs: index and host thread id (`query-cpus-fast`).
    #[schema(value_type = Vec<Object>)]
    pub cpus: Vec<Value>,
    /// Memory the guest has now, bytes (`query-balloon`).
    pub memory_actual_bytes: Option<u64>,
    /// Per-disk I/O counters (`query-blockstats`).
    #[schema(value_type = Vec<Object>)]
    pub block: Vec<Value>,
}

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
    let libvirt = services.libvirt();
    let domain = &loaded.spec.domain_name;
    let cpus = libvirt
        .qmp(domain, json!({"execute": "query-cpus-fast"}))
        .await?;
    let balloon = libvirt
        .qmp(domain, json!({"execute": "query-balloon"}))
        .await?;
    let blocks = libvirt
        .qmp(domain, json!({"execute": "query-blockstats"}))
        .await?;
    let cpus = cpus["return"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| json!({ "cpu_index": c["cpu-index"], "thread_id": c["thread-id"] }))
        .collect();
    let block = blocks["return"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|b| {
            let s = &b["stats"];
            json!({
                "device": b["device"], "node_name": b["node-name"], "qdev": b["qdev"],
                "rd_bytes": s["rd_bytes"], "wr_bytes": s["wr_bytes"],
                "rd_operations": s["rd_operations"], "wr_operations": s["wr_operations"],
            })
        })
        .collect();
    Ok(ServerStats {
        cpus,
        memory_actual_bytes: balloon["return"]["actual"].as_u64(),
        block,
    })
}
