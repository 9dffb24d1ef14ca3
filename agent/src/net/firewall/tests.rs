use super::*;

const DEFAULT: &str = "6a3c5e0e-0000-4000-8000-000000000001";
const SSH: &str = "6a3c5e0e-0000-4000-8000-000000000002";

fn port(tap: &str, mac: &str, ip: [u8; 4], group: &str) -> FirewallPort {
    FirewallPort {
        device: tap.into(),
        mac: mac.into(),
        ips: vec![Ipv4Addr::from(ip)],
        pairs: vec![],
        groups: vec![group.to_string()],
        secured: true,
    }
}

/// Two guests in `default` (neutron's rules: egress anywhere, ingress from members), a third
/// in a group that allows only tcp 22 from a prefix and echo requests, a fourth without port
/// security, one trusted DHCP tap.
pub(crate) fn sample() -> Ruleset {
    let mut rules = BTreeMap::new();
    rules.insert(
        DEFAULT.to_string(),
        vec![
            Rule {
                direction: Direction::Egress,
                protocol: Protocol::Any,
                remote: Remote::Any,
            },
            Rule {
                direction: Direction::Ingress,
                protocol: Protocol::Any,
                remote: Remote::Group(DEFAULT.into()),
            },
        ],
    );
    rules.insert(
        SSH.to_string(),
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
    let mut c = port("tapc", "fa:16:3e:00:00:0c", [198, 51, 100, 5], SSH);
    c.pairs.push((
        "198.51.100.64/28".parse().unwrap(),
        Some("FA:16:3E:00:00:CD".into()),
    ));
    let mut open = port("tapd", "fa:16:3e:00:00:0d", [198, 51, 100, 6], DEFAULT);
    open.secured = false;
    open.groups.clear();
    Ruleset {
        bridges: vec!["brqx".into()],
        ports: vec![
            port("tapa", "fa:16:3e:00:00:0a", [198, 51, 100, 3], DEFAULT),
            port("tapb", "fa:16:3e:00:00:0b", [198, 51, 100, 4], DEFAULT),
            c,
            open,
        ],
        rules,
        trusted: vec!["tapdhcp".into()],
    }
}

fn text(ruleset: &Ruleset) -> String {
    script(ruleset, PREFIX).unwrap()
}

#[test]
fn ports_are_dispatched_by_verdict_maps_and_marks() {
    let text = text(&sample());
    assert!(text.contains(
        "add element bridge hyperlet_l2 from_port { \"tapa\" : jump from_1, \"tapb\" : jump from_2, \"tapc\" : jump from_3, \"tapd\" : accept, \"tapdhcp\" : jump trusted }"
    ), "{text}");
    assert!(text.contains(
        "add element inet hyperlet_sg egress_port { 0x00010000 : jump egress_1, 0x00020000 : jump egress_2, 0x00030000 : jump egress_3 }"
    ), "{text}");
    assert!(
        text.contains("add rule bridge hyperlet_l2 to_3 meta mark set meta mark or 0x3 accept"),
        "{text}"
    );
    assert!(text.contains("add rule inet hyperlet_sg zone iifname \"brqx\" ct zone set 1"));
    assert!(text.contains("add rule inet hyperlet_sg egress iifname != @bridges accept"));
}

#[test]
fn spoofing_is_dropped_with_exact_pairs_allowed() {
    let text = text(&sample());
    assert!(
        text.contains("from_3 ether saddr != { fa:16:3e:00:00:0c, fa:16:3e:00:00:cd } counter name \"spoof_3\" drop"),
        "{text}"
    );
    assert!(
        text.contains("from_3 ether type ip ether saddr . ip saddr != { fa:16:3e:00:00:0c . 198.51.100.5, fa:16:3e:00:00:cd . 198.51.100.64/28 } counter name \"spoof_3\" drop"),
        "{text}"
    );
    assert!(text
        .contains("from_3 ether type ip udp sport 67 udp dport 68 counter name \"spoof_3\" drop"));
    assert!(!text.contains("from_4"), "tapd has no port security");
}

#[test]
fn group_rules_live_in_one_chain_per_group_and_direction() {
    let text = text(&sample());
    assert!(
        text.contains("add element inet hyperlet_sg m_1 { 198.51.100.3, 198.51.100.4 }"),
        "{text}"
    );
    assert!(
        text.contains("add rule inet hyperlet_sg sg_1_in meta nfproto ipv4 ip saddr @m_1 accept"),
        "{text}"
    );
    assert!(
        text.contains("sg_2_in meta nfproto ipv4 ip saddr 198.51.100.0/24 tcp dport 22 accept"),
        "{text}"
    );
    assert!(
        text.contains("sg_2_in meta nfproto ipv4 meta l4proto icmp icmp type 8 accept"),
        "{text}"
    );
    assert!(text.contains("add rule inet hyperlet_sg egress_3 jump sg_2_out\nadd rule inet hyperlet_sg egress_3 counter name \"policy_3\" drop"), "{text}");
}

#[test]
fn a_rule_added_to_a_group_touches_that_group_only() {
    let before = sample();
    let mut indices = Indices::default();
    indices.update(&before).unwrap();
    let [l2, sg] = render(&before, &indices, PREFIX);
    let mut after = before.clone();
    after.rules.get_mut(SSH).unwrap().push(Rule {
        direction: Direction::Ingress,
        protocol: Protocol::Udp(Some((53, 53))),
        remote: Remote::Any,
    });
    indices.update(&after).unwrap();
    let [l2b, sgb] = render(&after, &indices, PREFIX);
    assert_eq!(tables::diff(&l2, &l2b).unwrap(), "");
    let change = tables::diff(&sg, &sgb).unwrap();
    assert_eq!(
        change,
        "add rule inet hyperlet_sg sg_2_in meta nfproto ipv4 udp dport 53 accept\n"
    );
}

#[test]
fn a_port_joining_keeps_the_others_numbers_and_adds_a_member() {
    let before = sample();
    let mut indices = Indices::default();
    indices.update(&before).unwrap();
    let [_, sg] = render(&before, &indices, PREFIX);
    let mut after = before.clone();
    after.ports.remove(0);
    after.ports.push(port(
        "tape",
        "fa:16:3e:00:00:0e",
        [198, 51, 100, 7],
        DEFAULT,
    ));
    indices.update(&after).unwrap();
    assert_eq!(indices.port("tapb"), Some(2));
    assert_eq!(indices.port("tape"), Some(1), "the lowest free number");
    let [_, sgb] = render(&after, &indices, PREFIX);
    let change = tables::diff(&sg, &sgb).unwrap();
    assert!(
        change.contains("delete element inet hyperlet_sg m_1 { 198.51.100.3 }"),
        "{change}"
    );
    assert!(
        change.contains("add element inet hyperlet_sg m_1 { 198.51.100.7 }"),
        "{change}"
    );
    assert!(!change.contains("sg_1_in"), "{change}");
}

#[test]
fn too_many_ports_are_refused() {
    let mut ruleset = Ruleset::default();
    for i in 0..=MAX_PORTS {
        ruleset.ports.push(port(
            &format!("t{i}"),
            "fa:16:3e:00:00:01",
            [10, 0, 0, 1],
            DEFAULT,
        ));
    }
    assert_eq!(
        script(&ruleset, PREFIX),
        Err(FirewallError::TooManyPorts {
            count: MAX_PORTS + 1
        })
    );
}

/// The kernel accepts the full script and the diffs: `nft --check` runs the transaction
/// without committing it (root; nftables from scripts/setup.sh).
#[test]
fn the_kernel_accepts_the_ruleset() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("run as root: nft --check needs CAP_NET_ADMIN");
    }
    let dir = tempfile::tempdir().unwrap();
    for ruleset in [sample(), Ruleset::default()] {
        let path = dir.path().join("rules.nft");
        let text = text(&ruleset);
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new("nft")
            .args(["--check", "-f"])
            .arg(&path)
            .output()
            .expect("nft (apt-get install nftables)");
        assert!(
            out.status.success(),
            "{}\n{text}",
            String::from_utf8_lossy(&out.stderr),
        );
    }
}
