//! Volume create benchmark: a 1 GiB volume per backend through the real volume drivers vs the
//! bare command that does the same work (the baseline), measured side by side in one run.
//!
//! * LVM (a volume group on a loop device, activation disabled): `lvcreate -L 1g -n <name>
//!   <vg>` with the argv and environment the host runs (`LC_ALL=C`, `LVM_SYSTEM_DIR`,
//!   `LVM_SUPPRESS_FD_WARNINGS=1`) vs `LoadedPlugin::volume_create` of volume-lvm through the
//!   agent's `PluginRegistry` (wasm call, grant checks, the driver's own commands).
//! * NFS (nfs-ganesha on 127.0.0.1): `qemu-img create -f raw nfs://127.0.0.1/<export>/<name>
//!   1G` (QEMU's libnfs client: no kernel mount, create + size the file) vs volume-nfs's
//!   `volume_create` in libnfs mode (a sparse raw file made by the agent's NFSv3 client).
//! * End to end: `POST /v1/volumes` on a real `hyperlet serve` until its `volume.status` event
//!   says `available` (read from `GET /v1/events`), for both backends.
//!
//! Diagnostic rows split the time: the LVM reports the driver runs before `lvcreate`, the
//! driver's `capacity_stats` (the API runs it before answering 202), the host's NFS calls
//! without the component, and one durable 4 KiB write on the state dir's file system.
//!
//! Every kind of run in a backend's set takes its turn in a rotating order, round after round,
//! so all see the same machine load; each volume is removed after it was timed (not timed).
//!
//! Run as root: `scripts/build-plugins.sh && cargo build --release -p hyperlet &&
//! cargo bench -p hyperlet-tests --bench volumes` (`HYPERLET_BENCH_ROUNDS`, default 30;
//! `HYPERLET_BENCH_ONLY=lvm` or `nfs` for one backend).

use hyperlet::config::{Config, FilesGrant};
use hyperlet::plugin::{LoadedPlugin, PluginRegistry, PluginStatus};
use hyperlet::volume::{Files, VolumeRef};
use hyperlet_tests::storage::{files_table, ganesha, require_root, sh, stanza, unique, TestVg};
use hyperlet_tests::{Agent, SseReader};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Untimed rounds before the measured ones.
const WARMUP: usize = 3;

/// One kind of timed run: creates a volume, returns the time it took, removes it (untimed).
type Run<'a> = Box<dyn FnMut() -> Duration + 'a>;

/// A runtime and a registry loaded from `toml`'s `[[plugins]]`, as the agent builds them.
fn registry(toml: &str) -> (tokio::runtime::Runtime, Arc<PluginRegistry>, Config) {
    let (runtime, registry, config) = hyperlet_tests::plugins::registry_with_config(toml);
    for view in registry.views() {
        assert_eq!(
            view.status,
            PluginStatus::Loaded,
            "{}: {:?}",
            view.name,
            view.error
        );
    }
    (runtime, registry, config)
}

/// `volume_create` on `runtime`, as the agent calls a driver; timed.
fn driver_create(
    runtime: &tokio::runtime::Runtime,
    plugin: &Arc<LoadedPlugin>,
    v: &VolumeRef,
) -> Duration {
    let t = Instant::now();
    runtime
        .block_on(plugin.volume_create(v))
        .unwrap_or_else(|e| panic!("create {}: {e}", v.name));
    t.elapsed()
}

/// `capacity_stats` on `runtime` (what `POST /v1/volumes` asks the
/// driver before it answers 202); timed.
fn driver_stats(runtime: &tokio::runtime::Runtime, plugin: &Arc<LoadedPlugin>) -> Duration {
    let t = Instant::now();
    runtime
        .block_on(plugin.capacity_stats())
        .unwrap_or_else(|e| panic!("capacity_stats: {e}"));
    t.elapsed()
}

/// One 4 KiB write and `fdatasync` of `file` (a commit of the agent's SQLite store in WAL
/// mode with `synchronous=FULL` costs about that); timed.
fn durable_write(file: &std::fs::File) -> Duration {
    use std::os::unix::fs::FileExt;
    let t = Instant::now();
    file.write_all_at(&[0x5a; 4096], 0).unwrap();
    file.sync_data().unwrap();
    t.elapsed()
}

/// Runs a command as the host runs its tools (argv, `LC_ALL=C`, stdin closed, output
/// captured); timed.
fn timed(tool: &str, args: &[&str], env: &[(&str, &Path)]) -> Duration {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .env("LC_ALL", "C")
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null());
    let t = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {tool} (scripts/setup.sh installs lvm2 and qemu-utils): {e}")
    });
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The `vgs`/`lvs` report arguments the host uses (`agent/src/volume/lvm.rs`).
fn report<'a>(fields: &'a str, vg: &'a str) -> [&'a str; 9] {
    [
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        "|",
        "-o",
        fields,
        vg,
    ]
}

// ---------------------------------------------------------------------------------------------
// The agent, end to end.

/// A real agent with one volume backend and a default volume type on it.
struct Api {
    agent: Agent,
    client: reqwest::blocking::Client,
    token: String,
    /// How long each `POST /v1/volumes` took to answer 202, in the order of the creates.
    accepted: RefCell<Vec<Duration>>,
}

impl Api {
    fn start(plugins: &str, backend: &str) -> Self {
        let agent = Agent::start_with_config(plugins);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let api = Self {
            token: agent.token(),
            agent,
            client,
            accepted: RefCell::new(Vec::new()),
        };
        let (s, t) = api.post(
            "/v1/volume-types",
            &json!({"name": backend, "backend": backend, "is_default": true}),
        );
        assert_eq!(s, 201, "{t}");
        api
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.agent.url()))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .expect("request");
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }

    /// `POST /v1/volumes` of 1 GiB until its `volume.status` event says `available`; timed.
    /// The volume is deleted afterwards (untimed).
    fn create(&self) -> Duration {
        let resp = self
            .client
            .get(format!("{}/v1/events", self.agent.url()))
            .bearer_auth(&self.token)
            .send()
            .expect("event stream");
        assert_eq!(resp.status(), 200);
        let mut events = SseReader::new(resp);
        let t = Instant::now();
        let (s, v) = self.post("/v1/volumes", &json!({"size_gb": 1}));
        assert_eq!(s, 202, "{v}\n{}", self.agent.log());
        self.accepted.borrow_mut().push(t.elapsed());
        let id = v["id"].as_str().unwrap().to_string();
        loop {
            let msg = events.next_message().expect("event stream ended");
            if msg.event.as_deref() != Some("volume.status") {
                continue;
            }
            let e: Value = serde_json::from_str(&msg.data).unwrap();
            if e["resource_id"] != id.as_str() {
                continue;
            }
            match e["data"]["status"].as_str() {
                Some("available") => break,
                Some("error") => panic!("volume {id} failed: {}", self.agent.log()),
                _ => {}
            }
        }
        let took = t.elapsed();
        let resp = self
            .client
            .delete(format!("{}/v1/volumes/{id}", self.agent.url()))
            .bearer_auth(&self.token)
            .send()
            .expect("delete");
        assert_eq!(resp.status(), 204, "delete {id}");
        took
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring and reporting.

/// The p50 and p90 of `samples`.
fn stats(samples: &[Duration]) -> (Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort();
    let p = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs every kind in `runs` `rounds` times, rotating which goes first each round; the
/// first `WARMUP` rounds are not kept.
fn measure(runs: &mut [(String, Run<'_>)], rounds: usize) -> Vec<Vec<Duration>> {
    let n = runs.len();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..WARMUP + rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let took = (runs[i].1)();
            if round >= WARMUP {
                samples[i].push(took);
            }
        }
    }
    samples
}

/// The rows of a backend's table: each run with its samples, and after the API's row (index
/// `at`) the API's time to answer 202.
fn rows(
    runs: &[(String, Run<'_>)],
    samples: Vec<Vec<Duration>>,
    api: &Api,
    at: usize,
) -> Vec<(String, Vec<Duration>)> {
    let mut rows: Vec<_> = runs.iter().map(|(l, _)| l.clone()).zip(samples).collect();
    let accepted = api.accepted.borrow()[WARMUP..].to_vec();
    let label = "↳ of which `POST /v1/volumes` → 202 (capacity check, one commit)";
    rows.insert(at + 1, (label.into(), accepted));
    rows
}

/// Prints a backend's table; row 0 is the baseline.
fn table(title: &str, rounds: usize, rows: &[(String, Vec<Duration>)]) {
    let (b50, b90) = stats(&rows[0].1);
    println!("| {title} (n={rounds}) | p50 | p90 | × bare (p50) | × bare (p90) |");
    println!("|---|---:|---:|---:|---:|");
    for (label, s) in rows {
        let (p50, p90) = stats(s);
        println!(
            "| {label} | {} | {} | {:.2}× | {:.2}× |",
            ms(p50),
            ms(p90),
            p50.as_secs_f64() / b50.as_secs_f64(),
            p90.as_secs_f64() / b90.as_secs_f64()
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// The backends.

fn lvm(rounds: usize) {
    let t = TestVg::new(8);
    let settings = |extra: &str| format!("volume_group = \"{}\"{extra}", t.vg);
    let toml = format!(
        "{}{}",
        stanza(
            "lvm",
            "volume-lvm",
            r#"["log", "lvm"]"#,
            &settings(""),
            &t.grant()
        ),
        stanza(
            "lvm-thick",
            "volume-lvm",
            r#"["log", "lvm"]"#,
            &settings(", lvm_type = \"thick\""),
            &t.grant()
        ),
    );
    let (rt, registry, _) = registry(&toml);
    let auto = registry.volume_driver("lvm").unwrap();
    let thick = registry.volume_driver("lvm-thick").unwrap();
    let api = Api::start(
        &stanza(
            "lvm",
            "volume-lvm",
            r#"["log", "lvm"]"#,
            &settings(""),
            &t.grant(),
        ),
        "lvm",
    );
    let env = t.env();
    let vg = t.vg.as_str();
    let remove = |name: &str| {
        sh("lvremove", &["-f", &format!("{vg}/{name}")], &env);
    };
    let created = |name: &str| {
        assert!(
            t.lvs()
                .iter()
                .any(|(n, size, _)| n == name && *size == 1 << 30),
            "{name} missing: {:?}",
            t.lvs()
        );
    };
    let (rt, created, remove) = (&rt, &created, &remove);
    let stats_of = auto.clone();
    let driver = |plugin: Arc<LoadedPlugin>| -> Run<'_> {
        Box::new(move || {
            let v = VolumeRef::new(unique(), 1);
            let took = driver_create(rt, &plugin, &v);
            created(&v.name);
            remove(&v.name);
            took
        })
    };
    let mut runs: Vec<(String, Run<'_>)> = vec![
        (
            "bare `lvcreate -L 1g -n volume-… <vg>` (baseline)".into(),
            Box::new(|| {
                let name = format!("volume-{}", unique());
                let took = timed("lvcreate", &["-L", "1g", "-n", &name, vg], &env);
                created(&name);
                remove(&name);
                took
            }),
        ),
        (
            "volume-lvm `volume_create` (default `lvm_type = auto`)".into(),
            driver(auto),
        ),
        (
            "volume-lvm `volume_create`, `lvm_type = thick`".into(),
            driver(thick),
        ),
        (
            "`POST /v1/volumes` → `available` (SSE), agent on the same VG".into(),
            Box::new(|| api.create()),
        ),
        (
            "*diagnosis:* volume-lvm `capacity_stats` (the API's check before its 202)".into(),
            Box::new(move || driver_stats(rt, &stats_of)),
        ),
        (
            "*diagnosis:* bare `lvs` report (the driver's thin-pool probe)".into(),
            Box::new(|| {
                timed(
                    "lvs",
                    &report("lv_name,lv_size,segtype,data_percent", vg),
                    &env,
                )
            }),
        ),
        (
            "*diagnosis:* bare `vgs` report (the driver's free-space check)".into(),
            Box::new(|| timed("vgs", &report("vg_size,vg_free,lv_count", vg), &env)),
        ),
    ];
    let samples = measure(&mut runs, rounds);
    let rows = rows(&runs, samples, &api, 3);
    table("LVM: create a 1 GiB volume", rounds, &rows);
    drop(runs);
    assert!(t.lvs().is_empty(), "left behind: {:?}", t.lvs());
}

fn nfs(rounds: usize) {
    let server = ganesha();
    let (dir, share) = (server.a.clone(), server.share_a());
    let toml = stanza(
        "nfs",
        "volume-nfs",
        r#"["log", "files", "qemu-img"]"#,
        &format!("nfs_shares = \"{share}\""),
        &files_table(std::slice::from_ref(&share), "libnfs", None),
    );
    let (rt, registry, config) = registry(&toml);
    let plugin = registry.volume_driver("nfs").unwrap();
    let grant: FilesGrant = config.plugins[0].files.clone().unwrap();
    let files = Files::new(&grant).unwrap();
    let api = Api::start(&toml, "nfs");
    let remove = |name: &str| {
        rt.block_on(files.remove(&share, name))
            .unwrap_or_else(|e| panic!("remove {name}: {e}"));
    };
    let created = |name: &str| {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.len(), 1 << 30, "{name}");
    };
    let state_file = tempfile::tempfile().unwrap();
    let url = |name: &str| format!("nfs://127.0.0.1{}/{name}", dir.display());
    let mut runs: Vec<(String, Run<'_>)> = vec![
        (
            "bare `qemu-img create -f raw nfs://127.0.0.1/<export>/volume-… 1G` (baseline)"
                .into(),
            Box::new(|| {
                let name = format!("volume-{}", unique());
                let took = timed("qemu-img", &["create", "-f", "raw", &url(&name), "1G"], &[]);
                created(&name);
                remove(&name);
                took
            }),
        ),
        (
            "volume-nfs `volume_create` (libnfs, sparse raw)".into(),
            Box::new(|| {
                let v = VolumeRef::new(unique(), 1);
                let took = driver_create(&rt, &plugin, &v);
                created(&v.name);
                remove(&v.name);
                took
            }),
        ),
        (
            "`POST /v1/volumes` → `available` (SSE), agent on the same share".into(),
            Box::new(|| api.create()),
        ),
        (
            "*diagnosis:* volume-nfs `capacity_stats` (the API's check before its 202)".into(),
            Box::new(|| driver_stats(&rt, &plugin)),
        ),
        (
            "*diagnosis:* 4 KiB write + `fdatasync` in the state dir's file system (9 per API create)"
                .into(),
            Box::new(|| durable_write(&state_file)),
        ),
        (
            "*diagnosis:* host `Files::share_info` alone (the driver's room check)".into(),
            Box::new(|| {
                let t = Instant::now();
                rt.block_on(files.share_info(&share)).unwrap();
                t.elapsed()
            }),
        ),
        (
            "*diagnosis:* host `Files::create_sparse` alone (no component)".into(),
            Box::new(|| {
                let name = format!("volume-{}", unique());
                let t = Instant::now();
                rt.block_on(files.create_sparse(&share, &name, 1 << 30))
                    .unwrap();
                let took = t.elapsed();
                created(&name);
                remove(&name);
                took
            }),
        ),
    ];
    let samples = measure(&mut runs, rounds);
    let rows = rows(&runs, samples, &api, 2);
    table("NFS: create a 1 GiB volume", rounds, &rows);
    drop(runs);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

fn main() {
    require_root();
    let rounds: usize = std::env::var("HYPERLET_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("HYPERLET_BENCH_ROUNDS is a number"))
        .unwrap_or(30);
    assert!(rounds > 0, "HYPERLET_BENCH_ROUNDS must be at least 1");
    let only = std::env::var("HYPERLET_BENCH_ONLY").unwrap_or_default();
    assert!(
        ["", "lvm", "nfs"].contains(&only.as_str()),
        "HYPERLET_BENCH_ONLY is lvm or nfs, not {only:?}"
    );
    if only.is_empty() || only == "lvm" {
        lvm(rounds);
    }
    if only.is_empty() || only == "nfs" {
        nfs(rounds);
    }
}
