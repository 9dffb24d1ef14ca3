//! [`Consoles`]: the agent's console service — tokens, serial hubs, and every open session
//! with the permit it holds.

use super::serial::{Hubs, Opener, SerialHub};
use super::{CloseReason, ConsoleError, Grant, SerialAttach, TokenTable};
use crate::config::ConsolesConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Console threads allowed beyond one per session: closed hubs whose reader waits for its
/// guest's next output (or for a new hub to take the console from it).
const MAX_IDLE_THREADS: usize = 64;

/// Screenshots taken at once on this node: a QEMU that does not draw holds a libvirt worker
/// per screenshot until the call's deadline, and the workers are shared with every call.
pub const MAX_SCREENSHOTS: usize = 2;

/// A session as the registry sees it: its server, and how to end it.
#[derive(Debug)]
struct Live {
    server_id: String,
    end: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

#[derive(Debug)]
struct Inner {
    config: ConsolesConfig,
    tokens: TokenTable,
    hubs: Hubs,
    opener: Opener,
    permits: Arc<Semaphore>,
    sessions: Mutex<HashMap<u64, Live>>,
    next_id: AtomicU64,
    /// Screenshots taken at once (each holds a libvirt worker while QEMU draws).
    screenshots: Arc<Semaphore>,
    /// Sessions ended, by [`CloseReason::index`].
    ended: [AtomicU64; CloseReason::LABELS.len()],
}

/// The console service of this agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Consoles {
    inner: Arc<Inner>,
}

/// One open session: holds its permit and its place in the registry until dropped.
#[derive(Debug)]
pub struct SessionGuard {
    consoles: Consoles,
    id: u64,
    end: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
    _permit: OwnedSemaphorePermit,
}

impl SessionGuard {
    /// Called when a serial session has left `hub`: when it was the last one, libvirt's
    /// console is let go in the background, so other libvirt clients may open it.
    pub fn left_serial(&self, hub: Arc<SerialHub>) {
        if hub.is_closed() && matches!(hub.reason(), CloseReason::ClientLeft) {
            let consoles = self.consoles.clone();
            tokio::spawn(async move {
                let inner = &consoles.inner;
                inner.hubs.release(&inner.opener, &hub).await;
            });
        }
    }

    /// Completes when the agent ends this session (server deleted, shutdown).
    pub async fn ended(&self) {
        self.end.cancelled().await;
    }

    /// Counts the session's end in the metrics.
    pub fn record_end(&self, reason: &CloseReason) {
        self.consoles.inner.ended[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Why the agent ended it.
    pub fn reason(&self) -> CloseReason {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(CloseReason::Shutdown)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.consoles
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Consoles {
    /// The service for `config`, opening consoles on libvirt at `uri` within `timeout`.
    pub fn new(config: &ConsolesConfig, uri: &str, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                tokens: TokenTable::new(config.token_ttl()),
                hubs: Hubs::default(),
                opener: Opener {
                    uri: uri.to_string(),
                    timeout,
                    max_threads: config.max_sessions + MAX_IDLE_THREADS,
                },
                permits: Arc::new(Semaphore::new(config.max_sessions)),
                sessions: Mutex::default(),
                next_id: AtomicU64::new(1),
                ended: Default::default(),
                screenshots: Arc::new(Semaphore::new(MAX_SCREENSHOTS)),
                config: config.clone(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ConsolesConfig {
        &self.inner.config
    }

    /// The one-time URLs.
    pub fn tokens(&self) -> &TokenTable {
        &self.inner.tokens
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// `hyperlet_console_sessions_open` and `hyperlet_console_sessions_ended_total` by
    /// reason, in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out.push_str(
            "# HELP hyperlet_console_sessions_open Console WebSocket sessions open now.\n",
        );
        out.push_str("# TYPE hyperlet_console_sessions_open gauge\n");
        let _ = writeln!(
            out,
            "hyperlet_console_sessions_open {}",
            self.open_sessions()
        );
        out.push_str(
            "# HELP hyperlet_console_sessions_ended_total Console sessions ended, by reason.\n",
        );
        out.push_str("# TYPE hyperlet_console_sessions_ended_total counter\n");
        for (label, count) in CloseReason::LABELS.iter().zip(&self.inner.ended) {
            let _ = writeln!(
                out,
                "hyperlet_console_sessions_ended_total{{reason=\"{label}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// Checks, before a URL is handed out, that a session could open now.
    ///
    /// # Errors
    /// [`ConsoleError::TooManySessions`], or [`ConsoleError::InUse`] for an interactive serial
    /// session while another one types (without `force`).
    pub fn precheck(&self, grant: &Grant) -> Result<(), ConsoleError> {
        if self.inner.permits.available_permits() == 0 {
            return Err(ConsoleError::TooManySessions {
                max: self.inner.config.max_sessions,
            });
        }
        if let super::ConsoleKind::Serial {
            read_only: false,
            force: false,
        } = grant.kind
        {
            if self.inner.hubs.has_writer(&grant.server_id) {
                return Err(ConsoleError::InUse {
                    server_id: grant.server_id.clone(),
                });
            }
        }
        Ok(())
    }

    /// A permit to take a screenshot, waiting up to `wait`.
    ///
    /// # Errors
    /// [`ConsoleError::Timeout`] when [`MAX_SCREENSHOTS`] stay busy.
    pub async fn screenshot_permit(
        &self,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, ConsoleError> {
        let acquire = self.inner.screenshots.clone().acquire_owned();
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ConsoleError::Timeout {
                action: "take a screenshot (the earlier ones still wait on QEMU)",
                seconds: wait.as_secs(),
            }),
        }
    }

    /// Registers a session of `server_id`, taking one of `consoles.max_sessions` permits.
    ///
    /// # Errors
    /// [`ConsoleError::TooManySessions`].
    pub fn register(&self, server_id: &str) -> Result<SessionGuard, ConsoleError> {
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConsoleError::TooManySessions {
                max: self.inner.config.max_sessions,
            })?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let end = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Live {
                    server_id: server_id.to_string(),
                    end: end.clone(),
                    reason: reason.clone(),
                },
            );
        Ok(SessionGuard {
            consoles: self.clone(),
            id,
            end,
            reason,
            _permit: permit,
        })
    }

    /// Joins the server's serial console (opening it on libvirt when no session has it).
    ///
    /// # Errors
    /// [`ConsoleError::InUse`], [`ConsoleError::HeldElsewhere`], libvirt's errors.
    pub async fn attach_serial(
        &self,
        grant: &Grant,
        read_only: bool,
        force: bool,
    ) -> Result<SerialAttach, ConsoleError> {
        self.inner
            .hubs
            .attach(
                &self.inner.opener,
                &grant.server_id,
                &grant.domain_name,
                read_only,
                force,
            )
            .await
    }

    /// Ends every session of `server_id` and spends its unused URLs.
    pub fn end_server(&self, server_id: &str, reason: CloseReason) {
        self.inner.tokens.revoke_server(server_id);
        self.end_where(|live| live.server_id == server_id, &reason);
        self.inner.hubs.close(server_id, reason);
    }

    /// Ends every session (the agent is shutting down) and waits up to `grace` for them to
    /// say goodbye.
    pub async fn end_all(&self, grace: Duration) {
        self.end_where(|_| true, &CloseReason::Shutdown);
        let deadline = tokio::time::Instant::now() + grace;
        while self.open_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn end_where(&self, which: impl Fn(&Live) -> bool, reason: &CloseReason) {
        let sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for live in sessions.values().filter(|l| which(l)) {
            live.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| reason.clone());
            live.end.cancel();
        }
    }
}
