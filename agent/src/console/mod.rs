//! Interactive consoles over WebSocket, through the agent's own API.
//!
//! `POST /v1/servers/{id}/remote-consoles` hands out a one-time URL (`token.rs`); opening it
//! starts a session (`session.rs`) on the server's serial console or its VNC display:
//!
//! - **serial** — libvirt allows one console stream per domain, so the agent opens one per
//!   server (a *hub*, `serial.rs`: a dedicated libvirt connection and reader thread) and fans
//!   its output out to every session through a ring bounded in bytes (`output.rs`); one session at a time may
//!   type (the *writer*), others watch read-only. A client that falls behind is closed, never
//!   waited for.
//! - **VNC** — each session is proxied to QEMU's VNC unix socket (`vnc.rs`).
//!
//! `screenshot.rs` turns libvirt's screenshot stream into a PNG.
//!
//! Every session holds one of `consoles.max_sessions` permits and is registered here, so a
//! deleted server, a taken-over writer or the agent's shutdown can end it with a reason
//! ([`CloseReason`], sent as the WebSocket close frame).

pub mod output;
mod registry;
pub mod screenshot;
mod serial;
pub mod session;
pub mod token;
pub mod vnc;

pub use registry::{Consoles, SessionGuard};
pub use serial::{SerialAttach, SerialHub};
pub use token::{ConsoleKind, Grant, TokenTable};

/// Why a console operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// The URL's token was never issued (or is malformed).
    #[error(
        "This console URL is not valid: ask for a new one with POST /v1/servers/{{id}}/remote-consoles"
    )]
    TokenUnknown,
    /// The URL was used already or not opened in time.
    #[error(
        "This console URL was already used or has expired (a URL opens one session, within \
         {ttl_secs} s of being issued): ask for a new one"
    )]
    TokenSpent {
        /// `consoles.token_ttl_secs`.
        ttl_secs: u64,
    },
    /// Another session types into this serial console.
    #[error(
        "Server {server_id} already has an interactive console session: join read-only \
         (\"read_only\": true) or take it over (\"force\": true)"
    )]
    InUse {
        /// The server.
        server_id: String,
    },
    /// Someone outside the agent (`virsh console`) holds the domain's console.
    #[error(
        "The console of server {server_id} is held by another libvirt client (virsh console?): \
         take it over with \"force\": true"
    )]
    HeldElsewhere {
        /// The server.
        server_id: String,
    },
    /// `consoles.max_sessions` sessions are open.
    #[error("This node has {max} console sessions open (consoles.max_sessions): close one first")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// Too many URLs wait to be opened.
    #[error("{max} console URLs are waiting to be opened: open or let some expire first")]
    TooManyTokens {
        /// The limit.
        max: usize,
    },
    /// The server has no running domain.
    #[error("Server {server_id} is {status}: a console needs a running server")]
    NotRunning {
        /// The server.
        server_id: String,
        /// Its status.
        status: String,
    },
    /// The server has no VNC display.
    #[error(
        "Server {server_id} has no VNC display: it was started while consoles.vnc was false \
         (stop and start it after enabling it)"
    )]
    NoDisplay {
        /// The server.
        server_id: String,
    },
    /// libvirt refused or failed.
    #[error("libvirt could not {action} for server {server_id}: {message}")]
    Libvirt {
        /// What was tried.
        action: &'static str,
        /// The server.
        server_id: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt did not answer in time.
    #[error("libvirt did not {action} within {seconds} s")]
    Timeout {
        /// What was tried.
        action: &'static str,
        /// The deadline.
        seconds: u64,
    },
    /// The request is not a WebSocket handshake.
    #[error(
        "This URL opens a WebSocket: connect with a WebSocket client (GET with Connection: \
         Upgrade, Upgrade: websocket); the URL stays valid until used or expired"
    )]
    NotWebSocket,
    /// The guest's screen could not be converted.
    #[error("The screenshot could not be converted: {0}")]
    Screenshot(String),
}

/// Why a session ended; sent to the client as the WebSocket close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or went away (nothing to send).
    ClientLeft,
    /// Another session took over the interactive console.
    TakenOver,
    /// The console ended: the guest stopped or moved to another node.
    ServerStopped,
    /// The server was deleted.
    ServerDeleted,
    /// No byte either way for `consoles.idle_timeout_secs`.
    Idle {
        /// The timeout.
        seconds: u64,
    },
    /// The client did not read the output fast enough.
    TooSlow,
    /// libvirt's stream or QEMU's display failed.
    Failed(String),
    /// The agent is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The WebSocket close code: 1001 going away for a shutdown, 4000–4999 (private use) for
    /// the rest; `None` when the client already left.
    pub fn code(&self) -> Option<u16> {
        Some(match self {
            Self::ClientLeft => return None,
            Self::Shutdown => 1001,
            Self::TakenOver => 4001,
            Self::ServerStopped => 4002,
            Self::Idle { .. } => 4003,
            Self::TooSlow => 4004,
            Self::ServerDeleted => 4006,
            Self::Failed(_) => 4010,
        })
    }

    /// Every reason's metrics label, in [`Self::index`] order.
    pub const LABELS: [&'static str; 8] = [
        "client_left",
        "taken_over",
        "server_stopped",
        "server_deleted",
        "idle",
        "too_slow",
        "failed",
        "shutdown",
    ];

    /// The reason's place in [`Self::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Self::ClientLeft => 0,
            Self::TakenOver => 1,
            Self::ServerStopped => 2,
            Self::ServerDeleted => 3,
            Self::Idle { .. } => 4,
            Self::TooSlow => 5,
            Self::Failed(_) => 6,
            Self::Shutdown => 7,
        }
    }

    /// The close frame's text (at most 123 bytes, the frame's limit).
    pub fn text(&self) -> String {
        let text = match self {
            Self::ClientLeft => String::new(),
            Self::Shutdown => "the agent is shutting down".into(),
            Self::TakenOver => "another session took over this console".into(),
            Self::ServerStopped => "the console ended: the server stopped or moved".into(),
            Self::ServerDeleted => "the server was deleted".into(),
            Self::Idle { seconds } => format!("no traffic for {seconds} s"),
            Self::TooSlow => "the client did not keep up with the console output".into(),
            Self::Failed(message) => format!("the console failed: {message}"),
        };
        truncate_utf8(text, 123)
    }
}

fn truncate_utf8(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_texts_fit_a_close_frame() {
        let long = CloseReason::Failed("é".repeat(200));
        assert!(long.text().len() <= 123);
        assert_eq!(CloseReason::ClientLeft.code(), None);
        assert_eq!(CloseReason::TakenOver.code(), Some(4001));
    }
}
