//! Network backends in the agent's real plugin registry, against the real kernel (run as root).
//!
//! The built components (`network_linux_bridge.wasm`, `hyperlet_fixture_net_rogue.wasm`) are
//! loaded through `PluginRegistry`, called from a blocking thread of a tokio runtime as the
//! agent calls them, and their effect is observed with `ip -j link`. A veth pair with a unique
//! name stands in for the physical interface; every link a test creates (or the plugin could
//! have created) is removed by a Drop guard, even when an assertion fails.

use crate::networks::{create_network, link_exists, post, remove_network};
use crate::servers::CONFIG;
use hyperlet::config::PluginKind;
use hyperlet::net::{BackendNetwork, NetworkType};
use hyperlet::plugin::{PluginError, PluginStatus};
use hyperlet_tests::plugins::{call, registry, reported};
use hyperlet_tests::{shared_plugin_cache, Agent};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// Runs `ip ARGS…`; fails clearly when `ip` is missing.
fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("these tests observe links with iproute2's `ip`: {e}"))
}

/// A link as `ip -j -d link show` reports it, or `None` when it does not exist.
fn link(name: &str) -> Option<Value> {
    let out = ip(&["-j", "-d", "link", "show", "dev", name]);
    if !out.status.success() {
        return None;
    }
    let list: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    list.as_array().and_then(|l| l.first()).cloned()
}

fn mtu(link: &Value) -> u64 {
    link["mtu"].as_u64().expect("mtu")
}

fn is_up(link: &Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn master(link: &Value) -> Option<&str> {
    link["master"].as_str()
}

/// Deletes the links it names on drop (those that still exist).
struct LinkGuard(Vec<String>);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            if link(name).is_some() {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Needs root and iproute2; says so instead of skipping.
fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "network backend tests create bridges, veths and VXLANs: run them as root"
    );
}

/// A veth pair `<base>a` ↔ `<base>b`, both up, MTU 1500; `<base>a` plays the physical interface.
fn veth(base: &str) -> (String, String) {
    let (a, b) = (format!("{base}a"), format!("{base}b"));
    let out = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    assert!(
        out.status.success(),
        "creating veth {a}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [&a, &b] {
        assert!(ip(&["link", "set", name, "up"]).status.success());
    }
    (a, b)
}

/// Whether this kernel can create VLAN links: 8021q loaded or built in, or available as a
/// module.
fn kernel_has_8021q() -> bool {
    if std::path::Path::new("/sys/module/8021q").exists() {
        return true;
    }
    let config = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null",
        ])
        .output()
        .expect("sh");
    let config = String::from_utf8_lossy(&config.stdout);
    assert!(
        !config.is_empty(),
        "cannot tell whether the kernel has 8021q: no /proc/config.gz or /boot/config-*"
    );
    config
        .lines()
        .any(|l| l == "CONFIG_VLAN_8021Q=y" || l == "CONFIG_VLAN_8021Q=m")
}

/// A unique network id whose bridge is `brq<pid:08x>-<n:02x>`.
fn network_id(n: u8) -> String {
    format!(
        "{:08x}-{n:02x}00-4000-8000-000000000001",
        std::process::id()
    )
}

fn bridge_of(id: &str) -> String {
    hyperlet::net::model::bridge_name(id)
}

fn network(
    id: &str,
    network_type: NetworkType,
    physnet: Option<&str>,
    seg: Option<u32>,
) -> BackendNetwork {
    BackendNetwork {
        id: id.to_owned(),
        network_type,
        physical_network: physnet.map(str::to_owned),
        segmentation_id: seg,
        mtu: 1450,
    }
}

/// The plugin-error code of a reported failure.
fn stanza(name: &str, krate: &str, grants: &str, settings: &str, netlink: &str) -> String {
    hyperlet_tests::plugins::stanza(
        "network-backend",
        20_000,
        name,
        krate,
        grants,
        settings,
        netlink,
    )
}

#[test]
fn linux_bridge_builds_and_removes_flat_local_vxlan_and_vlan_networks() {
    require_root();
    let pid = std::process::id();
    let base = format!("hlt{pid}f");
    let vni = 100_000 + pid % 1_000_000;
    let (flat_id, local_id, vxlan_id, vlan_id) =
        (network_id(1), network_id(2), network_id(3), network_id(4));
    let phys = format!("{base}a");
    let _guard = LinkGuard(vec![
        bridge_of(&flat_id),
        bridge_of(&local_id),
        bridge_of(&vxlan_id),
        bridge_of(&vlan_id),
        format!("vxlan-{vni}"),
        format!("{phys}.100"),
        phys.clone(),
    ]);
    let (phys, _peer) = veth(&base);
    let toml = stanza(
        "linuxbridge",
        "network-linux-bridge",
        r#"["log", "netlink"]"#,
        &format!(
            "physical_interface_mappings = \"physnet1:{phys}\", vxlan_local_ip = \"127.0.0.1\", \
             vxlan_dev = \"lo\""
        ),
        &format!("[plugins.netlink]\nphysical_interfaces = [\"{phys}\", \"lo\"]"),
    );
    let (rt, registry) = registry(&toml);

    let views = registry.views();
    assert_eq!(views[0].kind, PluginKind::NetworkBackend);
    assert_eq!(
        views[0].status,
        PluginStatus::Loaded,
        "{:?}",
        views[0].error
    );
    assert_eq!(views[0].version.as_deref(), Some("1.0.0"));
    assert!(views[0].needs.contains(&"netlink".to_string()));
    assert_eq!(registry.network_backend_names(), ["linuxbridge"]);
    assert!(registry.chain(PluginKind::Filter).is_empty());
    assert!(registry.chain(PluginKind::Weigher).is_empty());
    assert!(matches!(
        registry.network_backend("nope"),
        Err(PluginError::NotLoaded { .. })
    ));
    let plugin = registry.network_backend("linuxbridge").unwrap();

    // validate-network is pure and explains itself.
    let bad = network(&flat_id, NetworkType::Flat, Some("physnet9"), None);
    let (code, message) = reported(
        call(&rt, &plugin, move |p| async move {
            p.validate_network(&bad).await
        })
        .unwrap_err(),
    );
    assert_eq!(code, "invalid");
    assert!(message.contains("physnet9"), "{message}");
    assert!(link(&bridge_of(&flat_id)).is_none());

    // flat: the bridge with the physical interface enslaved.
    let flat = network(&flat_id, NetworkType::Flat, Some("physnet1"), None);
    let net = flat.clone();
    call(&rt, &plugin, move |p| async move {
        p.validate_network(&net).await
    })
    .unwrap();
    for _ in 0..2 {
        let net = flat.clone();
        let bridge = call(&rt, &plugin, move |p| async move {
            p.ensure_network(&net).await
        })
        .unwrap();
        assert_eq!(bridge, bridge_of(&flat_id));
        let b = link(&bridge).expect("bridge");
        assert_eq!(b["linkinfo"]["info_kind"], "bridge", "{b}");
        assert_eq!(mtu(&b), 1450);
        assert!(is_up(&b), "{b}");
        let p = link(&phys).expect("physical");
        assert_eq!(master(&p), Some(bridge.as_str()), "{p}");
        assert!(is_up(&p));
        assert_eq!(mtu(&p), 1500, "the physical MTU is the operator's");
    }
    for _ in 0..2 {
        let net = flat.clone();
        call(&rt, &plugin, move |p| async move {
            p.delete_network(&net).await
        })
        .unwrap();
        assert!(link(&bridge_of(&flat_id)).is_none());
        let p = link(&phys).expect("the physical interface stays");
        assert_eq!(master(&p), None);
    }

    // local: a bare bridge.
    let local = network(&local_id, NetworkType::Local, None, None);
    let net = local.clone();
    let bridge = call(&rt, &plugin, move |p| async move {
        p.ensure_network(&net).await
    })
    .unwrap();
    let b = link(&bridge).expect("bridge");
    assert_eq!((mtu(&b), is_up(&b)), (1450, true));
    let net = local.clone();
    call(&rt, &plugin, move |p| async move {
        p.delete_network(&net).await
    })
    .unwrap();
    assert!(link(&bridge).is_none());

    // vxlan: vxlan-<vni> on lo from 127.0.0.1, enslaved.
    let vxlan = network(&vxlan_id, NetworkType::Vxlan, None, Some(vni));
    for _ in 0..2 {
        let net = vxlan.clone();
        let bridge = call(&rt, &plugin, move |p| async move {
            p.ensure_network(&net).await
        })
        .unwrap();
        let b = link(&bridge).expect("bridge");
        assert_eq!((mtu(&b), is_up(&b)), (1450, true));
        let v = link(&format!("vxlan-{vni}")).expect("vxlan link");
        let data = &v["linkinfo"]["info_data"];
        assert_eq!(data["id"], vni, "{v}");
        assert_eq!(data["local"], "127.0.0.1", "{v}");
        assert_eq!(data["link"], "lo", "{v}");
        assert_eq!(data["port"], 4789, "{v}");
        assert_eq!(master(&v), Some(bridge.as_str()));
        assert_eq!((mtu(&v), is_up(&v)), (1450, true));
    }
    let net = vxlan.clone();
    call(&rt, &plugin, move |p| async move {
        p.delete_network(&net).await
    })
    .unwrap();
    assert!(link(&bridge_of(&vxlan_id)).is_none());
    assert!(link(&format!("vxlan-{vni}")).is_none());

    // vlan: depends on the kernel, decided up front.
    let vlan = network(&vlan_id, NetworkType::Vlan, Some("physnet1"), Some(100));
    let net = vlan.clone();
    let result = call(&rt, &plugin, move |p| async move {
        p.ensure_network(&net).await
    });
    let vlan_link = format!("{phys}.100");
    if kernel_has_8021q() {
        let bridge = result.expect("8021q is available, so VLAN networks must work");
        let v = link(&vlan_link).expect("vlan link");
        assert_eq!(v["linkinfo"]["info_data"]["id"], 100, "{v}");
        assert_eq!(master(&v), Some(bridge.as_str()));
        assert_eq!((mtu(&v), is_up(&v)), (1450, true));
        let net = vlan.clone();
        call(&rt, &plugin, move |p| async move {
            p.delete_network(&net).await
        })
        .unwrap();
        assert!(link(&vlan_link).is_none());
        assert!(link(&phys).is_some());
    } else {
        let (code, message) = reported(result.unwrap_err());
        assert_eq!(code, "unsupported", "{message}");
        assert!(message.contains("8021q"), "{message}");
        assert!(message.contains("vlan"), "{message}");
        // The bridge that call created was removed again.
        assert!(link(&bridge_of(&vlan_id)).is_none());
        assert!(link(&vlan_link).is_none());
    }
    let (calls, failures) = plugin.counters();
    assert!(calls >= 12, "{calls}");
    assert_eq!(failures, if kernel_has_8021q() { 1 } else { 2 });
}

#[test]
fn rogue_backend_is_denied_and_changes_nothing() {
    require_root();
    let pid = std::process::id();
    let base = format!("hlt{pid}r");
    let phys = format!("{base}a");
    let _guard = LinkGuard(vec![
        "eth0x".into(),
        "vxlan-5".into(),
        format!("{phys}.4000"),
        phys.clone(),
    ]);
    let (phys, _peer) = veth(&base);
    let toml = stanza(
        "rogue",
        "hyperlet-fixture-net-rogue",
        r#"["netlink"]"#,
        &format!("physical_interface = \"{phys}\""),
        &format!(
            "[plugins.netlink]\nphysical_interfaces = [\"{phys}\"]\nvlan_ids = [100, 200]\n\
             vnis = [1000, 2000]"
        ),
    );
    let (rt, registry) = registry(&toml);
    let plugin = registry.network_backend("rogue").unwrap();
    let before = link(&phys).expect("veth");
    for (attack, grant) in [
        ("bridge-name", "netlink.name_prefixes"),
        ("delete-physical", "netlink.physical_interfaces"),
        ("mtu-physical", "netlink.physical_interfaces"),
        ("down-physical", "netlink.physical_interfaces"),
        ("vlan-range", "netlink.vlan_ids = [100, 200]"),
        ("vxlan-range", "netlink.vnis = [1000, 2000]"),
        ("foreign-master", "netlink.name_prefixes"),
    ] {
        let net = network(attack, NetworkType::Local, None, None);
        let (code, message) = reported(
            call(&rt, &plugin, move |p| async move {
                p.ensure_network(&net).await
            })
            .expect_err(&format!("{attack} must be refused")),
        );
        assert_eq!(code, "denied", "{attack}: {message}");
        assert!(message.contains(grant), "{attack}: {message}");
    }
    let after = link(&phys).expect("the physical interface was not deleted");
    assert_eq!(mtu(&after), mtu(&before));
    assert_eq!(is_up(&after), is_up(&before));
    assert_eq!(master(&after), None);
    for name in ["eth0x", "vxlan-5", &format!("{phys}.4000")] {
        assert!(link(name).is_none(), "{name} was created");
    }
}

#[test]
fn backend_without_the_netlink_grant_is_not_loaded() {
    let toml = stanza("ungranted", "network-linux-bridge", r#"["log"]"#, "", "");
    let (_rt, registry) = registry(&toml);
    let view = &registry.views()[0];
    assert_eq!(view.status, PluginStatus::Failed);
    let error = view.error.as_deref().unwrap();
    assert!(error.contains("not granted: netlink"), "{error}");
    match registry.network_backend("ungranted") {
        Err(PluginError::NotLoaded { reason, .. }) => {
            assert!(reason.contains("netlink"), "{reason}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn rogue_bridge_answers_are_refused() {
    require_root();
    let pid = std::process::id();
    let base = format!("hlt{pid}x");
    let phys = format!("{base}a");
    // Links that carry the default `brq` prefix: a real bridge (the answer that is accepted)
    // and a veth end (granted-looking, but not a bridge).
    let (good, not_bridge, not_bridge_peer, missing) = (
        format!("brq{pid:x}g"),
        format!("brq{pid:x}v"),
        format!("brq{pid:x}w"),
        format!("brq{pid:x}m"),
    );
    let _guard = LinkGuard(vec![
        good.clone(),
        not_bridge.clone(),
        not_bridge_peer.clone(),
        phys.clone(),
    ]);
    let (phys, _peer) = veth(&base);
    assert!(ip(&["link", "add", &good, "type", "bridge"])
        .status
        .success());
    assert!(ip(&[
        "link",
        "add",
        &not_bridge,
        "type",
        "veth",
        "peer",
        "name",
        &not_bridge_peer
    ])
    .status
    .success());
    let toml = stanza(
        "rogue",
        "hyperlet-fixture-net-rogue",
        r#"["netlink"]"#,
        &format!("physical_interface = \"{phys}\""),
        &format!("[plugins.netlink]\nphysical_interfaces = [\"{phys}\"]"),
    );
    let (rt, registry) = registry(&toml);
    let plugin = registry.network_backend("rogue").unwrap();
    let masters_before: Vec<Option<String>> = [&phys, &not_bridge]
        .iter()
        .map(|l| link(l).and_then(|v| master(&v).map(str::to_owned)))
        .collect();
    for (answer, says) in [
        ("virbr0", "netlink.name_prefixes"),
        ("docker0", "netlink.name_prefixes"),
        (phys.as_str(), "netlink.name_prefixes"),
        ("lo", "netlink.name_prefixes"),
        (not_bridge.as_str(), "is a veth link, not a bridge"),
        (missing.as_str(), "does not exist"),
    ] {
        let net = network(&format!("answer={answer}"), NetworkType::Local, None, None);
        let e = call(&rt, &plugin, move |p| async move {
            p.ensure_network(&net).await
        })
        .expect_err(&format!("answering {answer} must be refused"));
        match e {
            PluginError::BadAnswer { plugin, reason } => {
                assert_eq!(plugin, "rogue");
                assert!(reason.contains(says), "{answer}: {reason}");
            }
            other => panic!("{answer}: expected a refused answer, got {other}"),
        }
    }
    // Nothing was enslaved or created by the refused answers.
    let masters_after: Vec<Option<String>> = [&phys, &not_bridge]
        .iter()
        .map(|l| link(l).and_then(|v| master(&v).map(str::to_owned)))
        .collect();
    assert_eq!(masters_after, masters_before);
    assert!(link(&missing).is_none());
    // A granted, existing bridge is accepted.
    let net = network(&format!("answer={good}"), NetworkType::Local, None, None);
    assert_eq!(
        call(&rt, &plugin, move |p| async move {
            p.ensure_network(&net).await
        })
        .unwrap(),
        good
    );
    let (_, failures) = plugin.counters();
    assert_eq!(failures, 6);
}

/// The links enslaved to `bridge`.
fn ports_of(bridge: &str) -> Vec<String> {
    let out = ip(&["-j", "link", "show", "master", bridge]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x["ifname"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn another_network_s_bridge_is_refused_through_the_api() {
    require_root();
    let pid = std::process::id();
    let shared = format!("brq{pid:x}s");
    let _guard = LinkGuard(vec![shared.clone()]);
    // The rogue makes `shared` and answers it for every network it is asked to set up.
    let config = format!(
        "{CONFIG}\n[plugin_runtime]\ncache_dir = {:?}\n\n{}",
        shared_plugin_cache().display().to_string(),
        stanza(
            "rogue",
            "hyperlet-fixture-net-rogue",
            r#"["netlink"]"#,
            &format!("physical_interface = \"unused0\", answer = \"{shared}\""),
            "",
        )
    );
    let agent = Agent::start_with_config(&config);
    let a = create_network(
        &agent,
        json!({"name": "a", "network_type": "local", "backend": "rogue"}),
    );
    assert_eq!(a["status"], "ACTIVE", "{a}");
    let a_id = a["id"].as_str().unwrap().to_owned();
    let (s, subnet) = post(
        &agent,
        "/v1/subnets",
        json!({"network_id": a_id, "cidr": "192.0.2.0/24"}),
    );
    assert_eq!(s, 201, "{subnet}");
    // Network a's DHCP port is on its bridge.
    let ports = ports_of(&shared);
    assert_eq!(ports.len(), 1, "{ports:?}");

    // Network b is answered a's bridge: refused, b is ERROR naming why and has no bridge,
    // nothing more is on a's bridge; deleting b leaves a's bridge alone.
    let b = create_network(
        &agent,
        json!({"name": "b", "network_type": "local", "backend": "rogue"}),
    );
    assert_eq!(b["status"], "ERROR", "{b}");
    assert!(b["bridge"].is_null(), "{b}");
    let fault = b["fault"].as_str().unwrap_or_default();
    assert!(
        fault.contains("rogue") && fault.contains(&format!("belongs to network {a_id}")),
        "{b}"
    );
    assert_eq!(ports_of(&shared), ports);
    remove_network(&agent, b["id"].as_str().unwrap());
    assert_eq!(ports_of(&shared), ports);
    assert!(link_exists(&shared), "a's bridge {shared} is gone");
    remove_network(&agent, &a_id);
}
