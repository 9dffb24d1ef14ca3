//! A wedged libvirtd must not starve the agent: on a private libvirtd (never the host's shared
//! one) that is SIGSTOPped for two minutes, the routes that need no libvirt keep answering
//! fast, the agent's thread count does not grow, the node stays up in its fleet (its lease
//! renewals wait on nothing libvirt does), and after SIGCONT libvirt work recovers.

use crate::servers::{create, flavor, import_guest};
use hyperlet_tests::node::PrivateLibvirt;
use hyperlet_tests::Agent;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const BOOT_LIMIT: Duration = Duration::from_secs(180);
/// How long libvirtd stays stopped.
pub const STOPPED_FOR: Duration = Duration::from_secs(120);
/// The slowest answer accepted from a route that needs no libvirt (generous: the machine is
/// shared and loaded; a starved agent takes many seconds or never answers).
pub const FAST: Duration = Duration::from_secs(1);
/// Threads the agent may add while libvirtd is stopped (tokio's blocking pool serving the
/// store grows a little with concurrent requests; a leak adds one per stuck libvirt call).
pub const THREAD_SLACK: usize = 6;

pub fn threads(pid: Pid) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("agent status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

pub fn quick_get(agent: &Agent, client: &reqwest::blocking::Client, path: &str) -> Duration {
    let started = Instant::now();
    let resp = client
        .get(format!("{}{path}", agent.url()))
        .bearer_auth(agent.token())
        .send()
        .unwrap_or_else(|e| panic!("GET {path} failed after {:?}: {e}", started.elapsed()));
    let took = started.elapsed();
    assert_eq!(resp.status(), 200, "GET {path}");
    assert!(
        took < FAST,
        "GET {path} took {took:?} while a dependency was stopped"
    );
    took
}

#[test]
fn a_stopped_libvirtd_does_not_starve_the_agent() {
    let _vm = hyperlet_tests::vm_shared();
    let node = PrivateLibvirt::start();
    let etcd = hyperlet_tests::etcd::Etcd::start();
    // Short deadlines and a fast sync: a leak of one thread per stuck call shows quickly.
    let agent = Agent::start_with_config(&format!(
        "[hypervisor]\nuri = \"{}\"\nsync_interval_ms = 300\ncall_timeout_secs = 2\n\
         clean_shutdown_timeout_secs = 10\n[capacity]\ncpu_allocation_ratio = 16.0\n\
         reserved_host_memory_mb = 0\n{}",
        node.uri(),
        crate::fleet::fleet_config(&etcd, "wedged-node")
    ));
    let image = import_guest(&agent, "");
    let id = create(&agent, "wedged", &image, flavor(1, 128));
    let server = agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    let domain = server["domain_name"].as_str().unwrap().to_string();
    let (ok, state) = node.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let paths = [
        "/healthz".to_string(),
        "/v1/servers".to_string(),
        format!("/v1/servers/{id}"),
        "/v1/networks".to_string(),
        "/v1/images".to_string(),
    ];
    for path in &paths {
        quick_get(&agent, &client, path);
    }
    std::thread::sleep(Duration::from_secs(2));
    let baseline = threads(agent.pid());
    assert_eq!(crate::fleet::state(&etcd, "wedged-node"), "up");

    let libvirtd = node.libvirtd_pid();
    kill(libvirtd, Signal::SIGSTOP).expect("SIGSTOP the private libvirtd");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let until = Instant::now() + STOPPED_FOR;
        let (mut most, mut slowest, mut rounds) = (baseline, Duration::ZERO, 0);
        let renewed = crate::fleet::metric(&agent, "hyperlet_fleet_keepalives_total");
        while Instant::now() < until {
            for path in &paths {
                slowest = slowest.max(quick_get(&agent, &client, path));
            }
            // The lease is renewed on its own: a wedged libvirtd costs the fleet link nothing.
            assert_eq!(crate::fleet::link(&agent), "up", "{}", agent.log());
            most = most.max(threads(agent.pid()));
            rounds += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        // A call that needs libvirt fails within its deadline instead of hanging.
        let started = Instant::now();
        let resp = agent.get(&format!("/v1/servers/{id}/stats"));
        assert!(
            resp.status() == 503 || resp.status() == 504 || resp.status() == 502,
            "stats while libvirtd is stopped: {}",
            resp.status()
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert!(
            most <= baseline + THREAD_SLACK,
            "the agent grew from {baseline} to {most} threads while libvirtd was stopped"
        );
        assert_eq!(
            crate::fleet::state(&etcd, "wedged-node"),
            "up",
            "the node stays up in the fleet {STOPPED_FOR:?} into a libvirtd stop (lease TTL \
             {} s)",
            crate::fleet::TTL
        );
        let now = crate::fleet::metric(&agent, "hyperlet_fleet_keepalives_total");
        assert!(
            now >= renewed + STOPPED_FOR.as_secs() / crate::fleet::TTL,
            "lease renewals while libvirtd was stopped: {renewed} → {now}"
        );
        eprintln!(
            "libvirtd stopped {STOPPED_FOR:?}: {rounds} rounds, slowest answer {slowest:?}, \
             threads {baseline} → at most {most}"
        );
    }));
    kill(libvirtd, Signal::SIGCONT).expect("SIGCONT the private libvirtd");
    if let Err(panic) = stopped {
        std::panic::resume_unwind(panic);
    }

    let recovered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recovers(&agent, &node, &id, &domain, baseline)
    }));
    if let Err(panic) = recovered {
        let log = agent.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("agent log (last lines, newest first):\n{}", tail.join("\n"));
        std::panic::resume_unwind(panic);
    }
}

/// After SIGCONT: an action goes through, the sync follows the domain again, stats answer,
/// and no thread is left behind.
fn recovers(agent: &Agent, node: &PrivateLibvirt, id: &str, domain: &str, baseline: usize) {
    let deadline = Instant::now() + BOOT_LIMIT;
    loop {
        let resp = agent.send(
            Method::POST,
            &format!("/v1/servers/{id}/action"),
            Some(&json!({"stop": null})),
        );
        if resp.status() == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stop refused after SIGCONT: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    agent.wait_server(id, "SHUTOFF", BOOT_LIMIT);
    let (_, state) = node.virsh(&["domstate", domain]);
    assert!(state.contains("shut off"), "{state}");
    // Out-of-band change: the sync loop reads libvirt again.
    let (ok, out) = node.virsh(&["start", domain]);
    assert!(ok, "{out}");
    agent.wait_server(id, "ACTIVE", BOOT_LIMIT);
    let stats = agent.get_json(&format!("/v1/servers/{id}/stats"));
    assert!(stats["cpu_time_ns"].as_u64().unwrap_or(0) > 0, "{stats}");

    // No thread left behind (tokio's idle blocking threads leave after 10 s).
    std::thread::sleep(Duration::from_secs(12));
    let after = threads(agent.pid());
    assert!(
        after <= baseline + 2,
        "the agent has {after} threads after recovery, {baseline} before libvirtd was stopped"
    );
}
