//! Fleet scale benchmark (issue #13): a simulator registers N simulated nodes through the
//! agent's own registry code (`fleet::registry::Registration`, shared clients) against one
//! local etcd, holds them, then measures placement over all of them.
//!
//! Reported: time to register all N; over the hold (default 60 s) the keep-alives confirmed,
//! link failures, leases expired (liveness keys missing at the end) and etcd's CPU; `fleet
//! place` over all N (read every placement entry and the live names + the first-party wasm
//! chain) against its baseline measured in the same run, reading every full record and
//! liveness key as `fleet nodes` does; failure detection (a node stopped
//! without revoking: time until etcd deletes its liveness key) against the TTL.
//!
//! `cargo bench -p hyperlet-tests --bench fleet` (`HYPERLET_BENCH_NODES`, default 10000;
//! `HYPERLET_BENCH_HOLD_SECS`, default 60). Needs etcd (scripts/setup.sh) and the plugins
//! (scripts/build-plugins.sh).

use hyperlet::config::FleetConfig;
use hyperlet::fleet::etcd::Etcd;
use hyperlet::fleet::keys::Keys;
use hyperlet::fleet::link::{FleetLink, LinkState};
use hyperlet::fleet::place;
use hyperlet::fleet::record::{Capabilities, NodeRecord};
use hyperlet::fleet::registry::{Connection, RecordFuture, RecordSource, Registration};
use hyperlet::fleet::view::Fleet;
use hyperlet::plugin::{PluginEngine, PluginRegistry};
use hyperlet::sched::{HostState, RequestSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TTL: i64 = 15;
const CLIENTS: usize = 8;
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A simulated node's record: varied capacity, fixed otherwise.
struct Simulated {
    record: NodeRecord,
}

impl Simulated {
    fn new(i: usize) -> Self {
        let name = format!("sim-{i:05}");
        let ram = 65_536 + (i as u64 % 16) * 16_384;
        Self {
            record: NodeRecord {
                name: name.clone(),
                node_id: uuid::Uuid::new_v4().to_string(),
                region: "RegionOne".into(),
                availability_zone: format!("az{}", i % 4),
                api_url: format!(
                    "https://10.{}.{}.{}:8787",
                    i / 65_536,
                    (i / 256) % 256,
                    i % 256
                ),
                tunnel_ip: format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256),
                libvirt_uri: None,
                version: "0.1.0".into(),
                enabled: !i.is_multiple_of(50),
                disabled_reason: None,
                capabilities: Capabilities {
                    domain_type: "kvm".into(),
                    network_types: vec!["local".into(), "vxlan".into()],
                    network_backends: vec!["linuxbridge".into()],
                    volume_backends: vec!["lvm".into()],
                },
                capacity: HostState {
                    name,
                    enabled: true,
                    heartbeat_age_s: 0,
                    vcpus_total: 64,
                    vcpus_used: (i % 64) as u32,
                    ram_total_mb: ram,
                    ram_used_mb: (i as u64 * 977) % ram,
                    ram_free_mb: ram / 2,
                    disk_total_gb: 2_000,
                    disk_used_gb: (i as u64 * 13) % 2_000,
                    volume_free_gb: 0,
                    cpu_allocation_ratio: 4.0,
                    ram_allocation_ratio: 1.0,
                    disk_allocation_ratio: 1.0,
                    availability_zone: format!("az{}", i % 4),
                    hypervisor_type: "qemu".into(),
                    architecture: "x86_64".into(),
                    vm_mode: "hvm".into(),
                    traits: Vec::new(),
                    metadata: Default::default(),
                },
                servers: (i % 30) as u32,
                started_at: "2026-12-03T00:00:00Z".into(),
                updated_at: String::new(),
            },
        }
    }
}

impl RecordSource for Simulated {
    fn record(&self) -> RecordFuture<'_> {
        let record = self.record.clone();
        Box::pin(async move { Ok(record) })
    }
}

async fn chain(cache: &std::path::Path) -> Arc<PluginRegistry> {
    let configs = hyperlet_tests::plugins::scheduler_configs();
    let registry = PluginRegistry::load(
        PluginEngine::new().expect("engine"),
        cache.to_path_buf(),
        &configs,
        10,
    )
    .await;
    for view in registry.views() {
        assert!(view.error.is_none(), "{}: {:?}", view.name, view.error);
    }
    Arc::new(registry)
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64;
    ticks as f64 / hz
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let n = env_or("HYPERLET_BENCH_NODES", 10_000) as usize;
    let hold = Duration::from_secs(env_or("HYPERLET_BENCH_HOLD_SECS", 60));
    let etcd = hyperlet_tests::etcd::Etcd::start();
    let etcd_pid = etcd.pid().expect("etcd pid");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let config = FleetConfig {
            endpoints: vec![etcd.endpoint()],
            lease_ttl_secs: TTL as u64,
            call_timeout_secs: 10,
            ..FleetConfig::default()
        };
        let keys = Keys::new(&config.prefix);
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Etcd::connect(&config).await.expect("connect"));
        }
        let stop = CancellationToken::new();
        let mut links = Vec::new();
        let mut tasks = Vec::new();
        let started = Instant::now();
        for i in 0..n {
            let link = Arc::new(FleetLink::standalone());
            let source = Simulated::new(i);
            link.begin(&source.record.name, &config.endpoints, &source.record.api_url, &source.record.tunnel_ip);
            let registration = Registration {
                connection: Connection::Shared(Box::new(clients[i % CLIENTS].clone())),
                keys: keys.clone(),
                name: source.record.name.clone(),
                node_id: source.record.node_id.clone(),
                ttl: TTL,
                link: link.clone(),
                source: Arc::new(source),
                changed: Arc::new(tokio::sync::Notify::new()),
            };
            links.push(link);
            // Each its own stop: one is stopped without revoking below.
            let own = stop.child_token();
            tasks.push((tokio::spawn(registration.run(own.clone())), own));
        }
        loop {
            let up = links.iter().filter(|l| l.state() == LinkState::Up).count();
            if up == n {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "{up}/{n} registered after 10 min");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let registered = started.elapsed();
        println!("registered {n} nodes (TTL {TTL} s) in {:.1} s", registered.as_secs_f64());

        let keepalives = |links: &[Arc<FleetLink>]| links.iter().map(|l| l.keepalives()).sum::<u64>();
        let failures = |links: &[Arc<FleetLink>]| links.iter().map(|l| l.failures()).sum::<u64>();
        let (k0, f0, cpu0) = (keepalives(&links), failures(&links), cpu_seconds(etcd_pid));
        tokio::time::sleep(hold).await;
        let (k1, f1, cpu1) = (keepalives(&links), failures(&links), cpu_seconds(etcd_pid));
        let expected = n as f64 * hold.as_secs_f64() / (TTL as f64 / 3.0);
        let fleet = Fleet::with(clients[0].clone(), keys.clone());
        let nodes = fleet.nodes(false).await.expect("nodes");
        let up = nodes.iter().filter(|n| n.state == hyperlet::fleet::view::NodeState::Up).count();
        println!(
            "hold {} s: {} keep-alives confirmed ({:.1}% of one per TTL/3 per node), {} link failures, \
             {} leases expired, etcd CPU {:.1}% of one core",
            hold.as_secs(),
            k1 - k0,
            100.0 * (k1 - k0) as f64 / expected,
            f1 - f0,
            n - up,
            100.0 * (cpu1 - cpu0) / hold.as_secs_f64()
        );

        let cache = tempfile::tempdir().expect("tempdir");
        let registry = chain(cache.path()).await;
        let spec = RequestSpec { vcpus: 2, ram_mb: 4096, disk_gb: 20, ..RequestSpec::default() };
        let (mut reads, mut chains, mut places, mut records) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut passed = 0;
        for _ in 0..20 {
            // The comparison: every full record and liveness key (`fleet nodes`).
            let t = Instant::now();
            let all = fleet.nodes(false).await.expect("nodes");
            records.push(t.elapsed());
            assert_eq!(all.len(), n);
            let t = Instant::now();
            let nodes = fleet.placement().await.expect("placement");
            let read = t.elapsed();
            let t = Instant::now();
            let evaluation = place::rank_with(registry.clone(), spec.clone(), &nodes)
                .await
                .expect("rank");
            let chain = t.elapsed();
            passed = evaluation.hosts.iter().filter(|h| h.passed).count();
            reads.push(read);
            chains.push(chain);
            places.push(read + chain);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "fleet place over {n} nodes: {:.1} ms p50 = reading the placement entries and live \
             names {:.1} ms p50 + the wasm chain {:.1} ms p50; {passed} passed. Baseline, same \
             run: reading every full record and liveness key (`fleet nodes`) {:.1} ms p50",
            ms(p50(places)),
            ms(p50(reads)),
            ms(p50(chains)),
            ms(p50(records))
        );

        // Failure detection: node 0 stops without revoking (as kill -9).
        let (task, _) = tasks.remove(0);
        task.abort();
        let gone = Instant::now();
        let key = keys.alive("sim-00000");
        while clients[0].get(&key).await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "failure detection: the liveness key went {:.2} s after the node stopped (TTL {TTL} s)",
            gone.elapsed().as_secs_f64()
        );
        stop.cancel();
        for (task, _) in tasks {
            let _ = task.await;
        }
    });
}
