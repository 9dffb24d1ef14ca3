//! The native DHCP server: static leases for the ports of one network, served inside the
//! network's `qdhcp-<net-id>` namespace (no dnsmasq).
//!
//! Like neutron's dnsmasq with one `dhcp-host` entry per port, the server answers only MACs
//! that have a port ([`LeaseSource`]) and always hands out the port's fixed address; it keeps
//! no lease state of its own. One [`DhcpServer`] is one UDP socket on `0.0.0.0:67`, bound to the
//! namespace side of the DHCP port's veth (`ns-<port[:11]>`), served by one tokio task:
//!
//! * DISCOVER → OFFER; REQUEST (selecting, init-reboot, renewing, rebinding) → ACK when the
//!   requested address (option 50, else `ciaddr`) is the port's, NAK otherwise; INFORM → ACK
//!   with the configuration but no address or lease time; RELEASE and DECLINE are logged and
//!   counted. Unknown MACs, other servers' requests and malformed or oversized datagrams get
//!   no answer and count as ignored.
//! * Options: subnet mask, router, DNS, host name, domain name, interface MTU, lease time with
//!   T1 (50 %) and T2 (87.5 %), the server identifier, and — when the lease has host routes —
//!   classless static routes (121, plus Microsoft's 249) with `0.0.0.0/0 via gateway` added,
//!   since clients that get option 121 ignore option 3 (RFC 3442).
//! * Replies go to the relay (`giaddr`) when there is one, else by unicast to `ciaddr` when the
//!   client has an address and did not ask for broadcast, else to 255.255.255.255:68 on the
//!   interface. NAKs without a relay are always broadcast.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::dhcp::DhcpError> {
//! use std::net::Ipv4Addr;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hyperlet::dhcp::{DhcpServer, HostRoute, Lease, LeaseSource};
//!
//! struct OnePort;
//! impl LeaseSource for OnePort {
//!     fn lease_for(&self, mac: [u8; 6]) -> Option<Lease> {
//!         (mac == [0xfa, 0x16, 0x3e, 0, 0, 1]).then(|| Lease {
//!             mac,
//!             ip: Ipv4Addr::new(198, 51, 100, 10),
//!             prefix_len: 24,
//!             gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
//!             dns: vec![Ipv4Addr::new(198, 51, 100, 2)],
//!             mtu: Some(1450),
//!             hostname: Some("vm-1".into()),
//!             domain_name: Some("openstacklocal".into()),
//!             host_routes: vec![HostRoute {
//!                 destination: Ipv4Addr::new(169, 254, 169, 254),
//!                 prefix_len: 32,
//!                 nexthop: Ipv4Addr::new(198, 51, 100, 2),
//!             }],
//!             lease_time: Duration::from_secs(86_400),
//!         })
//!     }
//! }
//!
//! let server = DhcpServer::start(
//!     "qdhcp-4e1b0a9c-0000-4000-8000-000000000001",
//!     "ns-7d2c1e3f-00",
//!     Ipv4Addr::new(198, 51, 100, 2),
//!     Arc::new(OnePort),
//! )
//! .await?;
//! println!("{:?}", server.stats());
//! server.stop().await;
//! # Ok(()) }
//! ```

use std::io;
use std::net::Ipv4Addr;

use crate::net::NetError;

mod exchange;
mod lease;
mod options;
mod request;
mod server;
mod socket;

pub use lease::{HostRoute, Lease, LeaseSource};

/// A raw DHCP client's pieces, for the tests and the benchmark (not the agent's API): the
/// request encoder and the device-bound socket the server uses too.
#[doc(hidden)]
pub mod client {
    pub use super::exchange::client_request as request;
    pub use super::socket::{open as open_socket, SocketError};
}
pub use server::{DhcpServer, DhcpStats};

#[cfg(test)]
mod tests;

/// Errors of starting a DHCP server.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The server address cannot identify a DHCP server.
    #[error("Invalid DHCP server address {0}: must be a unicast IPv4 address")]
    InvalidServerIp(Ipv4Addr),
    /// The namespace or interface name was refused before any side effect.
    #[error("Invalid namespace or interface name for the DHCP server")]
    InvalidName(#[source] NetError),
    /// The network's namespace does not exist.
    #[error(
        "Network namespace {0:?} does not exist: create the network's DHCP namespace before its DHCP server"
    )]
    NamespaceNotFound(String),
    /// The interface does not exist inside the namespace.
    #[error("Interface {ifname:?} does not exist in network namespace {namespace:?}")]
    InterfaceNotFound {
        /// The namespace.
        namespace: String,
        /// The interface name.
        ifname: String,
    },
    /// Another socket holds UDP port 67 on that interface without sharing it.
    #[error(
        "UDP port 67 on {ifname:?} in network namespace {namespace:?} is taken by another DHCP server (dnsmasq?): stop it first"
    )]
    AddressInUse {
        /// The namespace.
        namespace: String,
        /// The interface name.
        ifname: String,
    },
    /// The agent lacks the privileges to open the socket.
    #[error(
        "Permission denied opening the DHCP socket on {ifname:?} in network namespace {namespace:?}: needs root (CAP_SYS_ADMIN, CAP_NET_BIND_SERVICE, CAP_NET_RAW)"
    )]
    PermissionDenied {
        /// The namespace.
        namespace: String,
        /// The interface name.
        ifname: String,
    },
    /// Entering the namespace failed.
    #[error("Cannot enter network namespace {namespace:?} to start its DHCP server")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What went wrong.
        #[source]
        source: NetError,
    },
    /// A step of opening the socket failed.
    #[error("Cannot {step} for the DHCP server on {ifname:?} in network namespace {namespace:?}")]
    Socket {
        /// The namespace.
        namespace: String,
        /// The interface name.
        ifname: String,
        /// The step that failed, e.g. `set SO_BROADCAST`.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
