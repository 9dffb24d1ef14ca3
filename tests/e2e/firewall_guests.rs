//! Security groups with real guests (issue #12's acceptance): three test guests on one
//! network, driven through their guest agents — ping and TCP (busybox nc) between them as the
//! groups allow, rules that open and close within a second, a guest taking another's address
//! or MAC, and an agent restart under a 0.2 s ping.

use crate::firewall::within_a_second;
use crate::networks::{local_network, net_config, post};
use crate::servers::import_guest;
use hyperlet_tests::guest::guest_sh;
use hyperlet_tests::Agent;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(180);

/// A booted guest: its server id, domain, address and MAC.
struct Guest {
    id: String,
    domain: String,
    ip: String,
    mac: String,
}

fn boot(agent: &Agent, name: &str, image: &str, net_id: &str, groups: &[&str]) -> String {
    let mut body = json!({
        "name": name, "image_id": image,
        "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
        "networks": [{"network_id": net_id}],
    });
    if !groups.is_empty() {
        body["security_groups"] = groups.iter().map(|g| json!({ "name": g })).collect();
    }
    let (s, server) = post(agent, "/v1/servers", body);
    assert_eq!(s, 202, "{server}");
    server["id"].as_str().unwrap().to_string()
}

fn settle(agent: &Agent, id: &str) -> Guest {
    let server = agent.wait_server(id, "ACTIVE", BOOT);
    let console = agent.wait_console(id, "HYPERLET-GUEST: meta-done", 1, BOOT);
    assert!(
        console.contains(&format!("HYPERLET-GUEST: meta instance-id {id}")),
        "DHCP and metadata through the firewall: {console}"
    );
    agent.wait_console(id, "HYPERLET-GUEST: qga started", 1, BOOT);
    Guest {
        id: id.to_string(),
        domain: server["domain_name"].as_str().unwrap().to_string(),
        ip: server["nics"][0]["fixed_ips"][0]
            .as_str()
            .unwrap()
            .to_string(),
        mac: server["nics"][0]["mac"].as_str().unwrap().to_string(),
    }
}

impl Guest {
    /// Exit code and stdout + stderr of a shell line.
    fn sh(&self, script: &str) -> (i64, String) {
        let (code, out, err) = guest_sh(&self.domain, script, Duration::from_secs(60));
        (code, out + &err)
    }

    fn pings(&self, to: &Guest) -> bool {
        self.sh(&format!("busybox ping -c 1 -W 2 {}", to.ip)).0 == 0
    }

    /// Connects to `to`'s port 22 and returns what the listener there said.
    fn tcp(&self, to: &Guest) -> String {
        self.sh(&format!("echo | busybox nc -w 2 {} 22", to.ip)).1
    }

    /// A TCP listener on port 22 that answers `hello-from-<name>` to every connection.
    fn listen(&self, name: &str) {
        let (code, out) = self.sh(&format!(
            "busybox nc -ll -p 22 -e /bin/busybox echo hello-from-{name} </dev/null >/dev/null 2>&1 &"
        ));
        assert_eq!(code, 0, "{out}");
    }
}

/// A network with three booted guests: `a` (no group asked: `default`), `b` (`default` by
/// name) and `c` in a new group `no-ingress` (egress only). Returns the network id and the
/// group.
fn three_guests(agent: &Agent, tag: &str) -> (String, Value, [Guest; 3]) {
    let image = import_guest(agent, "hyperlet.metadata=1");
    let (net, _) = local_network(agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let (s, closed) = post(agent, "/v1/security-groups", json!({"name": "no-ingress"}));
    assert_eq!(s, 201, "{closed}");
    let ids = [
        boot(agent, &format!("{tag}-a"), &image, &net_id, &[]),
        boot(agent, &format!("{tag}-b"), &image, &net_id, &["default"]),
        boot(agent, &format!("{tag}-c"), &image, &net_id, &["no-ingress"]),
    ];
    (net_id, closed, ids.map(|id| settle(agent, &id)))
}

#[test]
fn guests_reach_exactly_what_their_groups_allow_and_spoofers_reach_nothing() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(&net_config());
    let (net_id, closed, [a, b, c]) = three_guests(&agent, "fw");
    b.listen("b");
    c.listen("c");

    assert!(a.pings(&b), "a → b, both in default");
    assert!(b.pings(&a), "b → a, both in default");
    assert!(a.tcp(&b).contains("hello-from-b"), "tcp a → b");
    assert!(!a.pings(&c), "a → c: no-ingress takes nothing in");
    assert!(!a.tcp(&c).contains("hello-from-c"), "tcp a → c");
    assert!(!c.pings(&a), "c → a: c is no member of default");

    // tcp 22 then icmp opened on no-ingress: exactly that, within a second.
    let rule = |body: Value| {
        let (s, r) = post(&agent, "/v1/security-group-rules", body);
        assert_eq!(s, 201, "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let group = closed["id"].as_str().unwrap();
    let ssh = rule(json!({"security_group_id": group, "direction": "ingress",
        "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}));
    assert!(
        within_a_second(|| a.tcp(&c).contains("hello-from-c")),
        "tcp 22 opened"
    );
    assert!(!a.pings(&c), "icmp still closed");
    let icmp =
        rule(json!({"security_group_id": group, "direction": "ingress", "protocol": "icmp"}));
    assert!(within_a_second(|| a.pings(&c)), "icmp opened");
    for id in [ssh, icmp] {
        let resp = agent.send(
            Method::DELETE,
            &format!("/v1/security-group-rules/{id}"),
            None,
        );
        assert_eq!(resp.status().as_u16(), 204);
    }
    assert!(!a.tcp(&c).contains("hello-from-c"), "tcp 22 closed again");
    assert!(!a.pings(&c), "icmp closed again");

    // A rogue DHCP server in c, whose group now lets DHCP requests in: b's DISCOVERs are
    // answered by the agent only; c's offers are dropped on c's port, and counted there.
    rule(json!({"security_group_id": group, "direction": "ingress",
        "protocol": "udp", "port_range_min": 67, "port_range_max": 67}));
    let (code, out) = c.sh(
        "printf 'start 198.51.100.200\\nend 198.51.100.210\\ninterface eth0\\nlease_file /tmp/leases\\npidfile /tmp/udhcpd.pid\\n' > /tmp/u.conf && touch /tmp/leases && (busybox udhcpd -f /tmp/u.conf </dev/null >/tmp/ud.log 2>&1 &) && sleep 1 && kill -0 $(cat /tmp/udhcpd.pid) || { cat /tmp/ud.log; exit 1; }",
    );
    assert_eq!(code, 0, "udhcpd in c: {out}");
    let dhcp_ip = agent.get_json(&format!("/v1/ports?network_id={net_id}"))["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["device_owner"] == "network:dhcp")
        .unwrap()["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, lease) = b.sh("busybox udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true 2>&1");
    assert_eq!(code, 0, "{lease}");
    assert!(
        lease.contains(&format!("lease of {} obtained from {dhcp_ip}", b.ip)),
        "b's lease comes from the agent: {lease}"
    );
    assert!(
        // udhcpd ARP-probes an address before it offers it (about a second).
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            drops(&agent, &c.id) > 0
        }),
        "c's rogue offers were not dropped: {}",
        c.sh("cat /tmp/ud.log").1
    );

    // b takes a's address: it reaches nothing, gets no metadata for a (nor for itself).
    let (code, out) = b.sh(&format!(
        "busybox ip addr flush dev eth0 && busybox ip addr add {}/24 dev eth0 && busybox ip route add 169.254.169.254/32 dev eth0",
        a.ip
    ));
    assert_eq!(code, 0, "{out}");
    assert!(!b.pings(&c), "b with a's address → c");
    let (_, meta) =
        b.sh("busybox wget -q -T 3 -O - http://169.254.169.254/latest/meta-data/instance-id");
    assert!(!meta.contains(&a.id), "b read a's metadata: {meta}");
    assert!(meta.is_empty(), "{meta}");
    // … then a's MAC as well: still nothing, and DHCP does not answer it as a.
    let (code, out) = b.sh(&format!(
        "busybox ip link set eth0 down && busybox ip link set eth0 address {} && busybox ip link set eth0 up",
        a.mac
    ));
    assert_eq!(code, 0, "{out}");
    let (_, meta) =
        b.sh("busybox wget -q -T 3 -O - http://169.254.169.254/latest/meta-data/instance-id");
    assert!(
        !meta.contains(&a.id),
        "b with a's MAC and address read a's metadata: {meta}"
    );
    let (code, lease) = b.sh("busybox udhcpc -i eth0 -n -q -t 2 -T 1 -s /bin/true 2>&1");
    assert_ne!(code, 0, "b got a lease with a's MAC: {lease}");
    assert!(!lease.contains("lease of"), "{lease}");
    assert!(
        drops(&agent, &b.id) > 0,
        "b's spoofed packets were not counted"
    );
}

/// The spoof drops counted for the port of server `id`.
fn drops(agent: &Agent, id: &str) -> u64 {
    let metrics = agent.send(Method::GET, "/metrics", None).text().unwrap();
    let port = agent.get_json(&format!("/v1/ports?device_id={id}"))["ports"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let spoof = format!("hyperlet_port_dropped_packets_total{{port=\"{port}\",reason=\"spoof\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&spoof))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spoof counter for {port}:\n{metrics}"))
}

/// The agent restarts (killed, then started again) while a pings b and c every 0.2 s: not one
/// allowed packet is lost, not one forbidden one gets through — the tables stay in the kernel
/// while the agent is down and are replaced in one transaction when it starts.
#[test]
fn an_agent_restart_leaves_no_gap_in_the_filtering() {
    let _vm = hyperlet_tests::vm_shared();
    let mut agent = Agent::start_with_config(&net_config());
    let (_, _, [a, b, c]) = three_guests(&agent, "rs");
    assert!(a.pings(&b));
    let (code, out) = a.sh(&format!(
        "(busybox ping -i 0.2 -c 60 {} > /tmp/to-b 2>&1; echo done >> /tmp/to-b) </dev/null >/dev/null 2>&1 &
         (busybox ping -i 0.2 -c 60 {} > /tmp/to-c 2>&1; echo done >> /tmp/to-c) </dev/null >/dev/null 2>&1 &",
        b.ip, c.ip
    ));
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_secs(2));
    agent.kill9();
    std::thread::sleep(Duration::from_secs(2));
    agent.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (to_b, to_c) = loop {
        let (_, to_b) = a.sh("cat /tmp/to-b");
        let (_, to_c) = a.sh("cat /tmp/to-c");
        if to_b.contains("done") && to_c.contains("done") {
            break (to_b, to_c);
        }
        assert!(
            Instant::now() < deadline,
            "pings did not finish: {to_b}\n{to_c}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        to_b.contains("60 packets transmitted, 60 packets received"),
        "{to_b}"
    );
    assert!(
        to_c.contains("60 packets transmitted, 0 packets received"),
        "{to_c}"
    );
}
