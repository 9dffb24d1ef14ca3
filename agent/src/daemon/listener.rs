//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2, graceful shutdown, and the limits
//! that keep unauthenticated clients from holding the node's connections:
//!
//! - at most `api.max_connections` connections at once; one more is closed on accept;
//! - the TLS handshake and each request's headers must arrive within
//!   `api.header_read_timeout_secs` (for HTTP/1 hyper's own timer, which also runs while a
//!   kept-alive connection waits for its next request);
//! - a connection with no request in flight for `api.idle_timeout_secs` is closed, whatever
//!   bytes trickle in (this also bounds an HTTP/2 connection that never completes a request).
//!
//! Each closing is counted in `/metrics` ([`crate::metrics::ConnectionMetrics`]).

use crate::metrics::ConnectionClose;
use crate::ops::Services;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// TLS handshake and request headers.
    pub header_read_timeout: Duration,
    /// Time without a request in flight.
    pub idle_timeout: Duration,
}

impl ConnLimits {
    /// The limits of `[api]`.
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        Self {
            max_connections: api.max_connections,
            header_read_timeout: api.header_read_timeout(),
            idle_timeout: api.idle_timeout(),
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then waits up to `grace` for
/// in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    services: Services,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
    grace: Duration,
) {
    let limits = ConnLimits::from_config(&services.config().api);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let counters = &services.metrics().connections;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.refused();
            tracing::debug!(%peer, limit = limits.max_connections, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        counters.accepted();
        let _ = stream.set_nodelay(true);
        let (app, tls, services) = (app.clone(), tls.clone(), services.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let counters = &services.metrics().connections;
            let activity = Activity::new();
            let socket = ConnectionSocket(std::os::fd::AsRawFd::as_raw_fd(&stream));
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(socket);
                    let guard = activity.begin();
                    let app = app.clone();
                    async move {
                        let response = app.oneshot(req).await?;
                        // In flight until the body is sent (an event stream stays in flight).
                        Ok::<_, std::convert::Infallible>(response.map(move |body| {
                            axum::body::Body::new(body.map_frame(move |frame| {
                                let _ = &guard;
                                frame
                            }))
                        }))
                    }
                })
            };
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            let idle = idle_expired(&activity, limits.idle_timeout);
            let result = match accept_tls(stream, tls, limits.header_read_timeout, peer).await {
                Err(()) => {
                    counters.closed(ConnectionClose::HandshakeTimeout);
                    Ok(())
                }
                Ok(Io::Tls(Err(()))) => Ok(()),
                Ok(Io::Plain(stream)) => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = idle => { counters.closed(ConnectionClose::IdleTimeout); Ok(()) }
                    }
                }
                Ok(Io::Tls(Ok(stream))) => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = idle => { counters.closed(ConnectionClose::IdleTimeout); Ok(()) }
                    }
                }
            };
            if let Err(e) = result {
                if is_header_timeout(e.as_ref()) {
                    counters.closed(ConnectionClose::HeaderTimeout);
                    tracing::debug!(%peer, "request headers did not arrive in time; closed");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            counters.finished();
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time; closing anyway"
        ),
    }
}

/// The TCP socket a request arrived on, as a request extension: handlers that take the
/// connection over (console WebSockets) tune it. Valid while the request is being handled
/// (the connection owns the socket and outlives its requests).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(pub std::os::fd::RawFd);

impl ConnectionSocket {
    /// Bytes written to the connection that its peer has not acknowledged yet (`SIOCOUTQ`):
    /// what a peer that stopped reading leaves piled up in the kernel for it.
    ///
    /// # Safety
    /// Call only while the connection that carried this extension is open (its owner, e.g.
    /// the WebSocket taken over from it, is alive).
    pub unsafe fn unsent_bytes(self) -> Option<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: the caller guarantees the descriptor is open; TIOCOUTQ (= SIOCOUTQ) writes
        // one int.
        let rc = unsafe { libc::ioctl(self.0, libc::TIOCOUTQ, &mut queued) };
        (rc == 0).then(|| usize::try_from(queued).unwrap_or(0))
    }
}

/// A connection after the optional TLS handshake.
enum Io {
    Plain(TcpStream),
    /// `Err` when the handshake failed (logged).
    Tls(Result<Box<tokio_rustls::server::TlsStream<TcpStream>>, ()>),
}

/// Runs the TLS handshake, if any, within `limit`. `Err` when it ran out of time.
async fn accept_tls(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    limit: Duration,
    peer: std::net::SocketAddr,
) -> Result<Io, ()> {
    let Some(acceptor) = tls else {
        return Ok(Io::Plain(stream));
    };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Ok(Io::Tls(Ok(Box::new(s)))),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            Ok(Io::Tls(Err(())))
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            Err(())
        }
    }
}

/// Whether hyper ended the connection because the request headers did not arrive in time.
fn is_header_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Clone)]
struct Activity {
    in_flight: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

/// Marks one request in flight until dropped.
struct InFlight(Activity);

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: Arc::default(),
            idle_since: Arc::new(Mutex::new(Instant::now())),
        }
    }

    fn begin(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// Completes once the connection has had no request in flight for `limit`.
async fn idle_expired(activity: &Activity, limit: Duration) {
    loop {
        let since = activity.idle_since();
        tokio::time::sleep_until(since + limit).await;
        if activity.in_flight.load(Ordering::SeqCst) == 0 && activity.idle_since() == since {
            return;
        }
        if activity.in_flight.load(Ordering::SeqCst) > 0 {
            // Busy: look again one period later (the period restarts when it goes idle).
            tokio::time::sleep(limit).await;
        }
    }
}
