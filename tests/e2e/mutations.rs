//! Mutations a timeout, a disconnect or a kill -9 could cut in half: volume attach, detach,
//! extend, delete, snapshots and networks run detached from their request under the journal,
//! and the DHCP/metadata tables of a network never lose a port to a concurrent rebuild.

use crate::networks::{link_exists, local_network, namespaces, net_config, post, run};
use crate::servers::{import_guest, CONFIG};
use crate::volumes::{boot, lvm_config, wait_for, wait_gone, wait_volume};
use hyperlet_tests::storage::{ganesha, TestVg};
use hyperlet_tests::{virsh, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A namespace with one veth per port on the network's bridge, each carrying its port's MAC,
/// from which busybox's udhcpc asks the agent's DHCP server for a lease. Each instance has
/// names of its own (tests run concurrently).
pub struct DhcpClients {
    ns: String,
    taps: Vec<String>,
}

impl DhcpClients {
    /// Veth `i`'s end on the bridge.
    pub fn tap(&self, i: usize) -> String {
        self.taps[i].clone()
    }

    /// One client per MAC on `bridge`, on veths of their own (no port's tap: not filtered;
    /// named `tap…` like every guest device, the only bridge members DHCP answers).
    pub fn new(bridge: &str, macs: &[String]) -> Self {
        Self::on_taps(bridge, macs, None)
    }

    /// One client per MAC on `bridge`; with `taps`, veth `i`'s bridge end takes the name
    /// `taps[i]` (a port's tap: the agent's firewall filters it as that port).
    pub fn on_taps(bridge: &str, macs: &[String], taps: Option<&[String]>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let tag = format!("{}", (std::process::id() % 1000) * 100 + n);
        let ns = format!("hlt-leases-{tag}");
        let _ = run(&["ip", "netns", "delete", &ns]);
        let (ok, out) = run(&["ip", "netns", "add", &ns]);
        assert!(ok, "ip netns add: {out}");
        let taps = match taps {
            Some(t) => t.to_vec(),
            None => (0..macs.len()).map(|i| format!("tapq{tag}x{i}")).collect(),
        };
        let clients = Self { ns, taps };
        for (i, mac) in macs.iter().enumerate() {
            let host = clients.tap(i);
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
    pub fn lease(&self, i: usize) -> Result<String, String> {
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

/// Stops the agent cleanly and starts it again with `env` (a failpoint) and `extra` appended
/// to its config file.
fn restart_with(agent: &mut Agent, env: &[(&str, &str)], config: &str) {
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent
        .wait_exit(Duration::from_secs(30))
        .expect("the agent exits");
    std::fs::write(agent.dir.path().join("hyperlet.toml"), config).expect("config");
    agent.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    agent.restart();
}

/// Waits until the agent logs that it reached its failpoint.
fn wait_failpoint(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !agent.log().contains("failpoint reached") {
        assert!(
            Instant::now() < deadline,
            "failpoint not reached:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Is the volume's disk (its serial) in the running domain's XML?
fn plugged(domain: &str, volume_id: &str) -> bool {
    let (ok, xml) = virsh(&["dumpxml", domain]);
    assert!(ok, "dumpxml {domain}: {xml}");
    xml.contains(&format!("<serial>{}</serial>", &volume_id[..20]))
}

/// An agent with the NFS backend as the default volume type.
pub fn nfs_agent(extra: &str) -> (Agent, String) {
    let nfs = ganesha();
    let config = format!("{}\n{}\n{extra}", CONFIG, nfs.driver_stanza());
    let agent = Agent::start_with_config(&config);
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "shared", "backend": "nfs", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");
    (agent, config)
}

/// Polls the volume until its status is no longer `transitional`.
fn settled(agent: &Agent, id: &str, transitional: &str) -> Value {
    agent.wait_settled(&format!("/v1/volumes/{id}"), &[transitional])
}

/// Kill -9 right after libvirt plugged the disk, before anything recorded it: after the
/// restart the volume is in-use with the disk in the domain (or available without it —
/// never available with the disk plugged), and a second server cannot attach it. The same
/// for a detach killed after libvirt unplugged the disk.
#[test]
fn attach_and_detach_killed_mid_way_settle_on_what_libvirt_has() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let _vm = hyperlet_tests::vm_shared();
    let (mut agent, config) = nfs_agent("");
    let image = import_guest(&agent, "");
    let (s1, dom1) = boot(&agent, "first", json!({"image_id": image}));
    let (s2, _dom2) = boot(&agent, "second", json!({"image_id": image}));
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let vol = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &vol, "available");

    restart_with(
        &mut agent,
        &[("HYPERLET_FAILPOINT", "volume.attach:libvirt_attach")],
        &config,
    );
    let (s, v) = post(
        &agent,
        &format!("/v1/servers/{s1}/volumes"),
        json!({"volume_id": vol}),
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "attaching", "{v}");
    wait_failpoint(&agent);
    assert!(plugged(&dom1, &vol), "libvirt should have the disk by now");
    agent.kill9();
    agent.env.clear();
    agent.restart();
    let v = agent.get_json(&format!("/v1/volumes/{vol}"));
    let server = agent.get_json(&format!("/v1/servers/{s1}"));
    let listed = server["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["volume_id"] == vol.as_str());
    match (v["status"].as_str().unwrap(), plugged(&dom1, &vol)) {
        ("in-use", true) => {
            assert_eq!(v["attached_to"], s1.as_str(), "{v}");
            assert!(
                listed,
                "the server's spec does not list the volume: {server}"
            );
        }
        ("available", false) => assert!(!listed, "{server}"),
        (status, plugged) => panic!("volume {status} while plugged={plugged}: {v}"),
    }
    if v["status"] == "in-use" {
        let (s, answer) = post(
            &agent,
            &format!("/v1/servers/{s2}/volumes"),
            json!({"volume_id": vol}),
        );
        assert_eq!(
            s, 409,
            "a second server attached an in-use volume: {answer}"
        );

        // A detach killed after libvirt let go of the disk.
        restart_with(
            &mut agent,
            &[("HYPERLET_FAILPOINT", "volume.detach:libvirt_detach")],
            &config,
        );
        let resp = agent.send(
            Method::DELETE,
            &format!("/v1/servers/{s1}/volumes/{vol}"),
            None,
        );
        assert_eq!(resp.status(), 202);
        wait_failpoint(&agent);
        assert!(!plugged(&dom1, &vol), "the disk should be unplugged by now");
        agent.kill9();
        agent.env.clear();
        agent.restart();
        let v = agent.get_json(&format!("/v1/volumes/{vol}"));
        assert_eq!(v["status"], "available", "{v}");
        assert!(v["attached_to"].is_null(), "{v}");
        let server = agent.get_json(&format!("/v1/servers/{s1}"));
        assert_eq!(server["volumes"], json!([]), "{server}");
    }
    for s in [&s1, &s2] {
        assert_eq!(
            agent
                .send(Method::DELETE, &format!("/v1/servers/{s}"), None)
                .status(),
            202
        );
        agent.wait_server_gone(s, Duration::from_secs(120));
    }
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/volumes/{vol}"), None)
            .status(),
        202
    );
    wait_gone(&agent, &format!("/v1/volumes/{vol}"));
}

/// A request deadline (1 s) shorter than the work (paused 3 s after the hot-plug): the API
/// answers 202 at once and the attach, then the detach, finish in the background.
#[test]
fn attach_and_detach_outlive_their_request_deadline() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let _vm = hyperlet_tests::vm_shared();
    let (mut agent, config) = nfs_agent("");
    let image = import_guest(&agent, "");
    let (s1, dom1) = boot(&agent, "slow", json!({"image_id": image}));
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let vol = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &vol, "available");
    let short = format!("{config}\n[api]\nrequest_timeout_secs = 1\n");
    for (point, status) in [
        ("volume.attach:libvirt_attach", "attaching"),
        ("volume.detach:libvirt_detach", "detaching"),
    ] {
        restart_with(
            &mut agent,
            &[
                ("HYPERLET_FAILPOINT", point),
                ("HYPERLET_FAILPOINT_DELAY_MS", "3000"),
            ],
            &short,
        );
        let resp = if status == "attaching" {
            agent.send(
                Method::POST,
                &format!("/v1/servers/{s1}/volumes"),
                Some(&json!({"volume_id": vol})),
            )
        } else {
            agent.send(
                Method::DELETE,
                &format!("/v1/servers/{s1}/volumes/{vol}"),
                None,
            )
        };
        assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
        let v: Value = resp.json().unwrap();
        assert_eq!(v["status"], status, "{v}");
        wait_failpoint(&agent);
        let v = settled(&agent, &vol, status);
        if status == "attaching" {
            assert_eq!(v["status"], "in-use", "{v}");
            assert!(plugged(&dom1, &vol));
        } else {
            assert_eq!(v["status"], "available", "{v}");
            assert!(!plugged(&dom1, &vol));
        }
    }
    restart_with(&mut agent, &[], &config);
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/servers/{s1}"), None)
            .status(),
        202
    );
    agent.wait_server_gone(&s1, Duration::from_secs(120));
}

/// Kill -9 after the driver step of extend, delete, snapshot create and snapshot delete (LVM
/// on a loop device): each is settled at the next start, the records matching the LVs.
#[test]
fn volume_and_snapshot_work_killed_mid_way_is_settled_on_restart() {
    let vg = TestVg::new(6);
    let config = lvm_config(&vg);
    let mut agent = Agent::start_with_config(&config);
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "lvm", "backend": "lvm", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &id, "available");
    let kill_at = |agent: &mut Agent, point: &str| {
        restart_with(agent, &[("HYPERLET_FAILPOINT", point)], &config);
    };
    let crash = |agent: &mut Agent| {
        wait_failpoint(agent);
        agent.kill9();
        agent.env.clear();
        agent.restart();
    };

    // Extend: the LV grew before the kill; the restart records the new size.
    kill_at(&mut agent, "volume.extend:driver_extend");
    let (s, v) = post(
        &agent,
        &format!("/v1/volumes/{id}/action"),
        json!({"extend": {"new_size_gb": 2}}),
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "extending");
    crash(&mut agent);
    let v = agent.get_json(&format!("/v1/volumes/{id}"));
    assert_eq!(
        (v["status"].as_str(), v["size_gb"].as_u64()),
        (Some("available"), Some(2)),
        "{v}"
    );
    assert_eq!(vg.lvs()[0].1, 2 << 30);

    // Snapshot create: interrupted after the driver made it → rolled back: the snapshot LV is
    // gone and the record says error.
    kill_at(&mut agent, "snapshot.create:driver_create");
    let (s, snap) = post(&agent, "/v1/snapshots", json!({"volume_id": id}));
    assert_eq!(s, 202, "{snap}");
    assert_eq!(snap["status"], "creating");
    let snap_id = snap["id"].as_str().unwrap().to_string();
    crash(&mut agent);
    let snap = agent.get_json(&format!("/v1/snapshots/{snap_id}"));
    assert_eq!(snap["status"], "error", "{snap}");
    assert_eq!(
        vg.lvs().len(),
        1,
        "the snapshot LV was leaked: {:?}",
        vg.lvs()
    );

    // The errored snapshot deletes cleanly; a good one's delete is interrupted after the
    // driver removed its LV, and finished at the next start.
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/snapshots/{snap_id}"), None)
            .status(),
        202
    );
    wait_gone(&agent, &format!("/v1/snapshots/{snap_id}"));
    let (s, good) = post(&agent, "/v1/snapshots", json!({"volume_id": id}));
    assert_eq!(s, 202, "{good}");
    let good_id = good["id"].as_str().unwrap().to_string();
    wait_for(&agent, &format!("/v1/snapshots/{good_id}"), "available");
    assert_eq!(vg.lvs().len(), 2, "{:?}", vg.lvs());
    kill_at(&mut agent, "snapshot.delete:driver_delete");
    let resp = agent.send(Method::DELETE, &format!("/v1/snapshots/{good_id}"), None);
    assert_eq!(resp.status(), 202);
    crash(&mut agent);
    wait_gone(&agent, &format!("/v1/snapshots/{good_id}"));
    assert_eq!(vg.lvs().len(), 1, "{:?}", vg.lvs());

    // Delete: the LV went before the kill; the restart forgets the record.
    kill_at(&mut agent, "volume.delete:driver_delete");
    let resp = agent.send(Method::DELETE, &format!("/v1/volumes/{id}"), None);
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["status"], "deleting", "{v}");
    crash(&mut agent);
    assert_eq!(agent.get(&format!("/v1/volumes/{id}")).status(), 404);
    assert!(vg.lvs().is_empty(), "{:?}", vg.lvs());
}

/// A request deadline (1 s) shorter than the driver's work (paused 3 s after it): extend and
/// delete answer 202 at once and finish in the background.
#[test]
fn extend_and_delete_outlive_their_request_deadline() {
    let vg = TestVg::new(4);
    let config = lvm_config(&vg);
    let mut agent = Agent::start_with_config(&config);
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "lvm", "backend": "lvm", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &id, "available");
    let short = format!("{config}\n[api]\nrequest_timeout_secs = 1\n");
    let pause = [("HYPERLET_FAILPOINT_DELAY_MS", "3000")];

    restart_with(
        &mut agent,
        &[
            ("HYPERLET_FAILPOINT", "volume.extend:driver_extend"),
            pause[0],
        ],
        &short,
    );
    let (s, v) = post(
        &agent,
        &format!("/v1/volumes/{id}/action"),
        json!({"extend": {"new_size_gb": 2}}),
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "extending", "{v}");
    wait_failpoint(&agent);
    let v = settled(&agent, &id, "extending");
    assert_eq!(
        (v["status"].as_str(), v["size_gb"].as_u64()),
        (Some("available"), Some(2)),
        "{v}"
    );
    assert_eq!(vg.lvs()[0].1, 2 << 30);

    restart_with(
        &mut agent,
        &[
            ("HYPERLET_FAILPOINT", "volume.delete:driver_delete"),
            pause[0],
        ],
        &short,
    );
    let resp = agent.send(Method::DELETE, &format!("/v1/volumes/{id}"), None);
    assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
    wait_failpoint(&agent);
    wait_gone(&agent, &format!("/v1/volumes/{id}"));
    assert!(vg.lvs().is_empty(), "{:?}", vg.lvs());
}

/// Kill -9 after a network create recorded `BUILD` and began its setup, then after a delete
/// recorded `DELETING` and began its teardown (the network with a DHCP subnet: namespace, DHCP
/// port, servers): each is finished at the next start — ACTIVE with its bridge, then gone
/// with bridge and namespace. With a request deadline (1 s) shorter than the work (paused
/// 3 s there), both answer 202 at once and finish in the background.
#[test]
fn network_create_and_delete_survive_a_kill_and_their_request_deadline() {
    let config = net_config();
    let mut agent = Agent::start_with_config(&config);
    let short = format!("{config}\n[api]\nrequest_timeout_secs = 1\n");
    for (pause, config) in [(None, &config), (Some("3000"), &short)] {
        let mut env = vec![("HYPERLET_FAILPOINT", "network.create:setup:started")];
        env.extend(pause.map(|ms| ("HYPERLET_FAILPOINT_DELAY_MS", ms)));
        restart_with(&mut agent, &env, config);
        let (s, net) = post(
            &agent,
            "/v1/networks",
            json!({"name": "cut", "network_type": "local"}),
        );
        assert_eq!((s, &net["status"]), (202, &json!("BUILD")), "{net}");
        let path = format!("/v1/networks/{}", net["id"].as_str().unwrap());
        wait_failpoint(&agent);
        if pause.is_none() {
            agent.kill9();
            agent.env.clear();
            agent.restart();
        }
        let net = agent.wait_settled(&path, &["BUILD"]);
        assert_eq!(net["status"], "ACTIVE", "{net}");
        let bridge = net["bridge"].as_str().unwrap().to_string();
        assert!(link_exists(&bridge), "bridge {bridge} missing");
        let (s, subnet) = post(
            &agent,
            "/v1/subnets",
            json!({"network_id": net["id"], "cidr": "198.51.100.0/24"}),
        );
        assert_eq!(s, 201, "{subnet}");
        let ns = format!("qdhcp-{}", net["id"].as_str().unwrap());
        assert!(namespaces().contains(&ns), "{ns} missing");

        env[0].1 = "network.delete:teardown:started";
        restart_with(&mut agent, &env, config);
        let resp = agent.send(Method::DELETE, &path, None);
        assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
        let gone: Value = resp.json().unwrap();
        assert_eq!(gone["status"], "DELETING", "{gone}");
        wait_failpoint(&agent);
        if pause.is_none() {
            agent.kill9();
            agent.env.clear();
            agent.restart();
        }
        agent.wait_gone(&path);
        assert!(!link_exists(&bridge), "bridge {bridge} left behind");
        assert!(!namespaces().contains(&ns), "{ns} left behind");
    }
}
