//! Long-lived libvirt connections: one per libvirt worker thread, reopened when it breaks.
//!
//! Opening a connection costs an RPC handshake (and, when libvirtd is wedged, a thread stuck
//! in it), so each worker keeps its connection for the life of the process. One connection per
//! worker rather than one shared by all: a connection then never has more than one call in
//! flight, so libvirtd's per-client request limit (`max_client_requests`, 5 by default) never
//! queues the agent's calls behind each other, and no two threads ever wait on one client
//! socket — libvirt 9.0's client crashed here (`virNetClientIOEventFD`, a NULL client) when a
//! shared connection that several workers were waiting on was closed under them by keepalive
//! after libvirtd had been stopped. For the same reason there is no client keepalive: a
//! stopped libvirtd keeps the workers that wait on it (the pool never grows), and they carry
//! on when it resumes; a libvirtd that dies closes the socket, which fails the calls at once.

use std::cell::RefCell;
use virt::connect::Connect;

/// A connection that closes itself when dropped (virt 0.4 does not close on drop).
#[derive(Debug)]
struct Opened {
    uri: String,
    conn: Connect,
}

impl Drop for Opened {
    fn drop(&mut self) {
        let _ = self.conn.close();
    }
}

thread_local! {
    /// This worker's connection.
    static CURRENT: RefCell<Option<Opened>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's connection to `uri`, opening it first when there is none, it
/// is to another URI, or it broke (libvirtd restarted, socket closed).
///
/// # Errors
/// libvirt's error when the connection cannot be opened.
pub fn with_thread_connection<R>(
    uri: &str,
    f: impl FnOnce(&Connect) -> R,
) -> Result<R, virt::error::Error> {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let usable = current
            .as_ref()
            // A local check of the client's state: no RPC.
            .is_some_and(|o| o.uri == uri && o.conn.is_alive().unwrap_or(false));
        if !usable {
            if current.take().is_some() {
                tracing::warn!(uri, "a libvirt connection broke; reconnecting");
            }
            *current = Some(Opened {
                uri: uri.to_string(),
                conn: Connect::open(Some(uri))?,
            });
        }
        let opened = current.as_ref().expect("connection just opened");
        Ok(f(&opened.conn))
    })
}
