//! The fleet through a real etcd: agents register, show up and down in `hyperlet fleet`,
//! survive an etcd outage, refuse a taken name; the CLI finds etcd as documented.

use hyperlet_tests::etcd::Etcd;
use hyperlet_tests::{run_cli, Agent};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Lease TTL of the test agents started here.
pub const TTL: u64 = 5;
/// Lease TTL of the agents of a test fabric.
const FABRIC_TTL: u64 = hyperlet_tests::fleet::TTL;

/// The `[fleet]` section of a test agent named `name` (lease TTL [`TTL`]).
pub fn fleet_config(etcd: &Etcd, name: &str) -> String {
    format!(
        "[fleet]\nendpoints = [\"{}\"]\nnode_name = \"{name}\"\nlease_ttl_secs = {TTL}\n",
        etcd.endpoint()
    )
}

/// `hyperlet fleet nodes --json`.
pub fn nodes(etcd: &Etcd) -> Vec<Value> {
    let (status, out, err) = run_cli(
        &["fleet", "nodes", "--json", "--endpoints", &etcd.endpoint()],
        &[],
    );
    assert!(status.success(), "fleet nodes: {err}");
    serde_json::from_str::<Value>(&out)
        .expect("JSON")
        .as_array()
        .cloned()
        .expect("a list")
}

/// The node `name` as `hyperlet fleet nodes --json` lists it.
pub fn node(etcd: &Etcd, name: &str) -> Option<Value> {
    nodes(etcd).into_iter().find(|n| n["name"] == name)
}

/// `up`, `down` or `absent`.
pub fn state(etcd: &Etcd, name: &str) -> String {
    node(etcd, name).map_or_else(
        || "absent".into(),
        |n| n["state"].as_str().unwrap_or("?").to_string(),
    )
}

/// The value of the counter or gauge `name` on the agent's `/metrics`.
pub fn metric(agent: &Agent, name: &str) -> u64 {
    let metrics = agent.get("/metrics").text().expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// A running `hyperlet fleet watch --json`: its events as they come.
struct Watch {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<Value>,
}

impl Watch {
    /// Starts watching the fleet at `endpoint` (and gives it half a second to start).
    fn start(endpoint: &str) -> Self {
        let mut child = std::process::Command::new(hyperlet_tests::hyperlet_bin())
            .args(["fleet", "watch", "--json", "--endpoints", endpoint])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("fleet watch");
        let (sender, events) = std::sync::mpsc::channel::<Value>();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = sender.send(v);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        Self { child, events }
    }

    /// Stops it (by its PID) and returns the events not read yet.
    fn stop(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.events.try_iter().collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// The agent's own view of its fleet link (`/healthz` details).
pub fn link(agent: &Agent) -> String {
    agent.get_json("/healthz")["details"]["fleet"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

#[test]
fn nodes_register_go_down_on_kill_and_come_back_with_their_identity() {
    let etcd = Etcd::start();
    let mut a = Agent::start_with_config(&fleet_config(&etcd, "node-a"));
    let mut b = Agent::start_with_config(&fleet_config(&etcd, "node-b"));
    assert!(
        wait_for(Duration::from_secs(10), || state(&etcd, "node-a") == "up"
            && state(&etcd, "node-b") == "up"),
        "both up: {:?}\n{}",
        nodes(&etcd),
        a.log()
    );
    let listed = node(&etcd, "node-a").expect("node-a");
    assert_eq!(listed["enabled"], true);
    assert_eq!(listed["availability_zone"], "nova");
    assert_eq!(listed["api_url"], a.url());
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        listed["heartbeat_age_s"].as_u64().expect("age") <= TTL,
        "{listed}"
    );
    assert!(
        listed["record"]["capacity"]["vcpus_total"]
            .as_u64()
            .expect("vcpus")
            > 0
    );
    let identity = listed["node_id"].clone();
    assert!(
        identity.as_str().is_some_and(|id| id.len() == 36),
        "{listed}"
    );
    let host = a.get_json("/v1/host");
    assert_eq!(host["fleet"]["state"], "up", "{host}");
    assert_eq!(host["fleet"]["node_name"], "node-a");
    assert_eq!(link(&a), "up");
    let metrics = a.get("/metrics").text().expect("metrics");
    assert!(metrics.contains("hyperlet_fleet_link_up 1"), "{metrics}");

    // Disabled on the node: the record says so within the debounce.
    let resp = a
        .client()
        .patch(format!("{}/v1/host", a.url()))
        .bearer_auth(a.token())
        .json(&serde_json::json!({"enabled": false, "disabled_reason": "kernel update"}))
        .send()
        .expect("PATCH");
    assert_eq!(resp.status(), 200);
    assert!(
        wait_for(Duration::from_secs(5), || node(&etcd, "node-a")
            .is_some_and(
                |n| n["enabled"] == false && n["disabled_reason"] == "kernel update"
            )),
        "disabled in the fleet: {:?}",
        node(&etcd, "node-a")
    );

    // kill -9: down within TTL + 2 s, the other stays up.
    a.kill9();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(TTL + 2), || state(&etcd, "node-a")
            == "down"),
        "node-a down within {} s of kill -9 (after {:?}): {:?}",
        TTL + 2,
        killed.elapsed(),
        node(&etcd, "node-a")
    );
    assert_eq!(state(&etcd, "node-b"), "up");

    // Restart: up again with the same identity.
    a.restart();
    assert!(
        wait_for(Duration::from_secs(10), || state(&etcd, "node-a") == "up"),
        "node-a up again:\n{}",
        a.log()
    );
    assert_eq!(node(&etcd, "node-a").expect("node-a")["node_id"], identity);

    // A graceful stop revokes the lease: down at once.
    b.signal(Signal::SIGTERM);
    assert!(
        b.wait_exit(Duration::from_secs(30)).is_some(),
        "node-b stops"
    );
    assert_eq!(
        state(&etcd, "node-b"),
        "down",
        "down as soon as the agent exited"
    );
    let stats = {
        let (status, out, err) = run_cli(
            &["fleet", "stats", "--json", "--endpoints", &etcd.endpoint()],
            &[],
        );
        assert!(status.success(), "{err}");
        serde_json::from_str::<Value>(&out).expect("JSON")
    };
    assert_eq!(stats["nodes"], 2, "{stats}");
    assert_eq!(stats["nodes_up"], 1, "{stats}");
    assert_eq!(stats["nodes_down"], 1, "{stats}");
    assert_eq!(stats["nodes_disabled"], 1, "{stats}");
    assert!(stats["vcpus"].as_u64().unwrap_or(0) > 0, "{stats}");
}

#[test]
fn an_etcd_outage_degrades_the_link_and_every_node_registers_again() {
    let mut etcd = Etcd::start();
    let a = Agent::start_with_config(&fleet_config(&etcd, "outage-a"));
    let b = Agent::start_with_config(&fleet_config(&etcd, "outage-b"));
    assert!(
        wait_for(Duration::from_secs(10), || link(&a) == "up"
            && link(&b) == "up"),
        "registered"
    );
    etcd.stop();
    let stopped = Instant::now();
    assert!(
        wait_for(Duration::from_secs(15), || link(&a) == "degraded"
            && link(&b) == "degraded"),
        "degraded once etcd is gone:\n{}",
        a.log()
    );
    // The agents keep serving for the whole outage (30 s).
    while stopped.elapsed() < Duration::from_secs(30) {
        for agent in [&a, &b] {
            let host = agent.get_json("/v1/host");
            assert_eq!(host["fleet"]["state"], "degraded", "{host}");
            assert!(
                host["fleet"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("etcd")),
                "{host}"
            );
            assert_eq!(agent.get("/v1/servers").status(), 200);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let metrics = a.get("/metrics").text().expect("metrics");
    assert!(metrics.contains("hyperlet_fleet_link_up 0"), "{metrics}");

    etcd.start_again();
    assert!(
        // The liveness key comes back a moment before the agent calls its link up.
        wait_for(Duration::from_secs(20), || state(&etcd, "outage-a") == "up"
            && state(&etcd, "outage-b") == "up"
            && link(&a) == "up"),
        "both registered again: {:?}\n{}",
        nodes(&etcd),
        a.log()
    );
    let host = a.get_json("/v1/host");
    assert!(
        host["fleet"]["reconnects"].as_u64().unwrap_or(0) >= 1,
        "{host}"
    );
    assert!(host["fleet"]["last_error"].is_null(), "{host}");
}

/// A slow etcd costs the node no down-time: for 15 s everything between the agent and etcd
/// is delayed 0.7 s each way (a relay; etcd itself runs normally), so with a 1 s call deadline
/// every call is late. Late renewals turn the link `degraded` but are still awaited while the
/// lease lasts (TTL 5 s, renewed every 1.7 s), so a watcher never sees the node go down or
/// register again, and the link is `up` once etcd is quick again. (Ending the session at the
/// first late renewal and registering again through the slow link lost the lease.)
#[test]
fn a_slow_etcd_costs_the_node_no_down_time() {
    let etcd = Etcd::start();
    let lag = hyperlet_tests::lag::LagRelay::start(etcd.endpoint().trim_start_matches("http://"));
    let watch = Watch::start(&etcd.endpoint());
    let agent = Agent::start_with_config(&format!(
        "[fleet]\nendpoints = [\"{}\"]\nnode_name = \"slowed\"\nlease_ttl_secs = {TTL}\n\
         call_timeout_secs = 1\n",
        lag.endpoint()
    ));
    assert!(wait_for(Duration::from_secs(10), || link(&agent) == "up"));
    let failures = metric(&agent, "hyperlet_fleet_link_failures_total");
    lag.set_delay(Duration::from_millis(700));
    std::thread::sleep(Duration::from_secs(15));
    lag.set_delay(Duration::ZERO);
    assert!(
        metric(&agent, "hyperlet_fleet_link_failures_total") > failures,
        "etcd was slow: renewals were late"
    );
    assert!(
        wait_for(Duration::from_secs(TTL), || link(&agent) == "up"),
        "the link is up again once etcd is quick:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&etcd, "slowed"), "up");
    let seen = watch.stop();
    let events: Vec<&str> = seen
        .iter()
        .filter(|e| e["name"] == "slowed")
        .filter_map(|e| e["event"].as_str())
        .filter(|e| *e != "updated")
        .collect();
    assert_eq!(
        events,
        ["up"],
        "registered once, never down: {seen:?}\n{}",
        agent.log()
    );
}

#[test]
fn a_taken_node_name_is_refused_until_its_holder_leaves() {
    let etcd = Etcd::start();
    let mut first = Agent::start_with_config(&fleet_config(&etcd, "twin"));
    assert!(wait_for(Duration::from_secs(10), || link(&first) == "up"));
    let holder = node(&etcd, "twin").expect("twin")["node_id"].clone();
    let second = Agent::start_with_config(&fleet_config(&etcd, "twin"));
    assert!(
        wait_for(Duration::from_secs(10), || {
            let host = second.get_json("/v1/host");
            host["fleet"]["state"] == "degraded"
                && host["fleet"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("registered by another agent"))
        }),
        "the second agent is refused the name: {}",
        second.get_json("/v1/host")["fleet"]
    );
    assert_eq!(
        node(&etcd, "twin").expect("twin")["node_id"],
        holder,
        "the holder keeps it"
    );
    assert_eq!(
        second.get("/v1/servers").status(),
        200,
        "the refused agent keeps serving"
    );

    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    assert!(
        wait_for(Duration::from_secs(15), || link(&second) == "up"),
        "the second agent registers once the name is free:\n{}",
        second.log()
    );
    assert_ne!(node(&etcd, "twin").expect("twin")["node_id"], holder);
}

#[test]
fn watch_reports_comings_and_goings_and_forget_removes_only_down_nodes() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();

    // Finding etcd: nothing given is a clear error; the environment and a config work.
    let (status, _, err) = run_cli(&["fleet", "nodes"], &[]);
    assert!(!status.success());
    assert!(err.contains("HYPERLET_FLEET_ENDPOINTS"), "{err}");
    let (status, out, err) = run_cli(
        &["fleet", "nodes", "--json"],
        &[("HYPERLET_FLEET_ENDPOINTS", &endpoint)],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "[]");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("fleet.toml");
    std::fs::write(&config, fleet_config(&etcd, "unused")).expect("config");
    let (status, out, err) = run_cli(
        &[
            "fleet",
            "nodes",
            "--json",
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "[]");

    let watch = Watch::start(&endpoint);
    let mut agent = Agent::start_with_config(&fleet_config(&etcd, "watched"));
    assert!(wait_for(Duration::from_secs(10), || link(&agent) == "up"));

    let (status, _, err) = run_cli(
        &["fleet", "forget", "watched", "--endpoints", &endpoint],
        &[],
    );
    assert!(!status.success(), "an up node is not forgotten");
    assert!(err.contains("is up"), "{err}");
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(30)).is_some());
    let (status, out, err) = run_cli(
        &["fleet", "forget", "watched", "--endpoints", &endpoint],
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("watched"), "{out}");
    assert_eq!(state(&etcd, "watched"), "absent");
    let (status, _, err) = run_cli(
        &["fleet", "forget", "watched", "--endpoints", &endpoint],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("no node named watched"), "{err}");

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(&"forgotten".to_string()) && Instant::now() < deadline {
        if let Ok(event) = watch.events.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(event["name"], "watched", "{event}");
            seen.push(event["event"].as_str().unwrap_or("?").to_string());
        }
    }
    drop(watch);
    let at = |e: &str| seen.iter().position(|s| s == e);
    assert!(
        matches!((at("up"), at("down"), at("forgotten")), (Some(u), Some(d), Some(f)) if u < d && d < f),
        "events in order: {seen:?}"
    );
    assert!(
        seen.contains(&"updated".to_string()),
        "the record write is seen: {seen:?}"
    );
}

/// The three-node acceptance on sandboxed nodes (each its own namespaces, libvirtd and
/// agent): all register over the fabric; a killed agent's node goes down within TTL + 2 s while
/// its guest keeps running, and comes back up with the same identity; a 30 s etcd outage leaves
/// every node serving, and all register again after it.
#[test]
fn three_sandboxed_nodes_survive_a_killed_agent_and_an_etcd_outage() {
    let _vm = hyperlet_tests::vm_shared();
    let mut fabric = hyperlet_tests::fleet::Fabric::new();
    let mut members: Vec<_> = (1..=3)
        .map(|i| fabric.node(&format!("fab-{i}"), i, ""))
        .collect();
    let all_up = |fabric: &hyperlet_tests::fleet::Fabric| {
        let listed = nodes(&fabric.etcd);
        (1..=3).all(|i| {
            listed
                .iter()
                .any(|n| n["name"] == format!("fab-{i}") && n["state"] == "up")
        })
    };
    assert!(
        wait_for(Duration::from_secs(15), || all_up(&fabric)),
        "all up: {:?}\n{}",
        nodes(&fabric.etcd),
        members[0].agent.log()
    );
    for member in &members {
        let listed = node(&fabric.etcd, &member.name).expect("listed");
        assert_eq!(
            listed["api_url"],
            format!("https://{}:8787", member.ip),
            "{listed}"
        );
        assert_eq!(listed["tunnel_ip"], member.ip.as_str(), "{listed}");
        let host = member.agent.get_json("/v1/host");
        assert_eq!(host["fleet"]["state"], "up");
    }

    // A guest on node 1.
    let first = &members[0];
    let image = crate::servers::import_guest(&first.agent, "");
    let resp = first.agent.send(
        reqwest::Method::POST,
        "/v1/servers",
        Some(&serde_json::json!({
            "name": "survivor", "image_id": image,
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}, "networks": []
        })),
    );
    assert!(
        resp.status().is_success(),
        "{}",
        resp.text().unwrap_or_default()
    );
    let id = resp.json::<Value>().expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let server = first
        .agent
        .wait_server(&id, "ACTIVE", Duration::from_secs(240));
    let domain = server["domain_name"].as_str().expect("domain").to_string();
    let (_, domid) = first.libvirt.virsh(&["domid", &domain]);
    let identity = node(&fabric.etcd, "fab-1").expect("listed")["node_id"].clone();

    // kill -9 of node 1's agent: down within TTL + 2 s, the guest untouched.
    members[0].agent.kill9();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(FABRIC_TTL + 2), || state(
            &fabric.etcd,
            "fab-1"
        ) == "down"),
        "fab-1 down within TTL + 2 s: {:?}",
        node(&fabric.etcd, "fab-1")
    );
    eprintln!(
        "fab-1 down {:.1} s after kill -9",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(state(&fabric.etcd, "fab-2"), "up");
    let (ok, domstate) = members[0].libvirt.virsh(&["domstate", &domain]);
    assert!(ok && domstate.contains("running"), "{domstate}");
    members[0].agent.restart();
    assert!(
        wait_for(Duration::from_secs(15), || state(&fabric.etcd, "fab-1")
            == "up"),
        "fab-1 up again: {:?}\n{}",
        node(&fabric.etcd, "fab-1"),
        members[0].agent.log()
    );
    assert_eq!(
        node(&fabric.etcd, "fab-1").expect("listed")["node_id"],
        identity,
        "the same identity after a restart"
    );
    let server = members[0]
        .agent
        .wait_server(&id, "ACTIVE", Duration::from_secs(30));
    assert_eq!(server["domain_name"], domain.as_str());
    let (_, domid_after) = members[0].libvirt.virsh(&["domid", &domain]);
    assert_eq!(domid, domid_after, "the guest was not restarted");

    // etcd away for 30 s: every node keeps serving and says its link is degraded.
    fabric.etcd.stop();
    let stopped = Instant::now();
    for member in &members {
        assert!(
            wait_for(Duration::from_secs(20), || link(&member.agent) != "up"),
            "{} degraded: {}",
            member.name,
            link(&member.agent)
        );
    }
    while stopped.elapsed() < Duration::from_secs(30) {
        for member in &members {
            let resp = member.agent.get("/v1/servers");
            assert!(resp.status().is_success(), "{} serves", member.name);
            let host = member.agent.get_json("/v1/host");
            assert_ne!(host["fleet"]["state"], "up", "{host}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        members[0].agent.get_json(&format!("/v1/servers/{id}"))["status"],
        "ACTIVE"
    );
    fabric.etcd.start_again();
    assert!(
        wait_for(Duration::from_secs(30), || all_up(&fabric)
            && members.iter().all(|m| link(&m.agent) == "up")),
        "all registered again: {:?}",
        nodes(&fabric.etcd)
    );
    assert_eq!(
        node(&fabric.etcd, "fab-1").expect("listed")["node_id"],
        identity
    );
    let resp = members[0]
        .agent
        .send(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert!(resp.status().is_success());
    members[0]
        .agent
        .wait_server_gone(&id, Duration::from_secs(60));
}

/// Placement reads the compact placement entries: a hostile writer's huge values (a page of
/// them beyond one message) and garbage are read past and skipped, the honest nodes still rank.
#[test]
fn placement_reads_past_huge_and_garbage_entries() {
    use hyperlet::fleet::record::{HostEntry, NodeRecord};
    let etcd = Etcd::start();
    let config = hyperlet::config::FleetConfig {
        endpoints: vec![etcd.endpoint()],
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = hyperlet::fleet::etcd::Etcd::connect(&config)
            .await
            .expect("connect");
        let keys = hyperlet::fleet::keys::Keys::new(&config.prefix);
        // Twelve values of 1.4 MB: one page of them is beyond the 16 MiB message limit.
        for i in 0..12 {
            let huge = vec![b'x'; 1_400_000];
            client
                .put(&keys.host(&format!("huge-{i:02}")), huge, 0)
                .await
                .expect("put");
        }
        client
            .put(&keys.host("garbage"), b"{not json".to_vec(), 0)
            .await
            .expect("put");
        let honest: NodeRecord = serde_json::from_value(serde_json::json!({
            "name": "honest", "node_id": "id-1", "region": "", "availability_zone": "nova",
            "api_url": "http://127.0.0.1:1", "tunnel_ip": "", "version": "", "enabled": true,
            "disabled_reason": null,
            "capabilities": {"domain_type": "qemu", "network_types": [], "network_backends": [], "volume_backends": []},
            "capacity": {"name": "honest", "vcpus_total": 8, "ram_total_mb": 16384, "disk_total_gb": 100},
            "servers": 0, "started_at": "", "updated_at": ""
        }))
        .expect("record");
        for name in ["honest", "lost"] {
            let entry = HostEntry::of(&NodeRecord {
                name: name.into(),
                ..honest.clone()
            });
            client
                .put(&keys.host(name), serde_json::to_vec(&entry).unwrap(), 0)
                .await
                .expect("put");
        }
        // `honest` and `garbage` are up; `lost` is down; `fresh` is up without an entry.
        for name in ["honest", "garbage", "fresh"] {
            client
                .put(&keys.alive(name), b"{}".to_vec(), 0)
                .await
                .expect("put");
        }
        let fleet = hyperlet::fleet::view::Fleet::connect(&config)
            .await
            .expect("fleet");
        let nodes = fleet.placement().await.expect("placement");
        let names: Vec<(&str, bool, bool)> = nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.state == hyperlet::fleet::view::NodeState::Up,
                    n.host.is_some(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("fresh", true, false),
                ("garbage", true, false),
                ("honest", true, true),
                ("lost", false, true)
            ]
        );
        let host = nodes[2].host.as_ref().expect("figures");
        assert_eq!((host.vcpus_total, host.ram_total_mb), (8, 16384));
        let ranked = hyperlet::fleet::place::hosts(&nodes);
        assert_eq!(ranked.len(), 1, "only the up node with figures is ranked");
        assert_eq!(ranked[0].name, "honest");
    });
}

/// Nodes publish their `[host]` traits and metadata in their records and placement entries,
/// and fleet-wide placement ranks with them: the traits filter keeps a GPU request on the
/// node that has the trait, and says why the other cannot take it.
#[test]
fn fleet_placement_sees_each_nodes_traits_and_metadata() {
    let etcd = Etcd::start();
    let gpu = "[host]\ntraits = [\"CUSTOM_GPU\"]\nmetadata = { rack = \"r1\" }\n";
    let _a = Agent::start_with_config(&(fleet_config(&etcd, "node-a") + gpu));
    let _b = Agent::start_with_config(&fleet_config(&etcd, "node-b"));
    assert!(
        wait_for(Duration::from_secs(10), || ["node-a", "node-b"].iter().all(
            |n| node(&etcd, n).is_some_and(|n| n["state"] == "up" && !n["record"].is_null())
        )),
        "both up: {:?}",
        nodes(&etcd)
    );
    let a = node(&etcd, "node-a").expect("node-a");
    assert_eq!(
        a["record"]["capacity"]["traits"],
        serde_json::json!(["CUSTOM_GPU"]),
        "{a}"
    );
    assert_eq!(a["record"]["capacity"]["metadata"]["rack"], "r1", "{a}");

    let dir = tempfile::tempdir().expect("tempdir");
    let controller = dir.path().join("controller.toml");
    std::fs::write(
        &controller,
        format!(
            "[fleet]\nendpoints = [\"{}\"]\n\n{}",
            etcd.endpoint(),
            hyperlet_tests::plugins::stanza(
                "filter",
                2000,
                "traits",
                "hyperlet-filter-traits",
                "[]",
                "",
                ""
            )
        ),
    )
    .expect("config");
    let (status, out, err) = run_cli(
        &[
            "fleet",
            "place",
            "--json",
            "--config",
            controller.to_str().unwrap(),
            "--vcpus",
            "1",
            "--ram",
            "64",
            "--image-property",
            "trait:CUSTOM_GPU=required",
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    let evaluation: Value = serde_json::from_str(&out).expect("JSON");
    let hosts = evaluation["hosts"].as_array().expect("hosts");
    assert_eq!(hosts[0]["name"], "node-a", "{evaluation}");
    assert_eq!(hosts[0]["passed"], true, "{evaluation}");
    let b = hosts
        .iter()
        .find(|h| h["name"] == "node-b")
        .expect("node-b");
    assert_eq!(b["failed_by"], "traits", "{evaluation}");
    assert_eq!(
        b["reason"], "host node-b lacks required trait CUSTOM_GPU",
        "{evaluation}"
    );
}
