//! [`Ruleset`] → the two tables (see the module documentation of [`super`]).

use super::tables::{Chain, Set, Table};
use super::{Direction, FirewallPort, Indices, Protocol, Remote, Rule, Ruleset, TRUSTED};
use crate::net::model::TAP_PREFIX;

/// The agent's two tables for `ruleset`, numbered by `indices` (already
/// [`Indices::update`]d for it): `bridge <prefix>_l2` and `inet <prefix>_sg`.
pub fn render(ruleset: &Ruleset, indices: &Indices, prefix: &str) -> [Table; 2] {
    [
        l2(ruleset, indices, &format!("{prefix}_l2")),
        sg(ruleset, indices, &format!("{prefix}_sg")),
    ]
}

fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// `{ a, b }` of the items, or the single item.
fn set_of(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

fn chain(rules: Vec<String>) -> Chain {
    Chain { hook: None, rules }
}

fn base(hook: &str, rules: Vec<String>) -> Chain {
    Chain {
        hook: Some(format!("type filter hook {hook}; policy accept;")),
        rules,
    }
}

fn bridges(ruleset: &Ruleset) -> Set {
    let mut set = Set::of("type ifname;");
    for b in &ruleset.bridges {
        set.elements.insert(quoted(b), String::new());
    }
    set
}

fn l2(ruleset: &Ruleset, indices: &Indices, name: &str) -> Table {
    let mut t = Table::new("bridge", name);
    let (mut from, mut to) = (
        Set::map("type ifname : verdict;"),
        Set::map("type ifname : verdict;"),
    );
    for tap in &ruleset.trusted {
        from.elements.insert(quoted(tap), "jump trusted".into());
        to.elements.insert(quoted(tap), "accept".into());
    }
    for port in &ruleset.ports {
        match indices.port(&port.device).filter(|_| port.secured) {
            Some(n) => {
                from.elements
                    .insert(quoted(&port.device), format!("jump from_{n}"));
                to.elements
                    .insert(quoted(&port.device), format!("jump to_{n}"));
                t.chains.insert(format!("from_{n}"), from_port(port, n));
                t.chains.insert(
                    format!("to_{n}"),
                    chain(vec![format!("meta mark set meta mark or {n:#x} accept")]),
                );
                t.counters.insert(format!("spoof_{n}"));
            }
            None => {
                from.elements.insert(quoted(&port.device), "accept".into());
                to.elements.insert(quoted(&port.device), "accept".into());
            }
        }
    }
    // The DHCP/metadata taps answer this node's ports only: nothing of theirs reaches an uplink
    // (a VXLAN tunnel, a physical interface or its VLAN), in either direction. Every node of a
    // network has its own, all with the network's one MAC, so a guest that moved here finds
    // 169.254.169.254 at the MAC it already knows.
    let mut local_only = Set::of("type ifname;");
    for tap in &ruleset.trusted {
        local_only.elements.insert(quoted(tap), String::new());
    }
    t.sets.insert("local_only".into(), local_only);
    t.sets.insert("from_port".into(), from);
    t.sets.insert("to_port".into(), to);
    t.chains.insert(
        "prerouting".into(),
        base(
            "prerouting priority -200",
            vec!["iifname vmap @from_port".into()],
        ),
    );
    t.chains.insert(
        "forward".into(),
        base(
            "forward priority -200",
            vec![
                // Guest ports' devices (`tap*`): the only members a DHCP tap talks to.
                format!("iifname != \"{TAP_PREFIX}*\" oifname @local_only drop"),
                format!("iifname @local_only oifname != \"{TAP_PREFIX}*\" drop"),
                "oifname vmap @to_port".into(),
            ],
        ),
    );
    t.chains.insert(
        "trusted".into(),
        chain(vec![format!(
            "meta mark set {:#010x} accept",
            TRUSTED << 16
        )]),
    );
    t
}

/// The anti-spoofing chain of port `n`.
fn from_port(port: &FirewallPort, n: u32) -> Chain {
    let mac = port.mac.to_lowercase();
    let mut macs = vec![mac.clone()];
    // MAC . address pairs the port may send from.
    let mut pairs: Vec<String> = port.ips.iter().map(|ip| format!("{mac} . {ip}")).collect();
    for (cidr, pair_mac) in &port.pairs {
        let m = pair_mac.as_deref().map_or(mac.clone(), str::to_lowercase);
        if !macs.contains(&m) {
            macs.push(m.clone());
        }
        pairs.push(format!("{m} . {cidr}"));
    }
    let drop = format!("counter name \"spoof_{n}\" drop");
    let tag = format!("{:#010x}", n << 16);
    let mut rules = vec![format!("ether saddr != {} {drop}", set_of(&macs))];
    if pairs.is_empty() {
        rules.push(format!("ether type arp {drop}"));
    } else {
        rules.push(format!(
            "ether type arp arp saddr ether . arp saddr ip != {{ {} }} {drop}",
            pairs.join(", ")
        ));
    }
    // DHCP DISCOVER/REQUEST before the port has its address.
    rules.push(format!(
        "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 \
         meta mark set {tag} accept"
    ));
    if pairs.is_empty() {
        rules.push(format!("ether type ip {drop}"));
    } else {
        rules.push(format!(
            "ether type ip ether saddr . ip saddr != {{ {} }} {drop}",
            pairs.join(", ")
        ));
    }
    rules.push(format!("ether type ip udp sport 67 udp dport 68 {drop}"));
    rules.push(format!(
        "ether type ip6 icmpv6 type nd-router-advert {drop}"
    ));
    rules.push(format!("meta mark set {tag} accept"));
    chain(rules)
}

fn rule_match(rule: &Rule, indices: &Indices) -> String {
    let field = match rule.direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let mut parts = vec!["meta nfproto ipv4".to_string()];
    match &rule.remote {
        Remote::Any => {}
        Remote::Prefix(p) => parts.push(format!("{field} {p}")),
        Remote::Group(g) => parts.push(format!("{field} @m_{}", indices.group(g))),
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

fn sg(ruleset: &Ruleset, indices: &Indices, name: &str) -> Table {
    let mut t = Table::new("inet", name);
    t.sets.insert("bridges".into(), bridges(ruleset));
    // Every group: its member set and one chain per direction.
    let members = ruleset.members();
    let groups = ruleset
        .rules
        .keys()
        .chain(ruleset.ports.iter().flat_map(|p| p.groups.iter()));
    for group in groups {
        let k = indices.group(group);
        if t.sets.contains_key(&format!("m_{k}")) {
            continue;
        }
        let mut set = Set::of("type ipv4_addr;");
        for ip in members.get(group.as_str()).into_iter().flatten() {
            set.elements.insert(ip.to_string(), String::new());
        }
        t.sets.insert(format!("m_{k}"), set);
        let rules = ruleset.rules.get(group).map(Vec::as_slice).unwrap_or(&[]);
        for (direction, suffix) in [(Direction::Ingress, "in"), (Direction::Egress, "out")] {
            t.chains.insert(
                format!("sg_{k}_{suffix}"),
                chain(
                    rules
                        .iter()
                        .filter(|r| r.direction == direction)
                        .map(|r| format!("{} accept", rule_match(r, indices)))
                        .collect(),
                ),
            );
        }
    }
    let (mut egress, mut ingress) = (
        Set::map("type mark : verdict;"),
        Set::map("type mark : verdict;"),
    );
    for port in ruleset.ports.iter().filter(|p| p.secured) {
        let Some(n) = indices.port(&port.device) else {
            continue;
        };
        egress
            .elements
            .insert(format!("{:#010x}", n << 16), format!("jump egress_{n}"));
        ingress
            .elements
            .insert(format!("{n:#010x}"), format!("jump ingress_{n}"));
        let drop = format!("counter name \"policy_{n}\" drop");
        let jumps = |suffix: &str| -> Vec<String> {
            port.groups
                .iter()
                .map(|g| format!("jump sg_{}_{suffix}", indices.group(g)))
                .collect()
        };
        let mut out = vec!["udp sport 68 udp dport 67 accept".to_string()];
        out.extend(jumps("out"));
        out.push(drop.clone());
        let mut r#in = vec![format!(
            "meta mark and 0xffff0000 == {:#010x} udp sport 67 udp dport 68 accept",
            TRUSTED << 16
        )];
        r#in.extend(jumps("in"));
        r#in.push(drop);
        t.chains.insert(format!("egress_{n}"), chain(out));
        t.chains.insert(format!("ingress_{n}"), chain(r#in));
        t.counters.insert(format!("policy_{n}"));
    }
    t.sets.insert("egress_port".into(), egress);
    t.sets.insert("ingress_port".into(), ingress);
    let mut zones: Vec<String> = ruleset
        .bridges
        .iter()
        .map(|b| format!("iifname {} ct zone set {}", quoted(b), indices.bridge(b)))
        .collect();
    zones.sort();
    t.chains
        .insert("zone".into(), base("prerouting priority -300", zones));
    let head = |rules: &[&str]| -> Vec<String> {
        let mut all = vec![
            "iifname != @bridges accept".to_string(),
            "meta mark 0 accept".to_string(),
            "ct state established,related accept".to_string(),
        ];
        all.extend(rules.iter().map(|r| r.to_string()));
        all
    };
    t.chains.insert(
        "egress".into(),
        base(
            "forward priority 0",
            head(&[
                "ct state invalid counter drop",
                "meta mark and 0xffff0000 vmap @egress_port",
            ]),
        ),
    );
    t.chains.insert(
        "ingress".into(),
        base(
            "forward priority 1",
            head(&["meta mark and 0x0000ffff vmap @ingress_port"]),
        ),
    );
    t
}
