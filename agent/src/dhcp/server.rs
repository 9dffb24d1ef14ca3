//! The running server: one socket, one tokio task, a few counters.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{MessageType, SERVER_PORT};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};

use super::exchange::{self, Action, Exchange};
use super::lease::{format_mac, LeaseSource};
use super::request::MAX_REQUEST_LEN;
use super::socket::{self, SocketError};
use super::DhcpError;
use crate::net::{netns, validate_ifname, NetError};

/// How long one reply may wait for room in the socket's send buffer.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause after a failed receive, so a persistent error cannot spin the task.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A snapshot of a server's counters since it started.
///
/// The message counters count well-formed requests of that type whatever the answer;
/// `offers`, `acks` and `naks` count replies sent; `ignored` counts datagrams that got no
/// answer and no action (unknown MAC, another server's request, malformed or oversized).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhcpStats {
    /// DISCOVERs received.
    pub discovers: u64,
    /// OFFERs sent.
    pub offers: u64,
    /// REQUESTs received.
    pub requests: u64,
    /// ACKs sent (to REQUESTs and INFORMs).
    pub acks: u64,
    /// NAKs sent.
    pub naks: u64,
    /// RELEASEs received.
    pub releases: u64,
    /// DECLINEs received (the client found its address in use).
    pub declines: u64,
    /// INFORMs received.
    pub informs: u64,
    /// Datagrams ignored: unknown MAC, another server's request, malformed or oversized.
    pub ignored: u64,
}

/// The live counters behind [`DhcpStats`].
#[derive(Debug, Default)]
struct Counters {
    discovers: AtomicU64,
    offers: AtomicU64,
    requests: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    releases: AtomicU64,
    declines: AtomicU64,
    informs: AtomicU64,
    ignored: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn received(&self, kind: Option<MessageType>) {
        match kind {
            Some(MessageType::Discover) => Self::bump(&self.discovers),
            Some(MessageType::Request) => Self::bump(&self.requests),
            Some(MessageType::Release) => Self::bump(&self.releases),
            Some(MessageType::Decline) => Self::bump(&self.declines),
            Some(MessageType::Inform) => Self::bump(&self.informs),
            _ => {}
        }
    }

    fn sent(&self, kind: MessageType) {
        match kind {
            MessageType::Offer => Self::bump(&self.offers),
            MessageType::Ack => Self::bump(&self.acks),
            MessageType::Nak => Self::bump(&self.naks),
            _ => {}
        }
    }

    fn snapshot(&self) -> DhcpStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DhcpStats {
            discovers: get(&self.discovers),
            offers: get(&self.offers),
            requests: get(&self.requests),
            acks: get(&self.acks),
            naks: get(&self.naks),
            releases: get(&self.releases),
            declines: get(&self.declines),
            informs: get(&self.informs),
            ignored: get(&self.ignored),
        }
    }
}

/// A running DHCP server on one interface inside one namespace.
///
/// Dropping it aborts the task, which closes the socket; [`DhcpServer::stop`] does the same and
/// waits until the socket is closed.
#[derive(Debug)]
pub struct DhcpServer {
    namespace: String,
    ifname: String,
    server_ip: Ipv4Addr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl DhcpServer {
    /// Opens UDP 0.0.0.0:67 on `ifname` inside namespace `namespace` (with `SO_REUSEADDR`,
    /// `SO_BROADCAST` and `SO_BINDTODEVICE`) and serves it on a new tokio task, answering the
    /// MACs `source` knows, as `server_ip` (option 54).
    ///
    /// # Errors
    ///
    /// [`DhcpError::InvalidServerIp`] or [`DhcpError::InvalidName`] before any side effect;
    /// [`DhcpError::NamespaceNotFound`], [`DhcpError::InterfaceNotFound`],
    /// [`DhcpError::AddressInUse`], [`DhcpError::PermissionDenied`],
    /// [`DhcpError::Namespace`] or [`DhcpError::Socket`] when the socket cannot be opened. On
    /// error nothing is left open.
    pub async fn start(
        namespace: &str,
        ifname: &str,
        server_ip: Ipv4Addr,
        source: Arc<dyn LeaseSource>,
    ) -> Result<DhcpServer, DhcpError> {
        if server_ip.is_unspecified() || server_ip.is_broadcast() || server_ip.is_multicast() {
            return Err(DhcpError::InvalidServerIp(server_ip));
        }
        netns::validate_name(namespace).map_err(DhcpError::InvalidName)?;
        validate_ifname(ifname).map_err(DhcpError::InvalidName)?;

        let (ns, dev) = (namespace.to_owned(), ifname.to_owned());
        let opened = tokio::task::spawn_blocking(move || {
            netns::run_in(&ns, move || socket::open(&dev, SERVER_PORT))
        })
        .await
        .map_err(|e| DhcpError::Namespace {
            namespace: namespace.to_owned(),
            source: NetError::Thread {
                op: format!("enter namespace {namespace}"),
                reason: e.to_string(),
            },
        })?;
        let std_socket = match opened {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => return Err(socket_error(namespace, ifname, e)),
            Err(NetError::NamespaceNotFound(_)) => {
                return Err(DhcpError::NamespaceNotFound(namespace.to_owned()))
            }
            Err(source) => {
                return Err(DhcpError::Namespace {
                    namespace: namespace.to_owned(),
                    source,
                })
            }
        };
        let socket = UdpSocket::from_std(std_socket).map_err(|source| DhcpError::Socket {
            namespace: namespace.to_owned(),
            ifname: ifname.to_owned(),
            step: "register the socket with the tokio runtime",
            source,
        })?;

        let counters = Arc::new(Counters::default());
        // At info level so that warnings from the task say which namespace they come from.
        let span = tracing::info_span!("dhcp", namespace, interface = ifname, server = %server_ip);
        let task =
            tokio::spawn(serve(socket, server_ip, source, Arc::clone(&counters)).instrument(span));
        debug!(namespace, interface = ifname, server = %server_ip, "DHCP server started");
        Ok(DhcpServer {
            namespace: namespace.to_owned(),
            ifname: ifname.to_owned(),
            server_ip,
            counters,
            task,
        })
    }

    /// The counters since [`DhcpServer::start`].
    pub fn stats(&self) -> DhcpStats {
        self.counters.snapshot()
    }

    /// The namespace the server runs in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The interface the socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The server identifier (option 54).
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// Whether the task is still serving (false only after a bug made it panic).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the task and waits until it is gone; the socket is closed when this returns, so
    /// port 67 on the interface is free again.
    pub async fn stop(mut self) {
        self.task.abort();
        // The task's future (and its socket) is dropped before the handle reports cancellation.
        let _ = (&mut self.task).await;
        debug!(
            namespace = self.namespace,
            interface = self.ifname,
            "DHCP server stopped"
        );
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Turns a failed socket step into the error that says what to do.
fn socket_error(namespace: &str, ifname: &str, e: SocketError) -> DhcpError {
    let (namespace, ifname) = (namespace.to_owned(), ifname.to_owned());
    match (e.step, e.source.raw_os_error()) {
        ("set SO_BINDTODEVICE", Some(libc::ENODEV)) => {
            DhcpError::InterfaceNotFound { namespace, ifname }
        }
        (_, Some(libc::EADDRINUSE)) => DhcpError::AddressInUse { namespace, ifname },
        (_, Some(libc::EPERM | libc::EACCES)) => DhcpError::PermissionDenied { namespace, ifname },
        (step, _) => DhcpError::Socket {
            namespace,
            ifname,
            step,
            source: e.source,
        },
    }
}

/// The server loop: receive, decide, answer. Never returns; ends when the task is aborted.
async fn serve(
    socket: UdpSocket,
    server_ip: Ipv4Addr,
    source: Arc<dyn LeaseSource>,
    counters: Arc<Counters>,
) {
    // One byte more than the largest request, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; MAX_REQUEST_LEN + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                debug!(error = %e, "DHCP receive failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
                continue;
            }
        };
        let exchange = exchange::handle(&buf[..len], server_ip, source.as_ref());
        counters.received(exchange.received);
        answer(&socket, &counters, from, exchange).await;
    }
}

/// Sends the reply of one exchange (if any), counts it and logs one debug line.
async fn answer(socket: &UdpSocket, counters: &Counters, from: SocketAddr, exchange: Exchange) {
    let Exchange {
        received,
        mac,
        xid,
        action,
    } = exchange;
    let mac = mac.map(format_mac).unwrap_or_default();
    let xid = format!("{xid:#010x}");
    match action {
        Action::Reply {
            kind,
            packet,
            to,
            ip,
        } => match tokio::time::timeout(SEND_TIMEOUT, socket.send_to(&packet, to)).await {
            Ok(Ok(_)) => {
                counters.sent(kind);
                debug!(%mac, %xid, ?received, reply = ?kind, %ip, %to, "DHCP exchange");
            }
            Ok(Err(e)) => {
                warn!(%mac, %xid, ?received, reply = ?kind, %to, error = %e, "DHCP reply could not be sent");
            }
            Err(_) => {
                warn!(%mac, %xid, ?received, reply = ?kind, %to, "DHCP reply timed out in the send buffer");
            }
        },
        Action::Noted => {
            debug!(%mac, %xid, ?received, %from, "DHCP client message noted, no reply");
        }
        Action::Ignored(reason) => {
            Counters::bump(&counters.ignored);
            debug!(%mac, %xid, ?received, %from, reason, "DHCP datagram ignored");
        }
    }
}
