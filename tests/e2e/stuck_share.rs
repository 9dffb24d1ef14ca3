//! A stopped NFS server must not starve the agent: with the NFS volume backend reaching the
//! shared nfs-ganesha over the agent's own NFS client, the server is SIGSTOPped for two
//! minutes while volume work is asked of it. Routes that need no share keep answering fast,
//! the volume work ends within its deadlines instead of hanging, the agent's thread count does
//! not grow, and after SIGCONT volumes are created again.

use crate::hypervisor::{quick_get, threads, STOPPED_FOR, THREAD_SLACK};
use crate::mutations::nfs_agent;
use crate::networks::post;
use crate::volumes::wait_volume;
use hyperlet_tests::storage::{ganesha, nfs_exclusive};
use nix::sys::signal::{kill, Signal};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn a_stopped_nfs_server_does_not_starve_the_agent() {
    let _nfs = nfs_exclusive();
    let server = ganesha();
    // Each share call of the driver ends at 5 s.
    let (agent, _) = nfs_agent("command_timeout_secs = 5\n");
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let before = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &before, "available");

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let paths = ["/healthz", "/v1/servers", "/v1/networks", "/v1/images"];
    for path in paths {
        quick_get(&agent, &client, path);
    }
    std::thread::sleep(Duration::from_secs(2));
    let baseline = threads(agent.pid());

    let ganesha_pid = server.pid();
    kill(ganesha_pid, Signal::SIGSTOP).expect("SIGSTOP nfs-ganesha");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Volume work that needs the share: a create (its capacity check reads the share)
        // and a delete, each asked from a thread of its own while the routes are probed.
        let url = agent.url();
        let token = agent.token();
        let asked: Vec<std::thread::JoinHandle<(u16, Duration)>> = [
            (
                Method::POST,
                "/v1/volumes".to_string(),
                Some(json!({"size_gb": 1})),
            ),
            (Method::DELETE, format!("/v1/volumes/{before}"), None),
        ]
        .into_iter()
        .map(|(method, path, body)| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let started = Instant::now();
                let mut req = client
                    .request(method, format!("{url}{path}"))
                    .bearer_auth(token);
                if let Some(body) = body {
                    req = req.json(&body);
                }
                let status = req.send().map(|r| r.status().as_u16()).unwrap_or(0);
                (status, started.elapsed())
            })
        })
        .collect();
        let until = Instant::now() + STOPPED_FOR;
        let (mut most, mut slowest, mut rounds) = (baseline, Duration::ZERO, 0);
        while Instant::now() < until {
            for path in paths {
                slowest = slowest.max(quick_get(&agent, &client, path));
            }
            most = most.max(threads(agent.pid()));
            rounds += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        for handle in asked {
            let (status, took) = handle.join().unwrap();
            // Answered (202 for work that goes on in the background, or an error naming the
            // share) — within the share deadlines, never hanging on the stopped server.
            assert!(status != 0, "a volume request got no answer in {took:?}");
            assert!(
                took < Duration::from_secs(60),
                "a volume request took {took:?}"
            );
        }
        assert!(
            most <= baseline + THREAD_SLACK,
            "the agent grew from {baseline} to {most} threads while the NFS server was stopped"
        );
        eprintln!(
            "nfs-ganesha stopped {STOPPED_FOR:?}: {rounds} rounds, slowest answer {slowest:?}, \
             threads {baseline} → at most {most}"
        );
    }));
    kill(ganesha_pid, Signal::SIGCONT).expect("SIGCONT nfs-ganesha");
    if let Err(panic) = stopped {
        std::panic::resume_unwind(panic);
    }

    // Recovered: nothing is left in flight, a new volume is created and deleted.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let volumes: Value = agent.get_json("/v1/volumes");
        let busy: Vec<&Value> = volumes["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["status"].as_str(), Some("creating" | "deleting")))
            .collect();
        if busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "volume work still in flight: {busy:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "after SIGCONT: {v}");
    let after = v["id"].as_str().unwrap().to_string();
    wait_volume(&agent, &after, "available");
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/volumes/{after}"), None)
            .status(),
        202
    );
    agent.wait_gone(&format!("/v1/volumes/{after}"));
    let settled = threads(agent.pid());
    assert!(
        settled <= baseline + THREAD_SLACK,
        "threads after recovery: {settled} (baseline {baseline})"
    );
}
