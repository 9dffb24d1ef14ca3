//! The serial console of one server, shared by its sessions (a *hub*).
//!
//! libvirt gives one console stream per domain, so each server with sessions has one hub: a
//! thread of its own with a dedicated libvirt connection (never a worker of the call pool:
//! it blocks in `virStreamRecv` for as long as the console is open) that reads the stream
//! and appends what it reads to the hub's output ring ([`super::output`]), and a writer
//! thread that sends what the interactive session types. The reader never waits for a
//! session: one that falls more than [`super::output::RING_BYTES`] behind misses output and
//! is closed by its session loop.
//!
//! The hub ends when the stream does (the guest stopped, moved or was destroyed: EOF), when
//! its last session leaves, or when the agent closes it. Only the reader thread ever aborts,
//! frees or closes the stream and its connection — libvirt's client frees a stream's state in
//! `virStreamAbort` under a `virStreamRecv` blocked on another thread. So once its last
//! session left, a closed hub's reader is woken by taking the console from it
//! (`VIR_DOMAIN_CONSOLE_FORCE`: libvirtd closes the old stream) on a short-lived thread that
//! lets it go at once ([`Hubs::release`]); a new hub for the same server takes it over the
//! same way, and failing both the reader ends at the guest's next output. Console threads
//! are counted per server and in all: a server whose open still waits on libvirtd gets no
//! second one, and at most [`Opener::max_threads`] run.

use super::output::{OutputReader, OutputRing};
use super::{CloseReason, ConsoleError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::stream::Stream;

/// Largest chunk read from the stream at once.
pub const READ_CHUNK: usize = 4096;
/// libvirt's message when another stream has the domain's console (in English; the error
/// code is checked first, so a translated libvirt is recognised too).
const HELD_ELSEWHERE: &str = "Active console session";
/// Typed chunks queued for the writer thread before the session waits.
const INPUT_CHUNKS: usize = 16;

/// One server's serial console and the sessions on it.
pub struct SerialHub {
    server_id: String,
    domain_name: String,
    output: Arc<OutputRing>,
    input: Mutex<Option<mpsc::Sender<Bytes>>>,
    writer: Mutex<Option<(u64, CancellationToken)>>,
    members: Mutex<usize>,
    closed: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl std::fmt::Debug for SerialHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialHub")
            .field("server_id", &self.server_id)
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A session's place on a hub: its output, and the writer slot when it may type. Leaving
/// (dropping it) gives the slot back and closes the hub after its last session.
pub struct SerialAttach {
    /// The hub.
    pub hub: Arc<SerialHub>,
    /// The console's output from the moment of joining.
    pub output: OutputReader,
    /// Cancelled when another session takes the interactive console over; `None` for a
    /// read-only session.
    pub taken_over: Option<CancellationToken>,
    session: u64,
}

impl Drop for SerialAttach {
    fn drop(&mut self) {
        self.hub.release_writer(self.session);
        let mut members = self.hub.members.lock().unwrap_or_else(|p| p.into_inner());
        *members -= 1;
        if *members == 0 {
            self.hub.close_locked(CloseReason::ClientLeft);
        }
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl SerialHub {
    /// Whether the hub has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes when the hub ends.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Why the hub ended (`ServerStopped` until told otherwise).
    pub fn reason(&self) -> CloseReason {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(CloseReason::ServerStopped)
    }

    /// Whether a session may type now.
    pub fn has_writer(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Sends typed bytes to the guest; waits while the writer thread is behind.
    ///
    /// # Errors
    /// `Err` when the hub has ended.
    pub async fn write(&self, data: Bytes) -> Result<(), ()> {
        let sender = self
            .input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(())?;
        sender.send(data).await.map_err(|_| ())
    }

    /// Joins the hub; `None` when it has ended. A writer (`read_only` false) takes the slot,
    /// from its holder when `force`.
    fn join(
        self: &Arc<Self>,
        read_only: bool,
        force: bool,
    ) -> Result<Option<SerialAttach>, ConsoleError> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_closed() {
            return Ok(None);
        }
        let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let taken_over = if read_only {
            None
        } else {
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, holder)) = writer.as_ref() {
                if !force {
                    return Err(ConsoleError::InUse {
                        server_id: self.server_id.clone(),
                    });
                }
                holder.cancel();
            }
            let token = CancellationToken::new();
            *writer = Some((session, token.clone()));
            Some(token)
        };
        *members += 1;
        Ok(Some(SerialAttach {
            hub: self.clone(),
            output: self.output.reader(),
            taken_over,
            session,
        }))
    }

    fn release_writer(&self, session: u64) {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if writer.as_ref().is_some_and(|(id, _)| *id == session) {
            *writer = None;
        }
    }

    /// Ends the hub for `reason` (kept if one was given before).
    pub fn close(&self, reason: CloseReason) {
        let _members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        self.close_locked(reason);
    }

    /// [`Self::close`] with `members` held by the caller.
    fn close_locked(&self, reason: CloseReason) {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.closed.cancel();
        self.output.close();
        self.input.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The hubs of this node, one per server with serial sessions.
#[derive(Debug, Default)]
pub(super) struct Hubs {
    /// Per server: the hub, behind an async lock so only one open runs per server.
    slots: Mutex<HashMap<String, Slot>>,
    /// The console threads alive, per server.
    threads: Arc<Mutex<Threads>>,
}

/// Console reader threads alive: per server, those still opening, and in all.
#[derive(Debug, Default)]
struct Threads {
    alive: HashMap<String, usize>,
    opening: HashMap<String, usize>,
    total: usize,
}

/// One console thread's place in [`Threads`], given back when the thread ends.
struct ThreadSlot {
    threads: Arc<Mutex<Threads>>,
    server_id: String,
    opening: bool,
}

impl ThreadSlot {
    /// The thread answered its opener.
    fn opened(&mut self) {
        if std::mem::take(&mut self.opening) {
            let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            decrement(&mut threads.opening, &self.server_id);
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.opened();
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        decrement(&mut threads.alive, &self.server_id);
        threads.total -= 1;
    }
}

fn decrement(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// A server's hub, if it has one, behind the lock its opening holds.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<SerialHub>>>>;

/// How to reach libvirt.
#[derive(Debug, Clone)]
pub(super) struct Opener {
    /// The libvirt URI.
    pub uri: String,
    /// Deadline of opening the console.
    pub timeout: Duration,
    /// Console threads alive at most (hubs, and closed ones waiting for their guest's next
    /// output or to be taken over).
    pub max_threads: usize,
}

impl Hubs {
    /// Joins the server's hub, opening the console first when it has none.
    pub async fn attach(
        &self,
        opener: &Opener,
        server_id: &str,
        domain_name: &str,
        read_only: bool,
        force: bool,
    ) -> Result<SerialAttach, ConsoleError> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server_id.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(hub) = slot.as_ref() {
            if let Some(attach) = hub.join(read_only, force)? {
                return Ok(attach);
            }
        }
        let hub = match self.open(opener, server_id, domain_name, force).await {
            // One of our own readers still holds it (a closed hub waiting for output, or an
            // open whose caller gave up): take the console from it.
            Err(ConsoleError::HeldElsewhere { .. }) if self.alive(server_id) > 0 => {
                self.open(opener, server_id, domain_name, true).await?
            }
            other => other?,
        };
        let attach = hub
            .join(read_only, force)?
            .ok_or_else(|| ConsoleError::Libvirt {
                action: "keep the console open",
                server_id: server_id.to_string(),
                message: "the console ended as it was opened".into(),
            })?;
        *slot = Some(hub);
        Ok(attach)
    }

    /// Whether the server's console has an interactive session.
    pub fn has_writer(&self, server_id: &str) -> bool {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server_id)
            .cloned();
        slot.and_then(|s| s.try_lock().ok().and_then(|h| h.clone()))
            .is_some_and(|hub| !hub.is_closed() && hub.has_writer())
    }

    /// Ends the server's hub, if any.
    pub fn close(&self, server_id: &str, reason: CloseReason) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(server_id);
        if let Some(hub) = slot.and_then(|s| s.try_lock().ok().and_then(|h| h.clone())) {
            hub.close(reason);
        }
    }

    /// Console threads alive for `server_id`.
    fn alive(&self, server_id: &str) -> usize {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.alive.get(server_id).copied().unwrap_or(0)
    }

    /// Opens the console on a new thread, within the limits on console threads.
    async fn open(
        &self,
        opener: &Opener,
        server_id: &str,
        domain_name: &str,
        force: bool,
    ) -> Result<Arc<SerialHub>, ConsoleError> {
        let slot = self.thread_slot(opener, server_id)?;
        open(opener, slot, server_id, domain_name, force).await
    }

    /// A place for one more console thread of `server_id`, within the limits.
    fn thread_slot(&self, opener: &Opener, server_id: &str) -> Result<ThreadSlot, ConsoleError> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if threads.opening.contains_key(server_id) {
            return Err(ConsoleError::Timeout {
                action: "open the console (an earlier attempt still waits on libvirtd)",
                seconds: opener.timeout.as_secs(),
            });
        }
        if threads.total >= opener.max_threads {
            return Err(ConsoleError::TooManySessions {
                max: opener.max_threads,
            });
        }
        threads.total += 1;
        *threads.alive.entry(server_id.to_string()).or_default() += 1;
        *threads.opening.entry(server_id.to_string()).or_default() += 1;
        Ok(ThreadSlot {
            threads: self.threads.clone(),
            server_id: server_id.to_string(),
            opening: true,
        })
    }

    /// Lets the console go after `hub`'s last session left. Its reader still holds the
    /// stream (it leaves only at the guest's next output), which would refuse other libvirt
    /// clients (`virsh console` without `--force`) meanwhile: a short-lived thread takes the
    /// console with `VIR_DOMAIN_CONSOLE_FORCE` (libvirtd closes the reader's stream, which
    /// wakes it) and lets it go at once. Runs under the server's slot lock, so a session
    /// opening meanwhile waits for it; does nothing when a new hub has the console already
    /// or the reader has ended. A failure is only logged: the reader still leaves at the next
    /// output, and sessions still take the console over.
    pub async fn release(&self, opener: &Opener, hub: &Arc<SerialHub>) {
        let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hub.server_id)
            .cloned()
        else {
            return;
        };
        let current = slot.lock().await;
        let still_this_hub = current.as_ref().is_some_and(|h| Arc::ptr_eq(h, hub));
        if !still_this_hub || !hub.is_closed() || self.alive(&hub.server_id) == 0 {
            return;
        }
        let thread = match self.thread_slot(opener, &hub.server_id) {
            Ok(thread) => thread,
            Err(e) => {
                tracing::debug!(server_id = %hub.server_id, error = %e, "console not let go");
                return;
            }
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (uri, domain) = (opener.uri.clone(), hub.domain_name.clone());
        let spawned = std::thread::Builder::new()
            .name("console-release".into())
            .spawn(move || {
                let _ = answer.send(let_go(&uri, thread, &domain));
            });
        if spawned.is_err() {
            return;
        }
        match tokio::time::timeout(opener.timeout, answered).await {
            Ok(Ok(Ok(()))) => {
                tracing::debug!(server_id = %hub.server_id, "console let go after its last session");
            }
            Ok(Ok(Err(message))) => {
                tracing::debug!(server_id = %hub.server_id, error = %message, "console not let go");
            }
            _ => tracing::debug!(server_id = %hub.server_id, "console not let go in time"),
        }
        drop(current);
    }
}

/// Takes the domain's console (forcing whoever holds it off) and lets it go at once, on the
/// calling thread: the stream is never read, so this thread is its only user.
fn let_go(uri: &str, mut thread: ThreadSlot, domain: &str) -> Result<(), String> {
    let message = |e: virt::error::Error| e.message().to_string();
    let conn = Closing(Connect::open(Some(uri)).map_err(message)?);
    let dom = Domain::lookup_by_name(&conn.0, domain).map_err(message)?;
    let stream = Stream::new(&conn.0, 0).map_err(message)?;
    let opened = dom.open_console(None, &stream, console_flags(true));
    thread.opened();
    let _ = stream.abort();
    drop(dom);
    drop(conn);
    opened.map(drop).map_err(message)
}

/// libvirt's console flags: refuse a console that libvirt cannot hand over safely; with
/// `force`, take it from whoever holds it (another libvirt client).
fn console_flags(force: bool) -> u32 {
    let mut flags = virt::sys::VIR_DOMAIN_CONSOLE_SAFE;
    if force {
        flags |= virt::sys::VIR_DOMAIN_CONSOLE_FORCE;
    }
    flags
}

/// Opens the domain's console on a thread of its own, which then reads it until it ends.
async fn open(
    opener: &Opener,
    slot: ThreadSlot,
    server_id: &str,
    domain_name: &str,
    force: bool,
) -> Result<Arc<SerialHub>, ConsoleError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let (uri, server, domain) = (
        opener.uri.clone(),
        server_id.to_string(),
        domain_name.to_string(),
    );
    std::thread::Builder::new()
        .name(format!("console-{}", &server_id[..server_id.len().min(8)]))
        .spawn(move || run(&uri, slot, server, &domain, force, answer))
        .map_err(|e| ConsoleError::Libvirt {
            action: "open the console",
            server_id: server_id.to_string(),
            message: format!("no thread for the console: {e}"),
        })?;
    match tokio::time::timeout(opener.timeout, answered).await {
        Ok(Ok(Ok(hub))) => Ok(hub),
        Ok(Ok(Err(OpenFailure {
            held_elsewhere: true,
            ..
        }))) => Err(ConsoleError::HeldElsewhere {
            server_id: server_id.to_string(),
        }),
        Ok(Ok(Err(OpenFailure { message, .. }))) => Err(ConsoleError::Libvirt {
            action: "open the console",
            server_id: server_id.to_string(),
            message,
        }),
        Ok(Err(_)) => Err(ConsoleError::Libvirt {
            action: "open the console",
            server_id: server_id.to_string(),
            message: "the console thread ended without an answer".into(),
        }),
        Err(_) => Err(ConsoleError::Timeout {
            action: "open the console",
            seconds: opener.timeout.as_secs(),
        }),
    }
}

/// A connection closed when dropped (virt 0.4 does not close on drop).
struct Closing(Connect);

impl Drop for Closing {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

type Answer = tokio::sync::oneshot::Sender<Result<Arc<SerialHub>, OpenFailure>>;

/// Why a hub's thread could not open the console.
#[derive(Debug)]
struct OpenFailure {
    /// libvirt's message.
    message: String,
    /// Another stream has the console: `virDomainOpenConsole` failed with
    /// `VIR_ERR_OPERATION_FAILED` (libvirt's answer to a console in use), or said so.
    held_elsewhere: bool,
}

impl OpenFailure {
    /// Classifies an error of the open; `at_open` when `virDomainOpenConsole` itself failed
    /// (not the connection, lookup or stream before it).
    fn new(e: &virt::error::Error, at_open: bool) -> Self {
        let message = e.message().to_string();
        let held_elsewhere = at_open
            && (e.code() == virt::error::ErrorNumber::OperationFailed
                || message.contains(HELD_ELSEWHERE));
        Self {
            message,
            held_elsewhere,
        }
    }
}

/// The hub's thread: open, answer, read until the stream ends, then tidy up.
fn run(
    uri: &str,
    mut slot: ThreadSlot,
    server_id: String,
    domain: &str,
    force: bool,
    answer: Answer,
) {
    let opened = (|| -> Result<(Closing, Stream), OpenFailure> {
        let before = |e: virt::error::Error| OpenFailure::new(&e, false);
        let conn = Closing(Connect::open(Some(uri)).map_err(before)?);
        let dom = Domain::lookup_by_name(&conn.0, domain).map_err(before)?;
        let stream = Stream::new(&conn.0, 0).map_err(before)?;
        dom.open_console(None, &stream, console_flags(force))
            .map_err(|e| OpenFailure::new(&e, true))?;
        Ok((conn, stream))
    })();
    let (conn, stream) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            // Gone from the counts before answering: the caller asks whether one of our own
            // threads still holds the console.
            drop(slot);
            let _ = answer.send(Err(e));
            return;
        }
    };
    slot.opened();
    let (input, typed) = mpsc::channel(INPUT_CHUNKS);
    let hub = Arc::new(SerialHub {
        server_id,
        domain_name: domain.to_string(),
        output: OutputRing::new(),
        input: Mutex::new(Some(input)),
        writer: Mutex::default(),
        members: Mutex::new(0),
        closed: CancellationToken::new(),
        reason: Mutex::default(),
    });
    if answer.send(Ok(hub.clone())).is_err() {
        // The caller gave up waiting (its deadline passed): nobody will read this console.
        // No other thread has the stream: abort it here.
        hub.close(CloseReason::ClientLeft);
        let _ = stream.clone().abort();
        drop((stream, conn));
        return;
    }
    let writer = {
        let stream = stream.clone();
        let hub = hub.clone();
        std::thread::Builder::new()
            .name("console-writer".into())
            .spawn(move || write_loop(&stream, typed, &hub))
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let reason = loop {
        match stream.recv(&mut buf) {
            Ok(0) => break CloseReason::ServerStopped,
            // A closed hub's reader leaves at the first output after the close.
            Ok(_) if hub.is_closed() => break CloseReason::ClientLeft,
            Ok(n) => hub.output.publish(&buf[..n]),
            Err(e) => break CloseReason::Failed(e.message().to_string()),
        }
    };
    if !hub.is_closed() {
        tracing::info!(server_id = %hub.server_id, ?reason, "serial console ended");
    }
    hub.close(reason);
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
    // The writer is gone: this thread is the stream's only user.
    let _ = stream.clone().abort();
    drop((stream, conn, slot));
}

/// Sends what the interactive session types until the hub ends.
fn write_loop(stream: &Stream, mut typed: mpsc::Receiver<Bytes>, hub: &SerialHub) {
    while let Some(data) = typed.blocking_recv() {
        let mut rest = &data[..];
        while !rest.is_empty() {
            match stream.send(rest) {
                Ok(n) if n > 0 => rest = &rest[n.min(rest.len())..],
                Ok(_) => return hub.close(CloseReason::ServerStopped),
                Err(e) => return hub.close(CloseReason::Failed(e.message().to_string())),
            }
        }
    }
}
