//! One long-lived libvirt connection, reopened when it breaks.
//!
//! Opening a connection costs an RPC handshake (and, when libvirtd is wedged, a thread stuck
//! in it), so the agent keeps one and shares it between its libvirt workers (a `virConnectPtr`
//! is thread-safe). libvirt's keepalive watches it: when libvirtd stops answering for
//! `interval × (count + 1)` seconds the client closes the connection, every call blocked on it
//! fails, and the next call opens a fresh one. Keepalive needs libvirt's event loop, which runs
//! on one thread of its own for the life of the process.

use std::sync::{Arc, Mutex, OnceLock};
use virt::connect::Connect;

/// libvirt keepalive: a probe every `INTERVAL` seconds, `COUNT` unanswered probes close the
/// connection (about 20 s of silence).
const KEEPALIVE_INTERVAL: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// A connection that closes itself when the last user lets go of it (virt 0.4 does not close
/// on drop).
#[derive(Debug)]
pub struct Opened(Connect);

impl std::ops::Deref for Opened {
    type Target = Connect;
    fn deref(&self) -> &Connect {
        &self.0
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// The shared connection to one libvirt URI.
#[derive(Debug)]
pub struct SharedConnection {
    uri: String,
    current: Mutex<Option<Arc<Opened>>>,
}

impl SharedConnection {
    /// A connection to `uri`, opened on first use.
    pub fn new(uri: String) -> Self {
        Self {
            uri,
            current: Mutex::new(None),
        }
    }

    /// The open connection, or a new one when there is none or the last one broke. Blocks
    /// (on a libvirt worker) while another worker is opening it.
    ///
    /// # Errors
    /// libvirt's error when the connection cannot be opened.
    pub fn get(&self) -> Result<Arc<Opened>, virt::error::Error> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = current.as_ref() {
            // A local check of the client's state: no RPC.
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "the libvirt connection broke; reconnecting");
            // Workers still using it keep it until they finish; the last one closes it.
            *current = None;
        }
        let conn = Arc::new(Opened(Connect::open(Some(&self.uri))?));
        if start_event_loop() {
            if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
                tracing::warn!(error = %e, "cannot enable libvirt keepalive");
            }
        }
        *current = Some(conn.clone());
        Ok(conn)
    }
}

/// Starts libvirt's default event loop on a thread of its own, once per process (before the
/// first connection is opened, so keepalive can use it). Returns whether it runs.
pub fn start_event_loop() -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    *RUNNING.get_or_init(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e, "cannot register libvirt's event loop; no keepalive");
            return false;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(error = %e, "libvirt event loop iteration failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start libvirt's event loop thread; no keepalive");
                false
            }
        }
    })
}
