//! Networking end to end on the real kernel, libvirtd + QEMU and the linux-bridge backend
//! plugin: networks, subnets and ports through REST; the `qdhcp-<net>` namespace with the
//! agent's own DHCP and metadata servers; guests that get their address by DHCP and read
//! their own metadata; cloud-init's readers; hot-plugged NICs; restart; bad input.

use crate::servers::{import_guest, CONFIG};
use hyperlet_tests::{plugin_wasm, shared_plugin_cache, virsh, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// Agent settings: the server test settings plus the linux-bridge backend.
pub fn net_config() -> String {
    format!(
        "{CONFIG}\n[plugin_runtime]\ncache_dir = {cache:?}\n\n[[plugins]]\nname = \"linuxbridge\"\n\
         kind = \"network-backend\"\npath = {path:?}\ngrants = [\"log\", \"netlink\"]\ncall_timeout_ms = 10000\n",
        cache = shared_plugin_cache().display().to_string(),
        path = plugin_wasm("network-linux-bridge").display().to_string(),
    )
}

/// Runs a command with a deadline; returns (success, stdout + stderr).
pub fn run(cmd: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("60")
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install coreutils/iproute2)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The names of the network namespaces on the host (`ip netns list`).
pub fn namespaces() -> String {
    run(&["ip", "netns", "list"]).1
}

/// Does the interface exist?
pub fn link_exists(name: &str) -> bool {
    run(&["ip", "link", "show", "dev", name]).0
}

/// POSTs and returns (status, body).
pub fn post(agent: &Agent, path: &str, body: Value) -> (u16, Value) {
    let resp = agent.send(Method::POST, path, Some(&body));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn delete(agent: &Agent, path: &str) -> u16 {
    agent.send(Method::DELETE, path, None).status().as_u16()
}

/// Posts a network (answered 202 `BUILD`) and returns it once settled (ACTIVE or ERROR).
pub fn create_network(agent: &Agent, body: Value) -> Value {
    let (s, net) = post(agent, "/v1/networks", body);
    assert_eq!(s, 202, "{net}");
    assert_eq!(net["status"], "BUILD", "{net}");
    let path = format!("/v1/networks/{}", net["id"].as_str().unwrap());
    agent.wait_settled(&path, &["BUILD"])
}

/// Deletes a network (answered 202 `DELETING`) and waits until it is gone.
pub fn remove_network(agent: &Agent, id: &str) {
    let path = format!("/v1/networks/{id}");
    let resp = agent.send(Method::DELETE, &path, None);
    assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
    let net: Value = resp.json().unwrap();
    assert_eq!(net["status"], "DELETING", "{net}");
    agent.wait_gone(&path);
}

/// Creates a local network with a DHCP subnet on `cidr`; returns (network, subnet).
pub fn local_network(agent: &Agent, cidr: &str) -> (Value, Value) {
    let net = create_network(agent, json!({"name": "net", "network_type": "local"}));
    assert_eq!(net["status"], "ACTIVE", "{net}");
    let (s, subnet) = post(
        agent,
        "/v1/subnets",
        json!({"network_id": net["id"], "cidr": cidr, "dns_nameservers": ["198.51.100.53"]}),
    );
    assert_eq!(s, 201, "{subnet}");
    (net, subnet)
}

/// Deletes `/v1/networks/{id}` and checks the namespace and bridge went with it.
pub fn delete_network(agent: &Agent, net: &Value) {
    let id = net["id"].as_str().unwrap();
    remove_network(agent, id);
    assert!(
        !namespaces().contains(&format!("qdhcp-{id}")),
        "namespace left behind"
    );
    let bridge = net["bridge"].as_str().unwrap();
    assert!(!link_exists(bridge), "bridge {bridge} left behind");
}

#[test]
fn networks_subnets_ports_and_bad_input() {
    let agent = Agent::start_with_config(&net_config());
    let (net, subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap();
    let bridge = net["bridge"].as_str().unwrap();
    assert_eq!(bridge, format!("brq{}", &net_id[..11]));
    assert!(link_exists(bridge), "bridge {bridge} missing");
    let ns = format!("qdhcp-{net_id}");
    assert!(namespaces().contains(&ns), "{ns} missing: {}", namespaces());
    // The DHCP port holds the first pool address and the metadata address in the namespace.
    let (ok, addrs) = run(&["ip", "netns", "exec", &ns, "ip", "-4", "-o", "addr"]);
    assert!(ok, "{addrs}");
    assert!(addrs.contains("198.51.100.2/24"), "{addrs}");
    assert!(addrs.contains("169.254.169.254/32"), "{addrs}");
    let dhcp_ports = agent.get_json(&format!("/v1/ports?network_id={net_id}"));
    let dhcp_port = &dhcp_ports["ports"][0];
    assert_eq!(dhcp_port["device_owner"], "network:dhcp");
    // The namespace end carries the DHCP port's MAC, as neutron's does.
    let ns_dev = format!("ns-{}", &dhcp_port["id"].as_str().unwrap()[..11]);
    let (ok, link) = run(&[
        "ip", "netns", "exec", &ns, "ip", "-o", "link", "show", &ns_dev,
    ]);
    assert!(
        ok && link.contains(dhcp_port["mac_address"].as_str().unwrap()),
        "{link}"
    );

    // Local networks have no segment: a second one is no conflict (issue's `type` name).
    let second = create_network(&agent, json!({"name": "second", "type": "local"}));
    assert_eq!(second["status"], "ACTIVE", "{second}");
    remove_network(&agent, second["id"].as_str().unwrap());

    let before_nets = agent.get_json("/v1/networks");
    let before_subnets = agent.get_json("/v1/subnets");
    for (path, body, want) in [
        (
            "/v1/networks",
            json!({"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 4095}),
            400,
        ),
        (
            "/v1/networks",
            json!({"network_type": "vlan", "physical_network": "physnet1"}),
            400,
        ),
        ("/v1/networks", json!({"network_type": "flat"}), 400),
        ("/v1/networks", json!({"backend": "nope"}), 404),
        ("/v1/networks", json!({"mtu": 10}), 400),
        ("/v1/networks", json!({"bogus": 1}), 400),
        (
            "/v1/subnets",
            json!({"network_id": net_id, "cidr": "198.51.100.128/25"}),
            400,
        ),
        (
            "/v1/subnets",
            json!({"network_id": net_id, "cidr": "203.0.113.0/24", "gateway_ip": "198.51.100.1"}),
            400,
        ),
        (
            "/v1/subnets",
            json!({"network_id": net_id, "cidr": "203.0.113.5/24"}),
            400,
        ),
        (
            "/v1/subnets",
            json!({"network_id": "no-such-net", "cidr": "203.0.113.0/24"}),
            404,
        ),
    ] {
        let (s, answer) = post(&agent, path, body.clone());
        assert_eq!(s, want, "{body} → {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    assert_eq!(
        agent.get_json("/v1/networks"),
        before_nets,
        "a refused request changed networks"
    );
    assert_eq!(
        agent.get_json("/v1/subnets"),
        before_subnets,
        "a refused request changed subnets"
    );

    // Ports: fixed address, taken address, outside the cidr, bad MAC.
    let (s, port) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"ip_address": "198.51.100.77"}]}),
    );
    assert_eq!(s, 201, "{port}");
    assert_eq!(port["fixed_ips"][0]["ip_address"], "198.51.100.77");
    assert_eq!(port["fixed_ips"][0]["subnet_id"], subnet["id"]);
    assert!(
        port["mac_address"]
            .as_str()
            .unwrap()
            .starts_with("fa:16:3e:"),
        "{port}"
    );
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"ip_address": "198.51.100.77"}]}),
    );
    assert_eq!(s, 409, "{answer}");
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"ip_address": "203.0.113.9"}]}),
    );
    assert_eq!(s, 400, "{answer}");
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"ip_address": "198.51.100.1"}]}),
    );
    assert_eq!(s, 400, "the gateway is reserved: {answer}");
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "mac_address": "01:00:5e:00:00:01"}),
    );
    assert_eq!(s, 400, "{answer}");
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "mac_address": port["mac_address"]}),
    );
    assert_eq!(s, 409, "{answer}");
    // A subnet alone picks the subnet; an unknown one is an unknown reference (404).
    let (s, in_subnet) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"subnet_id": subnet["id"]}]}),
    );
    assert_eq!(s, 201, "{in_subnet}");
    assert_eq!(in_subnet["fixed_ips"][0]["subnet_id"], subnet["id"]);
    let (s, answer) = post(
        &agent,
        "/v1/ports",
        json!({"network_id": net_id, "fixed_ips": [{"subnet_id": "no-such-subnet"}]}),
    );
    assert_eq!(s, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_reference", "{answer}");
    let in_subnet_id = in_subnet["id"].as_str().unwrap();
    assert_eq!(delete(&agent, &format!("/v1/ports/{in_subnet_id}")), 204);

    // Concurrent allocation never hands out one address twice.
    let ips: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                scope.spawn(|| {
                    let (s, p) = post(&agent, "/v1/ports", json!({"network_id": net_id}));
                    assert_eq!(s, 201, "{p}");
                    p["fixed_ips"][0]["ip_address"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ips.len(), "duplicate addresses: {ips:?}");

    // In use: the network and the subnet refuse deletion while ports exist.
    assert_eq!(delete(&agent, &format!("/v1/networks/{net_id}")), 409);
    assert_eq!(
        delete(
            &agent,
            &format!("/v1/subnets/{}", subnet["id"].as_str().unwrap())
        ),
        409
    );
    for p in agent.get_json(&format!("/v1/ports?network_id={net_id}"))["ports"]
        .as_array()
        .unwrap()
    {
        if p["device_owner"] != "network:dhcp" {
            assert_eq!(
                delete(&agent, &format!("/v1/ports/{}", p["id"].as_str().unwrap())),
                204
            );
        }
    }
    delete_network(&agent, &net);
    assert_eq!(delete(&agent, &format!("/v1/networks/{net_id}")), 404);
}

/// The MAC/IP of a server's first NIC.
fn nic(server: &Value) -> (String, String) {
    let nic = &server["nics"][0];
    (
        nic["mac"].as_str().unwrap().to_string(),
        nic["fixed_ips"][0].as_str().unwrap().to_string(),
    )
}

/// A namespace standing in for a guest: a veth on the bridge with the port's MAC and address.
/// Its bridge end has a `tap…` name of its own (no port's: the firewall does not filter it;
/// DHCP and metadata answer only devices named like guests' taps) or,
/// with `tap`, a port's tap name (filtered as that port).
struct FakeGuest {
    ns: String,
}

impl FakeGuest {
    fn new(
        tag: &str,
        bridge: &str,
        tap: Option<&str>,
        (mac, ip): (&str, &str),
        server_ip: &str,
    ) -> Self {
        let ns = format!("hlt-guest-{tag}-{}", std::process::id());
        let host_end = tap.map_or_else(
            || format!("tapg{}{tag}", std::process::id() % 100_000),
            str::to_string,
        );
        let _ = run(&["ip", "netns", "delete", &ns]);
        let _ = run(&["ip", "link", "delete", &host_end]);
        let steps: Vec<Vec<String>> = vec![
            vec!["ip".into(), "netns".into(), "add".into(), ns.clone()],
            vec![
                "ip".into(),
                "link".into(),
                "add".into(),
                host_end.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                "eth0".into(),
                "netns".into(),
                ns.clone(),
            ],
            vec![
                "ip".into(),
                "link".into(),
                "set".into(),
                host_end.clone(),
                "master".into(),
                bridge.into(),
                "up".into(),
            ],
            vec![
                "ip".into(),
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                "eth0".into(),
                "address".into(),
                mac.into(),
                "up".into(),
            ],
            vec![
                "ip".into(),
                "-n".into(),
                ns.clone(),
                "addr".into(),
                "add".into(),
                format!("{ip}/24"),
                "dev".into(),
                "eth0".into(),
            ],
            vec![
                "ip".into(),
                "-n".into(),
                ns.clone(),
                "route".into(),
                "add".into(),
                "169.254.169.254/32".into(),
                "via".into(),
                server_ip.into(),
            ],
        ];
        let guest = Self { ns };
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            let (ok, out) = run(&args);
            assert!(ok, "{args:?}: {out}");
        }
        guest
    }

    fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["ip", "netns", "exec", self.ns.as_str()];
        args.extend_from_slice(cmd);
        run(&args)
    }
}

impl Drop for FakeGuest {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth pair with it.
        let _ = run(&["ip", "netns", "delete", &self.ns]);
    }
}

fn create_on(agent: &Agent, name: &str, image: &str, networks: Value) -> String {
    let (s, server) = post(
        agent,
        "/v1/servers",
        json!({
            "name": name, "image_id": image,
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
            "public_keys": {"k1": format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{name} test")},
            "user_data": base64_of(&format!("#cloud-config\nhostname: {name}\n")),
            "metadata": {"role": name},
            "networks": networks,
        }),
    );
    assert_eq!(s, 202, "{server}");
    server["id"].as_str().unwrap().to_string()
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn guests_get_dhcp_and_their_own_metadata() {
    let _vm = hyperlet_tests::vm_shared();
    let mut agent = Agent::start_with_config(&net_config());
    let image = import_guest(&agent, "hyperlet.metadata=1");
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();

    let a = create_on(&agent, "guest-a", &image, json!([{"network_id": net_id}]));
    let b = create_on(
        &agent,
        "guest-b",
        &image,
        json!([{"network_id": net_id, "fixed_ip": "198.51.100.99"}]),
    );
    for (id, name) in [(&a, "guest-a"), (&b, "guest-b")] {
        let server = agent.wait_server(id, "ACTIVE", Duration::from_secs(120));
        let (mac, ip) = nic(&server);
        let console =
            agent.wait_console(id, "HYPERLET-GUEST: meta-done", 1, Duration::from_secs(180));
        assert!(
            console.contains(&format!("HYPERLET-GUEST: nic eth0 mac={mac}")),
            "{console}"
        );
        assert!(
            console.contains(&format!("HYPERLET-GUEST: ip {ip}")),
            "{console}"
        );
        assert!(
            console.contains("169.254.169.254/32"),
            "no option-121 metadata route: {console}"
        );
        assert!(
            console.contains(&format!("HYPERLET-GUEST: meta instance-id {id}")),
            "{console}"
        );
        assert!(
            console.contains(&format!("HYPERLET-GUEST: meta hostname {name}")),
            "{console}"
        );
        assert!(console.contains(&format!("AAAAI{name} test")), "{console}");
        assert!(
            console.contains(&format!("hostname: {name}")),
            "user data: {console}"
        );
    }
    let b_server = agent.get_json(&format!("/v1/servers/{b}"));
    assert_eq!(nic(&b_server).1, "198.51.100.99");
    let a_console = agent.console(&a);
    assert!(!a_console.contains(&b), "guest A saw guest B's id");

    // What the two guests did shows in the network's counters on /metrics.
    let metrics = agent.get("/metrics").text().unwrap();
    let counter = |family: &str, labels: &str| -> u64 {
        let prefix = format!("{family}{{network=\"{net_id}\"{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in /metrics:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(
        counter("hyperlet_dhcp_sent_total", ",type=\"ack\"") >= 2,
        "{metrics}"
    );
    // Each guest read instance-id, hostname, its key and its user data.
    assert!(
        counter("hyperlet_metadata_answers_total", ",code=\"200\"") >= 8,
        "{metrics}"
    );
    assert_eq!(counter("hyperlet_metadata_unknown_callers_total", ""), 0);

    // Hot attach and detach a second NIC on A.
    let domain = agent.get_json(&format!("/v1/servers/{a}"))["domain_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, with_two) = post(
        &agent,
        &format!("/v1/servers/{a}/interfaces"),
        json!({"network_id": net_id}),
    );
    assert_eq!(s, 200, "{with_two}");
    let second = with_two["nics"][1]["port_id"].as_str().unwrap().to_string();
    let tap = with_two["nics"][1]["tap"].as_str().unwrap().to_string();
    let (ok, list) = virsh(&["domiflist", &domain]);
    assert!(ok && list.contains(&tap), "{list}");
    // The spec a lost record would be adopted from follows the hot-plug, live and defined.
    for args in [
        vec!["dumpxml", &domain],
        vec!["dumpxml", "--inactive", &domain],
    ] {
        let (ok, xml) = virsh(&args);
        assert!(ok, "{xml}");
        let spec = xml
            .split("<hyperlet:spec>")
            .nth(1)
            .and_then(|s| s.split("</hyperlet:spec>").next())
            .unwrap_or_default();
        assert!(
            spec.contains(&second),
            "{args:?}: metadata lacks the new NIC: {spec}"
        );
    }
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/servers/{a}/interfaces/{second}"),
        None,
    );
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let (ok, list) = virsh(&["domiflist", &domain]);
    assert!(ok && !list.contains(&tap), "{list}");
    assert_eq!(
        agent
            .send(Method::GET, &format!("/v1/ports/{second}"), None)
            .status(),
        404
    );

    // cloud-init's own readers, from a namespace with B's MAC and address (B is stopped so
    // the two never talk on the bridge at once).
    let resp = agent.send(
        Method::POST,
        &format!("/v1/servers/{b}/action"),
        Some(&json!({"stop": null})),
    );
    assert_eq!(resp.status(), 202);
    agent.wait_server(&b, "SHUTOFF", Duration::from_secs(120));
    let (mac, ip) = nic(&b_server);
    let guest = FakeGuest::new("b", &bridge, None, (&mac, &ip), "198.51.100.2");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cloudinit_readers.py");
    let (ok, out) = guest.exec(&["/usr/bin/python3", script, "http://169.254.169.254"]);
    assert!(ok, "cloud-init readers failed: {out}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(summary["openstack"]["instance_id"], b.as_str(), "{summary}");
    assert_eq!(summary["openstack"]["hostname"], "guest-b", "{summary}");
    assert_eq!(summary["ec2"]["instance_id"], b.as_str(), "{summary}");
    assert_eq!(summary["ec2"]["local_ipv4"], "198.51.100.99", "{summary}");
    assert!(
        summary["ec2"]["user_data"]
            .as_str()
            .unwrap_or("")
            .contains("hostname: guest-b"),
        "{summary}"
    );
    assert!(
        summary["openstack"]["network_data"]["links"][0]["ethernet_mac_address"] == mac.as_str(),
        "{summary}"
    );
    // Headers cannot impersonate another guest (A's real address).
    let a_ip = nic(&agent.get_json(&format!("/v1/servers/{a}"))).1;
    assert_ne!(a_ip, ip);
    let forwarded = format!("X-Forwarded-For: {a_ip}");
    let (ok, out) = guest.exec(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        "-H",
        &forwarded,
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(ok && out.trim() == b, "{out}");

    // A restarted agent rebuilds the namespace, DHCP and metadata from its store.
    agent.kill9();
    agent.restart();
    let (ok, out) = guest.exec(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        "--retry",
        "10",
        "--retry-connrefused",
        "--retry-delay",
        "1",
        "http://169.254.169.254/openstack/latest/meta_data.json",
    ]);
    assert!(ok, "metadata after the restart: {out}\n{}", agent.log());
    let meta: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(meta["uuid"], b.as_str());
    drop(guest);

    // The same readers from another port (its tap, in the default group) with B's MAC and
    // address: anti-spoofing drops every frame, they read nothing.
    let (s, other) = post(&agent, "/v1/ports", json!({"network_id": net_id}));
    assert_eq!(s, 201, "{other}");
    let other_tap = format!("tap{}", &other["id"].as_str().unwrap()[..11]);
    let spoofer = FakeGuest::new("s", &bridge, Some(&other_tap), (&mac, &ip), "198.51.100.2");
    let (ok, out) = spoofer.exec(&[
        "timeout",
        "60",
        "/usr/bin/python3",
        script,
        "http://169.254.169.254",
    ]);
    assert!(
        !ok,
        "cloud-init's readers read B's data from another port: {out}"
    );
    assert!(!out.contains(b.as_str()), "{out}");
    let (_, out) = spoofer.exec(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ]);
    assert!(!out.contains(b.as_str()), "{out}");
    drop(spoofer);
    assert_eq!(
        delete(
            &agent,
            &format!("/v1/ports/{}", other["id"].as_str().unwrap())
        ),
        204
    );

    for id in [&a, &b] {
        assert_eq!(delete(&agent, &format!("/v1/servers/{id}")), 202);
        agent.wait_server_gone(id, Duration::from_secs(120));
    }
    delete_network(&agent, &net);
}
