//! The security-group ruleset (`hyperlet::net::firewall`, issue #12's first layer) on a real
//! bridge with real nftables: three namespaces stand in for guests, each behind a veth "tap"
//! on one bridge, and the rendered ruleset (in tables of this test's own) is applied with
//! `nft -f`. Allowed traffic passes, a reply passes as established where a new connection the
//! other way is dropped, and spoofed source addresses and MACs reach nothing.

use crate::mutations::DhcpClients;
use crate::networks::{local_network, net_config, post, run};
use hyperlet::net::firewall::{
    remove_script, script, Direction, FirewallPort, Protocol, Remote, Rule, Ruleset,
};
use hyperlet_tests::Agent;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Namespaces, taps, a bridge and nftables tables of one test, removed on drop.
struct Fabric {
    tag: String,
    bridge: String,
    guests: Vec<(String, String)>,
}

impl Fabric {
    fn new() -> Self {
        let tag = format!("{}", std::process::id() % 100_000);
        let bridge = format!("hlfwbr{tag}");
        let _ = run(&["ip", "link", "delete", &bridge]);
        let (ok, out) = run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        assert!(ok, "{out}");
        let (ok, out) = run(&["ip", "link", "set", &bridge, "up"]);
        assert!(ok, "{out}");
        Self {
            tag,
            bridge,
            guests: Vec::new(),
        }
    }

    /// A "guest": namespace + veth whose host end is on the bridge; returns the tap name.
    fn guest(&mut self, name: &str, mac: &str, ip: &str) -> String {
        let ns = format!("hlfw-{name}-{}", self.tag);
        let tap = format!("hlfw{name}{}", self.tag);
        let _ = run(&["ip", "netns", "delete", &ns]);
        let _ = run(&["ip", "link", "delete", &tap]);
        for step in [
            vec!["ip", "netns", "add", &ns],
            vec![
                "ip", "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
            vec!["ip", "link", "set", &tap, "master", &self.bridge, "up"],
            vec!["ip", "-n", &ns, "link", "set", "eth0", "address", mac, "up"],
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
            vec![
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ],
        ] {
            let (ok, out) = run(&step);
            assert!(ok, "{step:?}: {out}");
        }
        self.guests.push((ns, tap.clone()));
        tap
    }

    fn ns(&self, name: &str) -> String {
        format!("hlfw-{name}-{}", self.tag)
    }

    fn prefix(&self) -> String {
        format!("hlfwtest{}", self.tag)
    }

    fn apply(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.prefix()));
        std::fs::write(&path, script).unwrap();
        let (ok, out) = run(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(ok, "nft -f: {out}\n{script}");
    }

    /// Does one ping from guest `from` (with source `src`) to `to` get an answer?
    fn ping(&self, from: &str, src: &str, to: &str) -> bool {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(from),
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            src,
            to,
        ])
        .0
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = {
            let path = std::env::temp_dir().join(format!("{}-rm.nft", self.prefix()));
            let _ = std::fs::write(&path, remove_script(&self.prefix()));
            let r = run(&["nft", "-f", path.to_str().unwrap()]);
            let _ = std::fs::remove_file(&path);
            r
        };
        for (ns, tap) in &self.guests {
            let _ = run(&["ip", "link", "delete", tap]);
            let _ = run(&["ip", "netns", "delete", ns]);
        }
        let _ = run(&["ip", "link", "delete", &self.bridge]);
    }
}

/// One ruleset at a time: two would read each other's packet marks (one host has one).
static ONE_RULESET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_ruleset() -> std::sync::MutexGuard<'static, ()> {
    ONE_RULESET.lock().unwrap_or_else(|p| p.into_inner())
}

fn rule(direction: Direction, protocol: Protocol, remote: Remote) -> Rule {
    Rule {
        direction,
        protocol,
        remote,
    }
}

#[test]
fn the_ruleset_filters_real_bridged_traffic_statefully_and_stops_spoofing() {
    let _one = one_ruleset();
    let mut fabric = Fabric::new();
    let (ip_a, ip_b, ip_c) = ("198.51.100.3", "198.51.100.4", "198.51.100.5");
    let tap_a = fabric.guest("a", "fa:16:3e:00:00:0a", ip_a);
    let tap_b = fabric.guest("b", "fa:16:3e:00:00:0b", ip_b);
    let tap_c = fabric.guest("c", "fa:16:3e:00:00:0c", ip_c);
    // Before any rule, everyone reaches everyone.
    assert!(fabric.ping("a", ip_a, ip_c));

    // a and b in "default" (egress anywhere, ingress from members); c may only go out.
    let (default, out_only) = ("default".to_string(), "out-only".to_string());
    let mut rules = BTreeMap::new();
    rules.insert(
        default.clone(),
        vec![
            rule(Direction::Egress, Protocol::Any, Remote::Any),
            rule(
                Direction::Ingress,
                Protocol::Any,
                Remote::Group(default.clone()),
            ),
        ],
    );
    rules.insert(
        out_only.clone(),
        vec![rule(Direction::Egress, Protocol::Any, Remote::Any)],
    );
    let port = |tap: &str, mac: &str, ip: &str, group: &str| FirewallPort {
        device: tap.to_string(),
        mac: mac.to_string(),
        ips: vec![ip.parse().unwrap()],
        pairs: vec![],
        groups: vec![group.to_string()],
        secured: true,
    };
    let mut ruleset = Ruleset {
        ports: vec![
            port(&tap_a, "fa:16:3e:00:00:0a", ip_a, &default),
            port(&tap_b, "fa:16:3e:00:00:0b", ip_b, &default),
            port(&tap_c, "fa:16:3e:00:00:0c", ip_c, &out_only),
        ],
        bridges: vec![fabric.bridge.clone()],
        rules,
        trusted: vec![],
    };
    fabric.apply(&script(&ruleset, &fabric.prefix()).unwrap());

    assert!(fabric.ping("a", ip_a, ip_b), "a → b: both in default");
    assert!(fabric.ping("b", ip_b, ip_a), "b → a: both in default");
    assert!(!fabric.ping("a", ip_a, ip_c), "a → c: c takes no ingress");
    assert!(
        !fabric.ping("c", ip_c, ip_a),
        "c → a: c is no member of default"
    );

    // Stateful: a lets c's echo requests in (icmp from anywhere); c's ingress allows nothing,
    // yet a's replies reach c as established traffic.
    ruleset.rules.get_mut(&default).unwrap().push(rule(
        Direction::Ingress,
        Protocol::Icmp(Some(8), None),
        Remote::Any,
    ));
    fabric.apply(&script(&ruleset, &fabric.prefix()).unwrap());
    assert!(
        fabric.ping("c", ip_c, ip_a),
        "c → a: allowed, and the reply is established"
    );
    assert!(
        !fabric.ping("a", ip_a, ip_c),
        "a → c: still no ingress on c"
    );

    // Spoofing: b with another source address, then with another MAC, reaches nothing.
    let ns_b = fabric.ns("b");
    let (ok, out) = run(&[
        "ip",
        "-n",
        &ns_b,
        "addr",
        "add",
        "198.51.100.9/24",
        "dev",
        "eth0",
    ]);
    assert!(ok, "{out}");
    assert!(
        !fabric.ping("b", "198.51.100.9", ip_a),
        "b spoofing a source address"
    );
    assert!(fabric.ping("b", ip_b, ip_a), "b with its own address");
    let (ok, out) = run(&[
        "ip",
        "-n",
        &ns_b,
        "link",
        "set",
        "eth0",
        "address",
        "fa:16:3e:00:00:99",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ip", "-n", &ns_b, "neigh", "flush", "all"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ip", "-n", &fabric.ns("a"), "neigh", "flush", "all"]);
    assert!(ok, "{out}");
    assert!(!fabric.ping("b", ip_b, ip_a), "b spoofing a MAC");
}

/// The agent's own DHCP server behind the ruleset: its namespace's tap is trusted, so ports in
/// a group with no DHCP rule still get their lease, while a client on another port that takes
/// the first port's MAC — which gets the victim's lease without the ruleset — gets nothing.
#[test]
fn dhcp_from_the_trusted_namespace_reaches_filtered_ports_and_spoofers_get_nothing() {
    let _one = one_ruleset();
    let agent = Agent::start_with_config(&net_config());
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let mut ports = Vec::new();
    for i in 0..2 {
        let (s, port) = post(
            &agent,
            "/v1/ports",
            json!({"network_id": net_id, "name": format!("fw{i}")}),
        );
        assert_eq!(s, 201, "{port}");
        ports.push((
            port["mac_address"].as_str().unwrap().to_string(),
            port["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let dhcp_port = agent.get_json(&format!("/v1/ports?network_id={net_id}"))["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["device_owner"] == "network:dhcp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Client 1 sits on port 1's tap but sends with port 0's MAC.
    let macs = vec![ports[0].0.clone(), ports[0].0.clone()];
    let clients = DhcpClients::new(&bridge, &macs);
    assert_eq!(
        clients.lease(1).as_deref(),
        Ok(ports[0].1.as_str()),
        "without the ruleset the spoofer gets the victim's lease"
    );
    let prefix = format!("hlfwdhcp{}", std::process::id() % 100_000);
    let ruleset = Ruleset {
        ports: (0..2)
            .map(|i| FirewallPort {
                device: clients.tap(i),
                mac: ports[i].0.clone(),
                ips: vec![ports[i].1.parse().unwrap()],
                pairs: vec![],
                // A group without rules: nothing in, nothing out — but DHCP.
                groups: vec!["closed".into()],
                secured: true,
            })
            .collect(),
        bridges: vec![bridge.clone()],
        rules: BTreeMap::new(),
        trusted: vec![format!("tap{}", &dhcp_port[..11])],
    };
    let path = std::env::temp_dir().join(format!("{prefix}.nft"));
    std::fs::write(&path, script(&ruleset, &prefix).unwrap()).unwrap();
    let applied = run(&["nft", "-f", path.to_str().unwrap()]);
    let leases = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(applied.0, "nft -f: {}", applied.1);
        assert_eq!(clients.lease(0).as_deref(), Ok(ports[0].1.as_str()));
        assert!(
            clients.lease(1).is_err(),
            "a client with another port's MAC got a lease through the firewall"
        );
    }));
    std::fs::write(&path, remove_script(&prefix)).unwrap();
    let _ = run(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = leases {
        std::panic::resume_unwind(panic);
    }
}
