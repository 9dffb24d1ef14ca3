//! Real servers in real namespaces (run as root). A "server" namespace plays the network's
//! `qdhcp-` namespace: a bridge holding 198.51.100.2/24 and 169.254.169.254/32. Two "guest"
//! namespaces hang off that bridge by veth pairs, with fixed MACs, addresses in
//! 198.51.100.0/24 and a host route to 169.254.169.254 via 198.51.100.2 (what DHCP option 121
//! gives a guest). Guests ask with curl and with cloud-init's own readers. Every namespace is
//! removed by a Drop guard (which takes the veths and the bridge with it).
//!
//! The tests run on a multi-threaded runtime: they call curl and python synchronously while
//! the server is served by the same runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use super::fake::{mac, server, FakeSource, NETWORK};
use crate::metadata::{MetadataError, MetadataOptions, MetadataServer};
use crate::net::links::Netlink;
use crate::net::neigh::{format_mac, Neighbours};
use crate::net::netns;

/// A fresh lowercase hex tag of `len` characters.
fn tag(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

/// Runs a command and returns its output; fails clearly when the program is missing.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install it; scripts/setup.sh does): {e}"))
}

/// `ip ARGS…`, which must succeed.
fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespace it names on drop.
struct NsGuard(String);

impl NsGuard {
    fn create(role: &str) -> Self {
        let name = format!("hyperlet-test-md{role}-{}", tag(8));
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

/// The namespaces of one test: the server side and two guests.
struct Lab {
    server: NsGuard,
    guests: [NsGuard; 2],
}

impl Lab {
    /// Builds the topology; guest `i` (0, 1) has MAC `fa:16:3e:00:00:0<i+1>` and address
    /// 198.51.100.1<i>.
    async fn new() -> Self {
        let lab = Lab {
            server: NsGuard::create("s"),
            guests: [NsGuard::create("a"), NsGuard::create("b")],
        };
        let srv = Netlink::in_namespace(&lab.server.0).await.unwrap();
        srv.create_bridge("br0").await.unwrap();
        srv.add_ipv4("br0", "198.51.100.2".parse().unwrap(), 24)
            .await
            .unwrap();
        srv.add_ipv4("br0", "169.254.169.254".parse().unwrap(), 32)
            .await
            .unwrap();
        srv.set_up("br0").await.unwrap();
        for (i, guest) in lab.guests.iter().enumerate() {
            let port = format!("s{i}");
            srv.create_veth(&port, "eth0", Some(&guest.0))
                .await
                .unwrap();
            srv.set_master(&port, "br0").await.unwrap();
            srv.set_up(&port).await.unwrap();
            let n = u8::try_from(i).unwrap();
            let address = format_mac(&mac(n + 1));
            let cidr = format!("198.51.100.{}/24", 10 + n);
            ip(&["-n", &guest.0, "link", "set", "eth0", "address", &address]);
            ip(&["-n", &guest.0, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &guest.0, "link", "set", "eth0", "up"]);
            ip(&["-n", &guest.0, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &guest.0,
                "route",
                "add",
                "169.254.169.254/32",
                "via",
                "198.51.100.2",
            ]);
        }
        lab
    }

    /// Starts the metadata server on 169.254.169.254:80 in the server namespace.
    async fn start(&self, source: Arc<FakeSource>, options: MetadataOptions) -> MetadataServer {
        MetadataServer::start(
            &self.server.0,
            NETWORK,
            "169.254.169.254:80".parse().unwrap(),
            source,
            options,
        )
        .await
        .unwrap()
    }

    /// curl from guest `i`: (HTTP status, body). Extra arguments go before the URL.
    fn curl(&self, guest: usize, path: &str, extra: &[&str]) -> (u16, String) {
        let url = format!("http://169.254.169.254{path}");
        let mut args = vec![
            "netns",
            "exec",
            &self.guests[guest].0,
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = run("ip", &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// Servers 1 (guest 0: .10) and 2 (guest 1: .11); server 3 is registered at .12 with a MAC
/// no guest has.
fn source() -> Arc<FakeSource> {
    Arc::new(FakeSource::new(vec![
        server(1, 10),
        server(2, 11),
        server(3, 12),
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_in_a_namespace_get_their_own_metadata() {
    let lab = Lab::new().await;
    let metadata = lab.start(source(), MetadataOptions::default()).await;
    assert_eq!(
        metadata.local_addr(),
        "169.254.169.254:80".parse::<SocketAddr>().unwrap()
    );

    let uuid1 = server(1, 10).uuid;
    let uuid2 = server(2, 11).uuid;
    assert_eq!(
        lab.curl(0, "/latest/meta-data/instance-id", &[]),
        (200, uuid1.clone())
    );
    assert_eq!(
        lab.curl(0, "/latest/meta-data/hostname", &[]),
        (200, "web1.example.test".into())
    );
    assert_eq!(
        lab.curl(0, "/latest/meta-data/local-ipv4", &[]),
        (200, "198.51.100.10".into())
    );
    assert_eq!(
        lab.curl(0, "/latest/meta-data/public-keys/0/openssh-key", &[]),
        (200, "ssh-ed25519 AAAAalpha1 alpha@test\n".into())
    );
    assert_eq!(
        lab.curl(0, "/latest/user-data", &[]),
        (200, "#!/bin/sh\necho server-1\n".into())
    );
    let (status, body) = lab.curl(0, "/openstack/latest/meta_data.json", &[]);
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["uuid"], uuid1.as_str());

    // The other guest gets only its own data.
    assert_eq!(
        lab.curl(1, "/latest/meta-data/instance-id", &[]),
        (200, uuid2.clone())
    );
    assert_eq!(
        lab.curl(1, "/openstack/latest/user_data", &[]),
        (200, "#!/bin/sh\necho server-2\n".into())
    );

    // X-Forwarded-For changes nothing.
    assert_eq!(
        lab.curl(
            0,
            "/latest/meta-data/instance-id",
            &["-H", "X-Forwarded-For: 198.51.100.11"]
        ),
        (200, uuid1.clone())
    );
    assert_eq!(
        lab.curl(
            1,
            "/latest/meta-data/instance-id",
            &["-H", "X-Forwarded-For: 198.51.100.10"]
        ),
        (200, uuid2.clone())
    );

    // An address no port has: 404.
    ip(&[
        "-n",
        &lab.guests[0].0,
        "addr",
        "add",
        "198.51.100.99/24",
        "dev",
        "eth0",
    ]);
    assert_eq!(
        lab.curl(
            0,
            "/latest/meta-data/instance-id",
            &["--interface", "198.51.100.99"]
        ),
        (404, "No instance for 198.51.100.99".into())
    );
    // Server 3's address from a guest whose MAC is not server 3's port: 404.
    ip(&[
        "-n",
        &lab.guests[1].0,
        "addr",
        "add",
        "198.51.100.12/24",
        "dev",
        "eth0",
    ]);
    assert_eq!(
        lab.curl(
            1,
            "/openstack/latest/meta_data.json",
            &["--interface", "198.51.100.12"]
        ),
        (404, "No instance for 198.51.100.12".into())
    );

    // The neighbour table is what identified them.
    let table = Neighbours::in_namespace(&lab.server.0).await.unwrap();
    assert_eq!(
        table
            .ipv4_mac("198.51.100.10".parse().unwrap())
            .await
            .unwrap(),
        Some(mac(1))
    );
    assert_eq!(
        table
            .ipv4_mac("198.51.100.11".parse().unwrap())
            .await
            .unwrap(),
        Some(mac(2))
    );
    assert_eq!(
        table
            .ipv4_mac("198.51.100.77".parse().unwrap())
            .await
            .unwrap(),
        None
    );

    // Session tokens and the password, over real HTTP.
    let (status, token) = lab.curl(
        0,
        "/latest/api/token",
        &[
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
        ],
    );
    assert_eq!(status, 200);
    let header = format!("X-aws-ec2-metadata-token: {token}");
    assert_eq!(
        lab.curl(0, "/latest/meta-data/instance-id", &["-H", &header]),
        (200, uuid1.clone())
    );
    assert_eq!(
        lab.curl(1, "/latest/meta-data/instance-id", &["-H", &header])
            .0,
        401
    );
    assert_eq!(
        lab.curl(
            0,
            "/latest/api/token",
            &[
                "-X",
                "PUT",
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                "-H",
                "X-Forwarded-For: 1.2.3.4"
            ]
        )
        .0,
        403
    );
    assert_eq!(
        lab.curl(
            0,
            "/openstack/latest/password",
            &["--data-binary", "c2VjcmV0"]
        )
        .0,
        200
    );
    assert_eq!(
        lab.curl(0, "/openstack/latest/password", &["--data-binary", "again"])
            .0,
        409
    );
    assert_eq!(
        lab.curl(0, "/openstack/latest/password", &[]),
        (200, "c2VjcmV0".into())
    );

    // A second server on the same address is refused clearly.
    let err = MetadataServer::start(
        &lab.server.0,
        NETWORK,
        "169.254.169.254:80".parse().unwrap(),
        source(),
        MetadataOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MetadataError::AddressInUse { .. }), "{err:?}");
    // An address the namespace does not hold.
    let err = MetadataServer::start(
        &lab.server.0,
        NETWORK,
        "203.0.113.5:80".parse().unwrap(),
        source(),
        MetadataOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, MetadataError::AddressNotAvailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not configured"), "{err}");

    // Stopped: nothing listens any more, and the address is free again.
    metadata.stop().await;
    assert_eq!(lab.curl(0, "/latest/meta-data/instance-id", &[]).0, 0);
    let again = lab.start(source(), MetadataOptions::default()).await;
    assert_eq!(
        lab.curl(1, "/latest/meta-data/instance-id", &[]),
        (200, uuid2)
    );
    drop(again);
}

/// The cloud-init reader script, next to the e2e tests.
fn reader_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/cloudinit_readers.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_reads_both_trees() {
    let script = reader_script();
    assert!(script.exists(), "missing {}", script.display());
    let probe = run(
        "/usr/bin/python3",
        &["-c", "import cloudinit.sources.helpers.openstack"],
    );
    assert!(
        probe.status.success(),
        "cloud-init is not installed for /usr/bin/python3: install the Debian package `cloud-init` \
         (scripts/setup.sh does): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let lab = Lab::new().await;
    // The script crawls the EC2 tree twice (read_v2 does it too): 51 requests in well under a
    // second, just over the default burst of 50. A booting guest's cloud-init makes about 30.
    let options = MetadataOptions {
        burst: 120,
        ..MetadataOptions::default()
    };
    let metadata = lab.start(source(), options).await;
    for (guest, n, ip) in [(0usize, 1u8, 10u8), (1, 2, 11)] {
        let script = script.to_string_lossy().into_owned();
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.guests[guest].0,
                "/usr/bin/python3",
                &script,
                "http://169.254.169.254",
            ],
        );
        assert!(
            out.status.success(),
            "cloud-init readers failed for guest {guest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad summary {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let expected = server(n, ip);
        let os = &summary["openstack"];
        assert_eq!(os["instance_id"], expected.uuid.as_str(), "{summary}");
        assert_eq!(os["hostname"], expected.hostname.as_str());
        assert_eq!(os["name"], expected.name.as_str());
        assert_eq!(os["availability_zone"], "nova");
        assert_eq!(
            os["public_keys"]["alpha"],
            expected.public_keys["alpha"].as_str()
        );
        assert_eq!(
            os["public_keys"]["zeta"],
            expected.public_keys["zeta"].as_str()
        );
        assert_eq!(os["meta"]["role"], "web");
        assert_eq!(os["user_data"], format!("#!/bin/sh\necho server-{n}\n"));
        assert_eq!(os["network_data"], expected.network_data);
        assert_eq!(os["vendor_data"], expected.vendor_data);
        assert_eq!(os["vendor_data2"], serde_json::json!({}));
        assert_eq!(os["ec2_instance_id"], expected.uuid.as_str());
        let ec2 = &summary["ec2"];
        assert_eq!(ec2["instance_id"], expected.uuid.as_str());
        assert_eq!(ec2["hostname"], expected.hostname.as_str());
        assert_eq!(ec2["local_hostname"], expected.hostname.as_str());
        assert_eq!(ec2["local_ipv4"], format!("198.51.100.{ip}"));
        assert_eq!(ec2["availability_zone"], "nova");
        assert_eq!(ec2["instance_type"], "m1.small");
        // cloud-init splits multi-line leaves: the key with its newline is a one-line list.
        assert_eq!(
            ec2["public_keys"]["alpha"],
            serde_json::json!([expected.public_keys["alpha"]])
        );
        assert_eq!(
            ec2["public_keys"]["zeta"],
            serde_json::json!([expected.public_keys["zeta"]])
        );
        assert_eq!(ec2["user_data"], format!("#!/bin/sh\necho server-{n}\n"));
    }
    metadata.stop().await;
}

/// `curl` from `guest` fetching `path` `times` times in one process; one HTTP status per
/// line. With `close`, every request uses a new TCP connection.
fn curl_many(guest: &str, path: &str, times: usize, close: bool) -> Vec<u16> {
    let url = format!("http://169.254.169.254{path}");
    let mut args = vec![
        "netns",
        "exec",
        guest,
        "curl",
        "-s",
        "--max-time",
        "20",
        "-w",
        "%{http_code}\\n",
    ];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    for _ in 0..times {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = run("ip", &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_are_never_refused_for_a_failed_lookup() {
    let lab = Lab::new().await;
    let options = MetadataOptions {
        requests_per_second: MetadataOptions::MAX_RATE,
        burst: MetadataOptions::MAX_RATE,
        ..MetadataOptions::default()
    };
    let metadata = lab.start(source(), options).await;
    assert_eq!(lab.curl(0, "/", &[]).0, 200);
    assert_eq!(lab.curl(1, "/", &[]).0, 200);

    // Many lookups at once on one netlink socket: dumps are serialised and shared.
    let table = Neighbours::in_namespace(&lab.server.0).await.unwrap();
    let dumps = futures_util::future::join_all((0..32).map(|_| table.ipv4_entries())).await;
    for dump in dumps {
        assert!(
            dump.unwrap()
                .iter()
                .any(|e| e.address == "198.51.100.10".parse::<std::net::Ipv4Addr>().unwrap()),
            "guest 0 is in every dump"
        );
    }
    let since = std::time::Instant::now();
    let macs = futures_util::future::join_all((0..32).map(|i| {
        let ip = if i % 2 == 0 {
            "198.51.100.10"
        } else {
            "198.51.100.11"
        };
        table.ipv4_mac_since(ip.parse().unwrap(), since)
    }))
    .await;
    for (i, found) in macs.into_iter().enumerate() {
        let want = if i % 2 == 0 { mac(1) } else { mac(2) };
        assert_eq!(found.unwrap(), Some(want));
    }

    // Both guests, eight clients at once, half of them with a new connection per request:
    // every answer is a 200.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let guest = lab.guests[i % 2].0.clone();
            let path = if i % 4 < 2 {
                "/latest/meta-data/instance-id"
            } else {
                "/openstack/latest/meta_data.json"
            };
            tokio::task::spawn_blocking(move || curl_many(&guest, path, 40, i % 2 == 0))
        })
        .collect();
    for client in clients {
        let statuses = client.await.unwrap();
        assert_eq!(statuses.len(), 40, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    metadata.stop().await;
}
