//! Network create and delete: answered 202 with the network `BUILD` or `DELETING`, then
//! journaled in the background (`network.create`: `record` → `setup`; `network.delete`:
//! `record` → `teardown`), so neither a request deadline, a client that goes away nor a
//! kill -9 leaves a network half made. Both steps after `record` are
//! [`runtime::sync_network`], which is idempotent: a crash is resumed at the next start by
//! running it again. A failure leaves the network `ERROR` with its fault (delete it again).
//! Every status change is published as `network.status`.

use super::{backend, get, model::NetworkCreate, runtime};
use crate::net::model::{NetStatus, Network, DHCP_OWNER};
use crate::ops::{background, OpError, Services};
use crate::state::{
    now_rfc3339, OperationHandler, OperationRecord, PortFilter, RestartPolicy, StepRecord,
    UndoFuture,
};
use serde_json::json;
use std::sync::Arc;

/// Journal kind of a network create.
pub const CREATE_KIND: &str = "network.create";
/// Journal kind of a network delete.
pub const DELETE_KIND: &str = "network.delete";

/// Validates a network, asks its backend whether it can serve it, records it `BUILD` and
/// sets it up in the background.
///
/// # Errors
/// 400 for bad attributes, an unknown backend or a backend refusal; 409 when the segment is
/// used by another network. Nothing is recorded then.
pub async fn create(services: &Services, req: NetworkCreate) -> Result<Network, OpError> {
    req.validate()?;
    let backend_name = backend::resolve(services, req.backend.as_deref())?;
    let now = now_rfc3339();
    let network = Network {
        id: req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        name: req.name.clone(),
        network_type: req.kind(),
        physical_network: req.physical_network.clone(),
        segmentation_id: req.segmentation_id,
        mtu: req.mtu(),
        backend: backend_name.clone(),
        bridge: None,
        status: NetStatus::Build,
        fault: None,
        subnets: Vec::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    backend::validate(services, &backend_name, &network.backend_view()).await?;
    let services = services.clone();
    background::run(move |answer| async move {
        let id = network.id.clone();
        let input = json!({ "name": network.name, "backend": network.backend });
        let Some(mut op) =
            background::begin_recorded(&services, CREATE_KIND, &id, input, answer, || {
                record(&services, network)
            })
            .await
        else {
            return;
        };
        let result = op.step("setup", json!({}), || settle(&services, &id)).await;
        background::finish(op, result).await;
    })
    .await
}

/// Stores the new network `BUILD` unless another network uses its segment.
async fn record(services: &Services, network: Network) -> Result<Network, OpError> {
    {
        let _guard = services.network_lock().lock().await;
        if let Some(other) = services.store().network_by_segment(&network).await? {
            return Err(OpError::Conflict(format!(
                "network {other} already uses this segment ({} {}{})",
                network.network_type.as_str(),
                network.physical_network.as_deref().unwrap_or(""),
                network
                    .segmentation_id
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            )));
        }
        services.store().insert_network(network.clone()).await?;
    }
    let events = services.events();
    let _ = events
        .publish(
            "network.created",
            "network",
            &network.id,
            json!({ "name": network.name }),
        )
        .await;
    publish_status(services, &network).await;
    Ok(network)
}

/// Makes the host match the stored network and publishes where that left it.
async fn settle(services: &Services, id: &str) -> Result<(), OpError> {
    let result = runtime::sync_network(services, id).await;
    if let Ok(Some(network)) = services.store().get_network(id).await {
        if network.status != NetStatus::Build {
            publish_status(services, &network).await;
        }
    }
    result
}

/// Deletes a network that no server uses: answers with it `DELETING`; its namespace, DHCP
/// port, bridge and records go in the background.
///
/// # Errors
/// 404 for an unknown network; 409 while ports other than the DHCP port exist or while the
/// network is still being built or deleted. Nothing changes then.
pub async fn delete(services: &Services, id: &str) -> Result<Network, OpError> {
    get(services, id).await?;
    let services = services.clone();
    let id = id.to_string();
    background::run(move |answer| async move {
        let input = json!({});
        let Some(mut op) =
            background::begin_recorded(&services, DELETE_KIND, &id, input, answer, || {
                mark_deleting(&services, &id)
            })
            .await
        else {
            return;
        };
        let result = op
            .step("teardown", json!({}), || {
                runtime::sync_network(&services, &id)
            })
            .await;
        if result.is_ok() {
            publish_deleted(&services, &id).await;
        }
        background::finish(op, result).await;
    })
    .await
}

/// Records `DELETING` when nothing but the DHCP port uses the network and it is settled.
async fn mark_deleting(services: &Services, id: &str) -> Result<Network, OpError> {
    let network = {
        let _guard = services.network_lock().lock().await;
        let network = get(services, id).await?;
        if matches!(network.status, NetStatus::Build | NetStatus::Deleting) {
            return Err(OpError::Conflict(format!(
                "network {id} is {}; wait until it is ACTIVE or ERROR",
                network.status.as_str()
            )));
        }
        let ports = services
            .store()
            .list_ports(PortFilter::Network(id.to_string()))
            .await?;
        let in_use: Vec<&str> = ports
            .iter()
            .filter(|p| p.device_owner != DHCP_OWNER)
            .map(|p| p.id.as_str())
            .collect();
        if !in_use.is_empty() {
            return Err(OpError::Conflict(format!(
                "network {id} is in use by {} port(s): {}; delete them (or their servers) first",
                in_use.len(),
                in_use.join(", ")
            )));
        }
        services
            .store()
            .set_network_state(id, NetStatus::Deleting, None, None)
            .await?;
        get(services, id).await?
    };
    publish_status(services, &network).await;
    Ok(network)
}

/// Publishes `network.deleted`.
async fn publish_deleted(services: &Services, id: &str) {
    let _ = services
        .events()
        .publish("network.deleted", "network", id, json!({}))
        .await;
}

/// Publishes `network.status` with the network's status and fault.
async fn publish_status(services: &Services, network: &Network) {
    let _ = services
        .events()
        .publish(
            "network.status",
            "network",
            &network.id,
            json!({ "status": network.status.as_str(), "fault": network.fault }),
        )
        .await;
}

/// Leaves the network `ERROR` with `fault` (whatever it was doing) and says so.
async fn fail(services: &Services, id: &str, fault: String) -> Result<(), String> {
    services
        .store()
        .fail_network(id, &fault)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(Some(network)) = services.store().get_network(id).await {
        publish_status(services, &network).await;
    }
    Ok(())
}

/// Settles network creates and deletes: `ERROR` on failure, resumed after a restart.
struct Handler {
    kind: &'static str,
    services: Services,
}

impl OperationHandler for Handler {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            if step.name != "record" {
                return Ok(());
            }
            let fault = op
                .error
                .clone()
                .unwrap_or_else(|| format!("the {} was interrupted", self.kind));
            fail(&self.services, &op.resource_id, fault).await
        })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let (services, id) = (&self.services, op.resource_id.as_str());
            let result = if self.kind == CREATE_KIND {
                settle(services, id).await
            } else {
                runtime::sync_network(services, id).await
            };
            match result {
                Ok(()) if self.kind == DELETE_KIND => {
                    publish_deleted(services, id).await;
                    Ok(())
                }
                Ok(()) => Ok(()),
                Err(e) => fail(services, id, crate::api::error::chain(&e)).await,
            }
        })
    }
}

/// Registers the journal handlers of network creates and deletes. Call before
/// `Journal::recover`.
pub fn register_handlers(services: &Services) {
    for kind in [CREATE_KIND, DELETE_KIND] {
        services.journal().register(Arc::new(Handler {
            kind,
            services: services.clone(),
        }));
    }
}
