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

/// The migration state of one agent: the peer token, the outgoing slots, and what is in
/// flight.
pub struct Migrations {
    peer_token: OnceLock<AdminToken>,
    slots: Arc<tokio::sync::Semaphore>,
    progress: Mutex<HashMap<String, MigrationProgress>>,
    outgoing: Mutex<HashMap<String, Requests>>,
    incoming: tokio::sync::Mutex<HashMap<String, incoming::Pending>>,
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
