//! Live migration between sandboxed fleet nodes (issue #14): each node its own namespaces,
//! libvirtd (listening on the fabric) and agent; real guests.

use crate::servers::{create, import_guest};
use hyperlet_tests::fleet::Fabric;
use serde_json::json;
use std::time::Duration;

/// A booted test guest on `node` (its image imported there): (image, server id, domain).
fn booted(
    node: &hyperlet_tests::fleet::FleetNode,
    name: &str,
    flavor: serde_json::Value,
) -> (String, String, String) {
    let image = import_guest(&node.agent, "");
    let id = create(&node.agent, name, &image, flavor);
    let server = node
        .agent
        .wait_server(&id, "ACTIVE", Duration::from_secs(240));
    node.agent
        .wait_console(&id, "HYPERLET-GUEST: booted", 1, Duration::from_secs(240));
    let domain = server["domain_name"].as_str().expect("domain").to_string();
    (image, id, domain)
}

/// Marks on the root and ephemeral disks, past anything the base image holds.
const WRITE_MARKS: &str =
    "echo ROOT-MARK | dd of=/dev/vda bs=512 seek=4096 conv=fsync 2>/dev/null; \
     echo EPHEMERAL-MARK | dd of=/dev/vdb bs=512 seek=4096 conv=fsync 2>/dev/null";
/// Reads [`WRITE_MARKS`] back: `ROOT-MARKEPHEMERAL-MARK`.
const READ_MARKS: &str = "dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null | head -c 9; \
     dd if=/dev/vdb bs=512 skip=4096 count=1 2>/dev/null | head -c 14";

fn sh(node: &hyperlet_tests::fleet::FleetNode, domain: &str, script: &str) -> String {
    // The guest agent connects a moment after the guest says it booted (or arrived).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) =
            node.libvirt
                .virsh(&["qemu-agent-command", domain, r#"{"execute":"guest-ping"}"#]);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest agent of {domain} does not answer: {out}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (code, out, err) = hyperlet_tests::guest::guest_sh_with(
        |args| node.libvirt.virsh(args),
        domain,
        script,
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{script}: {out}{err}");
    out
}

fn migrate(
    agent: &hyperlet_tests::Agent,
    id: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = agent.send(
        reqwest::Method::POST,
        &format!("/v1/servers/{id}/action"),
        Some(&json!({ "live_migrate": body })),
    );
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or_default())
}

/// Waits until the server is gone from `from` (301 to its new node) and returns the answer.
fn wait_moved(from: &hyperlet_tests::Agent, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let resp = from
            .client()
            .get(format!("{}/v1/servers/{id}", from.url()))
            .bearer_auth(from.token())
            .send()
            .expect("GET");
        if resp.status().as_u16() == 301 {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut body: serde_json::Value = resp.json().expect("JSON");
            body["location"] = json!(location);
            return body;
        }
        let server: serde_json::Value = resp.json().unwrap_or_default();
        assert!(
            server["task_state"] == "migrating" || server["fault"].is_null(),
            "the migration failed: {server}\n{}",
            from.log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "not moved within 300 s: {server}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Live migration with block copy (issue #14): a booted guest with a root overlay and an
/// ephemeral disk moves from A to B, whose image cache lacks its images at first; its disks'
/// contents and its uptime survive; A keeps a tombstone (301 to B); placement then takes it
/// back to A. Wrong targets are refused with the reason; peer routes take only the peer token.
#[test]
fn live_migration_moves_a_server_with_local_disks_and_back() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("mig-a", 1, "");
    let b = fabric.node("mig-b", 2, "");
    let (image, id, domain) = booted(
        &a,
        "mover",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1, "ephemeral_gb": 1}),
    );
    // Marks on both disks, past anything the base image holds.
    sh(&a, &domain, WRITE_MARKS);
    let uptime = |node, domain: &str| -> f64 {
        sh(node, domain, "cut -d' ' -f1 /proc/uptime")
            .trim()
            .parse()
            .expect("uptime")
    };
    let before = uptime(&a, &domain);

    // Refusals name the reason and change nothing.
    let (status, body) = migrate(&a.agent, &id, json!({"host": "mig-a"}));
    assert_eq!(status, 409, "{body}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "no-such-node"}));
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("no node named"), "{body}");
    let (status, body) = migrate(
        &a.agent,
        &id,
        json!({"host": "mig-b", "block_migration": false}),
    );
    assert_eq!(status, 409, "{body}");
    let (status, _) = migrate(&a.agent, &id, json!({"host": "-bad"}));
    assert_eq!(status, 400);
    // Peer routes: the admin token opens nothing there; the peer token does.
    let peer = format!("{}/v1/peer/migrations/{id}/abort", b.agent.url());
    let resp = b
        .agent
        .client()
        .post(&peer)
        .bearer_auth(b.agent.token())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = b
        .agent
        .client()
        .post(&peer)
        .bearer_auth(fabric.peer_token())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        b.agent
            .get(&format!("/v1/images/{image}"))
            .status()
            .as_u16(),
        404,
        "B starts without the image"
    );

    // Aborted mid-way (slowed to 1 MiB/s so it is still copying): everything goes back.
    let (ok, out) = a.libvirt.virsh(&["migrate-setspeed", &domain, "1"]);
    assert!(ok, "{out}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "mig-b"}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["task_state"], "migrating", "{body}");
    wait_copying(&a.agent, &id);
    let ca = fabric.ca().display().to_string();
    let (token, url) = (a.agent.token(), a.agent.url());
    let cli_env = [
        ("HYPERLET_URL", url.as_str()),
        ("HYPERLET_TOKEN", token.as_str()),
        ("HYPERLET_CA_CERT", ca.as_str()),
    ];
    let (status, out, err) =
        hyperlet_tests::run_cli(&["server", "migration", "abort", &id], &cli_env);
    assert!(status.success(), "server migration abort: {out}{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let back = loop {
        let server = a.agent.get_json(&format!("/v1/servers/{id}"));
        if server["task_state"].is_null() {
            break server;
        }
        assert!(std::time::Instant::now() < deadline, "abort: {server}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(back["status"], "ACTIVE", "{back}");
    assert!(
        back["fault"]
            .as_str()
            .unwrap_or_default()
            .contains("aborted on request"),
        "{back}"
    );
    let (ok, state) = a.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");
    assert_eq!(
        b.agent.get(&format!("/v1/servers/{id}")).status().as_u16(),
        404
    );
    let (_, list) = b.libvirt.virsh(&["list", "--all", "--name"]);
    assert!(!list.contains(&domain), "B keeps no domain: {list}");
    assert!(
        !b.agent.state_dir().join("servers").join(&id).exists(),
        "B keeps no disks"
    );
    let (ok, out) = a
        .libvirt
        .virsh(&["migrate-setspeed", &domain, "8796093022207"]);
    assert!(ok, "{out}");

    // A → B with the CLI, which follows the progress until the server moved.
    let (status, out, err) = hyperlet_tests::run_cli(
        &["server", "migrate", "--live", "--host", "mig-b", &id],
        &cli_env,
    );
    assert!(
        status.success(),
        "server migrate: {out}{err}\n{}",
        a.agent.log()
    );
    assert!(out.contains("moved to node mig-b"), "{out}");
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "mig-b", "{moved}");
    assert_eq!(
        moved["location"],
        format!("{}/v1/servers/{id}", b.agent.url()),
        "{moved}"
    );
    let on_b = b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert!(on_b["task_state"].is_null(), "{on_b}");
    let (ok, state) = b.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");
    let (_, list) = a.libvirt.virsh(&["list", "--all", "--name"]);
    assert!(!list.contains(&domain), "A keeps no domain: {list}");
    let read = READ_MARKS;
    assert_eq!(sh(&b, &domain, read), "ROOT-MARKEPHEMERAL-MARK");
    let after = uptime(&b, &domain);
    assert!(after >= before, "no reboot: uptime {before} → {after}");
    let fetched = b.agent.get_json(&format!("/v1/images/{image}"));
    assert_eq!(fetched["status"], "active", "{fetched}");

    // B → A, the destination picked by placement.
    let (status, body) = migrate(&b.agent, &id, json!({"host": null}));
    assert_eq!(status, 202, "{body}");
    let moved = wait_moved(&b.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "mig-a", "{moved}");
    let home = a.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert!(home["fault"].is_null(), "{home}");
    assert_eq!(sh(&a, &domain, read), "ROOT-MARKEPHEMERAL-MARK");

    let resp = a
        .agent
        .send(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert!(resp.status().is_success());
    a.agent.wait_server_gone(&id, Duration::from_secs(60));
}

/// Networks follow (issue #14 acceptance): a guest on a VXLAN network spanning three nodes is
/// pinged every 0.1 s by a guest on a third node while it moves from A to B; the pinger loses
/// at most 10 replies, the guest keeps its address and MAC, B holds its address claim and the
/// third node's forwarding entry points to B; A keeps no port.
#[test]
fn live_migration_keeps_a_guest_on_a_spanning_network_reachable() {
    use crate::fleet_networks::{guest_on, node_config, post, span};
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let _vm = hyperlet_tests::vm_shared();
    let nfs = hyperlet_tests::storage::ganesha();
    let fabric = Fabric::new();
    let with_nfs = |i| {
        format!(
            "{}\n{}",
            node_config(&fabric.address(i)),
            nfs.driver_stanza()
        )
    };
    let a = fabric.node_with_nfs("net-a", 1, &with_nfs(1));
    let b = fabric.node_with_nfs("net-b", 2, &with_nfs(2));
    let c = fabric.node("net-c", 3, &node_config(&fabric.address(3)));
    let net = uuid::Uuid::new_v4().to_string();
    let subnet = uuid::Uuid::new_v4().to_string();
    let mover = guest_on(&a, &net, &subnet, "mover");
    let pinger = guest_on(&c, &net, &subnet, "pinger");
    // B has the network and a group of the same name and rules (groups are matched by name).
    span(&b, &net, &subnet);
    let group = post(&b.agent, "/v1/security-groups", &json!({"name": "icmp"}));
    post(
        &b.agent,
        "/v1/security-group-rules",
        &json!({"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"}),
    );

    let boot = Duration::from_secs(240);
    let mut ips = Vec::new();
    let mut domains = Vec::new();
    for (node, id) in [(&a, &mover), (&c, &pinger)] {
        let server = node.agent.wait_server(id, "ACTIVE", boot);
        ips.push(
            server["nics"][0]["fixed_ips"][0]
                .as_str()
                .expect("ip")
                .to_string(),
        );
        domains.push(server["domain_name"].as_str().expect("domain").to_string());
        node.agent
            .wait_console(id, "HYPERLET-GUEST: meta-done", 1, boot);
    }
    let mac = a.agent.get_json(&format!("/v1/servers/{mover}"))["nics"][0]["mac"]
        .as_str()
        .expect("mac")
        .to_string();
    // Reachable before: then the pinger pings every 0.1 s in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _, _) = hyperlet_tests::guest::guest_sh_with(
            |args| c.libvirt.virsh(args),
            &domains[1],
            &format!("busybox ping -c 1 -W 2 {}", ips[0]),
            Duration::from_secs(30),
        );
        if code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ping before the migration"
        );
    }
    sh(
        &c,
        &domains[1],
        &format!(
            "busybox ping -i 0.1 {} > /tmp/ping.log 2>&1 & echo $! > /tmp/ping.pid",
            ips[0]
        ),
    );
    // A data volume on NFS, written before the move.
    for node in [&a, &b] {
        post(
            &node.agent,
            "/v1/volume-types",
            &json!({"name": "shared", "backend": "nfs", "is_default": true}),
        );
    }
    let vol = post(&a.agent, "/v1/volumes", &json!({"size_gb": 1}))["id"]
        .as_str()
        .expect("volume id")
        .to_string();
    crate::volumes::wait_volume(&a.agent, &vol, "available");
    post(
        &a.agent,
        &format!("/v1/servers/{mover}/volumes"),
        &json!({"volume_id": vol}),
    );
    crate::volumes::wait_volume(&a.agent, &vol, "in-use");
    sh(
        &a,
        &domains[0],
        "for i in $(seq 50); do [ -b /dev/vdb ] && break; sleep 0.2; done; \
         echo SPAN-BEFORE | dd of=/dev/vdb bs=512 seek=2048 conv=fsync 2>/dev/null",
    );
    let uptime = |node, domain: &str| -> f64 {
        sh(node, domain, "cut -d' ' -f1 /proc/uptime")
            .trim()
            .parse()
            .expect("uptime")
    };
    let up_before = uptime(&a, &domains[0]);
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = migrate(&a.agent, &mover, json!({"host": "net-b"}));
    assert_eq!(status, 202, "{body}");
    wait_moved(&a.agent, &mover);
    let on_b = b
        .agent
        .wait_server(&mover, "ACTIVE", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let log = sh(
        &c,
        &domains[1],
        "kill -INT $(cat /tmp/ping.pid); sleep 1; grep -o 'seq=[0-9]*' /tmp/ping.log | tr '\\n' ' '; tail -3 /tmp/ping.log",
    );
    let (sent, received) = log
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (n.len() >= 2).then(|| (n[0], n[1]))
        })
        .unwrap_or_else(|| panic!("ping summary: {log}"));
    assert!(sent >= 50, "the pinger ran through the migration: {log}");
    let timeline = |node: &hyperlet_tests::fleet::FleetNode| {
        node.agent
            .log()
            .lines()
            .filter(|l| {
                l.contains("live migration")
                    || l.contains("l2pop")
                    || l.contains("request finished\",\"status\":200") && l.contains("peer")
            })
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        sent - received <= 10,
        "at most 10 replies lost (1 s): {sent} sent, {received} received\n{log}\nA:\n{}\nB:\n{}\nC:\n{}",
        timeline(&a),
        timeline(&b),
        timeline(&c)
    );
    eprintln!("pinger: {sent} sent, {received} received during the migration");

    // No reboot; the volume holds what was written and takes more.
    let up_after = uptime(&b, &domains[0]);
    assert!(
        up_after >= up_before,
        "no reboot: uptime {up_before} → {up_after}"
    );
    let volume = sh(
        &b,
        &domains[0],
        "echo SPAN-AFTER | dd of=/dev/vdb bs=512 seek=2049 conv=fsync 2>/dev/null; \
         dd if=/dev/vdb bs=512 skip=2048 count=2 2>/dev/null | tr -d '\\000'",
    );
    assert_eq!(volume, "SPAN-BEFORE\nSPAN-AFTER\n", "the NFS volume on B");
    assert_eq!(
        b.agent.get_json(&format!("/v1/volumes/{vol}"))["attached_to"],
        mover.as_str()
    );

    // Same address and MAC.
    assert_eq!(on_b["nics"][0]["fixed_ips"][0], ips[0].as_str(), "{on_b}");
    assert_eq!(on_b["nics"][0]["mac"], mac.as_str(), "{on_b}");
    // A forgot the port; B has it; C forwards the MAC to B.
    let port_id = on_b["nics"][0]["port_id"]
        .as_str()
        .expect("port")
        .to_string();
    assert_eq!(
        a.agent
            .get(&format!("/v1/ports/{port_id}"))
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        b.agent
            .get(&format!("/v1/ports/{port_id}"))
            .status()
            .as_u16(),
        200
    );
    let fdb = c.exec(&["bridge", "fdb", "show", "dev", "vxlan-4242"]).1;
    let line = fdb
        .lines()
        .find(|l| l.starts_with(&mac) && l.contains(" dst "))
        .unwrap_or_else(|| panic!("C has an entry for {mac}: {fdb}"));
    assert!(
        line.contains(&format!("dst {}", b.ip)),
        "C forwards to B: {line}"
    );
    // The address claim is B's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let claim = runtime.block_on(async {
        let config = hyperlet::config::FleetConfig {
            endpoints: vec![fabric.etcd.endpoint()],
            ..Default::default()
        };
        let etcd = hyperlet::fleet::etcd::Etcd::connect(&config)
            .await
            .expect("etcd");
        let key = hyperlet::fleet::keys::Keys::new(&config.prefix)
            .ipam(&subnet, ips[0].parse().expect("ip"));
        etcd.get(&key)
            .await
            .expect("get")
            .map(|kv| kv.value().to_vec())
    });
    let claim: serde_json::Value =
        serde_json::from_slice(&claim.expect("a claim")).expect("claim JSON");
    assert_eq!(claim["node"], "net-b", "{claim}");

    // Metadata on B: the guest's route to 169.254.169.254 is on-link and B's namespace has the
    // network's one DHCP MAC, so the entry the guest learnt on A is still right; and with the
    // entry gone (the link bounced), B's namespace answers ARP itself (A's cannot: the
    // firewall keeps every DHCP tap off the tunnel).
    let route = sh(&b, &domains[0], "ip route get 169.254.169.254");
    assert!(
        !route.contains(" via "),
        "the metadata route is on-link: {route}"
    );
    let url = "http://169.254.169.254/latest/meta-data/instance-id";
    let fetched = sh(&b, &domains[0], &format!("timeout 10 wget -q -O - {url}"));
    assert_eq!(fetched.trim(), mover, "metadata on B, cached ARP entry");
    let neighbour = sh(
        &b,
        &domains[0],
        "ip link set eth0 down; ip link set eth0 up; sleep 1; \
         ip route replace 169.254.169.254/32 dev eth0; ip neigh show dev eth0",
    );
    assert!(
        !neighbour.contains("169.254.169.254 lladdr"),
        "flushed: {neighbour}"
    );
    let fetched = sh(&b, &domains[0], &format!("timeout 10 wget -q -O - {url}"));
    assert_eq!(fetched.trim(), mover, "metadata on B, ARP asked again");
    let dhcp_mac = b.agent.get_json(&format!("/v1/ports?network_id={net}"))["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["device_owner"] == "network:dhcp")
        .map(|p| p["mac_address"].as_str().expect("mac").to_string())
        .expect("B's DHCP port");
    let neighbour = sh(&b, &domains[0], "ip neigh show 169.254.169.254");
    assert!(
        neighbour.contains(&dhcp_mac),
        "answered by B's namespace ({dhcp_mac}): {neighbour}"
    );
}

/// Waits until the server's live migration reports progress (libvirt's job runs).
fn wait_copying(agent: &hyperlet_tests::Agent, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let server = agent.get_json(&format!("/v1/servers/{id}"));
        if server["migration"]["memory_total_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            return;
        }
        assert!(server["task_state"] == "migrating", "{server}");
        assert!(
            std::time::Instant::now() < deadline,
            "no progress: {server}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Either agent killed mid-migration (issue #14): after restarts the server runs on exactly one
/// node, with nothing left on the other. Killing the source rolls the migration back (its
/// libvirt job is aborted at restart); killing the destination lets libvirt finish the move,
/// and the destination takes the server at restart while the source's finish is retried.
#[test]
fn either_agent_killed_mid_migration_leaves_the_server_on_one_node() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let mut a = fabric.node("kill-a", 1, "");
    let mut b = fabric.node("kill-b", 2, "");
    let (_, id, domain) = booted(
        &a,
        "survivor",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let speed = |node: &hyperlet_tests::fleet::FleetNode, mib: &str| {
        let (ok, out) = node.libvirt.virsh(&["migrate-setspeed", &domain, mib]);
        assert!(ok, "{out}");
    };

    // kill -9 of the source agent while libvirt copies: rolled back at its restart.
    speed(&a, "1");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "kill-b"}));
    assert_eq!(status, 202, "{body}");
    wait_copying(&a.agent, &id);
    a.agent.kill9();
    a.agent.restart();
    let back = a.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert!(back["task_state"].is_null(), "{back}");
    assert!(
        back["fault"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled back"),
        "{back}"
    );
    let (ok, state) = a.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");
    assert_eq!(
        b.agent.get(&format!("/v1/servers/{id}")).status().as_u16(),
        404
    );
    let (_, list) = b.libvirt.virsh(&["list", "--all", "--name"]);
    assert!(!list.contains(&domain), "B keeps no domain: {list}");
    assert!(!b.agent.state_dir().join("servers").join(&id).exists());

    // kill -9 of the destination agent while libvirt copies: the move completes.
    let (status, body) = migrate(&a.agent, &id, json!({"host": "kill-b"}));
    assert_eq!(status, 202, "{body}");
    wait_copying(&a.agent, &id);
    b.agent.kill9();
    speed(&a, "8796093022207");
    // libvirt finishes without the destination agent; the source keeps asking it to finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, state) = b.libvirt.virsh(&["domstate", &domain]);
        if state.contains("running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the guest reached B");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.agent.restart();
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "kill-b", "{moved}");
    let on_b = b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert!(on_b["task_state"].is_null(), "{on_b}");
    let (_, list) = a.libvirt.virsh(&["list", "--all", "--name"]);
    assert!(!list.contains(&domain), "A keeps no domain: {list}");
    assert!(!a.agent.state_dir().join("servers").join(&id).exists());

    // A destination that is down is refused, naming why; nothing changes.
    a.agent.kill9();
    let endpoint = fabric.etcd.endpoint();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) =
            hyperlet_tests::run_cli(&["fleet", "nodes", "--json", "--endpoints", &endpoint], &[]);
        let down = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["name"] == "kill-a" && n["state"] == "down")
            });
        if down {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never shown down: {out}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, body) = migrate(&b.agent, &id, json!({"host": "kill-a"}));
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("node kill-a is down"), "{body}");
    let still = b.agent.get_json(&format!("/v1/servers/{id}"));
    assert_eq!(still["status"], "ACTIVE", "{still}");
    assert!(still["task_state"].is_null(), "{still}");
}

/// POSTs and returns (status, body).
fn post(
    agent: &hyperlet_tests::Agent,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = agent.send(reqwest::Method::POST, path, Some(&body));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or_default())
}

/// Volumes on shared storage follow their server (issue #14): a guest writes to an NFS data
/// volume (with a snapshot) on A and moves to B; the volume's and the snapshot's records now
/// live on B (in use by the server there, gone from A), the guest reads what it wrote and
/// writes more; moved back to A it reads both. The data never left the share.
#[test]
fn live_migration_carries_nfs_volumes_and_their_snapshots() {
    use crate::volumes::wait_volume;
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let _vm = hyperlet_tests::vm_shared();
    let nfs = hyperlet_tests::storage::ganesha();
    let fabric = Fabric::new();
    let a = fabric.node_with_nfs("vol-a", 1, &nfs.driver_stanza());
    let b = fabric.node_with_nfs("vol-b", 2, &nfs.driver_stanza());
    for node in [&a, &b] {
        let (s, t) = post(
            &node.agent,
            "/v1/volume-types",
            json!({"name": "shared", "backend": "nfs", "is_default": true}),
        );
        assert_eq!(s, 201, "{t}");
    }
    let (_image, id, domain) = booted(
        &a,
        "carrier",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let (s, v) = post(
        &a.agent,
        "/v1/volumes",
        json!({"size_gb": 1, "name": "data"}),
    );
    assert_eq!(s, 202, "{v}");
    let vol = v["id"].as_str().expect("volume id").to_string();
    wait_volume(&a.agent, &vol, "available");
    let (s, v) = post(
        &a.agent,
        &format!("/v1/servers/{id}/volumes"),
        json!({"volume_id": vol}),
    );
    assert_eq!(s, 202, "{v}");
    let attached = wait_volume(&a.agent, &vol, "in-use");
    assert_eq!(attached["device"], "vdb", "{attached}");
    sh(
        &a,
        &domain,
        "for i in $(seq 50); do [ -b /dev/vdb ] && break; sleep 0.2; done; \
         echo NFS-BEFORE | dd of=/dev/vdb bs=512 seek=4096 conv=fsync 2>/dev/null",
    );
    let (s, snap) = post(
        &a.agent,
        "/v1/snapshots",
        json!({"volume_id": vol, "name": "before-move"}),
    );
    assert_eq!(s, 202, "{snap}");
    let snap = snap["id"].as_str().expect("snapshot id").to_string();
    a.agent
        .wait_settled(&format!("/v1/snapshots/{snap}"), &["creating"]);

    let (status, body) = migrate(&a.agent, &id, json!({"host": "vol-b"}));
    assert_eq!(status, 202, "{body}");
    wait_moved(&a.agent, &id);
    b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    let on_b = b.agent.get_json(&format!("/v1/volumes/{vol}"));
    assert_eq!(on_b["status"], "in-use", "{on_b}");
    assert_eq!(on_b["attached_to"], id.as_str(), "{on_b}");
    assert_eq!(on_b["device"], "vdb", "{on_b}");
    let snap_b = b.agent.get_json(&format!("/v1/snapshots/{snap}"));
    assert_eq!(snap_b["status"], "available", "{snap_b}");
    for path in [
        format!("/v1/volumes/{vol}"),
        format!("/v1/snapshots/{snap}"),
    ] {
        assert_eq!(a.agent.get(&path).status().as_u16(), 404, "A forgot {path}");
    }
    let read = "{ dd if=/dev/vdb bs=512 skip=4096 count=1 2>/dev/null | head -c 10; \
                dd if=/dev/vdb bs=512 skip=8192 count=1 2>/dev/null | head -c 9; } | tr -d '\\000'";
    assert_eq!(sh(&b, &domain, read), "NFS-BEFORE");
    sh(
        &b,
        &domain,
        "echo NFS-AFTER | dd of=/dev/vdb bs=512 seek=8192 conv=fsync 2>/dev/null",
    );

    // Back to A (placement picks it): A adopts the records again and reads both marks.
    let (status, body) = migrate(&b.agent, &id, json!({"host": null}));
    assert_eq!(status, 202, "{body}");
    let moved = wait_moved(&b.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "vol-a", "{moved}");
    a.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert_eq!(sh(&a, &domain, read), "NFS-BEFORENFS-AFTER");
    assert_eq!(
        b.agent.get(&format!("/v1/volumes/{vol}")).status().as_u16(),
        404
    );

    // Deleting the server frees the volume on A, where it now is; then it goes.
    let resp = a
        .agent
        .send(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert!(resp.status().is_success());
    a.agent.wait_server_gone(&id, Duration::from_secs(60));
    wait_volume(&a.agent, &vol, "available");
    let resp = a.agent.send(
        reqwest::Method::DELETE,
        &format!("/v1/snapshots/{snap}"),
        None,
    );
    assert!(resp.status().is_success(), "{:?}", resp.text());
    crate::volumes::wait_gone(&a.agent, &format!("/v1/snapshots/{snap}"));
    let resp = a
        .agent
        .send(reqwest::Method::DELETE, &format!("/v1/volumes/{vol}"), None);
    assert!(resp.status().is_success(), "{:?}", resp.text());
}

/// POSTs a server action and returns (status, body).
fn act(
    agent: &hyperlet_tests::Agent,
    id: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    post(agent, &format!("/v1/servers/{id}/action"), body)
}

/// Cold migration (issue #14): a node the scheduler chain refuses is refused with the filter's
/// reason (the same check as live); a SHUTOFF server moves from A to B and is VERIFY_RESIZE there
/// (not started; A keeps its disks, not its domain); revert brings it back to A untouched
/// (SHUTOFF, its disk files byte for byte the same), B keeps nothing. Moved again (CLI) and
/// confirmed, A drops its copy and it boots on B with what it wrote on A. Moved back while
/// ACTIVE it runs on A at once; deleted while VERIFY_RESIZE, B drops its copy too.
#[test]
fn cold_migration_moves_a_server_and_revert_brings_it_back_untouched() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    // A runs the RAM filter; C offers almost no RAM, so A's chain refuses it.
    let a = fabric.node("cold-a", 1, &crate::fleet_place::ram_filter());
    let b = fabric.node("cold-b", 2, "");
    let _c = fabric.node("cold-c", 3, "[capacity]\nram_allocation_ratio = 0.001\n");
    let (_image, id, domain) = booted(
        &a,
        "cold",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1, "ephemeral_gb": 1}),
    );
    sh(&a, &domain, WRITE_MARKS);
    let read = READ_MARKS;
    let (s, body) = act(&a.agent, &id, json!({"stop": null}));
    assert_eq!(s, 202, "{body}");
    a.agent
        .wait_server(&id, "SHUTOFF", Duration::from_secs(120));
    let disks_of = |node: &hyperlet_tests::fleet::FleetNode| -> Vec<String> {
        let dir = node.agent.state_dir().join("servers").join(&id);
        ["root.qcow2", "ephemeral.qcow2"]
            .iter()
            .map(|f| {
                let out = std::process::Command::new("sha256sum")
                    .arg(dir.join(f))
                    .output()
                    .expect("sha256sum");
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let untouched = disks_of(&a);
    assert!(untouched.iter().all(|h| h.len() == 64), "{untouched:?}");
    let kept_on = |node: &hyperlet_tests::fleet::FleetNode| {
        node.agent
            .state_dir()
            .join("servers")
            .join(format!("{id}.retained"))
            .is_dir()
    };
    let domain_on = |node: &hyperlet_tests::fleet::FleetNode| {
        let (_, list) = node.libvirt.virsh(&["list", "--all", "--name"]);
        list.lines().any(|l| l.trim() == domain)
    };

    // Refusals name the reason and change nothing.
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "cold-a"}}));
    assert_eq!(s, 409, "{body}");
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "nowhere"}}));
    assert_eq!(s, 409, "{body}");
    let (s, _) = act(&a.agent, &id, json!({"migrate": {"host": "-bad"}}));
    assert_eq!(s, 400);
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "cold-c"}}));
    assert_eq!(s, 409, "{body}");
    let reason = body.to_string();
    assert!(
        reason.contains("refuses the server") && reason.to_lowercase().contains("ram"),
        "the filter's reason: {body}"
    );

    let (s, _) = act(&a.agent, &id, json!({"migrate": {"hots": "cold-b"}}));
    assert_eq!(s, 400);
    let (s, body) = act(&a.agent, &id, json!({"confirm_resize": null}));
    assert_eq!(s, 409, "{body}");

    // A → B, shut off: VERIFY_RESIZE on B, not running; A keeps the disks only.
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "cold-b"}}));
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["status"], "RESIZE", "{body}");
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "cold-b", "{moved}");
    let on_b = b
        .agent
        .wait_server(&id, "VERIFY_RESIZE", Duration::from_secs(60));
    assert!(on_b["fault"].is_null(), "{on_b}");
    let (ok, state) = b.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("shut off"), "{state}");
    assert!(!domain_on(&a), "A keeps no domain");
    assert!(kept_on(&a), "A keeps the disks until confirmed or reverted");

    // Revert on B: back on A as it was (SHUTOFF), B keeps nothing.
    let (s, body) = act(&b.agent, &id, json!({"revert_resize": null}));
    assert_eq!(s, 202, "{body}");
    let moved = wait_moved(&b.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "cold-a", "{moved}");
    let home = a.agent.wait_server(&id, "SHUTOFF", Duration::from_secs(60));
    assert!(home["fault"].is_null(), "{home}");
    assert!(!kept_on(&a), "the kept disks are the server's again");
    assert!(!domain_on(&b), "B keeps no domain");
    assert!(
        !b.agent.state_dir().join("servers").join(&id).exists(),
        "B keeps no disks"
    );
    assert_eq!(
        disks_of(&a),
        untouched,
        "A's disks are byte for byte what they were"
    );

    // Shut off again, with the CLI, placement picks B; confirmed there (A drops its copy),
    // then started: it boots on B with what it wrote on A.
    let ca = fabric.ca().display().to_string();
    let (token, url) = (a.agent.token(), a.agent.url());
    let (status, out, err) = hyperlet_tests::run_cli(
        &["server", "migrate", &id],
        &[
            ("HYPERLET_URL", url.as_str()),
            ("HYPERLET_TOKEN", token.as_str()),
            ("HYPERLET_CA_CERT", ca.as_str()),
        ],
    );
    assert!(
        status.success(),
        "server migrate: {out}{err}\n{}",
        a.agent.log()
    );
    assert!(out.contains("moved to node cold-b"), "{out}");
    assert!(out.contains("VERIFY_RESIZE"), "{out}");
    wait_moved(&a.agent, &id);
    b.agent
        .wait_server(&id, "VERIFY_RESIZE", Duration::from_secs(60));
    let (s, body) = act(&b.agent, &id, json!({"start": null}));
    assert_eq!(s, 409, "confirm or revert first: {body}");
    let (s, body) = act(&b.agent, &id, json!({"confirm_resize": null}));
    assert_eq!(s, 202, "{body}");
    b.agent.wait_server(&id, "SHUTOFF", Duration::from_secs(60));
    assert!(!kept_on(&a), "confirmed: A dropped its copy");
    assert!(!domain_on(&a));
    let (s, body) = act(&b.agent, &id, json!({"start": null}));
    assert_eq!(s, 202, "{body}");
    b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(120));
    b.agent
        .wait_console(&id, "HYPERLET-GUEST: booted", 1, Duration::from_secs(240));
    assert_eq!(sh(&b, &domain, read), "ROOT-MARKEPHEMERAL-MARK");

    // ACTIVE, B → A: it runs on A at once. Deleted while VERIFY_RESIZE: B drops its copy.
    let (s, body) = act(&b.agent, &id, json!({"migrate": {"host": "cold-a"}}));
    assert_eq!(s, 202, "{body}");
    wait_moved(&b.agent, &id);
    a.agent
        .wait_server(&id, "VERIFY_RESIZE", Duration::from_secs(60));
    let (ok, state) = a.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "it ran on B: {state}");
    a.agent
        .wait_console(&id, "HYPERLET-GUEST: booted", 1, Duration::from_secs(240));
    assert_eq!(sh(&a, &domain, read), "ROOT-MARKEPHEMERAL-MARK");
    assert!(kept_on(&b));
    let resp = a
        .agent
        .send(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert!(resp.status().is_success());
    a.agent.wait_server_gone(&id, Duration::from_secs(60));
    assert!(
        !kept_on(&b),
        "B dropped its kept copy when the server was deleted"
    );
    assert!(!domain_on(&a) && !domain_on(&b));
}

/// Waits until `agent`'s log holds `needle` `n` times.
fn wait_log(agent: &hyperlet_tests::Agent, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while agent.log().matches(needle).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} not logged {n} times:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts a killed agent with `failpoint` set (or none).
fn restart_at(agent: &mut hyperlet_tests::Agent, failpoint: Option<&str>) {
    agent.kill9();
    agent.env = failpoint
        .map(|f| vec![("HYPERLET_FAILPOINT".to_string(), f.to_string())])
        .unwrap_or_default();
    agent.restart();
}

/// Cold migration's crash matrix (issue #14): kill -9 of the source after the destination
/// prepared (rolled back at its restart: SHUTOFF on A, nothing on B), of the source after the
/// hand-over (finished at its restart: VERIFY_RESIZE on B), and of the destination while it
/// prepares (its restart rolls its side back; the source's call fails and it rolls back).
/// Each time the server is on exactly one node and the other keeps nothing.
#[test]
fn cold_migration_killed_on_either_side_leaves_the_server_on_one_node() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let mut a = fabric.node("crash-a", 1, "");
    let mut b = fabric.node("crash-b", 2, "");
    let (_image, id, domain) = booted(
        &a,
        "crashy",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let (s, body) = act(&a.agent, &id, json!({"stop": null}));
    assert_eq!(s, 202, "{body}");
    a.agent
        .wait_server(&id, "SHUTOFF", Duration::from_secs(120));
    let nothing_on = |node: &hyperlet_tests::fleet::FleetNode| {
        // No record: unknown, or a tombstone pointing elsewhere.
        let status = node
            .agent
            .get(&format!("/v1/servers/{id}"))
            .status()
            .as_u16();
        assert!(
            status == 404 || status == 301,
            "{} keeps no record: {status}",
            node.name
        );
        let (_, list) = node.libvirt.virsh(&["list", "--all", "--name"]);
        assert!(
            !list.contains(&domain),
            "{} keeps no domain: {list}",
            node.name
        );
        let servers = node.agent.state_dir().join("servers");
        assert!(!servers.join(&id).exists(), "{} keeps no disks", node.name);
    };
    let rolled_back = |agent: &hyperlet_tests::Agent| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let server = agent.get_json(&format!("/v1/servers/{id}"));
            if server["status"] == "SHUTOFF" && server["task_state"].is_null() {
                assert!(server["fault"].as_str().is_some(), "{server}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not rolled back: {server}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // 1. The source dies once the destination prepared: rolled back at its restart.
    restart_at(&mut a.agent, Some("server.cold_migrate:prepare"));
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "crash-b"}}));
    assert_eq!(s, 202, "{body}");
    wait_log(&a.agent, "failpoint reached", 1);
    assert_eq!(
        b.agent.get(&format!("/v1/servers/{id}")).status().as_u16(),
        200,
        "B prepared"
    );
    restart_at(&mut a.agent, None);
    rolled_back(&a.agent);
    nothing_on(&b);

    // 2. The source dies after the hand-over: its restart finishes the move.
    restart_at(&mut a.agent, Some("server.cold_migrate:handover"));
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "crash-b"}}));
    assert_eq!(s, 202, "{body}");
    wait_log(&a.agent, "failpoint reached", 1);
    restart_at(&mut a.agent, None);
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "crash-b", "{moved}");
    b.agent
        .wait_server(&id, "VERIFY_RESIZE", Duration::from_secs(60));
    let (_, list) = a.libvirt.virsh(&["list", "--all", "--name"]);
    assert!(!list.contains(&domain), "A keeps no domain: {list}");
    let (s, body) = act(&b.agent, &id, json!({"revert_resize": null}));
    assert_eq!(s, 202, "{body}");
    wait_moved(&b.agent, &id);
    a.agent.wait_server(&id, "SHUTOFF", Duration::from_secs(60));
    nothing_on(&b);

    // 3. The destination dies while it prepares: both sides roll back.
    restart_at(&mut b.agent, Some("server.incoming:disks"));
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "crash-b"}}));
    assert_eq!(s, 202, "{body}");
    wait_log(&b.agent, "failpoint reached", 1);
    restart_at(&mut b.agent, None);
    rolled_back(&a.agent);
    nothing_on(&b);
    let (ok, state) = a.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("shut off"), "{state}");

    // Still movable after all that.
    let (s, body) = act(&a.agent, &id, json!({"migrate": {"host": "crash-b"}}));
    assert_eq!(s, 202, "{body}");
    wait_moved(&a.agent, &id);
    b.agent
        .wait_server(&id, "VERIFY_RESIZE", Duration::from_secs(60));
    let (s, body) = act(&b.agent, &id, json!({"confirm_resize": null}));
    assert_eq!(s, 202, "{body}");
    b.agent.wait_server(&id, "SHUTOFF", Duration::from_secs(60));
    assert!(!a
        .agent
        .state_dir()
        .join("servers")
        .join(format!("{id}.retained"))
        .exists());
}

/// `live_migrate_force_complete` (issue #14, CLI `server migration force-complete`): a
/// migration that cannot converge (a 1 MiB/s link) is ended by pausing the guest on the source
/// (post-copy is off by default); once
/// it is over, the guest runs again on the destination, not rebooted. Asked when no migration
/// runs, it is refused.
#[test]
fn force_complete_pauses_a_migration_that_does_not_converge_and_finishes_it() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("fc-a", 1, "");
    let b = fabric.node("fc-b", 2, "");
    let (_, id, domain) = booted(
        &a,
        "stubborn",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let up = |node, domain: &str| -> f64 {
        sh(node, domain, "cut -d' ' -f1 /proc/uptime")
            .trim()
            .parse()
            .expect("uptime")
    };
    let before = up(&a, &domain);
    let (s, body) = act(&a.agent, &id, json!({"live_migrate_force_complete": null}));
    assert_eq!(s, 409, "nothing to complete: {body}");

    let (ok, out) = a.libvirt.virsh(&["migrate-setspeed", &domain, "1"]);
    assert!(ok, "{out}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "fc-b"}));
    assert_eq!(status, 202, "{body}");
    wait_copying(&a.agent, &id);
    let ca = fabric.ca().display().to_string();
    let (token, url) = (a.agent.token(), a.agent.url());
    let (status, out, err) = hyperlet_tests::run_cli(
        &["server", "migration", "force-complete", &id],
        &[
            ("HYPERLET_URL", url.as_str()),
            ("HYPERLET_TOKEN", token.as_str()),
            ("HYPERLET_CA_CERT", ca.as_str()),
        ],
    );
    assert!(
        status.success(),
        "server migration force-complete: {out}{err}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, state) = a.libvirt.virsh(&["domstate", &domain]);
        if state.contains("paused") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest was not paused to finish: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Paused, what is left goes over (the test lifts the cap so it does not take minutes).
    let (ok, out) = a
        .libvirt
        .virsh(&["migrate-setspeed", &domain, "8796093022207"]);
    assert!(ok, "{out}");
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "fc-b", "{moved}");
    let on_b = b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    assert!(on_b["fault"].is_null(), "{on_b}");
    let (ok, state) = b.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "resumed on B: {state}");
    let after = up(&b, &domain);
    assert!(after >= before, "no reboot: uptime {before} → {after}");
}

/// The destination's libvirtd killed mid-copy (issue #14): the source's libvirt gives up, the
/// guest keeps running on A (ACTIVE, with the fault), and once B's libvirtd is back B keeps
/// nothing — its agent finishes the undo it could not do without libvirtd in the background.
/// The server can move again afterwards.
#[test]
fn destination_libvirtd_killed_mid_copy_leaves_the_server_on_the_source() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("lvd-a", 1, "");
    let mut b = fabric.node("lvd-b", 2, "");
    let (_, id, domain) = booted(
        &a,
        "orphan",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let (ok, out) = a.libvirt.virsh(&["migrate-setspeed", &domain, "1"]);
    assert!(ok, "{out}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "lvd-b"}));
    assert_eq!(status, 202, "{body}");
    wait_copying(&a.agent, &id);
    b.libvirt.kill_libvirtd();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let back = loop {
        let server = a.agent.get_json(&format!("/v1/servers/{id}"));
        if server["task_state"].is_null() {
            break server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never gave up: {server}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(back["status"], "ACTIVE", "{back}");
    assert!(back["fault"].as_str().is_some(), "{back}");
    let (ok, state) = a.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");

    b.libvirt.restart_libvirtd();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let record = b.agent.get(&format!("/v1/servers/{id}")).status().as_u16();
        let (_, list) = b.libvirt.virsh(&["list", "--all", "--name"]);
        let dir = b.agent.state_dir().join("servers").join(&id).exists();
        if record == 404 && !list.contains(&domain) && !dir {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B still has: record {record}, domains {list:?}, disks {dir}\n{}",
            b.agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let (ok, out) = a
        .libvirt
        .virsh(&["migrate-setspeed", &domain, "8796093022207"]);
    assert!(ok, "{out}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "lvd-b"}));
    assert_eq!(status, 202, "{body}");
    wait_moved(&a.agent, &id);
    b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
}

/// `live_migrate_force_complete` with `[migration] allow_post_copy` (issue #14): where QEMU can
/// do post-copy the migration switches to it (the guest runs on the destination while the rest
/// of its memory is fetched on demand); where it cannot (no userfaultfd for QEMU on the
/// destination, as on this build machine) the migration runs without it and force-complete
/// pauses instead. Either way the move completes and the guest was not rebooted.
#[test]
fn force_complete_with_post_copy_allowed_completes_the_move() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    // Appended right after the node's own [migration] keys.
    let post_copy = "allow_post_copy = true\n";
    let a = fabric.node("pc-a", 1, post_copy);
    let b = fabric.node("pc-b", 2, post_copy);
    let (_, id, domain) = booted(
        &a,
        "postcopy",
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let before: f64 = sh(&a, &domain, "cut -d' ' -f1 /proc/uptime")
        .trim()
        .parse()
        .expect("uptime");
    let (ok, out) = a.libvirt.virsh(&["migrate-setspeed", &domain, "1"]);
    assert!(ok, "{out}");
    let (status, body) = migrate(&a.agent, &id, json!({"host": "pc-b"}));
    assert_eq!(status, 202, "{body}");
    wait_copying(&a.agent, &id);
    let (s, body) = act(&a.agent, &id, json!({"live_migrate_force_complete": null}));
    assert_eq!(s, 202, "{body}");
    let (ok, out) = a
        .libvirt
        .virsh(&["migrate-setspeed", &domain, "8796093022207"]);
    assert!(ok || out.contains("post-copy"), "{out}");
    let moved = wait_moved(&a.agent, &id);
    assert_eq!(moved["moved_to"]["node"], "pc-b", "{moved}");
    b.agent.wait_server(&id, "ACTIVE", Duration::from_secs(60));
    let after: f64 = sh(&b, &domain, "cut -d' ' -f1 /proc/uptime")
        .trim()
        .parse()
        .expect("uptime");
    assert!(after >= before, "no reboot: uptime {before} → {after}");
    let fell_back = a.agent.log().contains("post-copy is not available");
    eprintln!(
        "post-copy {}",
        if fell_back {
            "unavailable: paused to finish"
        } else {
            "used"
        }
    );
}
