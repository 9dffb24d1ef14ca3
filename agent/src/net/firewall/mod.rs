//! Security groups and port security as nftables tables (issue #12).
//!
//! This kernel has no conntrack in the bridge family (no `nf_conntrack_bridge`), but with
//! `br_netfilter` bridged IPv4 also traverses the inet family's hooks with conntrack — where
//! `iifname`/`oifname` are the bridge, not the port. So the port travels in the packet mark
//! (recipe verified in ENVIRONMENT.md), and the work is split in two tables:
//!
//! * `bridge <prefix>_l2` — per port, before anything else sees the frame: at `prerouting`
//!   (priority -200) the tap a frame came from is looked up in the verdict map `from_port`;
//!   a port with port security jumps to its `from_N` chain, which drops spoofed frames
//!   (source MAC not the port's or a pair's, ARP or IPv4 source not one of the port's
//!   MAC+address pairs, a guest answering as a DHCP server, IPv6 router advertisements;
//!   counted in `spoof_N`) and puts the port's index in the high half of the mark. A trusted
//!   port (the DHCP/metadata namespace's) marks `0xffff`. At `forward` the destination tap
//!   (map `to_port`) puts its index in the low half. (A port is programmed before its tap
//!   exists, and a server does not start when its ports could not be: this kernel has no
//!   `meta ibrname` in the bridge family to drop unknown taps of the agent's bridges.)
//! * `inet <prefix>_sg` — stateful: every bridge gets its own conntrack zone (`zone`, at
//!   priority -300), so overlapping subnets of two networks never share connection state.
//!   At `forward`, traffic of the agent's bridges with a mark is checked twice: the chain
//!   `egress` (priority 0) accepts `established,related`, drops `invalid`, and dispatches on
//!   the high half through the map `egress_port` to the source port's `egress_N`; the chain
//!   `ingress` (priority 1) dispatches on the low half through `ingress_port` to the
//!   destination's `ingress_N`. A port chain jumps to the chain of each of its groups
//!   (`sg_K_in`, `sg_K_out`), whose rules accept; what no group accepts is dropped and
//!   counted in `policy_N`. Remote groups are the sets `m_K` of member addresses, so a
//!   membership change adds or deletes a set element and never rewrites a rule.
//!
//! A packet costs a constant number of lookups whatever the number of ports: one verdict map
//! per table and direction. [`render`] builds both tables from a [`Ruleset`]; [`tables::diff`]
//! turns the previous tables into the new ones with the fewest commands, [`tables::full`]
//! replaces them — each one `nft -f` transaction, applied entirely or not at all.
//!
//! With bridge conntrack (`nf_conntrack_bridge`, production kernels may have it) the stateful
//! table could live in the bridge family alone; the split stays behind [`render`].

mod render;
pub mod tables;

pub use render::render;

use super::cidr::Ipv4Cidr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The default prefix of the agent's tables: `hyperlet_l2` and `hyperlet_sg`.
pub const PREFIX: &str = "hyperlet";
/// The high half of the mark of a trusted port's packets.
const TRUSTED: u32 = 0xffff;
/// The most ports with port security one ruleset can hold (indices 1..=0xfffe).
pub const MAX_PORTS: usize = (TRUSTED - 1) as usize;

/// A port on one of the agent's bridges, as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPort {
    /// Its tap on the bridge.
    pub device: String,
    /// Its MAC.
    pub mac: String,
    /// Its fixed IPv4 addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Allowed address pairs: a prefix and optionally another MAC (else the port's).
    pub pairs: Vec<(Ipv4Cidr, Option<String>)>,
    /// Its security groups (ids), in order.
    pub groups: Vec<String>,
    /// Port security: `false` lets the port send and receive anything (no groups then).
    pub secured: bool,
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
    /// The bridges of the agent's networks: only their traffic is looked at.
    pub bridges: Vec<String>,
    /// Guest ports, with or without port security.
    pub ports: Vec<FirewallPort>,
    /// Every security group (id) with its rules.
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Taps that are trusted (the DHCP/metadata namespaces'): not filtered, and their DHCP
    /// answers reach every port.
    pub trusted: Vec<String>,
}

impl Ruleset {
    /// The addresses that stand for each group in remote-group rules: the fixed addresses of
    /// its members with port security, and their single-address pairs.
    pub fn members(&self) -> BTreeMap<&str, std::collections::BTreeSet<Ipv4Addr>> {
        let mut members: BTreeMap<&str, std::collections::BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for port in self.ports.iter().filter(|p| p.secured) {
            for group in &port.groups {
                let set = members.entry(group.as_str()).or_default();
                set.extend(port.ips.iter().copied());
                set.extend(
                    port.pairs
                        .iter()
                        .filter(|(c, _)| c.prefix_len() == 32)
                        .map(|(c, _)| c.network()),
                );
            }
        }
        members
    }
}

/// Stable small numbers for ports, groups and bridges, kept between two renderings so that a
/// change touches only what changed (the numbers name chains, sets and mark values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indices {
    ports: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
    bridges: BTreeMap<String, u32>,
}

/// Why a ruleset cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// More ports with port security than the mark can number.
    #[error(
        "{count} ports with port security on this node; the firewall numbers at most {MAX_PORTS}"
    )]
    TooManyPorts {
        /// How many there are.
        count: usize,
    },
}

fn assign<'a>(map: &mut BTreeMap<String, u32>, wanted: impl Iterator<Item = &'a str>, max: u32) {
    let wanted: std::collections::BTreeSet<&str> = wanted.collect();
    map.retain(|k, _| wanted.contains(k.as_str()));
    let mut used: std::collections::BTreeSet<u32> = map.values().copied().collect();
    let mut next = 1;
    for key in wanted {
        if map.contains_key(key) {
            continue;
        }
        while used.contains(&next) && next < max {
            next += 1;
        }
        used.insert(next);
        map.insert(key.to_string(), next);
    }
}

impl Indices {
    /// Keeps the numbers of what is still there and numbers what is new (lowest free first).
    ///
    /// # Errors
    /// [`FirewallError::TooManyPorts`] beyond [`MAX_PORTS`] ports with port security.
    pub fn update(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        let secured = ruleset.ports.iter().filter(|p| p.secured);
        let count = secured.clone().count();
        if count > MAX_PORTS {
            return Err(FirewallError::TooManyPorts { count });
        }
        assign(
            &mut self.ports,
            secured.map(|p| p.device.as_str()),
            TRUSTED - 1,
        );
        let groups = ruleset.rules.keys().map(String::as_str).chain(
            ruleset
                .ports
                .iter()
                .flat_map(|p| p.groups.iter().map(String::as_str)),
        );
        assign(&mut self.groups, groups, u32::MAX);
        assign(
            &mut self.bridges,
            ruleset.bridges.iter().map(String::as_str),
            u32::from(u16::MAX),
        );
        Ok(())
    }

    /// The number of a port with port security (its tap).
    pub fn port(&self, device: &str) -> Option<u32> {
        self.ports.get(device).copied()
    }

    /// Every numbered port: tap → number.
    pub fn ports(&self) -> &BTreeMap<String, u32> {
        &self.ports
    }

    fn group(&self, id: &str) -> u32 {
        self.groups.get(id).copied().unwrap_or(0)
    }

    fn bridge(&self, name: &str) -> u32 {
        self.bridges.get(name).copied().unwrap_or(0)
    }
}

/// A script that replaces the tables `<prefix>_l2` and `<prefix>_sg` with `ruleset` (fresh
/// numbering; what the agent runs at start, and what tests apply to tables of their own).
///
/// # Errors
/// [`FirewallError::TooManyPorts`].
pub fn script(ruleset: &Ruleset, prefix: &str) -> Result<String, FirewallError> {
    let mut indices = Indices::default();
    indices.update(ruleset)?;
    let [l2, sg] = render(ruleset, &indices, prefix);
    Ok(tables::full(&[&l2, &sg]))
}

/// A script that removes the tables `<prefix>_l2` and `<prefix>_sg`.
pub fn remove_script(prefix: &str) -> String {
    tables::remove(&[
        ("bridge", &format!("{prefix}_l2")),
        ("inet", &format!("{prefix}_sg")),
    ])
}

#[cfg(test)]
mod tests;
