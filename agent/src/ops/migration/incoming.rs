//! The destination side of a migration (journal kind `server.incoming`).
//!
//! | step | does | undo |
//! |---|---|---|
//! | `images` | fetch the images this node lacks from the source, checked by SHA-256 | none (they stay cached, as any image) |
//! | `record` | record the server (BUILD, task `migrating`) under the admission lock | forget it |
//! | `disks` | the server's directory with empty overlays over this node's base image | destroy and undefine a domain left here, remove the directory |
//!
//! The operation stays open between the source's `prepare` and its `finish` or `abort`, the
//! server's lock held all along (the sync loop leaves it alone). After a restart, an open
//! operation whose domain runs here is finished (the migration completed: the server is
//! ours); one without a domain is rolled back; one whose domain exists but does not run yet
//! is left for the next start (libvirt may still be migrating into it).

use super::peer::PeerClient;
use super::wire::{ImageOffer, IncomingAnswer, IncomingRequest, PeerNode};
use crate::compute::PowerState;
use crate::ops::servers::{self, build, ServerStatus};
use crate::ops::{images, OpError, Services};
use crate::state::{
    ImageStatus, OperationHandler, OperationRecord, RestartPolicy, ServerRow, StepRecord,
    UndoFuture,
};
use serde_json::json;

/// Journal kind of the destination side.
pub const KIND: &str = "server.incoming";
/// Most images one server needs (root, kernel, ramdisk).
const MAX_IMAGES: usize = 3;

/// An incoming migration between `prepare` and `finish`/`abort`.
pub struct Pending {
    op: crate::state::Operation,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    answer: IncomingAnswer,
    source: PeerNode,
}

fn check(req: &IncomingRequest) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError::InvalidInput(m));
    if uuid::Uuid::parse_str(&req.server_id).is_err() {
        return bad(format!("server_id {:?} is not a UUID", req.server_id));
    }
    if req.spec.domain_name != format!("hyperlet-{}", req.server_id) {
        return bad("the spec's domain name does not belong to the server".into());
    }
    if !matches!(req.status, ServerStatus::Active | ServerStatus::Paused) {
        return bad(format!(
            "a live migration moves an ACTIVE or PAUSED server, not {}",
            req.status.as_str()
        ));
    }
    if !req.spec.nics.is_empty() || !req.spec.volumes.is_empty() || req.spec.boot_volume.is_some() {
        return Err(OpError::Conflict(
            "servers with ports or volumes cannot migrate yet".into(),
        ));
    }
    if req.images.len() > MAX_IMAGES {
        return bad(format!(
            "at most {MAX_IMAGES} images, not {}",
            req.images.len()
        ));
    }
    for offer in &req.images {
        if uuid::Uuid::parse_str(&offer.id).is_err() {
            return bad(format!("image id {:?} is not a UUID", offer.id));
        }
        if offer.blob_sha256.len() != 64
            || !offer.blob_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad(format!("image {} has no SHA-256", offer.id));
        }
        if !matches!(offer.disk_format.as_str(), "raw" | "qcow2" | "aki" | "ari") {
            return bad(format!(
                "image {} is offered as {:?}; only cached raw or qcow2 files travel",
                offer.id, offer.disk_format
            ));
        }
    }
    let needed = [
        Some(&req.spec.image_id),
        req.spec.kernel_image_id.as_ref(),
        req.spec.ramdisk_image_id.as_ref(),
    ];
    for id in needed.into_iter().flatten() {
        if !req.images.iter().any(|o| &o.id == id) {
            return bad(format!("image {id} is needed but not offered"));
        }
    }
    Ok(())
}

/// Prepares this node for a server coming from `req.source` and answers with the domain XML
/// this node wants. A repeat of the same request while it is pending gets the same answer.
///
/// # Errors
/// [`OpError::InvalidInput`] for a malformed request, [`OpError::Conflict`] when the server
/// already exists here, the node cannot hold it or an image does not arrive intact; in every
/// case nothing is left behind (fetched images stay cached).
pub async fn prepare(services: &Services, req: IncomingRequest) -> Result<IncomingAnswer, OpError> {
    check(&req)?;
    let id = req.server_id.clone();
    if let Some(pending) = services.migrations().incoming.lock().await.get(&id) {
        if pending.source == req.source {
            return Ok(pending.answer.clone());
        }
        return Err(OpError::Conflict(format!(
            "server {id} is already coming here from node {}",
            pending.source.name
        )));
    }
    if services.store().get_server(&id).await?.is_some() {
        return Err(OpError::Conflict(format!(
            "server {id} already exists on this node"
        )));
    }
    let guard = services
        .server_lock(&id)
        .try_lock_owned()
        .map_err(|_| OpError::Conflict(format!("server {id} is busy on this node")))?;
    let mut op = services
        .journal()
        .begin(
            KIND,
            &id,
            json!({ "source": req.source.name, "name": req.name }),
        )
        .await?;
    let mut spec = req.spec.clone();
    spec.dir = services.config().servers_dir().join(&id);
    let steps = async {
        op.step("images", json!({ "images": req.images.len() }), || {
            fetch_images(services, &req.source, &req.images)
        })
        .await?;
        let (resolved, _) = build::resolve_images(services, &spec.image_id).await?;
        op.step("record", json!({ "server_id": id }), || {
            record(services, &req, &spec)
        })
        .await?;
        op.step(
            "disks",
            json!({ "dir": spec.dir, "domain": spec.domain_name }),
            || build::create_disks(&spec, &resolved),
        )
        .await?;
        let dest_xml = build::domain_spec(services, &id, &req.name, &spec, &resolved).to_xml();
        let copy_disks = build::disks(&spec)
            .into_iter()
            .filter(|d| matches!(d.source, crate::compute::DiskSource::File { .. }))
            .map(|d| d.target)
            .collect();
        Ok::<_, OpError>(IncomingAnswer {
            dest_xml,
            copy_disks,
        })
    }
    .await;
    match steps {
        Ok(answer) => {
            services.migrations().incoming.lock().await.insert(
                id,
                Pending {
                    op,
                    _guard: guard,
                    answer: answer.clone(),
                    source: req.source,
                },
            );
            Ok(answer)
        }
        Err(e) => {
            let fault = crate::api::error::chain(&e);
            if let Err(undo) = op.roll_back(&fault).await? {
                tracing::error!(server_id = %id, %undo, "rollback of a failed migration preparation is incomplete");
            }
            Err(e)
        }
    }
}

/// Fetches the offered images this node does not have (kernel and ramdisk first: a root
/// image names them).
async fn fetch_images(
    services: &Services,
    source: &PeerNode,
    offers: &[ImageOffer],
) -> Result<(), OpError> {
    let mut ordered: Vec<&ImageOffer> = offers.iter().collect();
    ordered.sort_by_key(|o| !matches!(o.container_format.as_str(), "aki" | "ari"));
    let client = PeerClient::new(services)?;
    for offer in ordered {
        match services.store().get_image(&offer.id).await? {
            Some(image) if image.status == ImageStatus::Active => continue,
            Some(image) => {
                return Err(OpError::Conflict(format!(
                    "image {} exists on this node but is not active ({:?})",
                    offer.id, image.status
                )))
            }
            None => {}
        }
        images::create(
            services,
            images::ImageCreate {
                id: Some(offer.id.clone()),
                name: offer.name.clone(),
                disk_format: offer.disk_format.clone(),
                container_format: offer.container_format.clone(),
                properties: offer.properties.clone(),
            },
        )
        .await?;
        let fetched = async {
            let path = format!("/v1/peer/images/{}/file", offer.id);
            let stream = client.get_stream(&source.api_url, &path).await?;
            let image = images::upload(services, &offer.id, Box::pin(stream)).await?;
            if image.checksum.as_deref() != Some(offer.blob_sha256.as_str()) {
                return Err(OpError::Conflict(format!(
                    "image {} arrived from node {} with SHA-256 {} instead of {}",
                    offer.id,
                    source.name,
                    image.checksum.unwrap_or_default(),
                    offer.blob_sha256
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = fetched {
            if let Err(cleanup) = images::delete(services, &offer.id).await {
                tracing::warn!(image_id = %offer.id, error = %cleanup, "cannot remove an image that did not arrive");
            }
            return Err(e);
        }
        tracing::info!(image_id = %offer.id, from = %source.name, "fetched an image for an incoming migration");
    }
    Ok(())
}

/// Admits and records the incoming server (BUILD, task `migrating`).
async fn record(
    services: &Services,
    req: &IncomingRequest,
    spec: &servers::ServerSpec,
) -> Result<(), OpError> {
    let _admission = services.admission().lock().await;
    servers::admit(services, spec).await?;
    let now = crate::state::now_rfc3339();
    services
        .store()
        .insert_server(ServerRow {
            id: req.server_id.clone(),
            name: req.name.clone(),
            status: ServerStatus::Build.as_str().into(),
            task_state: Some("migrating".into()),
            image_id: req.image_id.clone(),
            spec: serde_json::to_string(spec).expect("spec serialises"),
            fault: None,
            created_at: now.clone(),
            updated_at: now,
        })
        .await?;
    Ok(())
}

/// The server arrived: it is ACTIVE (or PAUSED) here; the operation is done. With `resume`,
/// a guest the source paused to finish is resumed first.
///
/// # Errors
/// [`OpError::NotFound`] when no migration of that server is pending here,
/// [`OpError::Conflict`] when its domain does not run here.
pub async fn finish(services: &Services, server_id: &str, resume: bool) -> Result<(), OpError> {
    let pending = services
        .migrations()
        .incoming
        .lock()
        .await
        .remove(server_id);
    let Some(pending) = pending else {
        // A repeat after the first finish (or after a restart finished it): done already.
        return match services.store().get_server(server_id).await? {
            Some(row) if row.task_state.is_none() => Ok(()),
            _ => Err(OpError::NotFound {
                kind: "incoming migration",
                id: server_id.to_string(),
            }),
        };
    };
    let domain = format!("hyperlet-{server_id}");
    if resume && services.libvirt().state(&domain).await? == Some(PowerState::Paused) {
        // The source paused the guest to finish (force-complete): it runs again here.
        services.libvirt().unpause(&domain).await?;
    }
    let status = match services.libvirt().state(&domain).await? {
        Some(PowerState::Running) => ServerStatus::Active,
        Some(PowerState::Paused) => ServerStatus::Paused,
        other => {
            let reason = format!("the domain is {other:?} here, not running");
            services
                .migrations()
                .incoming
                .lock()
                .await
                .insert(server_id.to_string(), pending);
            return Err(OpError::Conflict(reason));
        }
    };
    arrived(services, server_id, status, &pending.source.name).await?;
    pending.op.complete().await?;
    Ok(())
}

/// Records the arrival: status, no tombstone, an event.
async fn arrived(
    services: &Services,
    server_id: &str,
    status: ServerStatus,
    from: &str,
) -> Result<(), OpError> {
    servers::set_status(services, server_id, status, None, None).await?;
    services.store().delete_moved(server_id).await?;
    let _ = services
        .events()
        .publish(
            "server.migrated",
            "server",
            server_id,
            json!({ "from": from, "status": status }),
        )
        .await;
    Ok(())
}

/// The source gave up: everything prepared here is undone.
///
/// # Errors
/// [`OpError::Store`] when the journal cannot be written; an incomplete undo is reported and
/// retried at the next start.
pub async fn abort(services: &Services, server_id: &str) -> Result<(), OpError> {
    let pending = services
        .migrations()
        .incoming
        .lock()
        .await
        .remove(server_id);
    let Some(pending) = pending else {
        return Ok(());
    };
    if let Err(undo) = pending
        .op
        .roll_back("the source aborted the migration")
        .await?
    {
        return Err(OpError::Interrupted(format!(
            "the migration's preparation could not be fully undone: {undo}"
        )));
    }
    Ok(())
}

/// Undo and restart handling of `server.incoming`.
pub(crate) struct IncomingHandler {
    services: Services,
}

impl IncomingHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

async fn undo_step(services: &Services, step: &StepRecord) -> Result<(), String> {
    let text = |key: &str| step.data[key].as_str().unwrap_or_default().to_string();
    match step.name.as_str() {
        "images" => Ok(()),
        "record" => services
            .store()
            .delete_server(&text("server_id"))
            .await
            .map_err(|e| e.to_string()),
        "disks" => {
            let libvirt = services.libvirt();
            libvirt
                .undefine(&text("domain"))
                .await
                .map_err(|e| e.to_string())?;
            match std::fs::remove_dir_all(text("dir")) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", text("dir"))),
            }
        }
        other => Err(format!("unknown step {other}")),
    }
}

impl OperationHandler for IncomingHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn undo<'a>(&'a self, _op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(undo_step(&self.services, step))
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            let domain = format!("hyperlet-{}", op.resource_id);
            let from = op.input["source"].as_str().unwrap_or("another node");
            match services
                .libvirt()
                .state(&domain)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(PowerState::Running) | Some(PowerState::Paused)
                    if op.steps.iter().any(|s| s.name == "disks") =>
                {
                    // The migration completed while this agent was away: the server is ours.
                    let state = services
                        .libvirt()
                        .state(&domain)
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = if state == Some(PowerState::Paused) {
                        ServerStatus::Paused
                    } else {
                        ServerStatus::Active
                    };
                    arrived(services, &op.resource_id, status, from)
                        .await
                        .map_err(|e| e.to_string())
                }
                None => {
                    for step in op.steps.iter().rev() {
                        undo_step(services, step).await?;
                    }
                    Ok(())
                }
                Some(state) => Err(format!(
                    "the incoming domain is {state:?}; left for the next start"
                )),
            }
        })
    }
}
