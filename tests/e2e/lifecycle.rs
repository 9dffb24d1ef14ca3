//! Process lifecycle: graceful SIGTERM, SIGKILL and restart with state intact, one agent per
//! state directory, refusing plain HTTP on the network.

use hyperlet_tests::{hyperlet_bin, Agent};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_cleanly_within_seconds_even_with_an_open_stream() {
    let mut agent = Agent::start();
    // An open event stream must not hold the shutdown up.
    let stream = agent
        .client()
        .get(format!("{}/v1/events", agent.url()))
        .bearer_auth(agent.token())
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = agent.log();
    assert!(
        log.contains("SIGTERM") && log.contains("store flushed"),
        "{log}"
    );
    drop(stream);
}

#[test]
fn killed_agent_restarts_with_state_intact() {
    let mut agent = Agent::start();
    let token = agent.token();
    let resp = agent
        .client()
        .patch(format!("{}/v1/host", agent.url()))
        .bearer_auth(&token)
        .json(&json!({"enabled": false, "disabled_reason": "before the crash"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    agent.kill9();
    agent.restart();
    assert_eq!(agent.token(), token, "the admin token is kept");
    let host = agent.get_json("/v1/host");
    assert_eq!(host["service_status"]["enabled"], false);
    assert_eq!(
        host["service_status"]["disabled_reason"],
        "before the crash"
    );
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let agent = Agent::start();
    let out = std::process::Command::new(hyperlet_bin())
        .args(["serve", "--listen", "127.0.0.1:1"])
        .arg("--state-dir")
        .arg(agent.state_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another hyperlet is already running"), "{err}");
    // The first one is unharmed.
    assert_eq!(agent.get("/v1/host").status(), 200);
}

#[test]
fn plain_http_on_a_network_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(hyperlet_bin())
        .args(["serve", "--listen", "0.0.0.0:8787"])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure") && err.contains("TLS"), "{err}");
    assert!(
        !dir.path().join("hyperlet.db").exists(),
        "nothing is created before validation"
    );
}

#[test]
fn bad_config_file_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\n[api]\nbody_limit = 5\n").unwrap();
    let out = std::process::Command::new(hyperlet_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("body_limit"), "{err}");
}
