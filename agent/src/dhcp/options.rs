//! The DHCP options a lease turns into.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, OptionCode, UnknownOption};

use super::lease::{HostRoute, Lease};

/// The Microsoft copy of the classless static routes option (same encoding as 121).
pub(crate) const MS_CLASSLESS_STATIC_ROUTE: u8 = 249;

/// An infinite lease (RFC 2131 §3.3).
const INFINITE: u32 = u32::MAX;

/// The netmask of a prefix length (`24` → `255.255.255.0`); `None` above 32.
pub(crate) fn netmask(prefix_len: u8) -> Option<Ipv4Addr> {
    (prefix_len <= 32).then(|| Ipv4Addr::from(crate::net::cidr::mask(prefix_len)))
}

/// The lease time in whole seconds as sent in option 51: at least 1, [`INFINITE`] at or above
/// `u32::MAX` seconds.
pub(crate) fn lease_seconds(lease_time: Duration) -> u32 {
    u32::try_from(lease_time.as_secs()).map_or(INFINITE, |s| s.max(1))
}

/// Appends one route in RFC 3442's compact form: the prefix length, the significant octets of
/// the destination (`⌈prefix_len / 8⌉` of them, host bits cleared) and the router. Routes with a
/// prefix longer than 32 are skipped.
fn push_route(out: &mut Vec<u8>, destination: Ipv4Addr, prefix_len: u8, nexthop: Ipv4Addr) {
    let Some(mask) = netmask(prefix_len) else {
        return;
    };
    let network = (u32::from(destination) & u32::from(mask)).to_be_bytes();
    out.push(prefix_len);
    out.extend_from_slice(&network[..usize::from(prefix_len).div_ceil(8)]);
    out.extend_from_slice(&nexthop.octets());
}

/// The value of options 121/249: the host routes, then `0.0.0.0/0 via gateway` when there is a
/// gateway and no default route among them (a client that gets option 121 ignores option 3,
/// RFC 3442). Empty when there are no host routes.
pub(crate) fn classless_routes(routes: &[HostRoute], gateway: Option<Ipv4Addr>) -> Vec<u8> {
    let mut out = Vec::new();
    if routes.is_empty() {
        return out;
    }
    for route in routes {
        push_route(&mut out, route.destination, route.prefix_len, route.nexthop);
    }
    if let Some(gateway) = gateway {
        if !routes.iter().any(|r| r.prefix_len == 0) {
            push_route(&mut out, Ipv4Addr::UNSPECIFIED, 0, gateway);
        }
    }
    out
}

/// The configuration options of `lease` (everything except the message type and the server
/// identifier). `with_lease_time` is false for the answer to an INFORM, which carries no lease.
pub(crate) fn lease_options(lease: &Lease, with_lease_time: bool) -> Vec<DhcpOption> {
    let mut opts = Vec::new();
    if let Some(mask) = netmask(lease.prefix_len) {
        opts.push(DhcpOption::SubnetMask(mask));
    }
    if let Some(gateway) = lease.gateway {
        opts.push(DhcpOption::Router(vec![gateway]));
    }
    if !lease.dns.is_empty() {
        opts.push(DhcpOption::DomainNameServer(lease.dns.clone()));
    }
    if let Some(name) = lease.hostname.as_deref().filter(|n| !n.is_empty()) {
        opts.push(DhcpOption::Hostname(name.to_owned()));
    }
    if let Some(domain) = lease.domain_name.as_deref().filter(|d| !d.is_empty()) {
        opts.push(DhcpOption::DomainName(domain.to_owned()));
    }
    if let Some(mtu) = lease.mtu.filter(|m| *m >= 68) {
        opts.push(DhcpOption::InterfaceMtu(mtu));
    }
    if with_lease_time {
        let secs = lease_seconds(lease.lease_time);
        opts.push(DhcpOption::AddressLeaseTime(secs));
        if secs != INFINITE {
            opts.push(DhcpOption::Renewal(secs / 2));
            opts.push(DhcpOption::Rebinding(
                u32::try_from(u64::from(secs) * 7 / 8).unwrap_or(secs),
            ));
        }
    }
    let routes = classless_routes(&lease.host_routes, lease.gateway);
    if !routes.is_empty() {
        opts.push(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::ClasslessStaticRoute,
            routes.clone(),
        )));
        opts.push(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(MS_CLASSLESS_STATIC_ROUTE),
            routes,
        )));
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: [u8; 4], prefix_len: u8, nexthop: [u8; 4]) -> HostRoute {
        HostRoute {
            destination: dest.into(),
            prefix_len,
            nexthop: nexthop.into(),
        }
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(0), Some(Ipv4Addr::new(0, 0, 0, 0)));
        assert_eq!(netmask(1), Some(Ipv4Addr::new(128, 0, 0, 0)));
        assert_eq!(netmask(20), Some(Ipv4Addr::new(255, 255, 240, 0)));
        assert_eq!(netmask(24), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(netmask(32), Some(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(netmask(33), None);
    }

    #[test]
    fn option_121_uses_the_compact_form() {
        // /32 → 4 octets, /24 → 3, /20 → 3 with the host bits cleared, /0 → none.
        let routes = [
            route([169, 254, 169, 254], 32, [198, 51, 100, 2]),
            route([10, 1, 2, 99], 24, [198, 51, 100, 1]),
            route([172, 16, 31, 7], 20, [0, 0, 0, 0]),
        ];
        let bytes = classless_routes(&routes, Some(Ipv4Addr::new(198, 51, 100, 1)));
        #[rustfmt::skip]
        let want = [
            32, 169, 254, 169, 254, 198, 51, 100, 2,
            24, 10, 1, 2, 198, 51, 100, 1,
            20, 172, 16, 16, 0, 0, 0, 0,
            0, 198, 51, 100, 1,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn option_121_default_route_rules() {
        let metadata = route([169, 254, 169, 254], 32, [198, 51, 100, 2]);
        // No gateway: no default route is invented.
        assert_eq!(
            classless_routes(std::slice::from_ref(&metadata), None),
            [32, 169, 254, 169, 254, 198, 51, 100, 2]
        );
        // No host routes: no option at all, option 3 does the job.
        assert!(classless_routes(&[], Some(Ipv4Addr::new(198, 51, 100, 1))).is_empty());
        // A default route among the host routes is not doubled.
        let own_default = route([0, 0, 0, 0], 0, [198, 51, 100, 254]);
        assert_eq!(
            classless_routes(&[own_default], Some(Ipv4Addr::new(198, 51, 100, 1))),
            [0, 198, 51, 100, 254]
        );
        // A prefix above 32 is skipped, the rest is still sent.
        let bad = route([10, 0, 0, 0], 33, [198, 51, 100, 1]);
        assert_eq!(
            classless_routes(&[bad, metadata], None),
            [32, 169, 254, 169, 254, 198, 51, 100, 2]
        );
    }

    #[test]
    fn lease_times() {
        assert_eq!(lease_seconds(Duration::from_secs(86_400)), 86_400);
        assert_eq!(lease_seconds(Duration::from_millis(300)), 1);
        assert_eq!(
            lease_seconds(Duration::from_secs(u64::from(u32::MAX))),
            INFINITE
        );
        assert_eq!(lease_seconds(Duration::MAX), INFINITE);
        let mut lease = Lease {
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(198, 51, 100, 10),
            prefix_len: 24,
            gateway: None,
            dns: vec![],
            mtu: Some(40),
            hostname: Some(String::new()),
            domain_name: None,
            host_routes: vec![],
            lease_time: Duration::from_secs(3600),
        };
        let opts = lease_options(&lease, true);
        assert!(opts.contains(&DhcpOption::AddressLeaseTime(3600)));
        assert!(opts.contains(&DhcpOption::Renewal(1800)));
        assert!(opts.contains(&DhcpOption::Rebinding(3150)));
        // Nonsense values are not sent.
        assert!(!opts.iter().any(|o| matches!(
            o,
            DhcpOption::InterfaceMtu(_) | DhcpOption::Hostname(_) | DhcpOption::Router(_)
        )));
        lease.lease_time = Duration::MAX;
        let opts = lease_options(&lease, true);
        assert!(opts.contains(&DhcpOption::AddressLeaseTime(INFINITE)));
        assert!(!opts
            .iter()
            .any(|o| matches!(o, DhcpOption::Renewal(_) | DhcpOption::Rebinding(_))));
        assert!(!lease_options(&lease, false)
            .iter()
            .any(|o| matches!(o, DhcpOption::AddressLeaseTime(_))));
    }
}
