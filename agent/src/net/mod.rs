//! Native networking primitives: named network namespaces and links.
//!
//! This is the foundation of the neutron L2/DHCP/metadata half of the agent. Everything here
//! talks to the kernel directly — namespaces through `unshare`/`setns`/bind mounts, links and
//! addresses through rtnetlink — and never forks `ip`.
//!
//! * [`netns`] — named namespaces, compatible with iproute2: a namespace `NAME` is a bind mount
//!   of a network namespace at `/run/netns/NAME`, so `ip netns list` and
//!   `ip netns exec NAME …` see ours and we see theirs. [`netns::run_in`] runs a closure on a
//!   thread inside a namespace; a socket created there stays in that namespace.
//! * [`links`] — bridges, veth pairs, VLANs and VXLANs, enslaving, up/down, MTU and IPv4
//!   addresses, in the host namespace or inside a named one ([`links::Netlink`]). Every request
//!   has a deadline.
//! * [`firewall`] — security groups and port security as nftables tables, rendered and diffed
//!   (applied by `ops::security_groups::apply`);
//! * [`security`] — security group, rule and address-pair records.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::net::NetError> {
//! use hyperlet::net::{links::Netlink, netns};
//!
//! netns::create("qdhcp-4e1b0a9c-0000-4000-8000-000000000001")?;
//! let host = Netlink::host().await?;
//! host.create_bridge("brq4e1b0a9c-00").await?;
//! host.create_veth("tap4e1b0a9c-00", "ns-4e1b0a9c-00", Some("qdhcp-4e1b0a9c-0000-4000-8000-000000000001"))
//!     .await?;
//! host.set_master("tap4e1b0a9c-00", "brq4e1b0a9c-00").await?;
//! host.set_up("tap4e1b0a9c-00").await?;
//! let ns = Netlink::in_namespace("qdhcp-4e1b0a9c-0000-4000-8000-000000000001").await?;
//! ns.add_ipv4("ns-4e1b0a9c-00", "198.51.100.2".parse().unwrap(), 24).await?;
//! ns.set_up("ns-4e1b0a9c-00").await?;
//! # Ok(()) }
//! ```

use std::io;
use std::time::Duration;

pub mod cidr;
pub mod fdb;
pub mod firewall;
pub mod links;
pub mod model;
pub mod neigh;
pub mod netns;
pub mod security;

pub use cidr::Ipv4Cidr;
pub use model::{BackendNetwork, NetworkType};

#[cfg(test)]
mod tests;

/// Errors of the networking primitives.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A namespace or interface name was refused before any side effect.
    #[error("Invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "namespace" or "interface".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A numeric argument (VLAN id, VNI, MTU, prefix length) was out of range.
    #[error("Invalid {what} {value}: must be in {min}..={max}")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The value as given.
        value: u64,
        /// The smallest allowed value.
        min: u64,
        /// The largest allowed value.
        max: u64,
    },
    /// The namespace already exists.
    #[error("Network namespace {0:?} already exists (remove it with `ip netns delete {0}`)")]
    NamespaceExists(String),
    /// The namespace does not exist.
    #[error("Network namespace {0:?} does not exist under /run/netns")]
    NamespaceNotFound(String),
    /// The link already exists.
    #[error("Network interface {0:?} already exists")]
    LinkExists(String),
    /// The link does not exist (in the namespace the request ran in).
    #[error("Network interface {0:?} does not exist")]
    LinkNotFound(String),
    /// The kernel does not support the link kind (module missing).
    #[error(
        "The kernel does not support {kind} links: load the {module} module (`modprobe {module}`) or use a kernel built with {config}"
    )]
    Unsupported {
        /// The link kind: bridge, veth, vlan, vxlan.
        kind: &'static str,
        /// The kernel module that provides it.
        module: &'static str,
        /// The kernel build option that provides it.
        config: &'static str,
    },
    /// The caller lacks privileges.
    #[error("Permission denied while trying to {op}: needs CAP_SYS_ADMIN and CAP_NET_ADMIN (run as root)")]
    PermissionDenied {
        /// What was attempted.
        op: String,
    },
    /// A system call failed.
    #[error("Cannot {op}")]
    Sys {
        /// What was attempted, with the values that matter.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("Netlink request failed: {op}")]
    Netlink {
        /// What was attempted, with the values that matter.
        op: String,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A netlink request did not answer in time.
    #[error("Netlink request timed out after {after:?}: {op}")]
    Timeout {
        /// What was attempted.
        op: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A helper thread panicked or could not be started.
    #[error("Helper thread for {op} failed: {reason}")]
    Thread {
        /// What the thread was doing.
        op: String,
        /// The panic message or spawn error.
        reason: String,
    },
}

impl NetError {
    /// Wraps an OS error, turning EPERM/EACCES into [`NetError::PermissionDenied`].
    pub(crate) fn sys(op: impl Into<String>, source: io::Error) -> Self {
        let op = op.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Self::PermissionDenied { op },
            _ => Self::Sys { op, source },
        }
    }
}

/// Checks an interface name: 1–15 bytes (IFNAMSIZ − 1), no `/`, whitespace, `:` or NUL, not
/// `.` or `..`.
///
/// # Errors
///
/// [`NetError::InvalidName`] explaining which rule was broken.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            what: "interface",
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 15 {
        return bad("must be at most 15 bytes (IFNAMSIZ - 1)");
    }
    if name == "." || name == ".." {
        return bad("must not be . or ..");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace() || !b.is_ascii())
    {
        return bad("only printable ASCII without '/', ':' or whitespace is allowed");
    }
    Ok(())
}

/// Checks that `value` lies in `min..=max`.
pub(crate) fn check_range(
    what: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), NetError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(NetError::OutOfRange {
            what,
            value,
            min,
            max,
        })
    }
}
