//! Unit tests against the SDK's simulated netlink host.

use super::*;
use hyperlet_plugin_sdk::testing::{backend, netlink as mock, NetworkBuilder};

const ID: &str = "4e1b0a9c-1234-4000-8000-000000000001";
const BRIDGE: &str = "brq4e1b0a9c-12";

fn bridge_backend() -> LinuxBridge {
    mock::reset();
    mock::add_physical("eth1");
    mock::add_physical("eth2");
    backend::<LinuxBridge>(&[
        (
            "physical_interface_mappings",
            "physnet1:eth1, physnet2:eth2",
        ),
        ("vxlan_local_ip", "192.0.2.10"),
        ("vxlan_dev", "eth2"),
    ])
    .unwrap()
}

/// Every call except reads.
fn writes() -> Vec<String> {
    mock::take_calls()
        .into_iter()
        .filter(|c| !c.starts_with("link-info"))
        .collect()
}

#[test]
fn bridge_name_follows_the_agent() {
    assert_eq!(bridge_name(ID), BRIDGE);
    assert_eq!(bridge_name("short"), "brqshort");
}

#[test]
fn flat_enslaves_the_physical_interface() {
    let b = bridge_backend();
    let net = NetworkBuilder::flat(ID, "physnet1").mtu(1450).build();
    assert_eq!(b.ensure(&net).unwrap(), BRIDGE);
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            format!("set-master eth1 {BRIDGE}"),
            "set-up eth1".into(),
            format!("set-mtu {BRIDGE} 1450"),
            format!("set-up {BRIDGE}"),
        ]
    );
    let bridge = mock::link(BRIDGE).unwrap();
    assert_eq!((bridge.mtu, bridge.up), (Some(1450), true));
    let eth1 = mock::link("eth1").unwrap();
    assert_eq!(eth1.master_index, Some(bridge.index));
    // The physical interface's MTU is not the backend's to change.
    assert_eq!(eth1.mtu, Some(1500));

    // Idempotent: a second ensure only reads.
    assert_eq!(b.ensure(&net).unwrap(), BRIDGE);
    assert!(writes().is_empty());

    b.delete(&net).unwrap();
    assert_eq!(writes(), [format!("delete-link {BRIDGE}")]);
    assert_eq!(mock::link_names(), ["eth1", "eth2"]);
    assert_eq!(mock::link("eth1").unwrap().master_index, None);
    b.delete(&net).unwrap();
    assert!(writes().is_empty());
}

#[test]
fn vlan_creates_the_sub_interface() {
    let b = bridge_backend();
    let net = NetworkBuilder::vlan(ID, "physnet2", 100).mtu(1400).build();
    assert_eq!(b.ensure(&net).unwrap(), BRIDGE);
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            "create-vlan eth2 100".into(),
            "set-mtu eth2.100 1400".into(),
            format!("set-master eth2.100 {BRIDGE}"),
            "set-up eth2.100".into(),
            format!("set-mtu {BRIDGE} 1400"),
            format!("set-up {BRIDGE}"),
        ]
    );
    b.ensure(&net).unwrap();
    assert!(writes().is_empty());
    b.delete(&net).unwrap();
    assert_eq!(
        writes(),
        [
            "delete-link eth2.100".to_string(),
            format!("delete-link {BRIDGE}")
        ]
    );
    assert_eq!(mock::link_names(), ["eth1", "eth2"]);
}

#[test]
fn vlan_without_kernel_support_says_so() {
    let b = bridge_backend();
    mock::set_vlan_supported(false);
    let err = b
        .ensure(&NetworkBuilder::vlan(ID, "physnet1", 7).build())
        .unwrap_err();
    assert_eq!(err.code, "unsupported");
    assert!(err.message.contains("8021q"), "{}", err.message);
    // The bridge this call created is removed again.
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            "create-vlan eth1 7".into(),
            format!("delete-link {BRIDGE}"),
        ]
    );
    assert_eq!(mock::link_names(), ["eth1", "eth2"]);
}

#[test]
fn a_failed_ensure_keeps_what_existed_before() {
    let b = bridge_backend();
    b.ensure(&NetworkBuilder::local(ID).build()).unwrap();
    mock::take_calls();
    mock::deny("eth1");
    let err = b
        .ensure(&NetworkBuilder::flat(ID, "physnet1").build())
        .unwrap_err();
    assert_eq!(err.code, "denied");
    assert!(mock::link(BRIDGE).is_some());
    assert!(!writes().iter().any(|c| c.starts_with("delete-link")));
}

#[test]
fn vxlan_creates_the_tunnel() {
    let b = bridge_backend();
    let net = NetworkBuilder::vxlan(ID, 1001).mtu(1450).build();
    assert_eq!(b.ensure(&net).unwrap(), BRIDGE);
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            "create-vxlan 1001 local 192.0.2.10 dev eth2 port 4789".into(),
            "set-mtu vxlan-1001 1450".into(),
            format!("set-master vxlan-1001 {BRIDGE}"),
            "set-up vxlan-1001".into(),
            format!("set-mtu {BRIDGE} 1450"),
            format!("set-up {BRIDGE}"),
        ]
    );
    b.ensure(&net).unwrap();
    assert!(writes().is_empty());
    b.delete(&net).unwrap();
    assert_eq!(
        writes(),
        [
            "delete-link vxlan-1001".to_string(),
            format!("delete-link {BRIDGE}")
        ]
    );
}

#[test]
fn local_is_a_bare_bridge() {
    let b = bridge_backend();
    let net = NetworkBuilder::local(ID).build();
    assert_eq!(b.ensure(&net).unwrap(), BRIDGE);
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            format!("set-up {BRIDGE}")
        ]
    );
    b.delete(&net).unwrap();
    assert_eq!(writes(), [format!("delete-link {BRIDGE}")]);
}

#[test]
fn ensure_repairs_what_drifted() {
    let b = bridge_backend();
    let net = NetworkBuilder::vxlan(ID, 5).build();
    b.ensure(&net).unwrap();
    // Someone set the tunnel down and removed the bridge.
    mock::take_calls();
    hyperlet_plugin_sdk::network::netlink::set_down("vxlan-5").unwrap();
    hyperlet_plugin_sdk::network::netlink::delete_link(BRIDGE).unwrap();
    mock::take_calls();
    b.ensure(&net).unwrap();
    assert_eq!(
        writes(),
        [
            format!("create-bridge {BRIDGE}"),
            format!("set-master vxlan-5 {BRIDGE}"),
            "set-up vxlan-5".into(),
            format!("set-up {BRIDGE}"),
        ]
    );
}

#[test]
fn unknown_physical_network_is_refused_before_anything() {
    let b = bridge_backend();
    for net in [
        NetworkBuilder::flat(ID, "physnet9").build(),
        NetworkBuilder::vlan(ID, "physnet9", 10).build(),
    ] {
        let err = b.validate(&net).unwrap_err();
        assert_eq!(err.code, "invalid");
        assert_eq!(
            err.message,
            "Physical network \"physnet9\" is not mapped to an interface on this node \
             (physical_interface_mappings: physnet1:eth1,physnet2:eth2)"
        );
        assert_eq!(b.ensure(&net).unwrap_err(), err);
    }
    assert!(writes().is_empty());
}

#[test]
fn vxlan_needs_a_local_ip() {
    mock::reset();
    let b = backend::<LinuxBridge>(&[("physical_interface_mappings", "physnet1:eth1")]).unwrap();
    let err = b
        .validate(&NetworkBuilder::vxlan(ID, 10).build())
        .unwrap_err();
    assert_eq!(err.code, "invalid");
    assert!(err.message.contains("vxlan_local_ip"), "{}", err.message);
    assert!(mock::calls().is_empty());
}

#[test]
fn malformed_networks_are_refused() {
    let b = bridge_backend();
    let cases = [
        (NetworkBuilder::vlan(ID, "physnet1", 0).build(), "VLAN id 0"),
        (
            NetworkBuilder::vlan(ID, "physnet1", 4095).build(),
            "VLAN id 4095",
        ),
        (
            NetworkBuilder::vlan(ID, "physnet1", 1)
                .segmentation_id(None)
                .build(),
            "needs a segmentation id",
        ),
        (
            NetworkBuilder::vxlan(ID, 16_777_216).build(),
            "VNI 16777216",
        ),
        (
            NetworkBuilder::flat(ID, "physnet1")
                .segmentation_id(5)
                .build(),
            "no segmentation id",
        ),
        (
            NetworkBuilder::local(ID)
                .physical_network("physnet1")
                .build(),
            "no physical network",
        ),
        (NetworkBuilder::local(ID).mtu(10).build(), "MTU 10"),
        (
            NetworkBuilder::local("a/b").build(),
            "not a valid interface name",
        ),
    ];
    for (net, expected) in cases {
        let err = b.validate(&net).unwrap_err();
        assert_eq!(err.code, "invalid");
        assert!(
            err.message.contains(expected),
            "{expected}: {}",
            err.message
        );
    }
}

#[test]
fn a_missing_physical_interface_is_named() {
    mock::reset();
    let b = backend::<LinuxBridge>(&[("physical_interface_mappings", "physnet1:eth7")]).unwrap();
    let err = b
        .ensure(&NetworkBuilder::flat(ID, "physnet1").build())
        .unwrap_err();
    assert_eq!(err.code, "not-found");
    assert!(err.message.contains("eth7"), "{}", err.message);
}

#[test]
fn host_refusals_are_passed_on() {
    let b = bridge_backend();
    mock::deny(BRIDGE);
    let err = b.ensure(&NetworkBuilder::local(ID).build()).unwrap_err();
    assert_eq!(err.code, "denied");
}

#[test]
fn settings_are_checked() {
    let bad = |pairs: &[(&str, &str)]| backend::<LinuxBridge>(pairs).err().unwrap();
    for (pairs, expected) in [
        (
            &[("physical_interface_mappings", "eth1")][..],
            "is not <physical network>:<interface>",
        ),
        (
            &[("physical_interface_mappings", "p:eth1,p:eth2")][..],
            "mapped twice",
        ),
        (
            &[("physical_interface_mappings", "p:much-too-long-iface")][..],
            "not a valid interface",
        ),
        (&[("vxlan_local_ip", "host")][..], "not an IPv4 address"),
        (&[("vxlan_port", "70000")][..], "outside 1..=65535"),
        (&[("vxlan_port", "0")][..], "outside 1..=65535"),
        (&[("bridge_mappings", "x")][..], "bridge_mappings"),
    ] {
        let err = bad(pairs);
        assert_eq!(err.code, "bad-setting");
        assert!(
            err.message.contains(expected),
            "{expected}: {}",
            err.message
        );
    }
    let s = backend::<LinuxBridge>(&[("vxlan_port", "8472")])
        .unwrap()
        .settings;
    assert_eq!(s.vxlan_port, 8472);
    assert!(s.mappings.is_empty());
}
