//! What a port gets over DHCP, and where the server looks it up.

use std::net::Ipv4Addr;
use std::time::Duration;

/// A static route pushed with option 121 (and its Microsoft copy, option 249).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The destination network (host bits beyond `prefix_len` are ignored).
    pub destination: Ipv4Addr,
    /// The destination's prefix length, 0–32; a route with a longer prefix is not sent.
    pub prefix_len: u8,
    /// The router to reach it through; `0.0.0.0` means on-link.
    pub nexthop: Ipv4Addr,
}

/// What one port gets: a static lease, like a neutron `dhcp-host` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The port's MAC address; the lease is only given to this client hardware address.
    pub mac: [u8; 6],
    /// The port's fixed IPv4 address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length (option 1), 0–32.
    pub prefix_len: u8,
    /// The subnet's gateway (option 3, and the default route in option 121).
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers (option 6); none sends no option.
    pub dns: Vec<Ipv4Addr>,
    /// The interface MTU (option 26); values below 68 are not sent.
    pub mtu: Option<u16>,
    /// The host name (option 12).
    pub hostname: Option<String>,
    /// The domain name (option 15).
    pub domain_name: Option<String>,
    /// Static routes (options 121 and 249), e.g. `169.254.169.254/32` via the DHCP port for
    /// metadata.
    pub host_routes: Vec<HostRoute>,
    /// The lease time (option 51); T1 and T2 are 50 % and 87.5 % of it. Whole seconds are sent,
    /// at least one; a duration of `u32::MAX` seconds or more is an infinite lease.
    pub lease_time: Duration,
}

/// Where leases come from (the agent's ports table).
///
/// [`LeaseSource::lease_for`] is called for every packet on the server's task: it must be cheap
/// and must not block for long (an in-memory map behind a lock is the intended shape).
pub trait LeaseSource: Send + Sync + 'static {
    /// The lease of the port with this MAC, or `None` when no port has it (the client is then
    /// ignored).
    fn lease_for(&self, mac: [u8; 6]) -> Option<Lease>;
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
