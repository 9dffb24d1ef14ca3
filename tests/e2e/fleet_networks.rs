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
fn node_config(ip: &str) -> String {
    format!(
        "{CONFIG}\n[plugin_runtime]\ncache_dir = {cache:?}\n\n[[plugins]]\nname = \"linuxbridge\"\n\
         kind = \"network-backend\"\npath = {path:?}\ngrants = [\"log\", \"netlink\"]\n\
         call_timeout_ms = 10000\nsettings = {{ vxlan_local_ip = \"{ip}\" }}\n",
        cache = shared_plugin_cache().display().to_string(),
        path = plugin_wasm("network-linux-bridge").display().to_string(),
    )
}

fn post(agent: &Agent, path: &str, body: &Value) -> Value {
    let resp = agent.send(Method::POST, path, Some(body));
    let status = resp.status();
    let value: Value = resp.json().unwrap_or_default();
    assert!(status.is_success(), "POST {path} {body} → {status} {value}");
    value
}

/// The same network (id, VNI) and subnet (id, CIDR) on `node`, an ICMP-open group, and a
/// guest at `ip`; returns the server id.
fn guest_on(node: &FleetNode, net: &str, subnet: &str, ip: &str, name: &str) -> String {
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
            "networks": [{"network_id": net, "fixed_ip": ip}],
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
    let ga = guest_on(&a, &net, &subnet, "10.90.0.10", "left");
    let gb = guest_on(&b, &net, &subnet, "10.90.0.20", "right");

    let mut domains = Vec::new();
    for (node, id, ip) in [(&a, &ga, "10.90.0.10"), (&b, &gb, "10.90.0.20")] {
        let server = node.agent.wait_server(id, "ACTIVE", BOOT);
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
    }

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
    ping(&a, &domains[0], "10.90.0.20");
    ping(&b, &domains[1], "10.90.0.10");

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
