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

#[test]
fn image_and_server_verbs() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(crate::servers::CONFIG);
    let url = agent.url();
    let state = agent.state_dir().display().to_string();
    let env = [
        ("HYPERLET_URL", url.as_str()),
        ("HYPERLET_STATE_DIR", state.as_str()),
    ];
    let guest = hyperlet_tests::guest::test_guest();
    let import = |file: &std::path::Path, format: &str, props: &[String]| -> Value {
        let mut args = vec![
            "image".to_string(),
            "import".into(),
            file.display().to_string(),
            "--disk-format".into(),
            format.into(),
            "--json".into(),
        ];
        for p in props {
            args.push("--property".into());
            args.push(p.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, out, err) = run_cli(&args, &env);
        assert!(status.success(), "{err}");
        assert!(err.contains("100%"), "progress bar: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let kernel = import(&guest.kernel, "aki", &[]);
    let ramdisk = import(&guest.initrd, "ari", &[]);
    assert_eq!(kernel["container_format"], "aki");
    let root = import(
        &guest.root_qcow2,
        "qcow2",
        &[
            format!("kernel_id={}", kernel["id"].as_str().unwrap()),
            format!("ramdisk_id={}", ramdisk["id"].as_str().unwrap()),
            "os_command_line=console=ttyS0".into(),
        ],
    );
    assert_eq!(root["status"], "active");
    let (status, out, _) = run_cli(&["image", "list"], &env);
    assert!(status.success());
    assert_eq!(out.lines().count(), 4, "{out}");

    let image = root["id"].as_str().unwrap();
    let (status, out, err) = run_cli(
        &[
            "server",
            "create",
            "--name",
            "cli-vm",
            "--image",
            image,
            "--vcpus",
            "1",
            "--ram",
            "128",
            "--disk",
            "1",
            "--property",
            "role=cli",
            "--wait",
            "--json",
        ],
        &env,
    );
    assert!(status.success(), "{err}");
    let server: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(server["status"], "ACTIVE", "{server}");
    assert_eq!(server["metadata"]["role"], "cli");
    let id = server["id"].as_str().unwrap();
    let (status, out, _) = run_cli(&["server", "list"], &env);
    assert!(
        status.success() && out.contains(id) && out.contains("ACTIVE"),
        "{out}"
    );
    let (status, _, err) = run_cli(&["server", "pause", id], &env);
    assert!(status.success(), "{err}");
    agent.wait_server(id, "PAUSED", std::time::Duration::from_secs(60));
    let (status, _, err) = run_cli(&["server", "unpause", id], &env);
    assert!(status.success(), "{err}");
    agent.wait_server(id, "ACTIVE", std::time::Duration::from_secs(60));
    agent.wait_console(
        id,
        "HYPERLET-GUEST: booted",
        1,
        std::time::Duration::from_secs(120),
    );
    let (status, out, _) = run_cli(&["server", "console", id, "--length", "200"], &env);
    assert!(
        status.success() && out.contains("HYPERLET-GUEST: booted"),
        "{out}"
    );
    // An invalid action in this status: the agent's 409 reaches the user.
    let (status, _, err) = run_cli(&["server", "confirm-resize", id], &env);
    assert!(
        !status.success() && err.contains("409") && err.contains("ACTIVE"),
        "{err}"
    );
    let (status, _, err) = run_cli(&["server", "delete", id], &env);
    assert!(status.success(), "{err}");
    agent.wait_server_gone(id, std::time::Duration::from_secs(60));
    let (status, _, err) = run_cli(&["image", "delete", image], &env);
    assert!(status.success(), "{err}");
}

/// `network create` waits until the backend set the network up and `network delete` until it
/// is gone (the API answers both 202 at once).
#[test]
fn network_create_and_delete_wait_for_the_work() {
    let agent = Agent::start_with_config(&crate::networks::net_config());
    let url = agent.url();
    let state = agent.state_dir().display().to_string();
    let env = [
        ("HYPERLET_URL", url.as_str()),
        ("HYPERLET_STATE_DIR", state.as_str()),
    ];
    let (status, out, err) = run_cli(
        &[
            "network", "create", "--name", "cli", "--type", "local", "--json",
        ],
        &env,
    );
    assert!(status.success(), "{err}");
    let net: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(net["status"], "ACTIVE", "{net}");
    let bridge = net["bridge"].as_str().unwrap();
    assert!(crate::networks::link_exists(bridge), "{bridge} missing");
    let id = net["id"].as_str().unwrap();
    let (status, out, err) = run_cli(&["network", "delete", id], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains(&format!("deleted {id}")), "{out}");
    assert_eq!(agent.get(&format!("/v1/networks/{id}")).status(), 404);
    assert!(
        !crate::networks::link_exists(bridge),
        "{bridge} left behind"
    );
}

#[test]
fn security_group_verbs_and_port_set() {
    let agent = Agent::start_with_config(&crate::networks::net_config());
    let url = agent.url();
    let state = agent.state_dir().display().to_string();
    let env = [
        ("HYPERLET_URL", url.as_str()),
        ("HYPERLET_STATE_DIR", state.as_str()),
    ];
    let cli = |args: &[&str]| {
        let (status, out, err) = run_cli(args, &env);
        assert!(status.success(), "{args:?}: {err}");
        out
    };
    let group: Value = serde_json::from_str(&cli(&[
        "security-group",
        "create",
        "web",
        "--description",
        "web servers",
        "--json",
    ]))
    .unwrap();
    assert_eq!(group["name"], "web");
    let rule: Value = serde_json::from_str(&cli(&[
        "security-group-rule",
        "create",
        "web",
        "--protocol",
        "tcp",
        "--dst-port",
        "80:81",
        "--remote-group",
        "default",
        "--json",
    ]))
    .unwrap();
    assert_eq!(rule["direction"], "ingress");
    assert_eq!(
        (
            rule["port_range_min"].as_u64(),
            rule["port_range_max"].as_u64()
        ),
        (Some(80), Some(81))
    );
    assert!(rule["remote_group_id"].is_string(), "{rule}");
    let table = cli(&["security-group-rule", "list", "--group", "web"]);
    assert_eq!(
        table.lines().count(),
        3,
        "header, egress, tcp 80-81: {table}"
    );
    let (status, _, err) = run_cli(
        &[
            "security-group-rule",
            "create",
            "web",
            "--protocol",
            "tcp",
            "--dst-port",
            "80:81",
            "--remote-group",
            "default",
        ],
        &env,
    );
    assert!(
        !status.success() && err.contains("409"),
        "a duplicate: {err}"
    );
    let shown = cli(&["security-group", "show", "web"]);
    assert!(shown.contains("web servers"), "{shown}");

    let (net, _) = crate::networks::local_network(&agent, "198.51.100.0/24");
    let (s, port) = crate::networks::post(
        &agent,
        "/v1/ports",
        serde_json::json!({"network_id": net["id"]}),
    );
    assert_eq!(s, 201, "{port}");
    let port_id = port["id"].as_str().unwrap();
    let set: Value = serde_json::from_str(&cli(&[
        "port",
        "set",
        port_id,
        "--security-group",
        "web",
        "--security-group",
        "default",
        "--allowed-address",
        "ip-address=198.51.100.64/28",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        set["security_groups"],
        serde_json::json!([group["id"], port["security_groups"][0]])
    );
    assert_eq!(
        set["allowed_address_pairs"][0]["ip_address"],
        "198.51.100.64/28"
    );
    assert_eq!(
        set["allowed_address_pairs"][0]["mac_address"],
        port["mac_address"]
    );
    let (status, _, err) = run_cli(&["security-group", "delete", "web"], &env);
    assert!(!status.success() && err.contains("409"), "in use: {err}");
    cli(&[
        "port",
        "set",
        port_id,
        "--no-security-group",
        "--no-allowed-address",
        "--disable-port-security",
    ]);
    let out = cli(&["security-group", "delete", "web"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        agent.get_json(&format!("/v1/ports/{port_id}"))["port_security_enabled"],
        false
    );
}
