//! Migration between sandboxed nodes (issue #14).

use crate::servers::{create, import_guest};
use hyperlet_tests::fleet::Fabric;
use hyperlet_tests::node::PrivateLibvirt;
use serde_json::json;
use std::time::Duration;

/// The fabric's libvirtds reach each other: a running domain moves from one node's libvirtd
/// to another's over TCP (the ground every migration stands on).
#[test]
fn fabric_libvirtds_migrate_a_running_domain() {
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("mig-a", 1, "");
    let b = fabric.node("mig-b", 2, "");
    let image = import_guest(&a.agent, "");
    let id = create(
        &a.agent,
        "mover",
        &image,
        json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let server = a.agent.wait_server(&id, "ACTIVE", Duration::from_secs(240));
    let domain = server["domain_name"].as_str().expect("domain").to_string();
    let (ok, out) = a.libvirt.virsh(&[
        "migrate",
        "--live",
        "--p2p",
        "--unsafe",
        &domain,
        &PrivateLibvirt::tcp_uri(&b.ip),
        &format!("tcp://{}", b.ip),
    ]);
    assert!(ok, "virsh migrate: {out}");
    let (ok, state) = b.libvirt.virsh(&["domstate", &domain]);
    assert!(ok && state.contains("running"), "{state}");
    let (_, list) = a.libvirt.virsh(&["list", "--name"]);
    assert!(!list.contains(&domain), "{list}");
}
