//! The destination side of a migration (journal kind `server.incoming`).
//!
//! | step | does | undo |
//! |---|---|---|
//! | `images` | fetch the images this node lacks from the source, checked by SHA-256 | none (they stay cached, as any image) |
//! | `record` | record the server (BUILD, task `migrating`) under the admission lock | forget it |
//! | `ports` | its ports with the same ids, MACs and addresses on the same networks (which must exist here), filtered and served by DHCP before the guest arrives | delete them |
//! | `volumes` | adopt the records of its volumes on shared storage (and their snapshots'): this node's driver must find each on its shares | forget the records (never the data) |
//! | `disks` | the server's directory with empty overlays over this node's base image | destroy and undefine a domain left here, remove the directory |
//!
//! The operation stays open between the source's `prepare` and its `finish` or `abort`, the
//! server's lock held all along (the sync loop leaves it alone). After a restart, an open
//! operation whose domain runs here is finished (the migration completed: the server is
//! ours); one without a domain is rolled back; one whose domain exists but does not run yet
//! is left for the next start (libvirt may still be migrating into it).

use super::peer::PeerClient;
use super::wire::{ColdOffer, ImageOffer, IncomingAnswer, IncomingRequest, PeerNode};
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
    cold: Option<ColdOffer>,
    fingerprint: String,
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
    req.spec.flavor.validate()?;
    servers::validate_name(&req.name)?;
    match &req.cold {
        None if !matches!(req.status, ServerStatus::Active | ServerStatus::Paused) => {
            return bad(format!(
                "a live migration moves an ACTIVE or PAUSED server, not {}",
                req.status.as_str()
            ));
        }
        Some(_) if req.status != ServerStatus::Shutoff => {
            return bad(format!(
                "a cold migration moves a SHUTOFF server, not {}",
                req.status.as_str()
            ));
        }
        Some(cold) => super::disks::check_offers(&req.spec, &cold.disks, cold.revert)?,
        None => {}
    }
    super::volumes::check_offers(req)?;
    req.pci_addresses.check().map_err(OpError::InvalidInput)?;
    let targets: Vec<String> = build::disks(&req.spec)
        .into_iter()
        .map(|d| d.target)
        .collect();
    if let Some(unknown) = req
        .pci_addresses
        .disks
        .keys()
        .find(|k| !targets.contains(k))
    {
        return bad(format!(
            "the PCI addresses name a disk {unknown:?} the server lacks"
        ));
    }
    if let Some(unknown) = req.pci_addresses.nics.keys().find(|k| {
        !req.ports
            .iter()
            .any(|o| o.port.mac_address.eq_ignore_ascii_case(k))
    }) {
        return bad(format!(
            "the PCI addresses name a NIC {unknown:?} the server lacks"
        ));
    }
    if req.ports.len() != req.spec.nics.len()
        || req.spec.nics.iter().zip(&req.ports).any(|(nic, offer)| {
            nic.port_id != offer.port.id || nic.network_id != offer.port.network_id
        })
    {
        return bad("the ports offered are not the server's NICs".into());
    }
    for offer in &req.ports {
        if uuid::Uuid::parse_str(&offer.port.id).is_err()
            || uuid::Uuid::parse_str(&offer.port.network_id).is_err()
        {
            return bad(format!("port {:?} has no usable ids", offer.port.id));
        }
        if offer.security_group_names.len() != offer.port.security_groups.len() {
            return bad(format!("port {} names its groups wrongly", offer.port.id));
        }
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
    let fingerprint = fingerprint(&req);
    if let Some(pending) = services.migrations().incoming.lock().await.get(&id) {
        if pending.source == req.source && pending.fingerprint == fingerprint {
            return Ok(pending.answer.clone());
        }
        return Err(OpError::Conflict(format!(
            "another migration of server {id} from node {} is pending here; abort it first",
            pending.source.name
        )));
    }
    if services.store().get_server(&id).await?.is_some() {
        return Err(OpError::Conflict(format!(
            "server {id} already exists on this node"
        )));
    }
    if let Some(cold) = req.cold.as_ref().filter(|c| c.revert) {
        check_revert(services, &id, &req.source, cold).await?;
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
            json!({ "source": req.source.name, "name": req.name, "cold": req.cold.is_some() }),
        )
        .await?;
    let mut spec = req.spec.clone();
    spec.dir = services.config().servers_dir().join(&id);
    // Only this node's own finish of a cold move sets it.
    spec.migrated_from = None;
    // An abort that comes while this runs stops it (its own rollback undoes what it did).
    let cancel = tokio_util::sync::CancellationToken::new();
    services
        .migrations()
        .preparing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), cancel.clone());
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
        let port_ids: Vec<&str> = req.ports.iter().map(|o| o.port.id.as_str()).collect();
        spec.nics = op
            .step("ports", json!({ "ports": port_ids }), || {
                ports(services, &req)
            })
            .await?;
        let volume_ids = super::volumes::ids(&spec);
        op.step(
            "volumes",
            json!({ "server_id": id, "volumes": volume_ids }),
            || super::volumes::adopt(services, &req, &mut spec),
        )
        .await?;
        services
            .store()
            .set_server_spec(
                &id,
                &req.image_id,
                &serde_json::to_string(&spec).expect("spec serialises"),
            )
            .await?;
        let disks = json!({ "dir": spec.dir, "domain": spec.domain_name });
        match &req.cold {
            None => {
                op.step("disks", disks, || build::create_disks(&spec, &resolved))
                    .await?
            }
            Some(cold) if cold.revert => {
                let retained = super::disks::retained_dir(services, &id);
                let data =
                    json!({ "dir": spec.dir, "retained": retained, "domain": spec.domain_name });
                op.step("retained", data, || async {
                    std::fs::rename(&retained, &spec.dir).map_err(|e| {
                        OpError::Interrupted(format!("cannot take back the kept disks: {e}"))
                    })
                })
                .await?
            }
            Some(cold) => {
                op.step("disks", disks, || {
                    super::disks::fetch(
                        services,
                        &req.source,
                        &id,
                        &spec,
                        &cold.disks,
                        &cold.secret,
                        &resolved,
                    )
                })
                .await?
            }
        }
        let mut domain = build::domain_spec(services, &id, &req.name, &spec, &resolved);
        domain.addresses = req.pci_addresses.clone();
        let dest_xml = domain.to_xml();
        if req.cold.is_some() {
            // Nothing runs it yet: defined here, started (or not) when the source finishes.
            let xml = dest_xml.clone();
            op.step("define", json!({ "domain": spec.domain_name }), || async {
                Ok::<_, OpError>(services.libvirt().define(xml).await?)
            })
            .await?;
        }
        let copy_disks = build::disks(&spec)
            .into_iter()
            .filter(|d| matches!(d.source, crate::compute::DiskSource::File { .. }))
            .map(|d| d.target)
            .collect();
        Ok::<_, OpError>(IncomingAnswer {
            dest_xml,
            copy_disks,
        })
    };
    let steps = tokio::select! {
        answer = steps => answer,
        () = cancel.cancelled() => Err(OpError::Interrupted(
            "the source aborted the migration while this node prepared".into(),
        )),
    };
    // Under the table's lock: an abort either found this pending or cancelled it before.
    let mut table = services.migrations().incoming.lock().await;
    services
        .migrations()
        .preparing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let steps = match steps {
        Ok(_) if cancel.is_cancelled() => Err(OpError::Interrupted(
            "the source aborted the migration while this node prepared".into(),
        )),
        other => other,
    };
    match steps {
        Ok(answer) => {
            table.insert(
                id.clone(),
                Pending {
                    op,
                    cold: req.cold.clone(),
                    fingerprint,
                    _guard: guard,
                    answer: answer.clone(),
                    source: req.source,
                },
            );
            drop(table);
            if req.cold.is_none() {
                tokio::spawn(watch_arrival(services.clone(), id, req.status));
            }
            Ok(answer)
        }
        Err(e) => {
            drop(table);
            let fault = crate::api::error::chain(&e);
            let op_id = op.id().to_string();
            if let Err(undo) = op.roll_back(&fault).await? {
                tracing::warn!(server_id = %id, %undo, "rollback of a failed migration preparation is incomplete; retrying in the background");
                super::retry_undo(services, &id, op_id, false);
            }
            Err(e)
        }
    }
}

/// SHA-256 of a request: a repeat of the same request gets the same answer; a different one
/// for the same server is another migration.
fn fingerprint(req: &IncomingRequest) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(req).expect("a request serialises");
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A revert comes back to this node only from the node the server moved to, for disks this
/// node kept.
async fn check_revert(
    services: &Services,
    id: &str,
    source: &PeerNode,
    cold: &ColdOffer,
) -> Result<(), OpError> {
    let moved_to = services.store().get_moved(id).await?.map(|m| m.node);
    if moved_to.as_deref() != Some(source.name.as_str()) {
        return Err(OpError::Conflict(format!(
            "server {id} did not move from this node to node {}: nothing to revert",
            source.name
        )));
    }
    let kept = super::disks::retained_dir(services, id);
    if !kept.is_dir() {
        return Err(OpError::Conflict(format!(
            "this node kept no disks of server {id}: nothing to revert to"
        )));
    }
    super::disks::check_secret(&kept, &cold.secret)
}

/// How often a pending incoming domain is looked at.
const ARRIVAL_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest a pending migration is watched.
const ARRIVAL_WATCH: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Watches a pending incoming server: the moment libvirt runs it here (the switch-over, which
/// comes before the source's migration call returns), it gets its status here, so this node
/// publishes its ports as its own and the fleet's traffic for it turns here at once, not only
/// when the source finishes. `finish` completes the rest.
async fn watch_arrival(services: Services, id: String, status: ServerStatus) {
    let domain = format!("hyperlet-{id}");
    let started = std::time::Instant::now();
    while started.elapsed() < ARRIVAL_WATCH {
        tokio::time::sleep(ARRIVAL_POLL).await;
        if !services
            .migrations()
            .incoming
            .lock()
            .await
            .contains_key(&id)
        {
            return;
        }
        if let Ok(Some(PowerState::Running)) = services.libvirt().state(&domain).await {
            let now = if status == ServerStatus::Paused {
                ServerStatus::Paused
            } else {
                ServerStatus::Active
            };
            if let Err(e) = servers::set_status(&services, &id, now, Some("migrating"), None).await
            {
                tracing::warn!(server_id = %id, error = %e, "cannot record an arrived server");
            }
            tracing::info!(server_id = %id, "live migration: the guest runs here");
            return;
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
            let stream = client.get_stream(&source.api_url, &path, None).await?;
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

/// The server's ports here: same ids, MACs, addresses and (by id, else by name) security
/// groups, bound to the server; then filtered and served by DHCP on their networks.
async fn ports(
    services: &Services,
    req: &IncomingRequest,
) -> Result<Vec<crate::ops::networks::ports::ServerNic>, OpError> {
    use crate::net::model::NetStatus;
    use crate::ops::networks::ports::{alloc_error, ServerNic};
    let store = services.store();
    let owner = format!("compute:{}", services.config().availability_zone);
    let mut nics = Vec::new();
    for offer in &req.ports {
        let port = &offer.port;
        let network = store.get_network(&port.network_id).await?.ok_or_else(|| {
            OpError::Conflict(format!(
                "network {} does not exist on this node: create it here with the same id \
                 (and segmentation id) first",
                port.network_id
            ))
        })?;
        if network.status != NetStatus::Active {
            return Err(OpError::Conflict(format!(
                "network {} is {} on this node, not ACTIVE",
                network.id,
                network.status.as_str()
            )));
        }
        let mut groups = Vec::new();
        for (id, name) in port.security_groups.iter().zip(&offer.security_group_names) {
            let here = match store.get_security_group(id).await? {
                Some(group) => group.id,
                None => store
                    .security_group_by_name(name)
                    .await?
                    .map(|g| g.id)
                    .ok_or_else(|| {
                        OpError::Conflict(format!(
                            "this node has no security group {id} or named {name:?}: create it \
                             here first"
                        ))
                    })?,
            };
            groups.push(here);
        }
        let made = match store.get_port(&port.id).await? {
            Some(existing) if existing.device_id == req.server_id => existing,
            Some(_) => {
                return Err(OpError::Conflict(format!(
                    "port {} already exists on this node",
                    port.id
                )))
            }
            None => {
                let _guard = services.network_lock().lock().await;
                store
                    .create_port(crate::state::NewPort {
                        id: port.id.clone(),
                        network_id: port.network_id.clone(),
                        name: port.name.clone(),
                        mac_address: Some(port.mac_address.clone()),
                        ips: port
                            .fixed_ips
                            .iter()
                            .map(|f| crate::state::IpRequest::Fixed(f.ip_address))
                            .collect(),
                        device_id: req.server_id.clone(),
                        device_owner: owner.clone(),
                        security_groups: groups,
                        port_security_enabled: port.port_security_enabled,
                        allowed_address_pairs: port.allowed_address_pairs.clone(),
                        exclude: Vec::new(),
                    })
                    .await
                    .map_err(alloc_error)?
            }
        };
        nics.push(ServerNic::new(&made, &network, offer.created)?);
    }
    // Filtered, and known to DHCP and metadata, before the guest's taps exist here.
    for network_id in servers::nic_networks(&nics) {
        crate::ops::networks::runtime::refresh(services, &network_id).await;
    }
    Ok(nics)
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

/// Takes the pending incoming migration of `server_id` out of the table.
async fn take_pending(services: &Services, server_id: &str) -> Option<Pending> {
    services
        .migrations()
        .incoming
        .lock()
        .await
        .remove(server_id)
}

/// The server arrived: it is ACTIVE (or PAUSED) here; the operation is done. With `resume`,
/// a guest the source paused to finish is resumed first.
///
/// # Errors
/// [`OpError::NotFound`] when no migration of that server is pending here,
/// [`OpError::Conflict`] when its domain does not run here.
pub async fn finish(services: &Services, server_id: &str, resume: bool) -> Result<(), OpError> {
    let pending = take_pending(services, server_id).await;
    let Some(pending) = pending else {
        return finish_unpending(services, server_id, resume).await;
    };
    if let Some(cold) = pending.cold.clone() {
        if let Err(e) = finish_cold(services, server_id, &cold, &pending.source).await {
            services
                .migrations()
                .incoming
                .lock()
                .await
                .insert(server_id.to_string(), pending);
            return Err(e);
        }
        pending.op.complete().await?;
        return Ok(());
    }
    let status = match running_here(services, server_id, resume).await {
        Ok(status) => status,
        Err(e) => {
            services
                .migrations()
                .incoming
                .lock()
                .await
                .insert(server_id.to_string(), pending);
            return Err(e);
        }
    };
    arrived(services, server_id, status, &pending.source.name).await?;
    pending.op.complete().await?;
    Ok(())
}

/// A cold-migrated server is here: it remembers where it came from (until confirmed or
/// reverted; a revert is final), is started when it ran before, and is VERIFY_RESIZE (a
/// revert: ACTIVE or SHUTOFF).
async fn finish_cold(
    services: &Services,
    server_id: &str,
    cold: &ColdOffer,
    source: &PeerNode,
) -> Result<(), OpError> {
    let loaded = servers::load(services, server_id).await?;
    let mut spec = loaded.spec.clone();
    spec.migrated_from = (!cold.revert).then(|| servers::MigratedFrom {
        node: source.name.clone(),
        api_url: source.api_url.clone(),
        power_on: cold.power_on,
        secret: cold.secret.clone(),
    });
    servers::save_spec(services, server_id, &loaded.row.image_id, &spec).await?;
    take_over_claims(services, server_id, &source.name).await;
    services.store().delete_moved(server_id).await?;
    let mut fault = None;
    let mut running = false;
    if cold.power_on {
        match services.libvirt().start(&spec.domain_name).await {
            Ok(()) => running = true,
            Err(e) => fault = Some(format!("the server moved but did not start: {e}")),
        }
    }
    let status = match (cold.revert, running) {
        (false, _) => ServerStatus::VerifyResize,
        (true, true) => ServerStatus::Active,
        (true, false) => ServerStatus::Shutoff,
    };
    servers::set_status(services, server_id, status, None, fault.as_deref()).await?;
    let _ = services
        .events()
        .publish(
            "server.migrated",
            "server",
            server_id,
            json!({ "from": source.name, "status": status, "cold": true, "revert": cold.revert }),
        )
        .await;
    Ok(())
}

/// The status of an arrived server from its domain here (resumed first when the source paused
/// it to finish).
///
/// # Errors
/// [`OpError::Conflict`] when the domain does not run here.
async fn running_here(
    services: &Services,
    server_id: &str,
    resume: bool,
) -> Result<ServerStatus, OpError> {
    let domain = format!("hyperlet-{server_id}");
    if resume && services.libvirt().state(&domain).await? == Some(PowerState::Paused) {
        // The source paused the guest to finish (force-complete): it runs again here.
        services.libvirt().unpause(&domain).await?;
    }
    match services.libvirt().state(&domain).await? {
        Some(PowerState::Running) => Ok(ServerStatus::Active),
        Some(PowerState::Paused) => Ok(ServerStatus::Paused),
        other => Err(OpError::Conflict(format!(
            "the domain is {other:?} here, not running"
        ))),
    }
}

/// Takes over the fleet-wide address claims of the server's ports from the source.
async fn take_over_claims(services: &Services, server_id: &str, from: &str) {
    let Ok(spec) = servers::spec_of(services, server_id).await else {
        return;
    };
    for nic in &spec.nics {
        if let Ok(Some(port)) = services.store().get_port(&nic.port_id).await {
            crate::ops::fleet::ipam::take_over(services, &port, from).await;
        }
    }
}

/// `finish` without a pending migration: a repeat (done already), or one this agent's restart
/// left open (its domain ran in, or still runs in, while the agent was away).
async fn finish_unpending(
    services: &Services,
    server_id: &str,
    resume: bool,
) -> Result<(), OpError> {
    let not_pending = || OpError::NotFound {
        kind: "incoming migration",
        id: server_id.to_string(),
    };
    let row = services
        .store()
        .get_server(server_id)
        .await?
        .ok_or_else(not_pending)?;
    if row.task_state.as_deref() != Some("migrating") {
        // It arrived and lives here now (whatever it does since): the move is finished.
        return Ok(());
    }
    let status = running_here(services, server_id, resume).await?;
    // The journal's operation ends at the next start (it finds the domain running).
    arrived(services, server_id, status, "the source").await
}

/// Records the arrival: status, no tombstone, an event.
async fn arrived(
    services: &Services,
    server_id: &str,
    status: ServerStatus,
    from: &str,
) -> Result<(), OpError> {
    take_over_claims(services, server_id, from).await;
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
/// [`OpError::Store`] when the journal cannot be written; an incomplete undo (libvirtd away)
/// is retried in the background, and at the next start.
pub async fn abort(services: &Services, server_id: &str) -> Result<(), OpError> {
    let pending = {
        let mut table = services.migrations().incoming.lock().await;
        let pending = table.remove(server_id);
        if pending.is_none() {
            // Still preparing: stopped there (its rollback undoes what it did).
            if let Some(cancel) = services
                .migrations()
                .preparing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(server_id)
            {
                cancel.cancel();
            }
        }
        pending
    };
    let Some(pending) = pending else {
        return Ok(());
    };
    let op_id = pending.op.id().to_string();
    if let Err(undo) = pending
        .op
        .roll_back("the source aborted the migration")
        .await?
    {
        // libvirtd may be away (restarting): the undo is this node's to finish; its journal
        // keeps it rolling back until then (and a restart retries it too).
        tracing::warn!(server_id, %undo, "undoing an aborted migration's preparation failed; retrying in the background");
        super::retry_undo(services, server_id, op_id, false);
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

/// The strings of a JSON array (none for anything else).
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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
        "ports" => {
            let ids = strings(&step.data["ports"]);
            let mut networks = Vec::new();
            for id in ids {
                if let Some(port) = services
                    .store()
                    .get_port(&id)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    // Only the local record: the address claims stay with the source.
                    services
                        .store()
                        .delete_port(&id)
                        .await
                        .map_err(|e| e.to_string())?;
                    networks.push(port.network_id);
                }
            }
            networks.sort();
            networks.dedup();
            for network_id in networks {
                crate::ops::networks::runtime::refresh(services, &network_id).await;
            }
            Ok(())
        }
        "volumes" => {
            let ids = strings(&step.data["volumes"]);
            super::volumes::forget(services, &text("server_id"), &ids)
                .await
                .map_err(|e| e.to_string())
        }
        "define" => services
            .libvirt()
            .undefine(&text("domain"))
            .await
            .map_err(|e| e.to_string()),
        "retained" => {
            services
                .libvirt()
                .undefine(&text("domain"))
                .await
                .map_err(|e| e.to_string())?;
            let (dir, retained) = (text("dir"), text("retained"));
            if std::path::Path::new(&dir).is_dir() && !std::path::Path::new(&retained).exists() {
                std::fs::rename(&dir, &retained)
                    .map_err(|e| format!("cannot keep {dir} as {retained} again: {e}"))?;
            }
            Ok(())
        }
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
            if op.input["cold"].as_bool() == Some(true) {
                // The source asks again to finish; without the pending state that answer is
                // 404, and the source rolls its side back too.
                for step in op.steps.iter().rev() {
                    undo_step(services, step).await?;
                }
                return Ok(());
            }
            match services
                .libvirt()
                .state(&domain)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(state @ (PowerState::Running | PowerState::Paused))
                    if op.steps.iter().any(|s| s.name == "disks") =>
                {
                    // The migration completed while this agent was away: the server is ours.
                    let status = if state == PowerState::Paused {
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
