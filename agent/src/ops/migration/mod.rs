//! Moving servers between the nodes of a fleet (live migration), source-driven and journaled
//! on both sides:
//!
//! 1. The source (`outgoing.rs`, journal kind `server.migrate`) checks the request, picks or
//!    checks the destination (fleet placement with this node's scheduler chain) and asks the
//!    destination agent to prepare (`POST /v1/peer/migrations`, authenticated with the fleet's
//!    peer token).
//! 2. The destination (`incoming.rs`, journal kind `server.incoming`) fetches the image blobs
//!    it lacks from the source (`GET /v1/peer/images/{id}/file`, checked against their
//!    SHA-256), records the server (BUILD, task `migrating`, its lock held), creates empty
//!    overlays over its own copy of the base image, and answers with the domain XML it wants
//!    (its own paths).
//! 3. The source runs libvirt's managed peer-to-peer migration to the destination's libvirtd
//!    with that XML (live, auto-converge, incremental copy of the local disks, the allowed
//!    pause stepped up toward `[migration] max_downtime_ms`, a completion deadline per GiB,
//!    abort on timeout), publishing progress.
//! 4. The source tells the destination to finish (`…/finish`: the server is ACTIVE there, its
//!    journal done), then forgets the server and keeps a tombstone (`GET /v1/servers/{id}` →
//!    301 to the new node). A failure before libvirt completed rolls back both sides
//!    (`…/abort` on the destination); after it, finishing is retried until it lands.
//!
//! * `wire.rs` — what the agents send each other.
//! * `peer.rs` — finding a node in the fleet and calling its agent.
//! * `incoming.rs` / `outgoing.rs` — the two sides.
//! * `cold.rs` — cold migration (the server shut off, its disk files fetched by the
//!   destination, VERIFY_RESIZE there) and its confirm and revert; `disks.rs` — those files.
//! * `volumes.rs` — volumes on shared storage that follow their server (records adopted by
//!   the destination, forgotten by the source; the data stays on the share).

pub mod cold;
mod disks;
pub mod incoming;
pub mod outgoing;
pub mod peer;
mod volumes;
pub mod wire;

use crate::auth::AdminToken;
use crate::compute::MigrationProgress;
use crate::ops::Services;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The journal kinds of migrations (either side, live or cold).
pub const KINDS: [&str; 3] = [outgoing::KIND, incoming::KIND, cold::KIND];

/// The migration state of one agent: the peer token, the outgoing slots, and what is in
/// flight.
pub struct Migrations {
    peer_token: OnceLock<AdminToken>,
    slots: Arc<tokio::sync::Semaphore>,
    progress: Mutex<HashMap<String, MigrationProgress>>,
    outgoing: Mutex<HashMap<String, Requests>>,
    incoming: tokio::sync::Mutex<HashMap<String, incoming::Pending>>,
    /// Incoming migrations still preparing, each with the token that stops it.
    preparing: Mutex<HashMap<String, tokio_util::sync::CancellationToken>>,
}

/// What was asked of an outgoing migration while it runs.
#[derive(Debug, Clone, Copy, Default)]
struct Requests {
    /// `live_migrate_abort`.
    abort: bool,
    /// `live_migrate_force_complete` paused the guest: resume it on the destination.
    paused_to_finish: bool,
    /// Post-copy is allowed but QEMU refused it for this migration: force-complete pauses.
    post_copy_off: bool,
}

impl Migrations {
    /// Nothing in flight; `slots` outgoing migrations may run at once.
    pub fn new(slots: usize) -> Self {
        Self {
            peer_token: OnceLock::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            progress: Mutex::default(),
            outgoing: Mutex::default(),
            incoming: tokio::sync::Mutex::default(),
            preparing: Mutex::default(),
        }
    }

    /// The fleet's peer token, when this node takes part in migrations.
    pub fn peer_token(&self) -> Option<&AdminToken> {
        self.peer_token.get()
    }

    /// The last progress figures of an outgoing migration of `server_id`.
    pub fn progress(&self, server_id: &str) -> Option<MigrationProgress> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server_id)
            .cloned()
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, HashMap<String, Requests>> {
        self.outgoing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an outgoing migration of `server_id` runs from this agent.
    pub fn outgoing(&self, server_id: &str) -> bool {
        self.requests().contains_key(server_id)
    }

    fn set_progress(&self, server_id: &str, progress: Option<MigrationProgress>) {
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        match progress {
            Some(p) => map.insert(server_id.to_string(), p),
            None => map.remove(server_id),
        };
    }
}

/// How often, and how long, an incomplete rollback is retried in the background.
const UNDO_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
const UNDO_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(1800);

/// Retries the rollback of journal operation `op_id` on server `server_id` in the background
/// (a peer or libvirtd that was away), the server's lock held each time; with `settle`, the
/// server's status then follows libvirt's (a guest started again is ACTIVE). The journal keeps
/// the operation rolling back for the next start if this gives up.
pub(super) fn retry_undo(services: &Services, server_id: &str, op_id: String, settle: bool) {
    let services = services.clone();
    let server_id = server_id.to_string();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < UNDO_RETRY_FOR {
            tokio::time::sleep(UNDO_RETRY).await;
            let lock = services.server_lock(&server_id);
            let _guard = lock.lock().await;
            match services.journal().retry_roll_back(&op_id).await {
                Ok(Ok(())) => {
                    tracing::info!(server_id, "the rollback is complete");
                    if settle {
                        settle_status(&services, &server_id).await;
                    }
                    return;
                }
                Ok(Err(reason)) => tracing::debug!(server_id, %reason, "rollback still failing"),
                Err(e) => tracing::warn!(server_id, error = %e, "cannot read the journal"),
            }
        }
        tracing::error!(
            server_id,
            "the rollback is still incomplete; the next start retries"
        );
    });
}

/// Gives an idle server the status its domain shows (after a rollback finished late).
async fn settle_status(services: &Services, server_id: &str) {
    use crate::compute::PowerState;
    use crate::ops::servers::ServerStatus;
    let Ok(loaded) = crate::ops::servers::load(services, server_id).await else {
        return;
    };
    if loaded.row.task_state.is_some() || loaded.status == ServerStatus::VerifyResize {
        return;
    }
    let status = match services.libvirt().state(&loaded.spec.domain_name).await {
        Ok(Some(PowerState::Running)) => ServerStatus::Active,
        Ok(Some(PowerState::Paused)) => ServerStatus::Paused,
        Ok(Some(PowerState::Shutoff)) => ServerStatus::Shutoff,
        _ => return,
    };
    let fault = loaded.row.fault.clone();
    let _ =
        crate::ops::servers::set_status(services, server_id, status, None, fault.as_deref()).await;
}

/// Reads the peer token when `[migration] peer_token_file` is set. Called once at start.
///
/// # Errors
/// [`crate::auth::AuthError`] when the file cannot be read, is shorter than 32 characters or
/// can be read by others than its owner.
pub fn enable(services: &Services) -> Result<(), crate::auth::AuthError> {
    if let Some(path) = &services.config().migration.peer_token_file {
        let token = crate::auth::read_secret_token(path, 32)?;
        let _ = services.migrations().peer_token.set(token);
    }
    Ok(())
}

/// Registers the journal handlers of both sides. Call before `Journal::recover`.
pub fn register_handlers(services: &Services) {
    services
        .journal()
        .register(Arc::new(incoming::IncomingHandler::new(services.clone())));
    services
        .journal()
        .register(Arc::new(outgoing::OutgoingHandler::new(services.clone())));
    services
        .journal()
        .register(Arc::new(cold::ColdHandler::new(services.clone())));
}
