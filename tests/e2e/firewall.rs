//! Security groups and port security on a real bridge with real nftables.
//!
//! * The ruleset renderer alone (`hyperlet::net::firewall`, tables of the test's own): three
//!   namespaces stand in for guests, each behind a veth "tap" on one bridge. Allowed traffic
//!   passes, a reply passes as established where a new connection the other way is dropped,
//!   spoofed source addresses and MACs reach nothing.
//! * The agent's own enforcement through the API: namespaces plugged in as ports (their veth
//!   named as the port's tap), groups and rules changed over REST, DHCP from the trusted
//!   namespace, spoofers, `port_security_enabled: false`, bad input, the drop counters.

use crate::mutations::DhcpClients;
use crate::networks::{local_network, net_config, post, run};
use hyperlet::net::firewall::{
    remove_script, script, Direction, FirewallPort, Protocol, Remote, Rule, Ruleset,
};
use hyperlet_tests::Agent;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Namespace `ns` with `eth0` (`mac`, `ip`/24) whose veth peer `tap` is on `bridge`.
fn plug_namespace(ns: &str, tap: &str, bridge: &str, mac: &str, ip: &str) {
    let _ = run(&["ip", "netns", "delete", ns]);
    let _ = run(&["ip", "link", "delete", tap]);
    let cidr = format!("{ip}/24");
    for step in [
        vec!["ip", "netns", "add", ns],
        vec![
            "ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
        vec!["ip", "link", "set", tap, "master", bridge, "up"],
        vec!["ip", "-n", ns, "link", "set", "eth0", "address", mac, "up"],
        vec!["ip", "-n", ns, "link", "set", "lo", "up"],
        vec!["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"],
    ] {
        let (ok, out) = run(&step);
        assert!(ok, "{step:?}: {out}");
    }
}

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
        plug_namespace(&ns, &tap, &self.bridge, mac, ip);
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

/// Namespaces plugged into an agent's network as its ports: veth `tap<port>` on the bridge,
/// `eth0` inside with the port's MAC and address. Removed on drop.
struct Guests {
    names: Vec<String>,
}

impl Guests {
    fn plug(&mut self, bridge: &str, port: &Value, name: &str) -> String {
        let ns = format!("hlsg-{name}-{}", std::process::id() % 100_000);
        let tap = format!("tap{}", &port["id"].as_str().unwrap()[..11]);
        let mac = port["mac_address"].as_str().unwrap();
        let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
        plug_namespace(&ns, &tap, bridge, mac, ip);
        self.names.push(ns.clone());
        ns
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = run(&["ip", "netns", "delete", ns]);
        }
    }
}

fn ping(ns: &str, to: &str) -> bool {
    run(&[
        "ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", to,
    ])
    .0
}

/// `ping` that gives a lost first packet (ARP still resolving) two more tries.
fn reaches(ns: &str, to: &str) -> bool {
    (0..3).any(|_| ping(ns, to))
}

fn ip_of(port: &Value) -> String {
    port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string()
}

fn default_group(agent: &Agent) -> Value {
    agent.get_json("/v1/security-groups")["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "default")
        .cloned()
        .expect("the default group")
}

/// Waits (up to 1 s, the bound) for `cond`.
pub fn within_a_second(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
    }
}

#[test]
fn security_groups_through_the_api_filter_ports_on_the_agents_bridge() {
    let agent = Agent::start_with_config(&net_config());
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let default = default_group(&agent);
    let rules = default["security_group_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{default}");
    assert!(rules
        .iter()
        .any(|r| r["direction"] == "ingress" && r["remote_group_id"] == default["id"]));
    assert!(rules.iter().any(|r| r["direction"] == "egress"
        && r["remote_ip_prefix"].is_null()
        && r["protocol"].is_null()));

    let (s, web) = post(&agent, "/v1/security-groups", json!({"name": "web"}));
    assert_eq!(s, 201, "{web}");
    let web_id = web["id"].as_str().unwrap().to_string();
    assert_eq!(
        web["security_group_rules"].as_array().unwrap().len(),
        1,
        "egress only: {web}"
    );
    let port = |name: &str, groups: Option<Value>| {
        let mut body = json!({"network_id": net_id, "name": name});
        if let Some(g) = groups {
            body["security_groups"] = g;
        }
        let (s, p) = post(&agent, "/v1/ports", body);
        assert_eq!(s, 201, "{p}");
        p
    };
    let (a, b, c) = (
        port("a", None),
        port("b", None),
        port("c", Some(json!([web_id]))),
    );
    assert_eq!(a["security_groups"], json!([default["id"]]), "{a}");
    assert_eq!(a["port_security_enabled"], true);
    let mut guests = Guests { names: vec![] };
    let (na, nb, nc) = (
        guests.plug(&bridge, &a, "a"),
        guests.plug(&bridge, &b, "b"),
        guests.plug(&bridge, &c, "c"),
    );
    assert!(
        reaches(&na, &ip_of(&b)),
        "a → b: both in default\n{}",
        agent.log()
    );
    assert!(reaches(&nb, &ip_of(&a)), "b → a: both in default");
    assert!(!ping(&na, &ip_of(&c)), "a → c: web takes no ingress");
    assert!(!ping(&nc, &ip_of(&a)), "c → a: c is no member of default");

    // An icmp ingress rule on web opens exactly that, at once; deleting it closes it again.
    let (s, rule) = post(
        &agent,
        "/v1/security-group-rules",
        json!({"security_group_id": web_id, "direction": "ingress", "protocol": "icmp"}),
    );
    assert_eq!(s, 201, "{rule}");
    assert!(
        within_a_second(|| ping(&na, &ip_of(&c))),
        "a → c after the icmp rule"
    );
    let (s, dup) = post(
        &agent,
        "/v1/security-group-rules",
        json!({"security_group_id": web_id, "direction": "ingress", "protocol": "1"}),
    );
    assert_eq!(s, 409, "the same rule again: {dup}");
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/security-group-rules/{}", rule["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(resp.status().as_u16(), 204);
    assert!(!ping(&na, &ip_of(&c)), "a → c after the rule went");

    // c joins default: a reaches it through the remote-group set.
    let resp = agent.send(
        Method::PATCH,
        &format!("/v1/ports/{}", c["id"].as_str().unwrap()),
        Some(&json!({"security_groups": [web_id, default["id"]]})),
    );
    assert_eq!(resp.status().as_u16(), 200);
    assert!(reaches(&na, &ip_of(&c)), "a → c once c is in default");
    assert!(reaches(&nc, &ip_of(&a)), "c → a once c is in default");

    // Groups in use and default cannot go.
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/security-groups/{web_id}"),
        None,
    );
    assert_eq!(resp.status().as_u16(), 409, "web is used by c");
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/security-groups/{}", default["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(resp.status().as_u16(), 409, "default stays");

    // c takes icmp from anywhere; b spoofs another address: still nothing, and b's port
    // counts the drops.
    let (s, _) = post(
        &agent,
        "/v1/security-group-rules",
        json!({"security_group_id": web_id, "direction": "ingress", "protocol": "icmp"}),
    );
    assert_eq!(s, 201);
    let spoofed_ping = |to: &str| {
        run(&[
            "ip",
            "netns",
            "exec",
            &nb,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            "198.51.100.250",
            to,
        ])
        .0
    };
    let (ok, out) = run(&[
        "ip",
        "-n",
        &nb,
        "addr",
        "add",
        "198.51.100.250/24",
        "dev",
        "eth0",
    ]);
    assert!(ok, "{out}");
    assert!(
        !spoofed_ping(&ip_of(&c)),
        "b with a source address not its own"
    );
    assert!(reaches(&nb, &ip_of(&c)), "b with its own address");
    let metrics = agent.send(Method::GET, "/metrics", None).text().unwrap();
    let b_spoof = format!(
        "hyperlet_port_dropped_packets_total{{port=\"{}\",reason=\"spoof\"}} ",
        b["id"].as_str().unwrap()
    );
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&b_spoof))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spoof counter for b in\n{metrics}"));
    assert!(dropped > 0, "{metrics}");

    // Port security off needs the groups gone too; then b may use any address (the
    // documented risk).
    let b_path = format!("/v1/ports/{}", b["id"].as_str().unwrap());
    let resp = agent.send(
        Method::PATCH,
        &b_path,
        Some(&json!({"port_security_enabled": false})),
    );
    assert_eq!(resp.status().as_u16(), 409, "groups remain on b");
    let resp = agent.send(
        Method::PATCH,
        &b_path,
        Some(&json!({"port_security_enabled": false, "security_groups": []})),
    );
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        spoofed_ping(&ip_of(&c)),
        "b without port security, any source address"
    );
}

/// Every field of the security group API refuses bad input with 400 naming it (or 404 for
/// an unknown reference), and a refused request changes nothing.
#[test]
fn bad_security_group_input_is_refused_and_changes_nothing() {
    let agent = Agent::start_with_config(&net_config());
    let default = default_group(&agent);
    let did = default["id"].as_str().unwrap().to_string();
    let before = agent.get_json("/v1/security-groups");
    for (body, field) in [
        (
            json!({"security_group_id": did, "direction": "sideways"}),
            "direction",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "ethertype": "IPv6"}),
            "ethertype",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "protocol": "300"}),
            "protocol",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}),
            "port_range_max",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "protocol": "tcp", "port_range_min": 70000}),
            "port_range_min",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "protocol": "any", "port_range_min": 22}),
            "port_range_min",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "protocol": "icmp", "port_range_min": 300}),
            "port_range_min",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": did}),
            "remote_group_id",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "remote_ip_prefix": "10.0.0.0/40"}),
            "remote_ip_prefix",
        ),
        (
            json!({"security_group_id": did, "direction": "ingress", "colour": "red"}),
            "colour",
        ),
    ] {
        let (s, err) = post(&agent, "/v1/security-group-rules", body.clone());
        assert_eq!(s, 400, "{body}: {err}");
        assert!(err.to_string().contains(field), "{body}: {err}");
    }
    let (s, err) = post(
        &agent,
        "/v1/security-group-rules",
        json!({"security_group_id": "no-such-group", "direction": "ingress"}),
    );
    assert_eq!(s, 404, "{err}");
    assert_eq!(err["error"]["code"], "unknown_reference", "{err}");
    for (body, status) in [
        (json!({"name": ""}), 400),
        (json!({"name": "x\u{1}"}), 400),
        (json!({"name": "default"}), 409),
    ] {
        let (s, err) = post(&agent, "/v1/security-groups", body.clone());
        assert_eq!(s, status, "{body}: {err}");
    }
    let resp = agent.send(
        Method::PATCH,
        &format!("/v1/security-groups/{did}"),
        Some(&json!({"name": "other"})),
    );
    assert_eq!(resp.status().as_u16(), 409, "default keeps its name");
    assert_eq!(
        agent.get_json("/v1/security-groups"),
        before,
        "nothing changed"
    );
}

/// DHCP through the agent's own firewall: the namespace's tap is trusted, so a port in a
/// group with no rule at all still gets its lease, while a client on another port's tap that
/// takes the first port's MAC — which gets the victim's lease on an unfiltered veth — gets
/// nothing.
#[test]
fn dhcp_reaches_filtered_ports_and_spoofers_get_nothing() {
    let agent = Agent::start_with_config(&net_config());
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let (s, closed) = post(&agent, "/v1/security-groups", json!({"name": "closed"}));
    assert_eq!(s, 201, "{closed}");
    for rule in closed["security_group_rules"].as_array().unwrap() {
        let resp = agent.send(
            Method::DELETE,
            &format!("/v1/security-group-rules/{}", rule["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(resp.status().as_u16(), 204);
    }
    let mut ports = Vec::new();
    for i in 0..2 {
        let (s, port) = post(
            &agent,
            "/v1/ports",
            json!({"network_id": net_id, "name": format!("fw{i}"), "security_groups": [closed["id"]]}),
        );
        assert_eq!(s, 201, "{port}");
        ports.push(port);
    }
    let mac0 = ports[0]["mac_address"].as_str().unwrap().to_string();
    let unfiltered = DhcpClients::new(&bridge, std::slice::from_ref(&mac0));
    assert_eq!(
        unfiltered.lease(0).as_deref(),
        Ok(ip_of(&ports[0]).as_str()),
        "on a veth no port owns, the MAC alone gets the lease"
    );
    drop(unfiltered);
    let taps: Vec<String> = ports
        .iter()
        .map(|p| format!("tap{}", &p["id"].as_str().unwrap()[..11]))
        .collect();
    let clients = DhcpClients::on_taps(&bridge, &[mac0.clone(), mac0], Some(&taps));
    assert_eq!(clients.lease(0).as_deref(), Ok(ip_of(&ports[0]).as_str()));
    assert!(
        clients.lease(1).is_err(),
        "a client with another port's MAC got a lease through the firewall"
    );
}

/// kill -9 while a rule change waits to be programmed: the kernel keeps the old tables (one
/// transaction, never half), the store has the new rule, and the restarted agent's full
/// replacement programs it.
#[test]
fn a_kill_during_an_update_leaves_the_old_rules_and_the_restart_the_new() {
    let mut agent = Agent::start_with_config(&net_config());
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let (s, web) = post(&agent, "/v1/security-groups", json!({"name": "web"}));
    assert_eq!(s, 201, "{web}");
    let port = |name: &str, groups: Value| {
        let (s, p) = post(
            &agent,
            "/v1/ports",
            json!({"network_id": net_id, "name": name, "security_groups": groups}),
        );
        assert_eq!(s, 201, "{p}");
        p
    };
    let default_id = default_group(&agent)["id"].clone();
    let (a, c) = (
        port("a", json!([default_id])),
        port("c", json!([web["id"]])),
    );
    let mut guests = Guests { names: vec![] };
    let (na, _nc) = (
        guests.plug(&bridge, &a, "ka"),
        guests.plug(&bridge, &c, "kc"),
    );
    assert!(!ping(&na, &ip_of(&c)), "web takes nothing in");

    // Every incremental update now pauses before `nft` runs.
    agent.kill9();
    agent.env = vec![
        (
            "HYPERLET_FAILPOINT".into(),
            "firewall:update:started".into(),
        ),
        ("HYPERLET_FAILPOINT_DELAY_MS".into(), "30000".into()),
    ];
    agent.restart();
    let (url, token) = (agent.url(), agent.token());
    let body = json!({"security_group_id": web["id"], "direction": "ingress", "protocol": "icmp"});
    let request = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{url}/v1/security-group-rules"))
            .bearer_auth(token)
            .json(&body)
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .map(|r| r.status().as_u16())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !agent.log().contains("failpoint reached") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    agent.kill9();
    assert!(
        request.join().unwrap().is_err(),
        "the request died with the agent"
    );
    assert!(!ping(&na, &ip_of(&c)), "the old tables are still in force");

    agent.env.clear();
    agent.restart();
    let rules = agent.get_json(&format!(
        "/v1/security-group-rules?security_group_id={}",
        web["id"].as_str().unwrap()
    ));
    assert!(
        rules["security_group_rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["protocol"] == "icmp"),
        "the rule was stored before the kill: {rules}"
    );
    assert!(
        reaches(&na, &ip_of(&c)),
        "the restart programs what the store says"
    );
}
