//! The metadata service under load: the agent's [`MetadataServer`] against nginx serving the
//! same response bodies as static files, in the same network namespace, driven by the same
//! `wrk` from a "guest" namespace. The baseline is measured in the same run, alternating.
//!
//! Topology (names unique per run; everything is removed at the end and on failure by Drop
//! guards, nginx stopped by its PID):
//!
//! ```text
//!  client namespace                       server namespace (plays qdhcp-<net>)
//!  eth0 198.51.100.10/24  <── veth ──>   mdb0 198.51.100.2/24 + 169.254.169.254/32
//!       fa:16:3e:00:be:0a                 hyperlet MetadataServer  169.254.169.254:80
//!  route 169.254.169.254 via .2           nginx (2 workers)        169.254.169.254:8080
//! ```
//!
//! The agent identifies the caller as in production: TCP source address, the MAC the server
//! namespace's neighbour table holds for it, then [`MetadataSource::identify`] (a static
//! source here), then it renders the tree. The rate limits are raised to
//! [`MetadataOptions::MAX_RATE`] so that they never answer 429 under load.
//!
//! CPU budget: the agent runs on a tokio multi-thread runtime with 2 worker threads (what the
//! daemon gets on a 2-core host), nginx with `worker_processes 2`. `wrk` shares the same cores.
//!
//! Two loads per server and path, one after the other, in rounds that alternate the servers'
//! order:
//!
//! * throughput: `wrk -t2 -c16` saturates the server; the target is the agent's successful
//!   requests/s relative to nginx's (≥ 0.8×). The p99 under this load is printed too, but it
//!   measures how long wrk's and the server's threads wait for one of the 2 shared cores, for
//!   nginx as much as for the agent;
//! * one guest: `wrk -t1 -c1`, one connection asking one request at a time, which is how
//!   cloud-init reads the service; the target is the agent's p99 (≤ 2 ms, worst round).
//!
//! nginx's documents are the agent's own answers, fetched with curl from the client namespace
//! before the measurement; nginx must then serve them byte for byte. (`meta_data.json` carries
//! a fresh 512-byte `random_seed` per request from the agent, so nginx serves one such
//! answer: same size, same shape.)
//!
//! `cargo bench -p hyperlet --bench metadata` (as root; needs `nginx`, `wrk`, `curl`, `ip`)
//! prints Markdown tables. Environment: `HYPERLET_BENCH_DURATION` (wrk `-d` of each run,
//! default `5s`), `HYPERLET_BENCH_CONNECTIONS` (of the throughput load, default 16),
//! `HYPERLET_BENCH_ROUNDS` (default 4), `HYPERLET_BENCH_DIAGNOSE=1` (also measure the
//! throughput of the agent's application through axum with the MAC given, and axum + hyper
//! serving the bodies from memory: see `metadata/diagnose.rs`), `RUST_LOG` (e.g. `info`: the
//! agent's own log on stderr).

#[path = "metadata/diagnose.rs"]
mod diagnose;
#[path = "metadata/instance.rs"]
mod instance;
#[path = "metadata/nginx.rs"]
mod nginx;
#[path = "metadata/procs.rs"]
mod procs;
#[path = "metadata/report.rs"]
mod report;
#[path = "metadata/wrk.rs"]
mod wrk;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hyperlet::metadata::{MetadataOptions, MetadataServer, MetadataSource};
use hyperlet::net::links::Netlink;

use nginx::Nginx;
use procs::{curl_to, ip, make_readable, require, run_within, NsGuard};
use wrk::Load;

/// The network id the server answers for.
const NETWORK: &str = "7d3f5a10-2b6c-4e8f-9a01-b3c4d5e6f708";
/// The metadata address (the agent on port 80, nginx on [`NGINX_PORT`]).
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// nginx's port on the metadata address.
const NGINX_PORT: u16 = 8080;
/// Ports of the diagnostic servers.
const APP_PORT: u16 = 8081;
const STATIC_PORT: u16 = 8082;
/// The server side of the veth (the DHCP port's address).
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The guest's address.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The guest's MAC (neutron's `fa:16:3e` prefix).
const CLIENT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0xbe, 0x0a];
/// Worker threads of the agent's runtime and worker processes of nginx.
const WORKERS: usize = 2;
/// wrk threads.
const WRK_THREADS: usize = 2;
/// The paths measured: a short EC2 value, OpenStack's main document, and raw user data.
const PATHS: [&str; 3] = [
    "/latest/meta-data/instance-id",
    "/openstack/latest/meta_data.json",
    "/openstack/latest/user_data",
];
/// Warm-up load on each server and path before the first measurement.
const WARMUP: &str = "2s";
/// The issue's targets: requests/s relative to nginx, and p99.
const TARGET_RATIO: f64 = 0.8;
const TARGET_P99: Duration = Duration::from_millis(2);

/// The servers measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// The agent's [`MetadataServer`].
    Agent,
    /// The baseline.
    Nginx,
    /// Diagnostic: the agent's application through the axum router, with the MAC given.
    AppWithoutNeighbours,
    /// Diagnostic: axum + hyper with the bodies in memory.
    StaticAxum,
}

impl Server {
    const DIAGNOSTIC: [Server; 2] = [Server::AppWithoutNeighbours, Server::StaticAxum];

    fn url(self, path: &str) -> String {
        let port = match self {
            Server::Agent => 80,
            Server::Nginx => NGINX_PORT,
            Server::AppWithoutNeighbours => APP_PORT,
            Server::StaticAxum => STATIC_PORT,
        };
        format!("http://{METADATA_IP}:{port}{path}")
    }

    fn label(self) -> &'static str {
        match self {
            Server::Agent => "hyperlet `MetadataServer`",
            Server::Nginx => "nginx (baseline)",
            Server::AppWithoutNeighbours => "hyperlet app via the axum router, MAC given",
            Server::StaticAxum => "axum + hyper, bodies from memory",
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the veth between the two namespaces, the addresses and the guest's route.
async fn build_topology(server: &str, client: &str) {
    let srv = Netlink::in_namespace(server)
        .await
        .expect("netlink in the server namespace");
    srv.create_veth("mdb0", "eth0", Some(client))
        .await
        .expect("create the veth");
    srv.add_ipv4("mdb0", SERVER_IP, 24)
        .await
        .expect("add 198.51.100.2/24");
    srv.add_ipv4("mdb0", METADATA_IP, 32)
        .await
        .expect("add 169.254.169.254/32");
    srv.set_up("mdb0").await.expect("mdb0 up");
    srv.set_up("lo").await.expect("lo up");
    let cli = Netlink::in_namespace(client)
        .await
        .expect("netlink in the client namespace");
    cli.set_mac("eth0", CLIENT_MAC)
        .await
        .expect("set the guest's MAC on eth0");
    cli.add_ipv4("eth0", CLIENT_IP, 24)
        .await
        .expect("add 198.51.100.10/24");
    cli.set_up("eth0").await.expect("eth0 up");
    cli.set_up("lo").await.expect("lo up");
    ip(&[
        "-n",
        client,
        "route",
        "add",
        &format!("{METADATA_IP}/32"),
        "via",
        &SERVER_IP.to_string(),
    ]);
}

/// Fetches every measured path from the agent into `dir/docs` (nginx's root), waits for nginx,
/// and checks that nginx serves the same bytes and the agent keeps the same sizes.
fn mirror_documents(client: &str, dir: &Path, nginx: &mut Nginx) {
    let docs = dir.join("docs");
    for path in PATHS {
        let file = docs.join(path.trim_start_matches('/'));
        let status = curl_to(client, &Server::Agent.url(path), &file, 5);
        assert_eq!(status, 200, "the agent answered {status} for {path}");
    }
    // nginx's workers run unprivileged; curl makes directories 0750.
    make_readable(dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = dir.join("probe");
    loop {
        nginx.check_alive();
        if curl_to(client, &Server::Nginx.url(PATHS[0]), &probe, 1) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not answer within 10 s; its error log:\n{}",
            nginx.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    for path in PATHS {
        let want = fs::read(docs.join(path.trim_start_matches('/'))).expect("mirrored body");
        let status = curl_to(client, &Server::Nginx.url(path), &probe, 5);
        assert_eq!(status, 200, "nginx answered {status} for {path}");
        assert_eq!(
            fs::read(&probe).expect("nginx body"),
            want,
            "nginx's body for {path}"
        );
        let status = curl_to(client, &Server::Agent.url(path), &probe, 5);
        assert_eq!(status, 200, "the agent answered {status} for {path}");
        let got = fs::read(&probe).expect("agent body").len();
        assert_eq!(got, want.len(), "the agent's body for {path} changed size");
    }
}

fn main() {
    wrk::self_check();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    require("ip", "-V", "iproute2");
    require("curl", "--version", "curl");
    require("wrk", "-v", "wrk");
    require("nginx", "-v", "nginx");
    let nginx_version = {
        let mut cmd = Command::new("nginx");
        cmd.arg("-v");
        let ran = run_within(cmd, Duration::from_secs(5));
        ran.stderr
            .trim()
            .trim_start_matches("nginx version: ")
            .replace('/', " ")
    };
    let duration = env_or("HYPERLET_BENCH_DURATION", "5s".to_owned());
    let saturation = Load {
        duration: duration.clone(),
        threads: WRK_THREADS,
        connections: env_or("HYPERLET_BENCH_CONNECTIONS", 16usize).max(1),
    };
    let one_guest = Load {
        duration,
        threads: 1,
        connections: 1,
    };
    let rounds = env_or("HYPERLET_BENCH_ROUNDS", 4usize).max(1);
    let diagnose = env_or("HYPERLET_BENCH_DIAGNOSE", 0u8) == 1;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Declared first, dropped last: the namespaces outlive everything running in them.
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let server_ns = NsGuard::create("s", &tag);
    let client_ns = NsGuard::create("c", &tag);
    let dir = tempfile::Builder::new()
        .prefix("hyperlet-bench-metadata")
        .tempdir()
        .expect("temporary directory");

    runtime.block_on(build_topology(&server_ns.0, &client_ns.0));
    let options = MetadataOptions {
        require_tokens: false,
        requests_per_second: MetadataOptions::MAX_RATE,
        burst: MetadataOptions::MAX_RATE,
    };
    let source: Arc<dyn MetadataSource> =
        Arc::new(instance::OneInstance(Arc::new(instance::instance())));
    let agent = runtime
        .block_on(MetadataServer::start(
            &server_ns.0,
            NETWORK,
            SocketAddr::from((METADATA_IP, 80)),
            source.clone(),
            options,
        ))
        .expect("start the metadata server");
    let mut nginx = Nginx::start(&server_ns.0, dir.path());
    mirror_documents(&client_ns.0, dir.path(), &mut nginx);
    let docs = dir.path().join("docs");
    let mut servers = vec![Server::Agent, Server::Nginx];
    if diagnose {
        diagnose::start_app_without_neighbours(
            &runtime,
            &server_ns.0,
            APP_PORT,
            source.clone(),
            options,
        );
        diagnose::start_static(&runtime, &server_ns.0, STATIC_PORT, &docs);
        servers.extend(Server::DIAGNOSTIC);
    }

    for server in &servers {
        for path in PATHS {
            wrk::run(&client_ns.0, &server.url(path), WARMUP, &saturation);
        }
    }
    let mut throughput = report::Results::new();
    let mut latency = report::Results::new();
    for round in 0..rounds {
        for (i, path) in PATHS.iter().enumerate() {
            // Alternate the order from round to round so no server always goes first.
            let mut order = servers.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for server in order {
                for (load, results) in [(&saturation, &mut throughput), (&one_guest, &mut latency)]
                {
                    if load.connections == 1 && Server::DIAGNOSTIC.contains(&server) {
                        continue; // the diagnostic servers split throughput only
                    }
                    nginx.check_alive();
                    let m = wrk::run(&client_ns.0, &server.url(path), &load.duration, load);
                    report::progress(round, path, server, load, &m);
                    results.entry((i, server)).or_default().push(m);
                }
            }
        }
    }

    report::print(
        &throughput,
        &latency,
        &saturation,
        &one_guest,
        rounds,
        &nginx_version,
    );
    let sizes: Vec<String> = PATHS
        .iter()
        .map(|p| {
            let len = fs::metadata(docs.join(p.trim_start_matches('/')))
                .map(|m| m.len())
                .unwrap_or(0);
            format!("`{p}` {len} B")
        })
        .collect();
    println!();
    println!("Response bodies: {}.", sizes.join(", "));
    drop(nginx);
    runtime.block_on(agent.stop());
}
