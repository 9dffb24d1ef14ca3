//! Fleet-wide placement on three sandboxed nodes (issue #13): `hyperlet fleet place` ranks
//! every node with the same wasm filter the nodes run (loaded by the CLI, or through one
//! agent), names the reason for each refusal, and `hyperlet fleet server-create` boots a real
//! guest on the one node that fits.

use crate::fleet_networks::node_config_with;
use crate::servers::import_guest;
use hyperlet_tests::fleet::Fabric;
use hyperlet_tests::plugins::stanza;
use hyperlet_tests::run_cli;
use serde_json::Value;
use std::time::Duration;

/// One token for every node (a controller's).
const TOKEN: &str = "fleet-controller-token-0123456789";

/// The RAM filter plugin stanza (nova's `RamFilter`).
pub fn ram_filter() -> String {
    stanza(
        "filter",
        1000,
        "ram",
        "hyperlet-filter-ram",
        "[\"log\"]",
        "",
        "",
    )
}

#[test]
fn place_ranks_with_the_nodes_filters_and_server_create_boots_on_the_node_that_fits() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    // Only node 2 has memory to give: the others allocate almost none of theirs.
    let config = |i: u8| {
        let ratio = if i == 2 {
            ""
        } else {
            "ram_allocation_ratio = 0.001\n"
        };
        format!(
            "{}\n[auth]\ntoken = \"{TOKEN}\"\n\n{}",
            node_config_with(&fabric.address(i), ratio),
            ram_filter()
        )
    };
    let nodes: Vec<_> = (1..=3)
        .map(|i| fabric.node(&format!("place-{i}"), i, &config(i)))
        .collect();
    let endpoint = fabric.etcd.endpoint();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, _) = run_cli(&["fleet", "nodes", "--json", "--endpoints", &endpoint], &[]);
        let up = serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .map_or(0, |v| {
                v.iter()
                    .filter(|n| n["state"] == "up" && !n["record"].is_null())
                    .count()
            });
        if up == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three nodes up: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The CLI's own chain, from a controller config.
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = dir.path().join("controller.toml");
    std::fs::write(
        &controller,
        format!("[fleet]\nendpoints = [\"{endpoint}\"]\n\n{}", ram_filter()),
    )
    .expect("config");
    let controller = controller.display().to_string();
    let flavor = ["--vcpus", "1", "--ram", "128", "--disk", "1"];
    let ca = fabric.ca().display().to_string();
    let check = |evaluation: &Value| {
        let hosts = evaluation["hosts"].as_array().expect("hosts");
        assert_eq!(hosts.len(), 3, "{evaluation}");
        assert_eq!(
            hosts[0]["name"], "place-2",
            "the fitting node first: {evaluation}"
        );
        assert_eq!(hosts[0]["passed"], true);
        for refused in &hosts[1..] {
            assert_eq!(refused["passed"], false, "{evaluation}");
            assert_eq!(refused["failed_by"], "ram", "{evaluation}");
            assert!(
                refused["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("needs 128 MiB")),
                "{evaluation}"
            );
        }
    };
    let mut args = vec!["fleet", "place", "--json", "--config", &controller];
    args.extend(flavor);
    let (status, out, err) = run_cli(&args, &[]);
    assert!(status.success(), "{err}");
    check(&serde_json::from_str(&out).expect("JSON"));
    let (status, table, err) = run_cli(
        &args[..2]
            .iter()
            .chain(&args[3..])
            .copied()
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(
        table.contains("place-2") && table.contains("refused"),
        "{table}"
    );

    // The same ranking through one agent's chain.
    let via = nodes[0].agent.url();
    let mut args = vec![
        "fleet",
        "place",
        "--json",
        "--endpoints",
        &endpoint,
        "--via",
        &via,
    ];
    args.extend(flavor);
    let (status, out, err) = run_cli(
        &args,
        &[("HYPERLET_TOKEN", TOKEN), ("HYPERLET_CA_CERT", &ca)],
    );
    assert!(status.success(), "{err}");
    check(&serde_json::from_str(&out).expect("JSON"));

    // The controller's loop: place, create on the best node.
    let image = import_guest(&nodes[1].agent, "");
    let mut args = vec![
        "fleet",
        "server-create",
        "--json",
        "--config",
        &controller,
        "--name",
        "placed",
        "--image",
        &image,
    ];
    args.extend(flavor);
    let (status, out, err) = run_cli(
        &args,
        &[("HYPERLET_TOKEN", TOKEN), ("HYPERLET_CA_CERT", &ca)],
    );
    assert!(status.success(), "{err}");
    let created: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(created["node"], "place-2", "{created}");
    let id = created["server"]["id"].as_str().expect("id");
    nodes[1]
        .agent
        .wait_server(id, "ACTIVE", Duration::from_secs(240));
    nodes[1]
        .agent
        .wait_console(id, "HYPERLET-GUEST: booted", 1, Duration::from_secs(240));
}
