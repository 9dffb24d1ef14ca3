//! The WebSocket side of a console session: bytes both ways, the idle timeout, liveness
//! pings, and the close frame saying why it ended.
//!
//! A session never makes the agent buffer without bound: output reaches it through the hub's
//! output ring, bounded in bytes (it is closed with 4004 when it falls behind), each send
//! must complete within [`SEND_TIMEOUT`], the socket's own write buffer is capped by the
//! upgrade settings in `api/routes/consoles.rs`, and a client with more than [`MAX_UNREAD`]
//! bytes unread in the kernel is closed too (the kernel's send buffer grows to megabytes for
//! a peer that stopped reading).

use super::output::ReadError;
use super::{CloseReason, SerialAttach, SessionGuard};
use crate::daemon::listener::ConnectionSocket;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Longest a single send to the client may take before the client counts as stuck.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the agent pings the client (a dead peer is found by the failing send).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Largest message or frame a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Most output a client may leave unread in the kernel (sent, not acknowledged) before it
/// counts as stuck: a client that keeps up has little more than a round trip's worth there.
pub const MAX_UNREAD: usize = 512 * 1024;

/// Ends a session whose client has more than [`MAX_UNREAD`] bytes unread.
fn check_unread(connection: Option<ConnectionSocket>) -> Result<(), CloseReason> {
    // SAFETY: the session owns the WebSocket, which owns the connection.
    let unread = connection.and_then(|c| unsafe { c.unsent_bytes() });
    match unread {
        Some(n) if n > MAX_UNREAD => Err(CloseReason::TooSlow),
        _ => Ok(()),
    }
}

/// Sends `message` within [`SEND_TIMEOUT`]; `Err` with the reason to end for when it fails.
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), CloseReason> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(if is_buffer_full(e) {
            CloseReason::TooSlow
        } else {
            CloseReason::ClientLeft
        }),
        Err(_) => Err(CloseReason::TooSlow),
    }
}

/// Whether a send failed because the client's unread output reached the socket's cap.
fn is_buffer_full(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::WriteBufferFull(_)))
}

/// Sends console output to the client: refused for a client with too much unread
/// ([`check_unread`]), cut short when the agent ends the session meanwhile.
async fn send_output(
    socket: &mut WebSocket,
    connection: Option<ConnectionSocket>,
    data: Bytes,
    guard: &SessionGuard,
) -> Result<(), CloseReason> {
    check_unread(connection)?;
    tokio::select! {
        sent = send(socket, Message::Binary(data)) => sent,
        () = guard.ended() => Err(guard.reason()),
    }
}

/// Ends a session: counts it, says goodbye, then gives its permit back.
async fn finish(socket: WebSocket, guard: SessionGuard, reason: &CloseReason) {
    guard.record_end(reason);
    close(socket, reason).await;
    drop(guard);
}

/// Says goodbye with the reason's close frame (briefly: a stuck client gets none).
async fn close(mut socket: WebSocket, reason: &CloseReason) {
    if let Some(code) = reason.code() {
        let frame = CloseFrame {
            code,
            reason: reason.text().into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// What a client message means to a session.
enum Incoming {
    Data(Bytes),
    Nothing,
    Gone,
}

fn incoming(message: Option<Result<Message, axum::Error>>) -> Incoming {
    match message {
        Some(Ok(Message::Binary(data))) => Incoming::Data(data),
        Some(Ok(Message::Text(text))) => Incoming::Data(Bytes::from(text.as_str().to_owned())),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Nothing,
        Some(Ok(Message::Close(_)) | Err(_)) | None => Incoming::Gone,
    }
}

/// Largest message sent to a client: the output waiting for it is sent in one message up to
/// this size (fewer, larger messages keep a busy client from falling behind).
pub const MAX_OUTPUT_MESSAGE: usize = 64 * 1024;

/// Runs a serial console session until the client leaves or the agent ends it.
///
/// Read-only sessions' input is discarded (a terminal may send stray keys or resize reports).
pub async fn run_serial(
    mut socket: WebSocket,
    connection: Option<ConnectionSocket>,
    mut attach: SerialAttach,
    guard: SessionGuard,
    idle_timeout: Duration,
) {
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let hub = attach.hub.clone();
    let taken_over = attach.taken_over.clone();
    let reason = loop {
        tokio::select! {
            () = guard.ended() => break guard.reason(),
            () = async { taken_over.as_ref().expect("checked").cancelled().await },
                if taken_over.is_some() => break CloseReason::TakenOver,
            () = &mut idle => break CloseReason::Idle { seconds: idle_timeout.as_secs() },
            // All the output waiting, in one message up to MAX_OUTPUT_MESSAGE.
            out = attach.output.next(MAX_OUTPUT_MESSAGE) => match out {
                Ok(data) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    if let Err(reason) = send_output(&mut socket, connection, data, &guard).await {
                        break reason;
                    }
                }
                Err(ReadError::Lagged) => break CloseReason::TooSlow,
                Err(ReadError::Closed) => break hub.reason(),
            },
            () = hub.closed() => break hub.reason(),
            message = socket.recv() => match incoming(message) {
                Incoming::Gone => break CloseReason::ClientLeft,
                Incoming::Nothing => {}
                Incoming::Data(data) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    if let Some(taken) = taken_over.as_ref().filter(|_| !data.is_empty()) {
                        // A guest that stops reading (paused, hung) must not hold the session.
                        tokio::select! {
                            written = tokio::time::timeout(SEND_TIMEOUT, hub.write(data)) => {
                                match written {
                                    Ok(Ok(())) => {}
                                    Ok(Err(())) => break hub.reason(),
                                    Err(_) => break CloseReason::Failed(
                                        "the guest's console does not take input".into(),
                                    ),
                                }
                            }
                            () = taken.cancelled() => break CloseReason::TakenOver,
                            () = hub.closed() => break hub.reason(),
                            () = guard.ended() => break guard.reason(),
                        }
                    }
                }
            },
            _ = ping.tick() => {
                if let Err(reason) = send(&mut socket, Message::Ping(Bytes::new())).await {
                    break reason;
                }
            }
        }
    };
    drop(attach);
    guard.left_serial(hub);
    finish(socket, guard, &reason).await;
}

/// Runs a VNC session: the client's RFB bytes to QEMU's display socket and back.
pub async fn run_vnc(
    mut socket: WebSocket,
    connection: Option<ConnectionSocket>,
    mut display: tokio::net::UnixStream,
    guard: SessionGuard,
    idle_timeout: Duration,
) {
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut buf = vec![0u8; 16 * 1024];
    let reason = loop {
        tokio::select! {
            () = guard.ended() => break guard.reason(),
            () = &mut idle => break CloseReason::Idle { seconds: idle_timeout.as_secs() },
            read = display.read(&mut buf) => match read {
                Ok(0) => break CloseReason::ServerStopped,
                Ok(n) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    if let Err(reason) = send_output(&mut socket, connection, data, &guard).await {
                        break reason;
                    }
                }
                Err(e) => break CloseReason::Failed(format!("VNC display: {e}")),
            },
            message = socket.recv() => match incoming(message) {
                Incoming::Gone => break CloseReason::ClientLeft,
                Incoming::Nothing => {}
                Incoming::Data(data) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    let written =
                        tokio::time::timeout(SEND_TIMEOUT, display.write_all(&data)).await;
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break CloseReason::Failed(format!("VNC display: {e}")),
                        Err(_) => break CloseReason::Failed("VNC display stopped reading".into()),
                    }
                }
            },
            _ = ping.tick() => {
                if let Err(reason) = send(&mut socket, Message::Ping(Bytes::new())).await {
                    break reason;
                }
            }
        }
    };
    drop(display);
    finish(socket, guard, &reason).await;
}
