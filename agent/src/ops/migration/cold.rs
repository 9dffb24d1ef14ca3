//! Cold migration (`{"migrate": {"host": …}}`) and its confirm and revert, source side
//! (journal kind `server.cold_migrate`).
//!
//! | step | does | undo |
//! |---|---|---|
//! | `power_off` | shut the guest down (ACPI, then by force) | start it again if it ran |
//! | `prepare` | the destination fetches the images and the disk files (checked by SHA-256), takes the ports and volumes, defines the domain | ask it to abort |
//! | `handover` | from here the destination is asked to finish: the server is VERIFY_RESIZE there (started if it ran here) | — |
//!
//! Once the destination finished, this node forgets the server (tombstone: 301 to the new
//! node) but keeps its disk files as `<servers_dir>/<id>.retained`. On the destination,
//! `confirm_resize` tells this node to drop them; `revert_resize` runs the same machinery the
//! other way with `revert`: this node takes its kept files back instead of fetching any, the
//! destination drops its copy, and the server runs here again as it did before.
//!
//! A destination that restarts mid-way rolls its side back and answers `finish` with 404; the
//! source then rolls back too (the guest starts again here if it ran). After a source restart
//! an operation without `handover` is rolled back; one with it asks the destination to finish
//! again (once at start, then in the background for a while).

use super::outgoing::{self, AfterMove};
use super::peer::{self, FleetNode, PeerClient};
use super::wire::{ColdOffer, IncomingAnswer, PeerNode};
use crate::ops::servers::{self, Loaded, Server, ServerStatus};
use crate::ops::{OpError, Services};
use crate::state::{OperationHandler, OperationRecord, RestartPolicy, StepRecord, UndoFuture};
use serde_json::json;
use std::time::Duration;

pub use super::disks::SECRET_HEADER;

/// Journal kind of the source side of a cold migration or of its revert.
pub const KIND: &str = "server.cold_migrate";
/// Transfer rate a disk fetch is given time for (bytes per second), beyond
/// [`peer::PREPARE`].
const MIN_RATE: u64 = 16 << 20;

/// Starts a cold migration of a SHUTOFF or ACTIVE server whose lock the caller holds: checks
/// the destination (named, or picked by fleet placement), marks the server RESIZE
/// `resize_migrating` and runs the rest in the background.
///
/// # Errors
/// As a live migration's checks ([`OpError::Conflict`] naming the reason).
pub(crate) async fn start(
    services: &Services,
    loaded: Loaded,
    guard: tokio::sync::OwnedMutexGuard<()>,
    host: Option<String>,
) -> Result<Server, OpError> {
    super::volumes::check_movable(&loaded.spec)?;
    let client = PeerClient::new(services)?;
    let me = outgoing::me(services)?;
    let dest = outgoing::choose(services, &loaded, host.as_deref(), &me.name).await?;
    let power_on = loaded.status == ServerStatus::Active;
    spawn(
        services,
        loaded,
        guard,
        Move {
            client,
            me,
            dest,
            revert: false,
            power_on,
        },
        "resize_migrating",
    )
    .await
}

/// `revert_resize` of a server a cold migration brought here: it goes back to the node it
/// came from, which kept its disks, and runs there as before; this node drops its copy.
///
/// # Errors
/// [`OpError::Conflict`] when the server did not come by a cold migration, the old node is
/// not in the fleet, or no migration slot is free.
pub(crate) async fn start_revert(
    services: &Services,
    loaded: Loaded,
    guard: tokio::sync::OwnedMutexGuard<()>,
) -> Result<Server, OpError> {
    let Some(from) = loaded.spec.migrated_from.clone() else {
        return Err(OpError::Conflict(
            "the server did not come here by a cold migration".into(),
        ));
    };
    let client = PeerClient::new(services)?;
    let me = outgoing::me(services)?;
    let dest = peer::find(services, &from.node).await?;
    spawn(
        services,
        loaded,
        guard,
        Move {
            client,
            me,
            dest,
            revert: true,
            power_on: from.power_on,
        },
        "resize_reverting",
    )
    .await
}

/// One cold move's parties and intent.
struct Move {
    client: PeerClient,
    me: PeerNode,
    dest: FleetNode,
    revert: bool,
    power_on: bool,
}

async fn spawn(
    services: &Services,
    loaded: Loaded,
    guard: tokio::sync::OwnedMutexGuard<()>,
    mv: Move,
    task: &str,
) -> Result<Server, OpError> {
    let id = loaded.row.id.clone();
    let slot = outgoing::slot(services)?;
    servers::set_status(services, &id, ServerStatus::Resize, Some(task), None).await?;
    services
        .migrations()
        .requests()
        .insert(id.clone(), Default::default());
    let view = servers::get(services, &id).await?;
    let services = services.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let _slot = slot;
        if let Err(e) = run(&services, &loaded, &mv).await {
            tracing::warn!(server_id = %loaded.row.id, error = %crate::api::error::chain(&e), "cold migration failed");
        }
        services.migrations().requests().remove(&loaded.row.id);
    });
    Ok(view)
}

/// The status a server returns to after a rolled back move: as it was before it.
fn before(loaded: &Loaded, mv: &Move) -> ServerStatus {
    if mv.revert {
        ServerStatus::VerifyResize
    } else {
        loaded.status
    }
}

async fn run(services: &Services, loaded: &Loaded, mv: &Move) -> Result<(), OpError> {
    let id = &loaded.row.id;
    let domain = loaded.spec.domain_name.clone();
    let dest_name = mv.dest.record.name.clone();
    let dest_url = mv.dest.record.api_url.clone();
    let ran = services.libvirt().state(&domain).await? == Some(crate::compute::PowerState::Running);
    let mut op = services
        .journal()
        .begin(
            KIND,
            id,
            json!({ "dest": dest_name, "api_url": dest_url, "status": before(loaded, mv),
                    "revert": mv.revert }),
        )
        .await?;
    let steps = async {
        op.step("power_off", json!({ "domain": domain, "ran": ran }), || {
            servers::power_off(services, &domain)
        })
        .await?;
        op.step(
            "prepare",
            json!({ "dest": dest_name, "api_url": dest_url }),
            || prepare(services, loaded, mv),
        )
        .await?;
        op.step("handover", json!({}), || async { Ok::<_, OpError>(()) })
            .await?;
        Ok::<_, OpError>(())
    }
    .await;
    let after = if mv.revert {
        AfterMove::Drop
    } else {
        AfterMove::Keep
    };
    let handed_over = steps.is_ok();
    let finished = match steps {
        Ok(()) => {
            outgoing::moved(
                services,
                &mv.client,
                loaded,
                &dest_name,
                &dest_url,
                outgoing::FINISH_FOR,
                after,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match finished {
        Ok(()) => {
            tracing::info!(server_id = %id, dest = %dest_name, revert = mv.revert, "cold migration: the server is on the destination");
            op.complete().await?;
            Ok(())
        }
        // Before `handover`, or the destination rolled its side back: all back here.
        Err(e) if !handed_over || matches!(e, OpError::NotFound { .. }) => {
            let what = if mv.revert {
                "revert"
            } else {
                "cold migration"
            };
            let fault = format!(
                "{what} to {dest_name} failed: {}",
                crate::api::error::chain(&e)
            );
            let op_id = op.id().to_string();
            if let Err(undo) = op.roll_back(&fault).await? {
                tracing::warn!(server_id = %id, %undo, "rollback of a failed cold migration is incomplete; retrying in the background");
                super::retry_undo(services, id, op_id, true);
            }
            let status = back_status(services, &domain, before(loaded, mv)).await;
            servers::set_status(services, id, status, None, Some(&fault)).await?;
            Err(e)
        }
        // The destination may have finished: left open, asked again at the next start.
        Err(e) => Err(e),
    }
}

/// After a rollback: VERIFY_RESIZE for a failed revert, else what libvirt shows.
async fn back_status(services: &Services, domain: &str, before: ServerStatus) -> ServerStatus {
    if before == ServerStatus::VerifyResize {
        return before;
    }
    match services.libvirt().state(domain).await {
        Ok(Some(crate::compute::PowerState::Running)) => ServerStatus::Active,
        Ok(Some(_)) => ServerStatus::Shutoff,
        _ => ServerStatus::Error,
    }
}

/// Asks the destination to prepare: for a move, with the disk files to fetch (hashed here);
/// for a revert, with none (it kept them).
async fn prepare(
    services: &Services,
    loaded: &Loaded,
    mv: &Move,
) -> Result<IncomingAnswer, OpError> {
    let mut body = outgoing::request(services, loaded, &mv.me).await?;
    body.status = ServerStatus::Shutoff;
    let (disks, secret) = if mv.revert {
        // The old node checks it against the one it kept.
        let secret = loaded
            .spec
            .migrated_from
            .as_ref()
            .map(|m| m.secret.clone())
            .unwrap_or_default();
        (Vec::new(), secret)
    } else {
        // Written beside the disks: served only to whoever presents it, and kept with them.
        let secret = super::disks::new_secret();
        super::disks::write_secret(&loaded.spec.dir, &secret)?;
        (super::disks::offers(&loaded.spec).await?, secret)
    };
    let bytes: u64 = disks.iter().map(|d| d.size).sum();
    body.cold = Some(ColdOffer {
        disks,
        revert: mv.revert,
        power_on: mv.power_on,
        secret,
    });
    let deadline = peer::PREPARE + Duration::from_secs(bytes / MIN_RATE);
    mv.client
        .post(
            &mv.dest.record.api_url,
            "/v1/peer/migrations",
            &body,
            deadline,
        )
        .await
}

/// `confirm_resize` of a server a cold migration brought here: the node it came from drops
/// the disks it kept; the server stays here, as it runs now.
///
/// # Errors
/// [`OpError::Conflict`] when the old node cannot be reached (the server stays
/// VERIFY_RESIZE; confirm again).
pub(crate) async fn confirm(services: &Services, loaded: &Loaded) -> Result<ServerStatus, OpError> {
    let Some(from) = loaded.spec.migrated_from.clone() else {
        return Err(OpError::Conflict(
            "the server did not come here by a cold migration".into(),
        ));
    };
    drop_kept(services, &loaded.row.id, &from).await?;
    let mut spec = loaded.spec.clone();
    spec.migrated_from = None;
    servers::save_spec(services, &loaded.row.id, &loaded.row.image_id, &spec).await?;
    Ok(match services.libvirt().state(&spec.domain_name).await? {
        Some(crate::compute::PowerState::Running) => ServerStatus::Active,
        _ => ServerStatus::Shutoff,
    })
}

/// Tells the node a server came from by cold migration to drop the disks it kept.
///
/// # Errors
/// [`OpError::Conflict`] when that node cannot be reached or refuses.
pub(crate) async fn drop_kept(
    services: &Services,
    server_id: &str,
    from: &servers::MigratedFrom,
) -> Result<(), OpError> {
    let client = PeerClient::new(services)?;
    let path = format!("/v1/peer/migrations/{server_id}/confirm");
    client
        .post::<_, serde_json::Value>(
            &from.api_url,
            &path,
            &json!({ "secret": from.secret }),
            peer::CALL,
        )
        .await
        .map(|_| ())
}

/// `POST /v1/peer/migrations/{id}/confirm`: the move of server `id` away from this node is
/// confirmed: the disks kept for a revert go.
///
/// # Errors
/// [`OpError::InvalidInput`] for an id that is not a UUID; [`OpError::Conflict`] when the
/// server is (again) on this node.
pub async fn confirmed(services: &Services, server_id: &str, secret: &str) -> Result<(), OpError> {
    if uuid::Uuid::parse_str(server_id).is_err() {
        return Err(OpError::InvalidInput(format!(
            "server id {server_id:?} is not a UUID"
        )));
    }
    // Not while a revert takes the kept disks back.
    let lock = services.server_lock(server_id);
    let _guard = lock.lock().await;
    if services.store().get_server(server_id).await?.is_some() {
        return Err(OpError::Conflict(format!(
            "server {server_id} is on this node; nothing kept to drop"
        )));
    }
    let kept = super::disks::retained_dir(services, server_id);
    if !kept.exists() {
        return Ok(());
    }
    super::disks::check_secret(&kept, secret)?;
    match std::fs::remove_dir_all(&kept) {
        Ok(()) => {
            tracing::info!(
                server_id,
                "cold migration confirmed: the kept disks are gone"
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OpError::Interrupted(format!(
            "cannot remove {}: {e}",
            kept.display()
        ))),
    }
}

/// The path of a disk file this node serves to the destination of a cold migration of
/// `server_id` that runs from here now.
///
/// # Errors
/// [`OpError::NotFound`] for an unknown server, a server not moving away cold right now, or
/// a file that is not one of its disks.
pub async fn served_disk(
    services: &Services,
    server_id: &str,
    file: &str,
    secret: &str,
) -> Result<std::path::PathBuf, OpError> {
    let not_moving = || OpError::NotFound {
        kind: "outgoing cold migration",
        id: server_id.to_string(),
    };
    let loaded = servers::load(services, server_id)
        .await
        .map_err(|_| not_moving())?;
    if !services.migrations().outgoing(server_id)
        || loaded.status != ServerStatus::Resize
        || services.libvirt().state(&loaded.spec.domain_name).await?
            == Some(crate::compute::PowerState::Running)
    {
        return Err(not_moving());
    }
    super::disks::check_secret(&loaded.spec.dir, secret).map_err(|_| not_moving())?;
    super::disks::served(&loaded.spec, file)
}

/// Undo and restart handling of `server.cold_migrate`.
pub(crate) struct ColdHandler {
    services: Services,
}

impl ColdHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

async fn undo_step(
    services: &Services,
    op: &OperationRecord,
    step: &StepRecord,
) -> Result<(), String> {
    match step.name.as_str() {
        "power_off" => {
            if step.data["ran"].as_bool() == Some(true) {
                let domain = step.data["domain"].as_str().unwrap_or_default();
                if services
                    .libvirt()
                    .state(domain)
                    .await
                    .map_err(|e| e.to_string())?
                    != Some(crate::compute::PowerState::Running)
                {
                    services
                        .libvirt()
                        .start(domain)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        "prepare" => {
            let client = PeerClient::new(services).map_err(|e| e.to_string())?;
            let url = step.data["api_url"].as_str().unwrap_or_default();
            let path = format!("/v1/peer/migrations/{}/abort", op.resource_id);
            client
                .post::<_, serde_json::Value>(url, &path, &json!({}), peer::CALL)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "handover" => Ok(()),
        other => Err(format!("unknown step {other}")),
    }
}

impl OperationHandler for ColdHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(undo_step(&self.services, op, step))
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move { resume(&self.services, op).await })
    }
}

/// An operation found open at start: handed over → finish on the destination (once; left
/// open when it cannot be reached); else, or when the destination has no such migration,
/// roll back.
async fn resume(services: &Services, op: &OperationRecord) -> Result<(), String> {
    let id = &op.resource_id;
    let err = |e: OpError| crate::api::error::chain(&e);
    let loaded = match servers::load(services, id).await {
        Ok(loaded) => loaded,
        Err(OpError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let dest = op.input["dest"].as_str().unwrap_or_default().to_string();
    let url = op.input["api_url"].as_str().unwrap_or_default().to_string();
    let revert = op.input["revert"].as_bool() == Some(true);
    let client = PeerClient::new(services).map_err(err)?;
    if op.steps.iter().any(|s| s.name == "handover") {
        let after = if revert {
            AfterMove::Drop
        } else {
            AfterMove::Keep
        };
        match outgoing::moved(
            services,
            &client,
            &loaded,
            &dest,
            &url,
            Duration::ZERO,
            after,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(OpError::NotFound { .. }) => {}
            Err(e) => {
                outgoing::finish_in_background(services, op, loaded, after);
                return Err(err(e));
            }
        }
    }
    for step in op.steps.iter().rev() {
        undo_step(services, op, step).await?;
    }
    let before: ServerStatus =
        serde_json::from_value(op.input["status"].clone()).unwrap_or(ServerStatus::Shutoff);
    let status = back_status(services, &loaded.spec.domain_name, before).await;
    servers::set_status(
        services,
        id,
        status,
        None,
        Some(&format!(
            "cold migration to {dest} was interrupted by an agent restart and rolled back"
        )),
    )
    .await
    .map_err(err)
}
