//! Keeping server statuses true to libvirt.
//!
//! The binding has no lifecycle events, so the agent polls: every `hypervisor.sync_interval_ms`
//! it lists its own domains (by the node id in their metadata) and moves each idle server to
//! the status its domain's state implies — a guest that powers itself off becomes SHUTOFF, a
//! domain that vanished makes the server ERROR. Servers with an operation running (their lock
//! held) are left alone. At startup, domains tagged with this node's id but unknown to the
//! store are adopted from the spec recorded in their XML.

use super::model::{ServerSpec, ServerStatus};
use super::{decode, set_status};
use crate::compute::{DomainStatus, PowerState};
use crate::ops::{OpError, Services};
use crate::state::ServerRow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This node's domains by server id.
async fn domains_by_server(services: &Services) -> Result<HashMap<String, DomainStatus>, OpError> {
    Ok(services
        .libvirt()
        .list_ours(services.node_id())
        .await?
        .into_iter()
        .map(|d| (d.metadata.server_id.clone(), d))
        .collect())
}

/// After a restart (and journal recovery): finishes deletes that never got going, and gives
/// servers left mid-action (a `task_state`, or a transitional status) the status libvirt
/// shows, with a fault saying what was interrupted.
///
/// # Errors
/// [`OpError`] when libvirt or the store fail.
pub async fn recover_interrupted(services: &Services) -> Result<(), OpError> {
    let domains = domains_by_server(services).await?;
    // A server whose migration is still open (a move being finished in the background, an
    // undo left for later) is that operation's to settle: giving it a status from libvirt here
    // could make a server that runs on another node startable on this one.
    let open: std::collections::HashSet<String> = services
        .journal()
        .unfinished()
        .await?
        .into_iter()
        .filter(|op| crate::ops::migration::KINDS.contains(&op.kind.as_str()))
        .map(|op| op.resource_id)
        .collect();
    for row in services.store().list_servers().await? {
        let loaded = decode(row)?;
        let id = loaded.row.id.clone();
        if open.contains(&id) {
            tracing::warn!(server_id = %id, status = loaded.status.as_str(), "an interrupted operation on this server is still open; left to it");
            continue;
        }
        if loaded.status == ServerStatus::Deleted {
            tracing::warn!(server_id = %id, "finishing a delete interrupted by a restart");
            super::delete(services, &id).await?;
            continue;
        }
        if loaded.row.task_state.is_none() && !loaded.status.is_transitional() {
            continue;
        }
        let what = loaded
            .row
            .task_state
            .clone()
            .unwrap_or_else(|| loaded.status.as_str().to_lowercase());
        let status = domains
            .get(&id)
            .and_then(|d| status_of(d, loaded.status))
            .filter(|s| {
                *s != ServerStatus::VerifyResize
                    || loaded.spec.previous_flavor.is_some()
                    || loaded.spec.migrated_from.is_some()
            })
            .unwrap_or(ServerStatus::Error);
        let fault = format!("{what} was interrupted by an agent restart");
        tracing::warn!(server_id = %id, %fault, status = status.as_str());
        set_status(services, &id, status, None, Some(&fault)).await?;
    }
    Ok(())
}

/// Adopts this node's domains missing from the store, then reconciles once.
///
/// # Errors
/// [`OpError`] when libvirt or the store fail.
pub async fn adopt_and_reconcile(services: &Services) -> Result<(), OpError> {
    let domains = services.libvirt().list_ours(services.node_id()).await?;
    let known: Vec<String> = services
        .store()
        .list_servers()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    for domain in &domains {
        if known.contains(&domain.metadata.server_id) {
            continue;
        }
        match adopt(services, domain).await {
            Ok(()) => tracing::warn!(server_id = %domain.metadata.server_id, domain = %domain.name,
                "adopted a domain of this node that the store did not know"),
            Err(e) => tracing::error!(domain = %domain.name, error = %e, "cannot adopt domain"),
        }
    }
    reconcile(services, &mut HashSet::new()).await
}

async fn adopt(services: &Services, domain: &DomainStatus) -> Result<(), OpError> {
    let spec: ServerSpec = serde_json::from_str(&domain.metadata.spec_json).map_err(|e| {
        OpError::InvalidInput(format!(
            "domain {} carries no usable spec: {e}",
            domain.name
        ))
    })?;
    let status = status_of(domain, ServerStatus::Active).unwrap_or(ServerStatus::Error);
    let now = crate::state::now_rfc3339();
    services
        .store()
        .insert_server(ServerRow {
            id: domain.metadata.server_id.clone(),
            name: domain.metadata.server_name.clone(),
            status: status.as_str().into(),
            task_state: None,
            image_id: spec.image_id.clone(),
            spec: serde_json::to_string(&spec).expect("spec serialises"),
            fault: None,
            created_at: now.clone(),
            updated_at: now,
        })
        .await?;
    let _ = services
        .events()
        .publish(
            "server.adopted",
            "server",
            &domain.metadata.server_id,
            serde_json::json!({ "status": status }),
        )
        .await;
    Ok(())
}

/// The status a domain's state implies for a server now in `current`.
fn status_of(domain: &DomainStatus, current: ServerStatus) -> Option<ServerStatus> {
    Some(match domain.state {
        // A resize or cold migration waiting for confirm or revert stays so, running or not.
        PowerState::Running | PowerState::ShuttingDown | PowerState::Shutoff
            if current == ServerStatus::VerifyResize && !domain.has_managed_save =>
        {
            ServerStatus::VerifyResize
        }
        PowerState::Running | PowerState::ShuttingDown => ServerStatus::Active,
        PowerState::Paused => ServerStatus::Paused,
        PowerState::Shutoff if domain.has_managed_save => ServerStatus::Suspended,
        PowerState::Shutoff => ServerStatus::Shutoff,
        PowerState::Crashed => ServerStatus::Error,
        PowerState::PmSuspended | PowerState::Unknown => return None,
    })
}

/// One comparison of the store with libvirt. A server whose domain is missing is marked ERROR
/// only when it was already missing at the previous comparison (`missing` carries that over),
/// so one odd listing never condemns a server.
///
/// # Errors
/// [`OpError`] when libvirt (within its deadline) or the store fail.
pub async fn reconcile(services: &Services, missing: &mut HashSet<String>) -> Result<(), OpError> {
    let domains = domains_by_server(services).await?;
    for row in services.store().list_servers().await? {
        let lock = services.server_lock(&row.id);
        let Ok(_guard) = lock.try_lock() else {
            continue; // an operation is running on it
        };
        // Re-read under the lock: the row may have changed since the list.
        let Some(row) = services.store().get_server(&row.id).await? else {
            continue;
        };
        let loaded = decode(row)?;
        if loaded.row.task_state.is_some()
            || loaded.status.is_transitional()
            || loaded.status == ServerStatus::Error
        {
            continue;
        }
        match domains.get(&loaded.row.id) {
            None if missing.insert(loaded.row.id.clone()) => {} // first miss: look again next time
            None => {
                missing.remove(&loaded.row.id);
                set_status(
                    services,
                    &loaded.row.id,
                    ServerStatus::Error,
                    None,
                    Some("the domain vanished from libvirt"),
                )
                .await?;
            }
            Some(domain) => {
                missing.remove(&loaded.row.id);
                if let Some(status) = status_of(domain, loaded.status) {
                    if status != loaded.status {
                        let fault = (status == ServerStatus::Error).then_some("the guest crashed");
                        set_status(services, &loaded.row.id, status, None, fault).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reconciles every `hypervisor.sync_interval_ms` until `stop` is cancelled. Single-flight: a
/// tick is skipped while the previous tick's domain listing still runs in libvirt (its caller
/// may have given up at the deadline). Until one adoption pass has succeeded (the one at
/// startup may have failed), each tick adopts before it reconciles.
pub async fn run_sync(services: Services, stop: CancellationToken, mut adopted: bool) {
    let interval = Duration::from_millis(services.config().hypervisor.sync_interval_ms);
    let mut missing = HashSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if services.libvirt().listing_in_flight() {
            tracing::debug!("previous domain listing still running; skipping this sync");
            continue;
        }
        let result = if adopted {
            reconcile(&services, &mut missing).await
        } else {
            adopt_and_reconcile(&services).await
        };
        match result {
            Ok(()) => adopted = true,
            Err(e) => {
                tracing::warn!(error = %crate::api::error::chain(&e), "server sync with libvirt failed");
            }
        }
    }
}
