//! The 169.254.169.254 metadata service, served natively inside each network's namespace.
//!
//! For every network the agent runs one [`MetadataServer`] in the network's `qdhcp-<net-id>`
//! namespace, whose DHCP device holds 169.254.169.254/32; guests reach it through the
//! host route DHCP pushes (option 121). There is no proxy and no shared secret as in neutron's
//! metadata agent: the server sees the guest's TCP connection itself.
//!
//! **Who is asking** is decided only by what the kernel says: the network (the namespace the
//! socket lives in), the TCP source address, and the MAC the namespace's neighbour table holds
//! for that address. [`MetadataSource::identify`] maps (network, IP, MAC) to a port and its
//! server. `X-Forwarded-For` and every other client header are ignored for identification. A
//! caller without a neighbour entry, or whose (IP, MAC) matches no port, gets
//! `404 No instance for <ip>`. (Stopping a guest from answering ARP for another guest's IP is
//! port security's job; the MAC check narrows what a spoofed source address can reach.)
//! The MAC is looked up once per TCP connection, on its first request, from a neighbour dump
//! that started after the connection was accepted (connections arriving together share one
//! dump; dumps on the namespace's netlink socket run one at a time); `identify` runs inline on
//! every request and must not block. Each server's documents are rendered once and kept
//! while its metadata stays the same (`meta_data.json` gets a fresh `random_seed` per answer).
//!
//! **Trees** (GET; unknown paths → 404 with a short text body):
//!
//! * EC2 (`ec2.rs`): `/` lists versions (`1.0` … `2009-04-04`, `latest`);
//!   `/<version>/meta-data/…` and `/<version>/user-data`.
//! * OpenStack (`openstack.rs`): `/openstack` lists versions (`2012-08-10` … `2018-08-27`,
//!   `latest`); `/openstack/<version>/meta_data.json`, `network_data.json`,
//!   `vendor_data.json`, `vendor_data2.json`, `user_data`, and `password` (GET, and POST once:
//!   409 afterwards, 400 over 1020 bytes).
//! * Session tokens as IMDSv2: `PUT /latest/api/token` with
//!   `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600` returns a token bound to the server;
//!   `X-aws-ec2-metadata-token` on the EC2 tree must be valid (401 otherwise). With
//!   [`MetadataOptions::require_tokens`] the EC2 tree needs one; the OpenStack tree stays open,
//!   as in nova.
//!
//! **Limits**: a token bucket per source IP (checked before any lookup) and per server
//! ([`MetadataOptions::requests_per_second`], [`MetadataOptions::burst`]; 429 with
//! `Retry-After`), a deadline per request (`503` after 10 s), at most 256 connections per
//! network, request heads of at most 16 KiB read within 10 s, password bodies of at most
//! 1020 bytes; other bodies are never read.
//!
//! ```no_run
//! # async fn demo(source: std::sync::Arc<dyn hyperlet::metadata::MetadataSource>)
//! # -> Result<(), hyperlet::metadata::MetadataError> {
//! use hyperlet::metadata::{MetadataOptions, MetadataServer};
//!
//! let net = "4e1b0a9c-0000-4000-8000-000000000001";
//! let server = MetadataServer::start(
//!     &format!("qdhcp-{net}"),
//!     net,
//!     "169.254.169.254:80".parse().unwrap(),
//!     source,
//!     MetadataOptions { require_tokens: false, ..MetadataOptions::default() },
//! )
//! .await?;
//! // A guest on the network: curl http://169.254.169.254/openstack/latest/meta_data.json
//! server.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use crate::net::NetError;

mod app;
mod documents;
mod ec2;
mod limit;
mod openstack;
mod reply;
mod server;
mod source;
mod stats;
mod tokens;

pub use app::{router, IdentifyPeer, MAX_PASSWORD_BYTES, REQUEST_TIMEOUT};
pub use server::MetadataServer;
pub use source::{InstanceMetadata, MetadataSource, SetPasswordError};
pub use stats::{MetadataStats, STATUS_CODES};

#[cfg(test)]
mod tests;

/// How the service treats callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataOptions {
    /// Whether the EC2 tree requires an IMDSv2-style session token (default: false).
    pub require_tokens: bool,
    /// Requests per second each source IP and each server may make after a burst
    /// (default: 10).
    pub requests_per_second: u32,
    /// Requests each source IP and each server may make at once (default: 50).
    pub burst: u32,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            require_tokens: false,
            requests_per_second: 10,
            burst: 50,
        }
    }
}

impl MetadataOptions {
    /// The largest accepted rate or burst: a million requests per second, more than one
    /// node serves, so this value means "no limit".
    pub const MAX_RATE: u32 = 1_000_000;

    /// Checks that the rate and the burst are in 1..=[`Self::MAX_RATE`].
    ///
    /// # Errors
    ///
    /// [`MetadataError::InvalidOptions`] naming the value that is out of range.
    pub fn validate(&self) -> Result<(), MetadataError> {
        for (what, value) in [
            ("requests_per_second", self.requests_per_second),
            ("burst", self.burst),
        ] {
            if !(1..=Self::MAX_RATE).contains(&value) {
                return Err(MetadataError::InvalidOptions(format!(
                    "{what} is {value}; it must be from 1 to {}",
                    Self::MAX_RATE
                )));
            }
        }
        Ok(())
    }
}

/// Errors of the metadata service.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The options are out of range.
    #[error("Invalid metadata options: {0}")]
    InvalidOptions(String),
    /// The network id is empty, too long or has characters other than printable ASCII.
    #[error("Invalid network id {0:?}: it must be 1-64 printable ASCII characters")]
    InvalidNetworkId(String),
    /// The namespace is invalid, missing, or could not be entered (or its neighbour table
    /// could not be opened).
    #[error("Cannot serve metadata in network namespace {namespace:?}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What failed.
        #[source]
        source: NetError,
    },
    /// The listen address is not configured in the namespace.
    #[error(
        "Cannot listen on {listen} in namespace {namespace:?}: the address is not configured there (add it to the namespace's device first)"
    )]
    AddressNotAvailable {
        /// The address asked for.
        listen: SocketAddr,
        /// The namespace.
        namespace: String,
    },
    /// Something else listens on the address already.
    #[error(
        "Cannot listen on {listen} in namespace {namespace:?}: the address is in use (is another metadata server running for this network?)"
    )]
    AddressInUse {
        /// The address asked for.
        listen: SocketAddr,
        /// The namespace.
        namespace: String,
    },
    /// Binding or listening failed otherwise.
    #[error("Cannot listen on {listen} in namespace {namespace:?}")]
    Bind {
        /// The address asked for.
        listen: SocketAddr,
        /// The namespace.
        namespace: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Checks a network id: 1–64 printable ASCII characters.
fn validate_network_id(id: &str) -> Result<(), MetadataError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(MetadataError::InvalidNetworkId(id.to_owned()))
    }
}
