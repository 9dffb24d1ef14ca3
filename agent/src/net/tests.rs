//! Tests against real kernel objects (run as root). Every namespace and link is uniquely named
//! and removed by a Drop guard, even when an assertion fails. `ip` is only used to observe and to
//! clean up; the code under test never forks it.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use super::links::{Netlink, VxlanOptions};
use super::{netns, validate_ifname, NetError};

/// A fresh lowercase hex tag of `len` characters.
fn tag(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

/// Runs `ip ARGS…` and returns its stdout; fails clearly when `ip` is missing or fails.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the tests need iproute2's `ip` to observe results: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the namespace it names on drop.
struct NsGuard(String);

impl NsGuard {
    fn create() -> Self {
        let name = format!("hyperlet-test-{}", tag(8));
        netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self(name)
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if netns::delete(&self.0).is_err() && netns::exists(&self.0).unwrap_or(false) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
}

/// Deletes the host link it names on drop (if it still exists).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn names_are_validated() {
    for good in ["qdhcp-4e1b0a9c-1111-4222-8333-444455556666", "a", "x_y.z-1"] {
        netns::validate_name(good).unwrap();
    }
    let long = "a".repeat(65);
    for bad in ["", ".", "..", "a/b", "a b", "ä", long.as_str(), "../etc"] {
        assert!(
            matches!(netns::validate_name(bad), Err(NetError::InvalidName { .. })),
            "{bad:?} should be refused"
        );
        assert!(matches!(
            netns::create(bad),
            Err(NetError::InvalidName { .. })
        ));
        assert!(matches!(
            netns::run_in(bad, || ()),
            Err(NetError::InvalidName { .. })
        ));
    }
    validate_ifname("brq4e1b0a9c-11").unwrap();
    validate_ifname("123456789012345").unwrap();
    for bad in ["", "1234567890123456", "a/b", "a b", "a:1", ".."] {
        assert!(
            matches!(validate_ifname(bad), Err(NetError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let msg = netns::validate_name("a/b").unwrap_err().to_string();
    assert!(
        msg.contains("a/b") && msg.starts_with("Invalid namespace name"),
        "{msg}"
    );
}

#[tokio::test]
async fn numeric_arguments_are_validated_before_any_request() {
    let host = Netlink::host().await.unwrap();
    // The parent does not exist either: the range check must come first.
    for vid in [0, 4095] {
        assert!(matches!(
            host.create_vlan("hlt-none", vid).await,
            Err(NetError::OutOfRange {
                what: "VLAN id",
                ..
            })
        ));
    }
    for vni in [0, 16_777_216] {
        assert!(matches!(
            host.create_vxlan(vni, &VxlanOptions::default()).await,
            Err(NetError::OutOfRange {
                what: "VXLAN VNI",
                ..
            })
        ));
    }
    for mtu in [67, 65536] {
        assert!(matches!(
            host.set_mtu("hlt-none", mtu).await,
            Err(NetError::OutOfRange { what: "MTU", .. })
        ));
    }
    assert!(matches!(
        host.add_ipv4("hlt-none", Ipv4Addr::new(198, 51, 100, 1), 33)
            .await,
        Err(NetError::OutOfRange { .. })
    ));
    // A VLAN name that would exceed IFNAMSIZ.
    assert!(matches!(
        host.create_vlan("hlt-1234567890", 100).await,
        Err(NetError::InvalidName { .. })
    ));
    assert!(matches!(
        host.create_bridge("hlt-br-toolongname").await,
        Err(NetError::InvalidName { .. })
    ));
    let missing = format!("hlt-no-{}", tag(6));
    assert!(host.link(&missing).await.unwrap().is_none());
    assert!(matches!(host.set_up(&missing).await, Err(NetError::LinkNotFound(n)) if n == missing));
    assert!(matches!(
        host.delete(&missing).await,
        Err(NetError::LinkNotFound(_))
    ));
}

#[test]
fn namespace_lifecycle_is_visible_to_iproute2() {
    let ns = NsGuard::create();
    assert!(ip(&["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&ns.0)));
    assert!(netns::list().unwrap().contains(&ns.0));
    assert!(netns::exists(&ns.0).unwrap());
    // iproute2 can enter it, and it holds only a loopback.
    let links = ip(&["-n", &ns.0, "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    assert!(matches!(netns::create(&ns.0), Err(NetError::NamespaceExists(n)) if n == ns.0));

    netns::delete(&ns.0).unwrap();
    assert!(!netns::exists(&ns.0).unwrap());
    assert!(!ip(&["netns", "list"]).contains(&ns.0));
    assert!(matches!(
        netns::delete(&ns.0),
        Err(NetError::NamespaceNotFound(_))
    ));
    assert!(matches!(
        netns::run_in(&ns.0, || ()),
        Err(NetError::NamespaceNotFound(_))
    ));
}

#[test]
fn run_in_enters_the_namespace_and_reports_panics() {
    let ns = NsGuard::create();
    let inode =
        |path: &str| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let inside = netns::run_in(&ns.0, move || inode("/proc/thread-self/ns/net"))
        .unwrap()
        .unwrap();
    let pinned = inode(&format!("/run/netns/{}", ns.0)).unwrap();
    let host = inode("/proc/thread-self/ns/net").unwrap();
    assert_eq!(inside, pinned);
    assert_ne!(inside, host);
    // The caller's thread is untouched.
    assert_eq!(inode("/proc/thread-self/ns/net").unwrap(), host);

    let err = netns::run_in(&ns.0, || -> () { panic!("boom") }).unwrap_err();
    assert!(
        matches!(&err, NetError::Thread { reason, .. } if reason == "boom"),
        "{err}"
    );
}

#[tokio::test]
async fn bridge_veth_addresses_and_traffic_between_namespaces() {
    let t = tag(6);
    let (ns_a, ns_b) = (NsGuard::create(), NsGuard::create());
    let bridge = LinkGuard(format!("hlt-br-{t}"));
    let host_a = LinkGuard(format!("hlt-a-{t}"));
    let host_b = LinkGuard(format!("hlt-b-{t}"));
    let (peer_a, peer_b) = (format!("hlt-pa-{t}"), format!("hlt-pb-{t}"));

    let host = Netlink::host()
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    host.create_bridge(&bridge.0).await.unwrap();
    assert!(matches!(
        host.create_bridge(&bridge.0).await,
        Err(NetError::LinkExists(_))
    ));
    host.set_up(&bridge.0).await.unwrap();
    let bridge_info = host.link(&bridge.0).await.unwrap().unwrap();
    assert_eq!(bridge_info.kind.as_deref(), Some("bridge"));
    assert!(bridge_info.up);

    for (end, peer, ns) in [(&host_a, &peer_a, &ns_a), (&host_b, &peer_b, &ns_b)] {
        host.create_veth(&end.0, peer, Some(&ns.0)).await.unwrap();
        assert!(
            host.link(peer).await.unwrap().is_none(),
            "{peer} should have moved"
        );
        host.set_master(&end.0, &bridge.0).await.unwrap();
        host.set_mtu(&end.0, 1400).await.unwrap();
        host.set_up(&end.0).await.unwrap();
        let info = host.link(&end.0).await.unwrap().unwrap();
        assert_eq!(info.master, Some(bridge_info.index));
        assert_eq!(info.mtu, Some(1400));
        assert_eq!(info.kind.as_deref(), Some("veth"));
        assert!(info.up);
        assert!(ip(&["link", "show", &end.0]).contains(&format!("master {}", bridge.0)));
    }

    for (ns, peer, addr) in [
        (&ns_a, &peer_a, [198, 51, 100, 1]),
        (&ns_b, &peer_b, [198, 51, 100, 2]),
    ] {
        let inside = Netlink::in_namespace(&ns.0).await.unwrap();
        assert_eq!(inside.namespace(), Some(ns.0.as_str()));
        inside.set_mtu(peer, 1400).await.unwrap();
        inside
            .add_ipv4(peer, Ipv4Addr::from(addr), 24)
            .await
            .unwrap();
        inside.set_up(peer).await.unwrap();
        inside.set_up("lo").await.unwrap();
        let shown = ip(&["-n", &ns.0, "addr", "show", peer]);
        let want = format!("inet {}/24", Ipv4Addr::from(addr));
        assert!(shown.contains(&want), "{shown}");
        assert!(shown.contains("mtu 1400"), "{shown}");
        // Nothing leaked into the host namespace.
        assert!(!ip(&["-o", "addr"]).contains(&want));
    }

    // A socket made by run_in lives in the namespace: 198.51.100.x exists only there.
    assert!(
        UdpSocket::bind("198.51.100.1:0").is_err(),
        "198.51.100.1 must not exist on the host"
    );
    let receiver = netns::run_in(&ns_b.0, || UdpSocket::bind("198.51.100.2:0"))
        .unwrap()
        .unwrap();
    let sender = netns::run_in(&ns_a.0, || UdpSocket::bind("198.51.100.1:0"))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let to = receiver.local_addr().unwrap();
    // Across the bridge: A → veth → bridge → veth → B. Retry while the ports settle.
    let mut got = None;
    for _ in 0..10 {
        sender.send_to(b"hyperlet", to).unwrap();
        let mut buf = [0u8; 16];
        if let Ok((n, from)) = receiver.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (payload, from) = got.expect("no datagram crossed the bridge from namespace A to B");
    assert_eq!(payload, b"hyperlet");
    assert_eq!(from, sender.local_addr().unwrap());

    // Deleting a host end removes the pair, including the end inside the namespace.
    host.delete(&host_a.0).await.unwrap();
    assert!(host.link(&host_a.0).await.unwrap().is_none());
    let inside_a = Netlink::in_namespace(&ns_a.0).await.unwrap();
    assert!(inside_a.link(&peer_a).await.unwrap().is_none());
    host.set_down(&bridge.0).await.unwrap();
    assert!(!host.link(&bridge.0).await.unwrap().unwrap().up);
}

#[tokio::test]
async fn veth_into_a_missing_namespace_leaves_nothing_behind() {
    let t = tag(6);
    let end = LinkGuard(format!("hlt-x-{t}"));
    let host = Netlink::host().await.unwrap();
    let missing = format!("hyperlet-test-{}", tag(8));
    assert!(matches!(
        host.create_veth(&end.0, &format!("hlt-px-{t}"), Some(&missing))
            .await,
        Err(NetError::NamespaceNotFound(_))
    ));
    assert!(host.link(&end.0).await.unwrap().is_none());
}

#[tokio::test]
async fn vxlan_inside_a_namespace() {
    let ns = NsGuard::create();
    let inside = Netlink::in_namespace(&ns.0).await.unwrap();
    // Everything below lives in the namespace and dies with it.
    inside.create_veth("hlt-v0", "hlt-v1", None).await.unwrap();
    inside.set_up("hlt-v0").await.unwrap();
    inside.set_up("hlt-v1").await.unwrap();
    inside
        .add_ipv4("hlt-v0", Ipv4Addr::new(198, 51, 100, 10), 24)
        .await
        .unwrap();

    let options = VxlanOptions {
        local: Some(Ipv4Addr::new(198, 51, 100, 10)),
        dev: Some("hlt-v0".into()),
        port: None,
        learning: false,
    };
    let vxlan = inside.create_vxlan(4242, &options).await.unwrap();
    assert_eq!(vxlan, "vxlan-4242");
    inside.create_bridge("hlt-brx").await.unwrap();
    inside.set_master(&vxlan, "hlt-brx").await.unwrap();
    inside.set_mtu(&vxlan, 1450).await.unwrap();
    inside.set_up(&vxlan).await.unwrap();
    let shown = ip(&["-n", &ns.0, "-d", "link", "show", &vxlan]);
    for want in [
        "vxlan id 4242",
        "local 198.51.100.10",
        "dev hlt-v0",
        "dstport 4789",
        "nolearning",
        "master hlt-brx",
        "mtu 1450",
    ] {
        assert!(shown.contains(want), "{want:?} missing in {shown}");
    }
    // The namespace's bridge does not exist on the host.
    let host = Netlink::host().await.unwrap();
    assert!(host.link("hlt-brx").await.unwrap().is_none());

    inside.delete(&vxlan).await.unwrap();
    assert!(inside.link(&vxlan).await.unwrap().is_none());
}

/// Whether this kernel provably lacks 802.1Q: built without CONFIG_VLAN_8021Q and no 8021q
/// module loaded.
fn kernel_lacks_8021q() -> bool {
    let config = Command::new("sh")
        .args(["-c", "zcat /proc/config.gz 2>/dev/null"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    config.contains("# CONFIG_VLAN_8021Q is not set")
        && !std::path::Path::new("/sys/module/8021q").exists()
}

#[tokio::test]
async fn vlan_inside_a_namespace() {
    let ns = NsGuard::create();
    let inside = Netlink::in_namespace(&ns.0).await.unwrap();
    inside.create_veth("hlt-v0", "hlt-v1", None).await.unwrap();
    assert!(matches!(
        inside.create_vlan("hlt-nope", 100).await,
        Err(NetError::LinkNotFound(_))
    ));
    let vlan = match inside.create_vlan("hlt-v0", 100).await {
        Ok(vlan) => vlan,
        Err(e @ NetError::Unsupported { kind: "vlan", .. }) => {
            // Only acceptable when the kernel really has no 802.1Q; then the error must say so.
            assert!(
                kernel_lacks_8021q(),
                "VLAN refused as unsupported although the kernel seems to have 8021q: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains("8021q") && msg.contains("modprobe"), "{msg}");
            eprintln!(
                "NOTE: this kernel lacks 802.1Q (CONFIG_VLAN_8021Q); checked the error: {msg}"
            );
            assert!(inside.link("hlt-v0.100").await.unwrap().is_none());
            return;
        }
        Err(e) => panic!("creating a VLAN failed: {e}"),
    };
    assert_eq!(vlan, "hlt-v0.100");
    let shown = ip(&["-n", &ns.0, "-d", "link", "show", &vlan]);
    assert!(shown.contains("vlan protocol 802.1Q id 100"), "{shown}");
    assert!(
        matches!(inside.create_vlan("hlt-v0", 100).await, Err(NetError::LinkExists(n)) if n == vlan)
    );
    assert_eq!(
        inside.link(&vlan).await.unwrap().unwrap().kind.as_deref(),
        Some("vlan")
    );
    inside.create_bridge("hlt-brv").await.unwrap();
    inside.set_master(&vlan, "hlt-brv").await.unwrap();
    inside.set_up(&vlan).await.unwrap();
    assert!(ip(&["-n", &ns.0, "link", "show", &vlan]).contains("master hlt-brv"));
}
