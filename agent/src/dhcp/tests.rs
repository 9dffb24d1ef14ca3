//! Tests against real kernel objects and a real client (run as root): two namespaces joined by
//! a veth pair, the server in one, busybox `udhcpc` or a raw UDP client in the other. Every
//! namespace is removed by a Drop guard even when an assertion fails, and every external
//! command runs under a deadline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Decoder};

use super::exchange::client_request;
use super::{socket, DhcpError, DhcpServer, HostRoute, Lease, LeaseSource};
use crate::net::links::Netlink;
use crate::net::netns;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The server-side and client-side ends of the veth (names are per namespace).
const SERVER_IF: &str = "hld-srv";
const CLIENT_IF: &str = "hld-cli";

/// Deletes the namespace it names on drop.
struct NsGuard(String);

impl NsGuard {
    /// A namespace unique to this process and this call.
    fn create(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hyperlet-dhcp-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self(name)
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if netns::delete(&self.0).is_err() && netns::exists(&self.0).unwrap_or(false) {
            let _ = std::process::Command::new("timeout")
                .args(["10", "ip", "netns", "delete", &self.0])
                .status();
        }
    }
}

/// Two namespaces joined by a veth: the server end addressed, the client end up.
struct Pair {
    server: NsGuard,
    client: NsGuard,
    client_mac: [u8; 6],
}

/// Runs a command under `timeout 20` and a tokio deadline; fails clearly when it is missing.
async fn run(program: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("timeout");
    command.arg("20").arg(program).args(args).kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(25), command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            panic!("cannot run `timeout 20 {program}` (install coreutils and {program}): {e}")
        }
        Err(_) => panic!("`{program} {args:?}` did not finish in 25 s"),
    }
}

/// The MAC of `ifname` in namespace `ns`, read with `ip -o link`.
async fn mac_of(ns: &str, ifname: &str) -> [u8; 6] {
    let out = run("ip", &["-n", ns, "-o", "link", "show", "dev", ifname]).await;
    assert!(out.status.success(), "ip link show: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {text}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

impl Pair {
    /// Creates the namespaces and the veth; `client_addr` also addresses the client end.
    async fn create(client_addr: Option<Ipv4Addr>) -> Self {
        let (server, client) = (NsGuard::create("srv"), NsGuard::create("cli"));
        let srv = Netlink::in_namespace(&server.0)
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        srv.create_veth(SERVER_IF, CLIENT_IF, Some(&client.0))
            .await
            .unwrap();
        srv.add_ipv4(SERVER_IF, SERVER_IP, 24).await.unwrap();
        srv.set_up(SERVER_IF).await.unwrap();
        srv.set_up("lo").await.unwrap();
        let cli = Netlink::in_namespace(&client.0)
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        if let Some(addr) = client_addr {
            cli.add_ipv4(CLIENT_IF, addr, 24).await.unwrap();
        }
        cli.set_up(CLIENT_IF).await.unwrap();
        cli.set_up("lo").await.unwrap();
        let client_mac = mac_of(&client.0, CLIENT_IF).await;
        Self {
            server,
            client,
            client_mac,
        }
    }

    async fn start(&self, source: Arc<dyn LeaseSource>) -> DhcpServer {
        DhcpServer::start(&self.server.0, SERVER_IF, SERVER_IP, source)
            .await
            .unwrap_or_else(|e| panic!("starting the DHCP server: {e}"))
    }
}

/// Leases by MAC.
struct Ports(HashMap<[u8; 6], Lease>);

impl LeaseSource for Ports {
    fn lease_for(&self, mac: [u8; 6]) -> Option<Lease> {
        self.0.get(&mac).cloned()
    }
}

fn lease(mac: [u8; 6]) -> Lease {
    Lease {
        mac,
        ip: CLIENT_IP,
        prefix_len: 24,
        gateway: Some(GATEWAY),
        dns: vec![
            Ipv4Addr::new(198, 51, 100, 53),
            Ipv4Addr::new(203, 0, 113, 53),
        ],
        mtu: Some(1400),
        hostname: Some("vm-one".into()),
        domain_name: Some("example.org".into()),
        host_routes: vec![HostRoute {
            destination: Ipv4Addr::new(169, 254, 169, 254),
            prefix_len: 32,
            nexthop: SERVER_IP,
        }],
        lease_time: Duration::from_secs(7200),
    }
}

fn ports(leases: impl IntoIterator<Item = Lease>) -> Arc<dyn LeaseSource> {
    Arc::new(Ports(leases.into_iter().map(|l| (l.mac, l)).collect()))
}

/// The result of one `udhcpc` run: its exit, the events its script saw and the environment of
/// the `bound` event.
struct Udhcpc {
    output: Output,
    events: Vec<String>,
    bound: HashMap<String, String>,
}

const VARS: &[&str] = &[
    "interface",
    "ip",
    "subnet",
    "mask",
    "router",
    "dns",
    "mtu",
    "hostname",
    "domain",
    "lease",
    "serverid",
    "staticroutes",
    "msstaticroutes",
];

/// Runs busybox `udhcpc` in the client namespace with a script that records what it gets and
/// configures the address, as a real client script does.
async fn udhcpc(pair: &Pair, tries: u32) -> Udhcpc {
    let dir = tempfile::tempdir().unwrap();
    let (events, bound) = (dir.path().join("events"), dir.path().join("bound"));
    let mut script = format!(
        "#!/bin/sh\necho \"$1\" >> {events}\ncase \"$1\" in\nbound|renew)\n  busybox ip addr add \"$ip/$mask\" dev \"$interface\"\n  : > {bound}\n",
        events = events.display(),
        bound = bound.display(),
    );
    for var in VARS {
        script.push_str(&format!("  echo \"{var}=${var}\" >> {}\n", bound.display()));
    }
    script.push_str("  ;;\nesac\nexit 0\n");
    let script_path = dir.path().join("script");
    std::fs::write(&script_path, script).unwrap();
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tries = tries.to_string();
    let script_arg = script_path.display().to_string();
    let args = [
        "netns",
        "exec",
        &pair.client.0,
        "busybox",
        "udhcpc",
        "-i",
        CLIENT_IF,
        "-n",
        "-q",
        "-f",
        "-t",
        &tries,
        "-T",
        "1",
        "-s",
        &script_arg,
    ];
    let output = run("ip", &args).await;
    assert_ne!(
        output.status.code(),
        Some(124),
        "udhcpc hung and was killed by timeout: {output:?}"
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Udhcpc {
        events: read(&events).lines().map(str::to_owned).collect(),
        bound: read(&bound)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
        output,
    }
}

fn require_busybox_udhcpc() {
    let ok = std::process::Command::new("busybox")
        .args(["udhcpc", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).contains("udhcpc"))
        .unwrap_or(false);
    assert!(
        ok,
        "these tests need busybox with udhcpc: apt-get install busybox-static (or busybox)"
    );
}

#[tokio::test]
async fn udhcpc_gets_the_full_lease() {
    require_busybox_udhcpc();
    let pair = Pair::create(None).await;
    let server = pair.start(ports([lease(pair.client_mac)])).await;

    let got = udhcpc(&pair, 5).await;
    assert!(
        got.output.status.success(),
        "udhcpc failed: {:?}",
        got.output
    );
    assert!(got.events.iter().any(|e| e == "bound"), "{:?}", got.events);
    let env = &got.bound;
    let want = [
        ("interface", CLIENT_IF),
        ("ip", "198.51.100.10"),
        ("subnet", "255.255.255.0"),
        ("mask", "24"),
        ("router", "198.51.100.1"),
        ("dns", "198.51.100.53 203.0.113.53"),
        ("mtu", "1400"),
        ("hostname", "vm-one"),
        ("domain", "example.org"),
        ("lease", "7200"),
        ("serverid", "198.51.100.2"),
    ];
    for (var, value) in want {
        assert_eq!(
            env.get(var).map(String::as_str),
            Some(value),
            "{var} in {env:?}"
        );
    }
    for var in ["staticroutes", "msstaticroutes"] {
        let routes = env.get(var).map(String::as_str).unwrap_or_default();
        assert!(
            routes.contains("169.254.169.254/32 198.51.100.2"),
            "{var}={routes:?}"
        );
        assert!(
            routes.contains("0.0.0.0/0 198.51.100.1"),
            "{var}={routes:?}"
        );
    }
    // The script configured the address; the client namespace really holds it.
    let shown = run(
        "ip",
        &["-n", &pair.client.0, "-o", "addr", "show", "dev", CLIENT_IF],
    )
    .await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("inet 198.51.100.10/24"), "{shown}");

    let stats = server.stats();
    assert!(stats.discovers >= 1 && stats.offers >= 1, "{stats:?}");
    assert!(stats.requests >= 1 && stats.acks >= 1, "{stats:?}");
    assert_eq!((stats.naks, stats.ignored), (0, 0), "{stats:?}");
    assert!(server.is_running());
    server.stop().await;
}

#[tokio::test]
async fn unknown_mac_gets_nothing() {
    require_busybox_udhcpc();
    let pair = Pair::create(None).await;
    let mut stranger = pair.client_mac;
    stranger[5] ^= 0xff;
    let server = pair.start(ports([lease(stranger)])).await;

    let got = udhcpc(&pair, 2).await;
    assert!(
        !got.output.status.success(),
        "udhcpc must fail without an answer: {:?}",
        got.output
    );
    assert!(!got.events.iter().any(|e| e == "bound"), "{:?}", got.events);
    assert!(got.bound.is_empty());
    let stats = server.stats();
    assert!(stats.discovers >= 1, "{stats:?}");
    assert_eq!(stats.ignored, stats.discovers + stats.requests, "{stats:?}");
    assert_eq!(
        (stats.offers, stats.acks, stats.naks),
        (0, 0, 0),
        "{stats:?}"
    );
    server.stop().await;
}

/// Whether a plain (non-shared) bind of UDP 0.0.0.0:67 in `ns` succeeds — it fails while any
/// server socket holds the port.
async fn port_67_is_free(ns: &str) -> bool {
    let ns = ns.to_owned();
    tokio::task::spawn_blocking(move || {
        netns::run_in(&ns, || std::net::UdpSocket::bind("0.0.0.0:67").is_ok()).unwrap()
    })
    .await
    .unwrap()
}

/// [`port_67_is_free`] within a second: a process another test forks at that moment holds a
/// copy of every descriptor until its `exec` closes them (they are close-on-exec).
async fn port_67_soon_free(ns: &str) -> bool {
    for _ in 0..20 {
        if port_67_is_free(ns).await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn stop_and_drop_free_port_67() {
    require_busybox_udhcpc();
    let pair = Pair::create(None).await;
    let source = ports([lease(pair.client_mac)]);
    assert!(port_67_is_free(&pair.server.0).await);

    let server = pair.start(Arc::clone(&source)).await;
    assert!(
        !port_67_is_free(&pair.server.0).await,
        "the server must hold port 67"
    );
    server.stop().await;
    assert!(
        port_67_soon_free(&pair.server.0).await,
        "stop() must close the socket"
    );

    // Start again: it serves.
    let server = pair.start(Arc::clone(&source)).await;
    let got = udhcpc(&pair, 5).await;
    assert!(got.output.status.success(), "{:?}", got.output);
    assert_eq!(
        got.bound.get("ip").map(String::as_str),
        Some("198.51.100.10")
    );
    assert!(server.stats().acks >= 1);

    // Dropping aborts the task; the socket closes as soon as the runtime drops it.
    drop(server);
    let mut free = false;
    for _ in 0..100 {
        free = port_67_is_free(&pair.server.0).await;
        if free {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(free, "dropping the server must close its socket");
}

#[tokio::test]
async fn start_reports_what_is_wrong() {
    let pair = Pair::create(None).await;
    let source = ports([]);
    let missing_ns = format!("hyperlet-dhcp-{}-missing", std::process::id());
    let err = DhcpServer::start(&missing_ns, SERVER_IF, SERVER_IP, Arc::clone(&source))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DhcpError::NamespaceNotFound(n) if *n == missing_ns),
        "{err}"
    );

    let err = DhcpServer::start(&pair.server.0, "hld-none", SERVER_IP, Arc::clone(&source))
        .await
        .unwrap_err();
    assert!(matches!(err, DhcpError::InterfaceNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("hld-none") && msg.contains(&pair.server.0),
        "{msg}"
    );

    for bad in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
    ] {
        assert!(matches!(
            DhcpServer::start(&pair.server.0, SERVER_IF, bad, Arc::clone(&source)).await,
            Err(DhcpError::InvalidServerIp(_))
        ));
    }
    for (ns, ifname) in [
        ("a/b", SERVER_IF),
        (pair.server.0.as_str(), "much-too-long-name"),
    ] {
        assert!(matches!(
            DhcpServer::start(ns, ifname, SERVER_IP, Arc::clone(&source)).await,
            Err(DhcpError::InvalidName(_))
        ));
    }

    // A socket that does not share the port (like a foreign DHCP server's) blocks the start.
    let ns = pair.server.0.clone();
    let squatter = tokio::task::spawn_blocking(move || {
        netns::run_in(&ns, || std::net::UdpSocket::bind("0.0.0.0:67")).unwrap()
    })
    .await
    .unwrap()
    .unwrap();
    let err = DhcpServer::start(&pair.server.0, SERVER_IF, SERVER_IP, Arc::clone(&source))
        .await
        .unwrap_err();
    assert!(matches!(err, DhcpError::AddressInUse { .. }), "{err}");
    drop(squatter);
    pair.start(source).await.stop().await;
}

/// A UDP client on 0.0.0.0:68 in the client namespace, bound to the client interface.
async fn raw_client(pair: &Pair) -> tokio::net::UdpSocket {
    let ns = pair.client.0.clone();
    let std_socket = tokio::task::spawn_blocking(move || {
        netns::run_in(&ns, || socket::open(CLIENT_IF, 68)).unwrap()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("client socket: {}: {}", e.step, e.source));
    tokio::net::UdpSocket::from_std(std_socket).unwrap()
}

/// Sends `request` to `to` and returns the reply with the same xid, retrying while the veth
/// settles; `None` when nothing came back.
async fn exchange(
    client: &tokio::net::UdpSocket,
    request: &[u8],
    to: SocketAddrV4,
    xid: u32,
) -> Option<Message> {
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        client.send_to(request, to).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
        while let Ok(received) = tokio::time::timeout_at(deadline, client.recv_from(&mut buf)).await
        {
            let (len, _) = received.unwrap();
            let msg = Message::decode(&mut Decoder::new(&buf[..len])).unwrap();
            if msg.xid() == xid {
                return Some(msg);
            }
        }
    }
    None
}

#[tokio::test]
async fn raw_client_sees_nak_unicast_ack_and_inform() {
    // The client end holds the leased address, as after a first lease: renewals are unicast.
    let pair = Pair::create(Some(CLIENT_IP)).await;
    let server = pair.start(ports([lease(pair.client_mac)])).await;
    let client = raw_client(&pair).await;
    let mac = pair.client_mac;
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let unicast = SocketAddrV4::new(SERVER_IP, 67);

    let discover = client_request(MessageType::Discover, mac, 1, Ipv4Addr::UNSPECIFIED, vec![]);
    let offer = exchange(&client, &discover, broadcast, 1)
        .await
        .expect("no OFFER");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), CLIENT_IP);

    let wrong = client_request(
        MessageType::Request,
        mac,
        2,
        Ipv4Addr::UNSPECIFIED,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            198, 51, 100, 99,
        ))],
    );
    let nak = exchange(&client, &wrong, broadcast, 2)
        .await
        .expect("no NAK");
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));

    // RENEWING: unicast to the server, answered by unicast to ciaddr.
    let renew = client_request(MessageType::Request, mac, 3, CLIENT_IP, vec![]);
    let ack = exchange(&client, &renew, unicast, 3)
        .await
        .expect("no ACK to a renewal");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((ack.ciaddr(), ack.yiaddr()), (CLIENT_IP, CLIENT_IP));

    let inform = client_request(MessageType::Inform, mac, 4, CLIENT_IP, vec![]);
    let ack = exchange(&client, &inform, unicast, 4)
        .await
        .expect("no ACK to INFORM");
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(ack
        .opts()
        .get(dhcproto::v4::OptionCode::AddressLeaseTime)
        .is_none());

    // Garbage, an oversized datagram, a DECLINE and a RELEASE: no answers, the server lives on.
    client.send_to(b"not dhcp", unicast).await.unwrap();
    client.send_to(&vec![0u8; 4000], unicast).await.unwrap();
    for (kind, xid) in [(MessageType::Decline, 5), (MessageType::Release, 6)] {
        let msg = client_request(kind, mac, xid, CLIENT_IP, vec![]);
        client.send_to(&msg, unicast).await.unwrap();
    }
    let again = client_request(MessageType::Discover, mac, 7, Ipv4Addr::UNSPECIFIED, vec![]);
    let offer = exchange(&client, &again, broadcast, 7)
        .await
        .expect("no OFFER after garbage");
    assert_eq!(offer.yiaddr(), CLIENT_IP);

    let stats = server.stats();
    // Retries may add duplicates; at least one of each, and nothing unexpected.
    assert!(stats.discovers >= 2 && stats.offers >= 2, "{stats:?}");
    assert!(
        stats.requests >= 2 && stats.acks >= 2 && stats.naks >= 1,
        "{stats:?}"
    );
    assert!(stats.informs >= 1, "{stats:?}");
    assert_eq!((stats.declines, stats.releases), (1, 1), "{stats:?}");
    // The short datagram and the oversized one.
    assert_eq!(stats.ignored, 2, "{stats:?}");
    server.stop().await;
}
