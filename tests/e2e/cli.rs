//! The CLI against a running agent.

use hyperlet_tests::{run_cli, Agent};
use serde_json::Value;

#[test]
fn host_show_enable_disable() {
    let agent = Agent::start();
    let url = agent.url();
    let state = agent.state_dir().display().to_string();
    let env = [
        ("HYPERLET_URL", url.as_str()),
        ("HYPERLET_STATE_DIR", state.as_str()),
    ];

    let (status, out, err) = run_cli(&["host", "show"], &env);
    assert!(status.success(), "{err}");
    assert!(out.lines().any(|l| l.starts_with("hostname ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("domain_type ")), "{out}");

    let (status, out, err) = run_cli(&["host", "disable", "--reason", "disk swap"], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("disk swap"), "{out}");

    let (status, out, err) = run_cli(&["host", "show", "--json"], &env);
    assert!(status.success(), "{err}");
    let host: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(host["service_status"]["enabled"], false);

    let (status, _, err) = run_cli(&["host", "enable"], &env);
    assert!(status.success(), "{err}");
    assert_eq!(
        agent.get_json("/v1/host")["service_status"]["enabled"],
        true
    );

    // The token from the environment wins; a wrong one is refused with the agent's message.
    let mut bad_env = env.to_vec();
    bad_env.push(("HYPERLET_TOKEN", "not-the-right-token-at-all"));
    let (status, _, err) = run_cli(&["host", "show"], &bad_env);
    assert!(!status.success());
    assert!(err.contains("401") && err.contains("not valid"), "{err}");
}

#[test]
fn unreachable_agent_and_missing_token_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display().to_string();
    let (status, _, err) = run_cli(
        &["host", "show"],
        &[
            ("HYPERLET_URL", "http://127.0.0.1:1"),
            ("HYPERLET_STATE_DIR", &state),
        ],
    );
    assert!(!status.success());
    assert!(err.contains("HYPERLET_TOKEN"), "{err}");
    let (status, _, err) = run_cli(
        &["host", "show", "--token", "0123456789abcdef0123"],
        &[("HYPERLET_URL", "http://127.0.0.1:1")],
    );
    assert!(!status.success());
    assert!(err.contains("Cannot reach the agent"), "{err}");
}
