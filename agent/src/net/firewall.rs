//! Security groups and port security as one nftables ruleset (issue #12; the first layer: the
//! ruleset renderer, checked against the kernel with `nft --check`. Applying it, the store,
//! the API and the tests with guests are still to come — see the notes).
//!
//! This kernel has no conntrack in the bridge family (no `nf_conntrack_bridge`), but with
//! `br_netfilter` bridged IPv4 also traverses the inet family's forward hook with conntrack —
//! where `iifname`/`oifname` are the bridge, not the port. So the port travels in the packet
//! mark (recipe verified in ENVIRONMENT.md):
//!
//! * table `bridge hyperlet_l2`: at `prerouting` (priority -200) the tap a frame came from is
//!   looked up in a verdict map; a filtered port's chain drops spoofed frames (source MAC not
//!   the port's or a pair's, ARP claiming another address, IPv4 source not the port's, a guest
//!   answering as a DHCP server, IPv6 router advertisements) and sets the high half of the mark
//!   to the port's index; a trusted port (the DHCP/metadata namespace's tap) sets `0xffff`
//!   there. At `forward` the destination tap sets the low half.
//! * table `inet hyperlet_sg`: at `forward` a packet with no mark is not ours (accepted);
//!   `ct state established,related` is accepted, `invalid` dropped; then the source port's
//!   egress chain (a verdict map on the high half: one lookup whatever the number of ports)
//!   returns when a rule allows the packet and drops otherwise, and the destination port's
//!   ingress chain (a verdict map on the low half) accepts when a rule allows it and drops
//!   otherwise. Remote groups are named sets of member addresses, so a membership change
//!   updates one set, not the rules.
//!
//! The whole ruleset is one `nft -f` transaction that deletes and recreates both tables:
//! applied entirely or not at all.

use super::cidr::Ipv4Cidr;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The agent's tables are `<PREFIX>_l2` (bridge family: anti-spoofing, marks) and
/// `<PREFIX>_sg` (inet family: stateful security group rules).
pub const PREFIX: &str = "hyperlet";
/// The high half of the mark of a trusted port's packets.
const TRUSTED: u32 = 0xffff;

/// A port with port security, as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPort {
    /// Its tap on the bridge.
    pub device: String,
    /// Its MAC.
    pub mac: String,
    /// Its fixed IPv4 addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Allowed address pairs: a prefix and optionally another MAC.
    pub pairs: Vec<(Ipv4Cidr, Option<String>)>,
    /// Its security groups (ids), in order.
    pub groups: Vec<String>,
}

/// Direction of a rule, from the port's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Traffic to the port.
    Ingress,
    /// Traffic from the port.
    Egress,
}

/// What a rule matches beyond addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Any protocol.
    Any,
    /// TCP, optionally a destination port range.
    Tcp(Option<(u16, u16)>),
    /// UDP, optionally a destination port range.
    Udp(Option<(u16, u16)>),
    /// ICMP, optionally a type and code.
    Icmp(Option<u8>, Option<u8>),
    /// Another IP protocol number.
    Number(u8),
}

/// The other end a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// Anywhere.
    Any,
    /// An IPv4 prefix.
    Prefix(Ipv4Cidr),
    /// The members of a security group (its id).
    Group(String),
}

/// One security group rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Ingress or egress.
    pub direction: Direction,
    /// Protocol and ports.
    pub protocol: Protocol,
    /// The other end.
    pub remote: Remote,
}

/// Everything the firewall enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Ports with port security.
    pub ports: Vec<FirewallPort>,
    /// Rules by security group id.
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Member addresses by security group id.
    pub members: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Taps that are trusted (the DHCP/metadata namespaces'): not filtered, and their DHCP
    /// answers reach every port.
    pub trusted: Vec<String>,
}

/// Renders `ruleset` as one `nft -f` script replacing the agent's two tables.
pub fn render(ruleset: &Ruleset) -> String {
    render_tables(ruleset, PREFIX)
}

/// [`render`] with tables named `<prefix>_l2` and `<prefix>_sg` (tests use their own).
pub fn render_tables(ruleset: &Ruleset, prefix: &str) -> String {
    let (l2, sg) = (format!("{prefix}_l2"), format!("{prefix}_sg"));
    let mut out = String::new();
    // `table … {}` then `delete table …`: works whether or not the table exists yet.
    for (family, table) in [("bridge", &l2), ("inet", &sg)] {
        let _ = writeln!(
            out,
            "table {family} {table} {{}}\ndelete table {family} {table}"
        );
    }
    render_l2(&mut out, ruleset, &l2);
    render_sg(&mut out, ruleset, &sg);
    out
}

/// The script that removes the tables `render_tables(_, prefix)` made.
pub fn remove_tables(prefix: &str) -> String {
    let mut out = String::new();
    for (family, table) in [
        ("bridge", format!("{prefix}_l2")),
        ("inet", format!("{prefix}_sg")),
    ] {
        let _ = writeln!(
            out,
            "table {family} {table} {{}}\ndelete table {family} {table}"
        );
    }
    out
}

/// The port's index in the mark (1-based; at most 0xfffe ports).
fn index(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX).min(TRUSTED - 1)
}

/// `{ a, b }` of the items, or the single item.
fn set<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

fn render_l2(out: &mut String, ruleset: &Ruleset, table: &str) {
    let _ = writeln!(out, "table bridge {table} {{");
    let mut from: Vec<String> = ruleset
        .trusted
        .iter()
        .map(|t| format!("{} : jump trusted", quoted(t)))
        .collect();
    let mut to = Vec::new();
    for (i, port) in ruleset.ports.iter().enumerate() {
        from.push(format!("{} : jump from_{}", quoted(&port.device), index(i)));
        to.push(format!("{} : jump to_{}", quoted(&port.device), index(i)));
    }
    let _ = writeln!(
        out,
        "  chain prerouting {{\n    type filter hook prerouting priority -200; policy accept;"
    );
    if !from.is_empty() {
        let _ = writeln!(out, "    iifname vmap {{ {} }}", from.join(", "));
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority -200; policy accept;"
    );
    if !to.is_empty() {
        let _ = writeln!(out, "    oifname vmap {{ {} }}", to.join(", "));
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(
        out,
        "  chain trusted {{\n    meta mark set {:#010x}\n  }}",
        TRUSTED << 16
    );
    for (i, port) in ruleset.ports.iter().enumerate() {
        let n = index(i);
        let macs = set(std::iter::once(port.mac.to_lowercase()).chain(
            port.pairs
                .iter()
                .filter_map(|(_, mac)| mac.as_ref().map(|m| m.to_lowercase())),
        ));
        let mut sources: Vec<String> = port.ips.iter().map(ToString::to_string).collect();
        sources.extend(port.pairs.iter().map(|(cidr, _)| cidr.to_string()));
        let tag = format!("{:#010x}", n << 16);
        let _ = writeln!(out, "  chain from_{n} {{");
        let _ = writeln!(out, "    ether saddr != {macs} counter drop");
        let _ = writeln!(
            out,
            "    ether type arp arp saddr ether != {macs} counter drop"
        );
        if sources.is_empty() {
            let _ = writeln!(out, "    ether type arp counter drop");
        } else {
            let _ = writeln!(
                out,
                "    ether type arp arp saddr ip != {} counter drop",
                set(&sources)
            );
        }
        // DHCP DISCOVER/REQUEST before the port has its address.
        let _ = writeln!(
            out,
            "    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 \
             meta mark set {tag} return"
        );
        if sources.is_empty() {
            let _ = writeln!(out, "    ether type ip counter drop");
        } else {
            let _ = writeln!(
                out,
                "    ether type ip ip saddr != {} counter drop",
                set(&sources)
            );
        }
        let _ = writeln!(
            out,
            "    ether type ip udp sport 67 udp dport 68 counter drop"
        );
        let _ = writeln!(
            out,
            "    ether type ip6 icmpv6 type nd-router-advert counter drop"
        );
        let _ = writeln!(out, "    meta mark set {tag}\n  }}");
        let _ = writeln!(
            out,
            "  chain to_{n} {{\n    meta mark set meta mark or {n:#x}\n  }}"
        );
    }
    let _ = writeln!(out, "}}");
}

fn group_set(ids: &BTreeMap<&str, usize>, id: &str) -> String {
    format!("@g_{}", ids.get(id).copied().unwrap_or(0))
}

fn rule_match(rule: &Rule, ids: &BTreeMap<&str, usize>) -> String {
    let field = match rule.direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let mut parts = vec!["meta nfproto ipv4".to_string()];
    match &rule.remote {
        Remote::Any => {}
        Remote::Prefix(p) => parts.push(format!("{field} {p}")),
        Remote::Group(g) => parts.push(format!("{field} {}", group_set(ids, g))),
    }
    let range = |(lo, hi): (u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    match rule.protocol {
        Protocol::Any => {}
        Protocol::Tcp(ports) => parts.push(match ports {
            Some(r) => format!("tcp dport {}", range(r)),
            None => "meta l4proto tcp".into(),
        }),
        Protocol::Udp(ports) => parts.push(match ports {
            Some(r) => format!("udp dport {}", range(r)),
            None => "meta l4proto udp".into(),
        }),
        Protocol::Icmp(kind, code) => {
            parts.push("meta l4proto icmp".into());
            if let Some(t) = kind {
                parts.push(format!("icmp type {t}"));
            }
            if let Some(c) = code {
                parts.push(format!("icmp code {c}"));
            }
        }
        Protocol::Number(n) => parts.push(format!("meta l4proto {n}")),
    }
    parts.join(" ")
}

fn render_sg(out: &mut String, ruleset: &Ruleset, table: &str) {
    let _ = writeln!(out, "table inet {table} {{");
    // Sets of the remote groups some rule names, numbered in id order.
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for rules in ruleset.rules.values() {
        for rule in rules {
            if let Remote::Group(g) = &rule.remote {
                let next = ids.len() + 1;
                ids.entry(g.as_str()).or_insert(next);
            }
        }
    }
    for (id, n) in &ids {
        let _ = write!(
            out,
            "  set g_{n} {{\n    type ipv4_addr\n    comment {}\n",
            quoted(id)
        );
        match ruleset.members.get(*id) {
            Some(m) if !m.is_empty() => {
                let _ = writeln!(out, "    elements = {}", set_always(m));
            }
            _ => {}
        }
        let _ = writeln!(out, "  }}");
    }
    let mut egress = Vec::new();
    let mut ingress = Vec::new();
    for i in 0..ruleset.ports.len() {
        let n = index(i);
        egress.push(format!("{:#010x} : jump egress_{n}", n << 16));
        ingress.push(format!("{n:#x} : jump ingress_{n}"));
    }
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
         meta mark 0 accept\n    ct state established,related accept\n    ct state invalid \
         counter drop"
    );
    if !egress.is_empty() {
        let _ = writeln!(
            out,
            "    meta mark and 0xffff0000 vmap {{ {} }}\n    meta mark and 0x0000ffff vmap {{ {} }}",
            egress.join(", "),
            ingress.join(", ")
        );
    }
    let _ = writeln!(out, "  }}");
    for (i, port) in ruleset.ports.iter().enumerate() {
        let n = index(i);
        let rules: Vec<&Rule> = port
            .groups
            .iter()
            .filter_map(|g| ruleset.rules.get(g))
            .flatten()
            .collect();
        let _ = writeln!(out, "  chain egress_{n} {{");
        let _ = writeln!(out, "    udp sport 68 udp dport 67 return");
        for rule in rules.iter().filter(|r| r.direction == Direction::Egress) {
            let _ = writeln!(out, "    {} return", rule_match(rule, &ids));
        }
        let _ = writeln!(out, "    counter drop\n  }}");
        let _ = writeln!(out, "  chain ingress_{n} {{");
        let _ = writeln!(
            out,
            "    meta mark and 0xffff0000 == {:#010x} udp sport 67 udp dport 68 accept",
            TRUSTED << 16
        );
        for rule in rules.iter().filter(|r| r.direction == Direction::Ingress) {
            let _ = writeln!(out, "    {} accept", rule_match(rule, &ids));
        }
        let _ = writeln!(out, "    counter drop\n  }}");
    }
    let _ = writeln!(out, "}}");
}

/// `{ a, b }` even for one item (set elements).
fn set_always<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two guests in `default` (neutron's rules: egress anywhere, ingress from members), a
    /// third in a group that allows only tcp 22 from a prefix, one trusted DHCP tap.
    pub(crate) fn sample() -> Ruleset {
        let default = "6a3c5e0e-0000-4000-8000-000000000001".to_string();
        let ssh = "6a3c5e0e-0000-4000-8000-000000000002".to_string();
        let port = |tap: &str, mac: &str, ip: [u8; 4], group: &str| FirewallPort {
            device: tap.into(),
            mac: mac.into(),
            ips: vec![Ipv4Addr::from(ip)],
            pairs: vec![],
            groups: vec![group.to_string()],
        };
        let mut rules = BTreeMap::new();
        rules.insert(
            default.clone(),
            vec![
                Rule {
                    direction: Direction::Egress,
                    protocol: Protocol::Any,
                    remote: Remote::Any,
                },
                Rule {
                    direction: Direction::Ingress,
                    protocol: Protocol::Any,
                    remote: Remote::Group(default.clone()),
                },
            ],
        );
        rules.insert(
            ssh.clone(),
            vec![
                Rule {
                    direction: Direction::Ingress,
                    protocol: Protocol::Tcp(Some((22, 22))),
                    remote: Remote::Prefix("198.51.100.0/24".parse().unwrap()),
                },
                Rule {
                    direction: Direction::Ingress,
                    protocol: Protocol::Icmp(Some(8), None),
                    remote: Remote::Any,
                },
            ],
        );
        let mut members = BTreeMap::new();
        members.insert(
            default.clone(),
            vec![
                Ipv4Addr::new(198, 51, 100, 3),
                Ipv4Addr::new(198, 51, 100, 4),
            ],
        );
        let mut c = port("tapc", "fa:16:3e:00:00:0c", [198, 51, 100, 5], &ssh);
        c.pairs.push((
            "198.51.100.64/28".parse().unwrap(),
            Some("FA:16:3E:00:00:CD".into()),
        ));
        Ruleset {
            ports: vec![
                port("tapa", "fa:16:3e:00:00:0a", [198, 51, 100, 3], &default),
                port("tapb", "fa:16:3e:00:00:0b", [198, 51, 100, 4], &default),
                c,
            ],
            rules,
            members,
            trusted: vec!["tapdhcp".into()],
        }
    }

    #[test]
    fn ports_are_dispatched_by_verdict_maps_and_marks() {
        let text = render(&sample());
        assert!(text.starts_with("table bridge hyperlet_l2 {}\ndelete table bridge hyperlet_l2\n"));
        assert!(text.contains(
            "iifname vmap { \"tapdhcp\" : jump trusted, \"tapa\" : jump from_1, \"tapb\" : jump from_2, \"tapc\" : jump from_3 }"
        ), "{text}");
        assert!(text.contains("meta mark and 0xffff0000 vmap { 0x00010000 : jump egress_1, 0x00020000 : jump egress_2, 0x00030000 : jump egress_3 }"), "{text}");
        assert!(
            text.contains("chain to_3 {\n    meta mark set meta mark or 0x3\n  }"),
            "{text}"
        );
    }

    #[test]
    fn spoofing_is_dropped_with_pairs_allowed() {
        let text = render(&sample());
        assert!(
            text.contains("ether saddr != { fa:16:3e:00:00:0c, fa:16:3e:00:00:cd } counter drop"),
            "{text}"
        );
        assert!(
            text.contains("ip saddr != { 198.51.100.5, 198.51.100.64/28 } counter drop"),
            "{text}"
        );
        assert!(text.contains("ether type ip udp sport 67 udp dport 68 counter drop"));
    }

    #[test]
    fn rules_and_remote_groups() {
        let text = render(&sample());
        assert!(text.contains("set g_1 {\n    type ipv4_addr\n    comment \"6a3c5e0e-0000-4000-8000-000000000001\"\n    elements = { 198.51.100.3, 198.51.100.4 }"), "{text}");
        assert!(
            text.contains("meta nfproto ipv4 ip saddr @g_1 accept"),
            "{text}"
        );
        assert!(
            text.contains("meta nfproto ipv4 ip saddr 198.51.100.0/24 tcp dport 22 accept"),
            "{text}"
        );
        assert!(
            text.contains("meta nfproto ipv4 meta l4proto icmp icmp type 8 accept"),
            "{text}"
        );
        assert!(
            text.contains(
                "chain egress_3 {\n    udp sport 68 udp dport 67 return\n    counter drop"
            ),
            "{text}"
        );
    }

    /// The kernel accepts the ruleset: `nft --check` runs the whole transaction without
    /// committing it (root; nftables from scripts/setup.sh).
    #[test]
    fn the_kernel_accepts_the_ruleset() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("run as root: nft --check needs CAP_NET_ADMIN");
        }
        let dir = tempfile::tempdir().unwrap();
        for ruleset in [sample(), Ruleset::default()] {
            let path = dir.path().join("rules.nft");
            std::fs::write(&path, render(&ruleset)).unwrap();
            let out = std::process::Command::new("nft")
                .args(["--check", "-f"])
                .arg(&path)
                .output()
                .expect("nft (apt-get install nftables)");
            assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                render(&ruleset)
            );
        }
    }
}
