//! The source side of a live migration (journal kind `server.migrate`).
//!
//! | step | does | undo |
//! |---|---|---|
//! | `prepare` | ask the destination to prepare (it fetches images, records the server, makes overlays) | ask it to abort |
//! | `migrate` | libvirt's peer-to-peer migration with the destination's XML | none (a failed migration leaves the guest here) |
//!
//! Once `migrate` is done the guest runs on the destination and there is no way back: the
//! source tells the destination to finish (retried until it lands), removes the server's
//! files, forgets the server and keeps a tombstone pointing to its new node. After a restart,
//! an open operation whose domain is gone from here is finished that way; one whose domain is
//! still here is rolled back (a running job aborted first).

use super::peer::{self, FleetNode, PeerClient};
use super::wire::{ImageOffer, IncomingAnswer, IncomingRequest, PeerNode, PortOffer};
use crate::compute::{MigrationPlan, MigrationProgress};
use crate::fleet::backoff::Backoff;
use crate::ops::servers::{self, build, Loaded, Server, ServerStatus};
use crate::ops::{OpError, Services};
use crate::sched::RequestSpec;
use crate::state::{OperationHandler, OperationRecord, RestartPolicy, StepRecord, UndoFuture};
use serde_json::json;
use std::time::{Duration, Instant};

/// Journal kind of the source side.
pub const KIND: &str = "server.migrate";
/// How often a running migration's figures are read.
const POLL: Duration = Duration::from_millis(500);
/// How often they are published as a `server.migration` event.
const PUBLISH: Duration = Duration::from_secs(2);
/// The shortest completion deadline.
const MIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long finishing on the destination is retried before it is left to the next start.
pub(super) const FINISH_FOR: Duration = Duration::from_secs(600);

/// Whether local disks are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockMigration {
    /// Copy the local disks when the server has any (every server here has a root overlay
    /// unless it boots from a volume).
    Auto,
    /// Copy them.
    Yes,
    /// Do not: only for a server whose disks are all on shared storage (it boots from an NFS
    /// volume and has no ephemeral or swap disk); refused otherwise.
    No,
}

/// `{"live_migrate": {"host": …, "block_migration": …}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveMigrate {
    /// The destination node; `None`: fleet placement picks one.
    pub host: Option<String>,
    /// Disk copying.
    pub block_migration: BlockMigration,
}

/// Starts a live migration of a server whose lock the caller holds: checks the destination
/// (named, or picked by fleet placement), marks the server `migrating` and runs the rest in
/// the background.
///
/// # Errors
/// [`OpError::Conflict`] naming why: not in a fleet or no peer token, the destination is this
/// node, unknown, down, disabled, takes no migrations or fails a filter (with the filter's
/// reason), no node fits, the server has a volume local to this node, too many migrations
/// running.
pub(crate) async fn start(
    services: &Services,
    loaded: Loaded,
    guard: tokio::sync::OwnedMutexGuard<()>,
    req: LiveMigrate,
) -> Result<Server, OpError> {
    let id = loaded.row.id.clone();
    super::volumes::check_movable(&loaded.spec)?;
    if req.block_migration == BlockMigration::No && has_local_disks(&loaded.spec) {
        return Err(OpError::Conflict(format!(
            "block_migration false needs storage both nodes share; server {id} has disks local \
             to this node (use auto)"
        )));
    }
    let client = PeerClient::new(services)?;
    let me = me(services)?;
    let dest = choose(services, &loaded, req.host.as_deref(), &me.name).await?;
    let slot = slot(services)?;
    servers::set_status(services, &id, loaded.status, Some("migrating"), None).await?;
    services
        .migrations()
        .requests()
        .insert(id.clone(), Default::default());
    let view = servers::get(services, &id).await?;
    let services = services.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let _slot = slot;
        if let Err(e) = run(&services, &loaded, &client, &me, &dest).await {
            tracing::warn!(server_id = %loaded.row.id, error = %crate::api::error::chain(&e), "live migration failed");
        }
        services.migrations().set_progress(&loaded.row.id, None);
        services.migrations().requests().remove(&loaded.row.id);
    });
    Ok(view)
}

/// Whether the server has disks in its directory here (root overlay, ephemeral, swap), which
/// the migration copies.
fn has_local_disks(spec: &servers::ServerSpec) -> bool {
    spec.boot_volume.is_none() || spec.flavor.ephemeral_gb > 0 || spec.flavor.swap_mb > 0
}

/// One of the node's outgoing migration slots.
///
/// # Errors
/// [`OpError::Conflict`] when all are taken.
pub(super) fn slot(services: &Services) -> Result<tokio::sync::OwnedSemaphorePermit, OpError> {
    services
        .migrations()
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            OpError::Conflict(format!(
                "{} migrations are running from this node already ([migration] max_concurrent)",
                services.config().migration.max_concurrent
            ))
        })
}

fn requested(services: &Services, id: &str) -> super::Requests {
    services
        .migrations()
        .requests()
        .get(id)
        .copied()
        .unwrap_or_default()
}

/// `live_migrate_abort`: stops a running live migration; the server stays here, running.
///
/// # Errors
/// [`OpError::Conflict`] when no live migration of the server runs from this node.
pub(crate) async fn abort(services: &Services, loaded: &Loaded) -> Result<(), OpError> {
    let id = &loaded.row.id;
    match services.migrations().requests().get_mut(id) {
        Some(requests) => requests.abort = true,
        None => {
            return Err(OpError::Conflict(format!(
                "no live migration of server {id} runs from this node"
            )))
        }
    }
    let domain = &loaded.spec.domain_name;
    if services
        .libvirt()
        .migration_progress(domain)
        .await?
        .is_some()
    {
        services.libvirt().abort_job(domain).await?;
    }
    Ok(())
}

/// `live_migrate_force_complete`: ends a live migration that does not converge — switched
/// to post-copy when `[migration] allow_post_copy`, else by pausing the guest (it runs again
/// on the destination).
///
/// # Errors
/// [`OpError::Conflict`] when no live migration of the server is copying memory right now.
pub(crate) async fn force_complete(services: &Services, loaded: &Loaded) -> Result<(), OpError> {
    let id = &loaded.row.id;
    let domain = &loaded.spec.domain_name;
    if !services.migrations().outgoing(id)
        || services
            .libvirt()
            .migration_progress(domain)
            .await?
            .is_none()
    {
        return Err(OpError::Conflict(format!(
            "no live migration of server {id} is copying memory from this node"
        )));
    }
    if services.config().migration.allow_post_copy && !requested(services, id).post_copy_off {
        services.libvirt().start_post_copy(domain).await?;
        return Ok(());
    }
    if let Some(requests) = services.migrations().requests().get_mut(id) {
        requests.paused_to_finish = true;
    }
    services.libvirt().pause(domain).await?;
    Ok(())
}

/// This node as its peers address it.
pub(super) fn me(services: &Services) -> Result<PeerNode, OpError> {
    let status = services.fleet_link().status();
    match (status.node_name, status.api_url) {
        (Some(name), Some(api_url)) => Ok(PeerNode { name, api_url }),
        _ => Err(OpError::Conflict(
            "this node is not in a fleet ([fleet] is not configured)".into(),
        )),
    }
}

/// The destination: the named node if it is up, enabled, takes migrations and passes this
/// node's scheduler chain; else the best node the chain ranks.
pub(super) async fn choose(
    services: &Services,
    loaded: &Loaded,
    host: Option<&str>,
    me: &str,
) -> Result<FleetNode, OpError> {
    let Some(fleet_config) = &services.config().fleet else {
        return Err(OpError::Conflict("this node is not in a fleet".into()));
    };
    if host == Some(me) {
        return Err(OpError::Conflict(format!(
            "the server is on node {me} already; name another node"
        )));
    }
    let fleet = crate::fleet::view::Fleet::connect(fleet_config).await?;
    let nodes = fleet.placement().await?;
    let candidates: Vec<_> = nodes
        .iter()
        .filter(|n| n.name != me)
        .filter(|n| host.is_none_or(|h| n.name == h))
        .collect();
    if let Some(name) = host {
        let Some(node) = candidates.first() else {
            return Err(OpError::Conflict(format!(
                "no node named {name:?} in the fleet"
            )));
        };
        if node.state == crate::fleet::view::NodeState::Down {
            return Err(OpError::Conflict(format!("node {name} is down")));
        }
        match &node.host {
            None => {
                return Err(OpError::Conflict(format!(
                    "node {name} has not published its figures yet"
                )))
            }
            Some(h) if !h.enabled => {
                return Err(OpError::Conflict(format!(
                    "node {name} is disabled for new servers"
                )))
            }
            Some(_) => {}
        }
    }
    let hosts: Vec<_> =
        crate::fleet::place::hosts(&candidates.iter().map(|n| (*n).clone()).collect::<Vec<_>>())
            .into_iter()
            .filter(|h| h.enabled)
            .collect();
    let spec = RequestSpec {
        vcpus: loaded.spec.flavor.vcpus,
        ram_mb: loaded.spec.flavor.ram_mb,
        disk_gb: loaded.spec.flavor.disk_gb + loaded.spec.flavor.ephemeral_gb,
        volume_gb: 0,
        availability_zone: None,
        image_properties: services
            .store()
            .get_image(&loaded.spec.image_id)
            .await?
            .map(|i| i.properties)
            .unwrap_or_default(),
    };
    let evaluation = crate::sched::evaluate_async(
        services.plugins().clone(),
        spec,
        hosts,
        Duration::from_secs(30),
    )
    .await?;
    let Some(best) = evaluation.hosts.iter().find(|h| h.passed) else {
        let reasons: Vec<String> = evaluation
            .hosts
            .iter()
            .map(|h| {
                format!(
                    "{}: filter {} says {}",
                    h.name,
                    h.failed_by.as_deref().unwrap_or("?"),
                    h.reason.as_deref().unwrap_or("no")
                )
            })
            .collect();
        return Err(OpError::Conflict(match host {
            Some(name) if !reasons.is_empty() => {
                format!("node {name} refuses the server: {}", reasons.join("; "))
            }
            _ if reasons.is_empty() => "no other node in the fleet can take the server".into(),
            _ => format!("no node fits the server: {}", reasons.join("; ")),
        }));
    };
    let node = peer::find(services, &best.name).await?;
    if node.record.libvirt_uri.is_none() {
        return Err(OpError::Conflict(format!(
            "node {} takes no migrations (it has no [migration] peer_token_file)",
            best.name
        )));
    }
    Ok(node)
}

/// What the destination needs to prepare.
pub(super) async fn request(
    services: &Services,
    loaded: &Loaded,
    me: &PeerNode,
) -> Result<IncomingRequest, OpError> {
    let spec = &loaded.spec;
    let ids = [
        Some(&spec.image_id),
        spec.kernel_image_id.as_ref(),
        spec.ramdisk_image_id.as_ref(),
    ];
    let mut images = Vec::new();
    for id in ids.into_iter().flatten() {
        let image = build::active_image(services, id, "server").await?;
        let path = build::blob_of(services, &image)?;
        let (blob_sha256, blob_size) = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| OpError::Interrupted(format!("hashing worker failed: {e}")))??;
        let stored = image.stored_format.clone().unwrap_or_else(|| "raw".into());
        let disk_format = match image.container_format.as_str() {
            "aki" | "ari" => image.container_format.clone(),
            _ => stored,
        };
        images.push(ImageOffer {
            id: image.id.clone(),
            name: image.name.clone(),
            disk_format,
            container_format: image.container_format.clone(),
            properties: image.properties.clone(),
            blob_sha256,
            blob_size,
        });
    }
    let mut ports = Vec::new();
    for nic in &spec.nics {
        let port = services
            .store()
            .get_port(&nic.port_id)
            .await?
            .ok_or_else(|| {
                OpError::Conflict(format!("port {} of the server is missing", nic.port_id))
            })?;
        let mut names = Vec::new();
        for group in &port.security_groups {
            names.push(
                services
                    .store()
                    .get_security_group(group)
                    .await?
                    .map(|g| g.name)
                    .unwrap_or_default(),
            );
        }
        ports.push(PortOffer {
            port,
            created: nic.created,
            security_group_names: names,
        });
    }
    let volumes = super::volumes::offers(services, &loaded.row.id, spec).await?;
    let live = services
        .libvirt()
        .xml(&spec.domain_name, false)
        .await?
        .ok_or_else(|| OpError::Conflict(format!("the domain {} is gone", spec.domain_name)))?;
    let pci_addresses = crate::compute::PciAddresses::from_domain_xml(&live)
        .map_err(|e| OpError::Interrupted(e.to_string()))?;
    Ok(IncomingRequest {
        cold: None,
        pci_addresses,
        ports,
        volumes,
        server_id: loaded.row.id.clone(),
        name: loaded.row.name.clone(),
        image_id: loaded.row.image_id.clone(),
        spec: spec.clone(),
        status: loaded.status,
        source: me.clone(),
        images,
    })
}

/// SHA-256 (hex) and size of a file.
pub(crate) fn sha256_file(path: &std::path::Path) -> Result<(String, u64), OpError> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| OpError::Interrupted(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| OpError::Interrupted(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The journaled migration; the server's status and fault tell how it ended.
async fn run(
    services: &Services,
    loaded: &Loaded,
    client: &PeerClient,
    me: &PeerNode,
    dest: &FleetNode,
) -> Result<(), OpError> {
    let id = &loaded.row.id;
    let dest_name = dest.record.name.clone();
    let dest_url = dest.record.api_url.clone();
    let mut op = services
        .journal()
        .begin(
            KIND,
            id,
            json!({ "dest": dest_name, "api_url": dest_url, "status": loaded.status }),
        )
        .await?;
    let steps = async {
        let answer: IncomingAnswer = op
            .step(
                "prepare",
                json!({ "dest": dest_name, "api_url": dest_url }),
                || async {
                    let body = request(services, loaded, me).await?;
                    client
                        .post(&dest_url, "/v1/peer/migrations", &body, peer::PREPARE)
                        .await
                },
            )
            .await?;
        if requested(services, id).abort {
            return Err(OpError::Interrupted(
                "aborted on request (live_migrate_abort)".into(),
            ));
        }
        op.step(
            "migrate",
            json!({ "domain": loaded.spec.domain_name, "dest": dest_name }),
            || migrate(services, loaded, dest, answer),
        )
        .await?;
        Ok::<_, OpError>(())
    }
    .await;
    if let Err(e) = steps {
        let fault = format!(
            "live migration to {dest_name} failed: {}",
            crate::api::error::chain(&e)
        );
        let op_id = op.id().to_string();
        if let Err(undo) = op.roll_back(&fault).await? {
            tracing::warn!(server_id = %id, %undo, "rollback of a failed migration is incomplete; retrying in the background");
            super::retry_undo(services, id, op_id, true);
        }
        servers::set_status(services, id, loaded.status, None, Some(&fault)).await?;
        return Err(e);
    }
    tracing::info!(server_id = %id, dest = %dest_name, "live migration: the guest runs on the destination");
    // The guest runs on the destination now: finish there, forget it here.
    moved(
        services,
        client,
        loaded,
        &dest_name,
        &dest_url,
        FINISH_FOR,
        AfterMove::Live,
    )
    .await?;
    op.complete().await?;
    Ok(())
}

/// libvirt's migration with progress, stepped downtime and a completion deadline.
async fn migrate(
    services: &Services,
    loaded: &Loaded,
    dest: &FleetNode,
    answer: IncomingAnswer,
) -> Result<(), OpError> {
    let settings = &services.config().migration;
    let domain = loaded.spec.domain_name.clone();
    let tunnel = &dest.record.tunnel_ip;
    let data_uri = match tunnel.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("tcp://[{v6}]"),
        _ => format!("tcp://{tunnel}"),
    };
    let plan = MigrationPlan {
        domain: domain.clone(),
        dest_uri: dest.record.libvirt_uri.clone().unwrap_or_default(),
        data_uri,
        dest_xml: answer.dest_xml,
        copy_disks: answer.copy_disks,
        live: true,
        post_copy: settings.allow_post_copy,
    };
    let flavor = &loaded.spec.flavor;
    let gib = (flavor.ram_mb / 1024).max(1) + flavor.disk_gb + flavor.ephemeral_gb;
    let deadline = Duration::from_secs(settings.completion_secs_per_gib * gib).max(MIN_DEADLINE);
    let libvirt = services.libvirt();
    let fallback = MigrationPlan {
        post_copy: false,
        ..plan.clone()
    };
    let mut post_copy = plan.post_copy;
    let migration = libvirt.migrate(plan);
    tokio::pin!(migration);
    let started = Instant::now();
    let max_ms = settings.max_downtime_ms;
    let mut downtime = (max_ms / 5).max(10);
    let _ = libvirt.set_max_downtime(&domain, downtime).await;
    let mut last_iteration = 0;
    let mut last_publish = Instant::now() - PUBLISH;
    let mut aborted = false;
    loop {
        tokio::select! {
            result = &mut migration => {
                if let Err(e) = &result {
                    if post_copy && post_copy_unsupported(e) {
                        // QEMU refuses the capability before anything moved (no userfaultfd on
                        // the destination): migrate without it; force-complete then pauses.
                        tracing::warn!(%domain, error = %e, "post-copy is not available between these nodes; migrating without it");
                        post_copy = false;
                        if let Some(r) = services.migrations().requests().get_mut(&loaded.row.id) {
                            r.post_copy_off = true;
                        }
                        migration.set(libvirt.migrate(fallback.clone()));
                        let _ = libvirt.set_max_downtime(&domain, downtime).await;
                        continue;
                    }
                }
                return match result {
                    Ok(()) => Ok(()),
                    Err(_) if requested(services, &loaded.row.id).abort => Err(
                        OpError::Interrupted("aborted on request (live_migrate_abort)".into()),
                    ),
                    Err(_) if aborted => Err(OpError::Interrupted(format!(
                        "the migration did not complete within {} s and was aborted",
                        deadline.as_secs()
                    ))),
                    Err(e) => Err(e.into()),
                };
            }
            () = tokio::time::sleep(POLL) => {}
        }
        if started.elapsed() > deadline && !aborted {
            aborted = true;
            if let Err(e) = libvirt.abort_job(&domain).await {
                tracing::warn!(%domain, error = %e, "cannot abort an overdue migration");
            }
            continue;
        }
        let Ok(Some(progress)) = libvirt.migration_progress(&domain).await else {
            continue;
        };
        // Memory that does not converge: allow a longer final pause, up to the limit.
        if progress.iteration >= last_iteration + 2 && downtime < max_ms {
            downtime = (downtime + max_ms / 5).min(max_ms);
            let _ = libvirt.set_max_downtime(&domain, downtime).await;
            last_iteration = progress.iteration;
        }
        services
            .migrations()
            .set_progress(&loaded.row.id, Some(progress.clone()));
        if last_publish.elapsed() >= PUBLISH {
            last_publish = Instant::now();
            publish_progress(services, &loaded.row.id, &progress).await;
        }
    }
}

/// Whether a failed start of a migration is QEMU refusing post-copy.
fn post_copy_unsupported(e: &crate::compute::ComputeError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("postcopy") && text.contains("not supported")
}

async fn publish_progress(services: &Services, id: &str, progress: &MigrationProgress) {
    let _ = services
        .events()
        .publish(
            "server.migration",
            "server",
            id,
            serde_json::to_value(progress).unwrap_or_default(),
        )
        .await;
}

/// What becomes of the server's files here once it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterMove {
    /// A live migration: libvirt undefined the domain; the files go.
    Live,
    /// A cold migration: the domain goes, the files are kept until the move is confirmed
    /// or reverted.
    Keep,
    /// The revert of a cold migration: the domain and the files go.
    Drop,
}

/// After the guest moved: finish on the destination (retried for `retry_for`), then forget
/// the server here and leave a tombstone.
///
/// # Errors
/// The destination's answer when finishing fails for `retry_for` ([`OpError::NotFound`] when
/// it has no such migration: it rolled its side back); the store's errors.
pub(super) async fn moved(
    services: &Services,
    client: &PeerClient,
    loaded: &Loaded,
    dest_name: &str,
    dest_url: &str,
    retry_for: Duration,
    after: AfterMove,
) -> Result<(), OpError> {
    let (id, spec, name) = (&loaded.row.id, &loaded.spec, &loaded.row.name);
    // The destination first: it publishes the guest's ports, and the fleet's traffic for it
    // turns there.
    let path = format!("/v1/peer/migrations/{id}/finish");
    let started = Instant::now();
    let mut backoff = Backoff::default();
    let stop = tokio_util::sync::CancellationToken::new();
    loop {
        let resume = requested(services, id).paused_to_finish;
        match client
            .post::<_, serde_json::Value>(dest_url, &path, &json!({ "resume": resume }), peer::CALL)
            .await
        {
            Ok(_) => {
                tracing::info!(server_id = %id, dest = %dest_name, "live migration: finished on the destination");
                break;
            }
            Err(e @ OpError::NotFound { .. }) => return Err(e),
            Err(e) if started.elapsed() < retry_for => {
                tracing::warn!(server_id = %id, error = %e, "finishing the migration on the destination failed; retrying");
                backoff.wait(&stop).await;
            }
            Err(e) => return Err(e),
        }
    }
    // Its ports here go (only the local records: the address claims passed to the
    // destination). Peers already forward its MAC to the destination: the destination's
    // publication is the newer one.
    if after != AfterMove::Live {
        services.libvirt().undefine(&spec.domain_name).await?;
    }
    let files = if after == AfterMove::Keep {
        keep_files(services, spec)
    } else {
        build::remove_dir(spec)
    };
    if let Err(e) = files {
        tracing::warn!(server_id = %id, error = %e, "cannot remove or keep the files of a server that moved away");
    }
    for nic in &spec.nics {
        services.store().delete_port(&nic.port_id).await?;
    }
    for network_id in servers::nic_networks(&spec.nics) {
        crate::ops::networks::runtime::refresh(services, &network_id).await;
    }
    let _ = services
        .events()
        .publish("server.leaving", "server", id, json!({ "node": dest_name }))
        .await;
    // Its volumes' records now live on the destination (the data stays on the share).
    super::volumes::forget(services, id, &super::volumes::ids(spec)).await?;
    services
        .store()
        .put_moved(id, name, dest_name, dest_url)
        .await?;
    services.store().delete_server(id).await?;
    let _ = services
        .events()
        .publish(
            "server.moved",
            "server",
            id,
            json!({ "node": dest_name, "api_url": dest_url }),
        )
        .await;
    Ok(())
}

/// Retries finishing a move found open at start for [`FINISH_FOR`] in the background, the
/// server's lock held; marks the operation done when it lands (else the next start tries
/// again).
pub(super) fn finish_in_background(
    services: &Services,
    op: &OperationRecord,
    loaded: Loaded,
    after: AfterMove,
) {
    let services = services.clone();
    let op_id = op.id.clone();
    let dest = op.input["dest"].as_str().unwrap_or_default().to_string();
    let url = op.input["api_url"].as_str().unwrap_or_default().to_string();
    tokio::spawn(async move {
        let lock = services.server_lock(&loaded.row.id);
        let _guard = lock.lock().await;
        let Ok(client) = PeerClient::new(&services) else {
            return;
        };
        match moved(&services, &client, &loaded, &dest, &url, FINISH_FOR, after).await {
            Ok(()) => {
                if let Err(e) = services.journal().mark_done(&op_id).await {
                    tracing::warn!(server_id = %loaded.row.id, error = %e, "cannot record a finished move");
                }
            }
            Err(e) => {
                tracing::warn!(server_id = %loaded.row.id, error = %crate::api::error::chain(&e), "finishing a move on the destination keeps failing; the next start tries again");
            }
        }
    });
}

/// Keeps a cold-migrated server's directory as `<id>.retained` (replacing an older one).
fn keep_files(services: &Services, spec: &servers::ServerSpec) -> Result<(), String> {
    let Some(id) = spec
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Err("the server has no directory".into());
    };
    let retained = super::disks::retained_dir(services, &id);
    if !spec.dir.exists() {
        return Ok(());
    }
    match std::fs::remove_dir_all(&retained) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", retained.display())),
    }
    std::fs::rename(&spec.dir, &retained)
        .map_err(|e| format!("cannot keep {} for a revert: {e}", spec.dir.display()))
}

/// Undo and restart handling of `server.migrate`.
pub(crate) struct OutgoingHandler {
    services: Services,
}

impl OutgoingHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

impl OperationHandler for OutgoingHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            match step.name.as_str() {
                "prepare" => {
                    let client = PeerClient::new(&self.services).map_err(|e| e.to_string())?;
                    let url = step.data["api_url"].as_str().unwrap_or_default();
                    let path = format!("/v1/peer/migrations/{}/abort", op.resource_id);
                    client
                        .post::<_, serde_json::Value>(url, &path, &json!({}), peer::CALL)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                "migrate" => Ok(()),
                other => Err(format!("unknown step {other}")),
            }
        })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move { resume(&self.services, op).await })
    }
}

/// An operation found open at start: moved (the domain is gone from here) → finish; else
/// roll back (aborting a job libvirt still runs).
async fn resume(services: &Services, op: &OperationRecord) -> Result<(), String> {
    let id = &op.resource_id;
    let err = |e: OpError| crate::api::error::chain(&e);
    let loaded = match servers::load(services, id).await {
        Ok(loaded) => loaded,
        // Forgotten already: only the journal was left open.
        Err(OpError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let domain = loaded.spec.domain_name.clone();
    let dest = op.input["dest"].as_str().unwrap_or_default().to_string();
    let url = op.input["api_url"].as_str().unwrap_or_default().to_string();
    let here = services
        .libvirt()
        .state(&domain)
        .await
        .map_err(|e| e.to_string())?;
    let prepared = op.steps.iter().any(|s| s.name == "prepare");
    let client = PeerClient::new(services).map_err(err)?;
    if here.is_none() && prepared {
        // One attempt at start (a peer that is away must not hold the agent's start up),
        // then retried in the background.
        if let Err(e) = moved(
            services,
            &client,
            &loaded,
            &dest,
            &url,
            Duration::ZERO,
            AfterMove::Live,
        )
        .await
        {
            finish_in_background(services, op, loaded, AfterMove::Live);
            return Err(err(e));
        }
        return Ok(());
    }
    if services
        .libvirt()
        .migration_progress(&domain)
        .await
        .ok()
        .flatten()
        .is_some()
    {
        let _ = services.libvirt().abort_job(&domain).await;
    }
    if prepared {
        let path = format!("/v1/peer/migrations/{id}/abort");
        client
            .post::<_, serde_json::Value>(&url, &path, &json!({}), peer::CALL)
            .await
            .map_err(err)?;
    }
    let status: ServerStatus =
        serde_json::from_value(op.input["status"].clone()).unwrap_or(ServerStatus::Active);
    servers::set_status(
        services,
        id,
        status,
        None,
        Some(&format!(
            "live migration to {dest} was interrupted by an agent restart and rolled back"
        )),
    )
    .await
    .map_err(err)
}
