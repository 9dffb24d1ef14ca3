//! A VXLAN network spanning two sandboxed nodes (issue #13): the same network id and VNI on
//! both, one real guest on each; forwarding entries come from etcd (l2population), the guests
//! ping each other across the tunnel, and each got DHCP and its own metadata from its own node.

use crate::servers::{import_guest, CONFIG};
use hyperlet_tests::fleet::{Fabric, FleetNode};
use hyperlet_tests::guest::guest_sh_with;
use hyperlet_tests::{plugin_wasm, shared_plugin_cache, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
const VNI: u32 = 4242;

/// A node's settings: the server test settings and the linux-bridge backend with this node's
/// tunnel address.
pub fn node_config(ip: &str) -> String {
    node_config_with(ip, "")
}

/// [`node_config`] with `capacity` appended to its `[capacity]` table and `plugins` (more
/// `[[plugins]]`) at the end.
pub fn node_config_with(ip: &str, capacity: &str) -> String {
    format!(
        "{CONFIG}{capacity}\n[plugin_runtime]\ncache_dir = {cache:?}\n\n[[plugins]]\nname = \"linuxbridge\"\n\
         kind = \"network-backend\"\npath = {path:?}\ngrants = [\"log\", \"netlink\"]\n\
         call_timeout_ms = 10000\nsettings = {{ vxlan_local_ip = \"{ip}\" }}\n",
        cache = shared_plugin_cache().display().to_string(),
        path = plugin_wasm("network-linux-bridge").display().to_string(),
    )
}

pub fn post(agent: &Agent, path: &str, body: &Value) -> Value {
    let resp = agent.send(Method::POST, path, Some(body));
    let status = resp.status();
    let value: Value = resp.json().unwrap_or_default();
    assert!(status.is_success(), "POST {path} {body} → {status} {value}");
    value
}

/// The same network (id, VNI) and subnet (id, CIDR) on `node`.
pub fn span(node: &FleetNode, net: &str, subnet: &str) {
    let agent = &node.agent;
    post(
        agent,
        "/v1/networks",
        &json!({"id": net, "name": "span", "network_type": "vxlan", "segmentation_id": VNI}),
    );
    agent.wait_settled(&format!("/v1/networks/{net}"), &["BUILD"]);
    post(
        agent,
        "/v1/subnets",
        &json!({"id": subnet, "network_id": net, "cidr": "10.90.0.0/24"}),
    );
}

/// [`span`], an ICMP-open group, and a guest with an address the node allocates; returns the
/// server id.
pub fn guest_on(node: &FleetNode, net: &str, subnet: &str, name: &str) -> String {
    span(node, net, subnet);
    let agent = &node.agent;
    let group = post(agent, "/v1/security-groups", &json!({"name": "icmp"}));
    post(
        agent,
        "/v1/security-group-rules",
        &json!({"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"}),
    );
    let image = import_guest(agent, "hyperlet.metadata=1");
    let server = post(
        agent,
        "/v1/servers",
        &json!({
            "name": name, "image_id": image,
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
            "networks": [{"network_id": net}],
            "security_groups": [{"name": "icmp"}],
        }),
    );
    server["id"].as_str().expect("id").to_string()
}

fn l2_log(node: &FleetNode) -> String {
    node.agent
        .log()
        .lines()
        .filter(|l| l.contains("l2pop") || l.contains("fleet"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn guests_on_two_nodes_ping_across_a_vxlan_network_with_local_dhcp_and_metadata() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("span-a", 1, &node_config(&fabric.address(1)));
    let b = fabric.node("span-b", 2, &node_config(&fabric.address(2)));
    let net = uuid::Uuid::new_v4().to_string();
    let subnet = uuid::Uuid::new_v4().to_string();
    let ga = guest_on(&a, &net, &subnet, "left");
    let gb = guest_on(&b, &net, &subnet, "right");

    let mut domains = Vec::new();
    let mut ips = Vec::new();
    for (node, id) in [(&a, &ga), (&b, &gb)] {
        let server = node.agent.wait_server(id, "ACTIVE", BOOT);
        let ip = server["nics"][0]["fixed_ips"][0]
            .as_str()
            .expect("ip")
            .to_string();
        let console = node
            .agent
            .wait_console(id, "HYPERLET-GUEST: meta-done", 1, BOOT);
        assert!(
            console.contains(&format!("HYPERLET-GUEST: ip {ip}")),
            "DHCP from its own node gave {ip}: {console}"
        );
        assert!(
            console.contains(&format!("HYPERLET-GUEST: meta instance-id {id}")),
            "its own metadata from its own node: {console}"
        );
        node.agent
            .wait_console(id, "HYPERLET-GUEST: qga started", 1, BOOT);
        domains.push(server["domain_name"].as_str().expect("domain").to_string());
        ips.push(ip);
    }
    assert_ne!(
        ips[0], ips[1],
        "fleet-wide allocation gave the two guests different addresses"
    );

    // Each node learned the other's port from etcd: a flooding and a unicast entry.
    // The agent's entries are the permanent ones (the link also learns from traffic).
    let fdb = |node: &FleetNode| {
        node.exec(&["bridge", "fdb", "show", "dev", &format!("vxlan-{VNI}")])
            .1
            .lines()
            .filter(|l| l.contains("permanent") && l.contains(" dst "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(fdb(&a).contains(&format!("dst {}", b.ip))
        && fdb(&b).contains(&format!("dst {}", a.ip)))
    {
        assert!(
            Instant::now() < deadline,
            "forwarding entries: a {} / b {}",
            fdb(&a),
            fdb(&b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fdb(&a).contains("00:00:00:00:00:00"), "{}", fdb(&a));

    let sh = |node: &FleetNode, domain: &str, script: &str| {
        guest_sh_with(
            |args| node.libvirt.virsh(args),
            domain,
            script,
            Duration::from_secs(60),
        )
    };
    let ping = |node: &FleetNode, domain: &str, to: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, out, err) = sh(node, domain, &format!("busybox ping -c 1 -W 2 {to}"));
            if code == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "ping {to}: {out}{err}");
        }
    };
    ping(&a, &domains[0], &ips[1]);
    ping(&b, &domains[1], &ips[0]);

    // The second node's guest goes: the first node drops its forwarding entries.
    let resp = b
        .agent
        .send(Method::DELETE, &format!("/v1/servers/{gb}"), None);
    assert!(resp.status().is_success());
    b.agent.wait_server_gone(&gb, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fdb(&a).contains(&format!("dst {}", b.ip)) {
        assert!(
            Instant::now() < deadline,
            "entries removed: {}\nports of b: {}\nnode a: {}\nnode b: {}",
            fdb(&a),
            b.agent.get_json("/v1/ports"),
            l2_log(&a),
            l2_log(&b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_nodes_never_hand_out_the_same_address_on_a_shared_subnet() {
    let fabric = Fabric::new();
    let a = fabric.node("ipam-a", 1, &node_config(&fabric.address(1)));
    let b = fabric.node("ipam-b", 2, &node_config(&fabric.address(2)));
    let net = uuid::Uuid::new_v4().to_string();
    let subnet = uuid::Uuid::new_v4().to_string();
    span(&a, &net, &subnet);
    span(&b, &net, &subnet);

    // Twelve ports on each node at once.
    let net_ref = net.as_str();
    let create = |node: &FleetNode| {
        let agent = &node.agent;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|i| {
                    scope.spawn(move || {
                        post(
                            agent,
                            "/v1/ports",
                            &json!({"network_id": net_ref, "name": format!("p{i}")}),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("port"))
                .collect::<Vec<_>>()
        })
    };
    let (left, right) = std::thread::scope(|scope| {
        let l = scope.spawn(|| create(&a));
        let r = scope.spawn(|| create(&b));
        let _ = &create;
        (l.join().expect("a"), r.join().expect("b"))
    });
    let mut all: Vec<String> = Vec::new();
    for node in [&a, &b] {
        for port in node.agent.get_json("/v1/ports")["ports"]
            .as_array()
            .expect("ports")
        {
            all.push(
                port["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .expect("ip")
                    .to_string(),
            );
        }
    }
    assert_eq!(left.len() + right.len(), 24);
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "every address once across both nodes (DHCP ports too): {all:?}"
    );

    // A fixed address another node holds is refused, naming the node.
    let taken = left[0]["fixed_ips"][0]["ip_address"].as_str().expect("ip");
    let resp = b.agent.send(
        Method::POST,
        "/v1/ports",
        Some(&json!({"network_id": net, "fixed_ips": [{"ip_address": taken}]})),
    );
    assert_eq!(resp.status(), 409);
    let answer: Value = resp.json().expect("JSON");
    assert!(answer.to_string().contains("ipam-a"), "{answer}");

    // Released when the port goes: the other node may take it then.
    let resp = a.agent.send(
        Method::DELETE,
        &format!("/v1/ports/{}", left[0]["id"].as_str().expect("id")),
        None,
    );
    assert!(resp.status().is_success());
    let resp = b.agent.send(
        Method::POST,
        "/v1/ports",
        Some(&json!({"network_id": net, "fixed_ips": [{"ip_address": taken}]})),
    );
    assert_eq!(resp.status(), 201, "free again after the delete");
}

#[test]
fn address_claims_are_reconciled_after_a_crash_window_and_a_lost_release() {
    use hyperlet::config::FleetConfig;
    use hyperlet::fleet::etcd::Etcd;
    use hyperlet::fleet::keys::Keys;
    let fabric = Fabric::new();
    let mut a = fabric.node("claims-a", 1, &node_config(&fabric.address(1)));
    let net = uuid::Uuid::new_v4().to_string();
    let subnet = uuid::Uuid::new_v4().to_string();
    span(&a, &net, &subnet);
    let port = post(&a.agent, "/v1/ports", &json!({"network_id": net}));
    let (port_id, ip) = (
        port["id"].as_str().expect("id").to_string(),
        port["fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("ip"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = runtime
        .block_on(Etcd::connect(&FleetConfig {
            endpoints: vec![fabric.etcd.endpoint()],
            ..FleetConfig::default()
        }))
        .expect("etcd");
    let keys = Keys::new("/hyperlet");
    let claim = keys.ipam(&subnet, ip);
    let stale = keys.ipam(&subnet, "10.90.0.200".parse().expect("ip"));
    let value = |key: &str| {
        runtime
            .block_on(etcd.get(key))
            .expect("get")
            .map(|kv| serde_json::from_slice::<Value>(kv.value()).expect("JSON"))
    };
    assert_eq!(value(&claim).expect("claimed")["port"], port_id.as_str());

    // As if the agent died between recording the port and claiming its address, and a port
    // was deleted while etcd was away (its claim stayed).
    a.agent.kill9();
    runtime.block_on(etcd.delete(&claim)).expect("delete");
    let orphan = json!({"node": "claims-a", "port": uuid::Uuid::new_v4().to_string()});
    runtime
        .block_on(etcd.put(&stale, orphan.to_string().into_bytes(), 0))
        .expect("put");
    a.agent.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while value(&claim).is_none() || value(&stale).is_some() {
        assert!(
            Instant::now() < deadline,
            "reconciled after the restart: claim {:?}, stale {:?}\n{}",
            value(&claim),
            value(&stale),
            a.agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(value(&claim).expect("claimed")["port"], port_id.as_str());
}
