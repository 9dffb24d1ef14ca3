//! The metadata server of one network: a listening socket made inside the network's namespace,
//! served on the tokio runtime, with the peer's MAC read from that namespace's neighbour table
//! once per connection.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Request;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::app::{App, PeerConnection, PeerMacs, REQUEST_TIMEOUT};
use super::source::MetadataSource;
use super::stats::Counters;
use super::{MetadataError, MetadataOptions, MetadataStats};
use crate::net::neigh::Neighbours;
use crate::net::{netns, NetError};

/// The most connections served at once per network; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection stays open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long [`MetadataServer::stop`] lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How many times a failed neighbour lookup is tried in all before the request gets a 503.
const NEIGHBOUR_ATTEMPTS: usize = 2;

/// The metadata service of one network, listening inside its namespace.
///
/// ```no_run
/// # async fn demo(source: std::sync::Arc<dyn hyperlet::metadata::MetadataSource>)
/// # -> Result<(), hyperlet::metadata::MetadataError> {
/// use hyperlet::metadata::{MetadataOptions, MetadataServer};
///
/// let net = "4e1b0a9c-0000-4000-8000-000000000001";
/// let server = MetadataServer::start(
///     &format!("qdhcp-{net}"),
///     net,
///     "169.254.169.254:80".parse().unwrap(),
///     source,
///     MetadataOptions::default(),
/// )
/// .await?;
/// // … later, when the network goes away:
/// server.stop().await;
/// # Ok(()) }
/// ```
///
/// Dropping it without [`MetadataServer::stop`] aborts the accept loop at once.
#[derive(Debug)]
pub struct MetadataServer {
    namespace: String,
    network_id: String,
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl MetadataServer {
    /// Binds `listen` (normally `169.254.169.254:80`) inside `namespace` and serves the
    /// metadata of network `network_id` from `source`.
    ///
    /// The address must already be configured in the namespace (the DHCP port's device holds
    /// 169.254.169.254/32). Callers are identified by the TCP source address and the MAC the
    /// namespace's neighbour table holds for it.
    ///
    /// # Errors
    ///
    /// [`MetadataError::InvalidOptions`] or [`MetadataError::InvalidNetworkId`] before anything
    /// is done; [`MetadataError::Namespace`] when the namespace is missing or cannot be entered;
    /// [`MetadataError::AddressNotAvailable`], [`MetadataError::AddressInUse`] or
    /// [`MetadataError::Bind`] when the socket cannot be bound.
    pub async fn start(
        namespace: &str,
        network_id: &str,
        listen: SocketAddr,
        source: Arc<dyn MetadataSource>,
        options: MetadataOptions,
    ) -> Result<MetadataServer, MetadataError> {
        options.validate()?;
        super::validate_network_id(network_id)?;
        let in_namespace = |source: NetError| MetadataError::Namespace {
            namespace: namespace.to_owned(),
            source,
        };
        netns::validate_name(namespace).map_err(in_namespace)?;
        let neighbours = Neighbours::in_namespace(namespace)
            .await
            .map_err(in_namespace)?;
        let listener = bind_in(namespace, listen).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetadataError::Bind {
                listen,
                namespace: namespace.to_owned(),
                source,
            })?;
        let macs = Arc::new(NeighbourMacs(neighbours));
        let app = App::new(network_id, source, options, macs, REQUEST_TIMEOUT);
        let counters = app.counters();
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            listener,
            app,
            stop.clone(),
            network_id.to_owned(),
        ));
        tracing::info!(%namespace, %network_id, %local_addr, "metadata service listening");
        Ok(MetadataServer {
            namespace: namespace.to_owned(),
            network_id: network_id.to_owned(),
            local_addr,
            stop,
            task: Some(task),
            counters,
        })
    }

    /// The address the server listens on (inside its namespace).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The namespace the server listens in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The network whose servers it answers.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// Its answers by status code and the callers it could not identify, since it started.
    pub fn stats(&self) -> MetadataStats {
        self.counters.snapshot()
    }

    /// Stops accepting, lets requests in flight finish for up to 2 s, then closes every
    /// connection and the socket.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!(namespace = %self.namespace, network_id = %self.network_id, "metadata service stopped");
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates the listening socket on a thread inside `namespace` and hands it to tokio.
async fn bind_in(namespace: &str, listen: SocketAddr) -> Result<TcpListener, MetadataError> {
    let ns = namespace.to_owned();
    let bound = tokio::task::spawn_blocking(move || {
        netns::run_in(&ns, move || {
            let listener = std::net::TcpListener::bind(listen)?;
            listener.set_nonblocking(true)?;
            Ok::<_, io::Error>(listener)
        })
    })
    .await
    .map_err(|e| MetadataError::Namespace {
        namespace: namespace.to_owned(),
        source: NetError::Thread {
            op: format!("bind {listen} in namespace {namespace}"),
            reason: e.to_string(),
        },
    })?
    .map_err(|source| MetadataError::Namespace {
        namespace: namespace.to_owned(),
        source,
    })?;
    let bind_error = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrNotAvailable => MetadataError::AddressNotAvailable {
            listen,
            namespace: namespace.to_owned(),
        },
        io::ErrorKind::AddrInUse => MetadataError::AddressInUse {
            listen,
            namespace: namespace.to_owned(),
        },
        _ => MetadataError::Bind {
            listen,
            namespace: namespace.to_owned(),
            source,
        },
    };
    let listener = bound.map_err(bind_error)?;
    TcpListener::from_std(listener).map_err(bind_error)
}

/// The peer's MAC from the namespace's neighbour table: from a dump that started after the
/// connection was accepted, shared by the connections that need one at the same time (one
/// dump at a time on the one socket).
struct NeighbourMacs(Neighbours);

impl PeerMacs for NeighbourMacs {
    fn mac(
        &self,
        peer: SocketAddr,
        since: Instant,
    ) -> BoxFuture<'_, Result<Option<[u8; 6]>, String>> {
        Box::pin(async move {
            let ip = match peer.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(ip) => ip,
                    None => return Ok(None),
                },
            };
            let mut attempt = 1;
            loop {
                match self.0.ipv4_mac_since(ip, since).await {
                    Ok(mac) => return Ok(mac),
                    Err(e) if attempt >= NEIGHBOUR_ATTEMPTS => return Err(e.to_string()),
                    Err(e) => {
                        tracing::debug!(%ip, error = %e, "neighbour lookup failed; trying again");
                        attempt += 1;
                    }
                }
            }
        })
    }
}

/// Accepts connections until `stop` is cancelled, then drains them for [`STOP_GRACE`] and
/// closes whatever is left. Connection tasks live in a `JoinSet`, so aborting this task (on
/// drop) closes every connection too.
async fn accept_loop(listener: TcpListener, app: App, stop: CancellationToken, network_id: String) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(%network_id, error = %e, "metadata accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(PeerConnection::new(Instant::now()));
        let app = app.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let connection = connection.clone();
            async move {
                let reply = app.serve(Some(peer), Some(&connection), req).await;
                Ok::<_, Infallible>(reply.into_http())
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "metadata connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(STOP_GRACE) => tracing::warn!(
            %network_id,
            "metadata requests did not finish in time; closing their connections"
        ),
    }
    connections.shutdown().await;
}
