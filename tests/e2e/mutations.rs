//! Mutations a timeout, a disconnect or a kill -9 could cut in half: volume attach, detach,
//! extend, delete, snapshots and networks run detached from their request under the journal,
//! and the DHCP/metadata tables of a network never lose a port to a concurrent rebuild.

use crate::networks::{local_network, net_config, post, run};
use crate::servers::import_guest;
use hyperlet_tests::Agent;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// A namespace with one veth per port on the network's bridge, each carrying its port's MAC,
/// from which busybox's udhcpc asks the agent's DHCP server for a lease.
struct DhcpClients {
    ns: String,
}

impl DhcpClients {
    fn new(bridge: &str, macs: &[String]) -> Self {
        let ns = format!("hlt-leases-{}", std::process::id());
        let _ = run(&["ip", "netns", "delete", &ns]);
        let (ok, out) = run(&["ip", "netns", "add", &ns]);
        assert!(ok, "ip netns add: {out}");
        let clients = Self { ns };
        for (i, mac) in macs.iter().enumerate() {
            let host = format!("hlq{}x{i}", std::process::id() % 100_000);
            let inside = format!("e{i}");
            let _ = run(&["ip", "link", "delete", &host]);
            for step in [
                vec![
                    "ip",
                    "link",
                    "add",
                    &host,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &inside,
                    "netns",
                    &clients.ns,
                ],
                vec!["ip", "link", "set", &host, "master", bridge, "up"],
                vec![
                    "ip",
                    "-n",
                    &clients.ns,
                    "link",
                    "set",
                    &inside,
                    "address",
                    mac,
                    "up",
                ],
            ] {
                let (ok, out) = run(&step);
                assert!(ok, "{step:?}: {out}");
            }
        }
        clients
    }

    /// The address the DHCP server leases to interface `i`, or the client's output.
    fn lease(&self, i: usize) -> Result<String, String> {
        let (ok, out) = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "busybox",
            "udhcpc",
            "-i",
            &format!("e{i}"),
            "-n",
            "-q",
            "-f",
            "-t",
            "2",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ]);
        let leased = out
            .lines()
            .find_map(|l| l.strip_prefix("udhcpc: lease of "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        match leased {
            Some(ip) if ok => Ok(ip),
            _ => Err(out),
        }
    }
}

impl Drop for DhcpClients {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth pairs with it.
        let _ = run(&["ip", "netns", "delete", &self.ns]);
    }
}

/// Checks that every (MAC, address) pair gets exactly its lease from the network's DHCP.
fn assert_leases(bridge: &str, nics: &[(String, String)]) {
    let macs: Vec<String> = nics.iter().map(|(m, _)| m.clone()).collect();
    let clients = DhcpClients::new(bridge, &macs);
    let mut missing = Vec::new();
    for (i, (mac, want)) in nics.iter().enumerate() {
        match clients.lease(i) {
            Ok(ip) => assert_eq!(&ip, want, "{mac} got another address"),
            Err(out) => missing.push(format!("{mac} ({want}): {out}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} got no lease:\n{}",
        missing.len(),
        nics.len(),
        missing.join("\n")
    );
}

#[test]
fn twenty_servers_created_at_once_all_get_their_lease() {
    let _vm = hyperlet_tests::vm_exclusive();
    let agent = Agent::start_with_config(&net_config());
    let image = import_guest(&agent, "");
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let servers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (agent, net_id, image) = (&agent, &net_id, &image);
                scope.spawn(move || {
                    let (s, server) = post(
                        agent,
                        "/v1/servers",
                        json!({
                            "name": format!("s{i}"), "image_id": image,
                            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1},
                            "networks": [{"network_id": net_id}],
                        }),
                    );
                    assert_eq!(s, 202, "{server}");
                    server
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let nics: Vec<(String, String)> = servers
        .iter()
        .map(|s| {
            let nic = &s["nics"][0];
            (
                nic["mac"].as_str().unwrap().to_string(),
                nic["fixed_ips"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_leases(&bridge, &nics);
    for s in &servers {
        let id = s["id"].as_str().unwrap();
        assert_eq!(
            agent
                .send(Method::DELETE, &format!("/v1/servers/{id}"), None)
                .status(),
            202
        );
    }
    for s in &servers {
        agent.wait_server_gone(s["id"].as_str().unwrap(), Duration::from_secs(180));
    }
}

#[test]
fn ports_created_at_once_are_all_leased_bound_or_not() {
    let agent = Agent::start_with_config(&net_config());
    let (net, _subnet) = local_network(&agent, "198.51.100.0/24");
    let net_id = net["id"].as_str().unwrap().to_string();
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let ports: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (agent, net_id) = (&agent, &net_id);
                scope.spawn(move || {
                    let (s, port) = post(
                        agent,
                        "/v1/ports",
                        json!({"network_id": net_id, "name": format!("p{i}")}),
                    );
                    assert_eq!(s, 201, "{port}");
                    port
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let nics: Vec<(String, String)> = ports
        .iter()
        .map(|p| {
            (
                p["mac_address"].as_str().unwrap().to_string(),
                p["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_leases(&bridge, &nics);
}
