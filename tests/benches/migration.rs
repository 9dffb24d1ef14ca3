//! Live migration benchmark (issue #14): a 256 MiB TCG guest moved between two sandboxed
//! fleet nodes through hyperlet (`{"live_migrate": …}`) vs the same kind of domain moved by
//! hand between the same two libvirtds with `virsh migrate --live --p2p --copy-storage-inc`
//! (the baseline), taking turns, in one run.
//!
//! The baseline domain is rendered by the agent's own `DomainSpec` (same devices, memory,
//! kernel and initramfs of the test guest, a 1 GiB qcow2 overlay over the same base image)
//! but defined, started and migrated with virsh alone; its overlay on the other node is
//! created by hand before each move, as libvirt needs. Both copy the root overlay (NBD) and
//! the memory over the fabric.
//!
//! Reported per direction: total time (hyperlet: from the POST until the source answers 301
//! and the destination shows the server ACTIVE; baseline: the `virsh migrate` call), libvirt's
//! own job time and the guest's downtime (`virsh domjobinfo --completed` on the destination).
//!
//! Run as root: `cargo build --release -p hyperlet && cargo bench -p hyperlet-tests --bench
//! migration` (`HYPERLET_BENCH_ROUNDS`, default 5).

use hyperlet::compute::{
    Boot, Disk, DiskSource, DomainMetadata, DomainSpec, DomainType, PciAddresses, Smbios,
};
use hyperlet_tests::fleet::{Fabric, FleetNode};
use hyperlet_tests::node::PrivateLibvirt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RAM_MB: u64 = 256;

/// One migration's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Wall time, as the caller sees it.
    total: Duration,
    /// libvirt's job time.
    job_ms: u64,
    /// The guest's pause.
    downtime_ms: u64,
}

fn rounds() -> usize {
    std::env::var("HYPERLET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn must(ok_out: (bool, String), what: &str) -> String {
    assert!(ok_out.0, "{what}: {}", ok_out.1);
    ok_out.1
}

/// `Total downtime` and `Time elapsed` of the last migration of `domain` into `node`.
fn completed(node: &FleetNode, domain: &str) -> (u64, u64) {
    let out = must(
        node.libvirt.virsh(&["domjobinfo", "--completed", domain]),
        "domjobinfo",
    );
    let ms = |label: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in: {out}"))
    };
    (ms("Time elapsed:"), ms("Total downtime:"))
}

fn wait_console(path: &Path, needle: &str) {
    hyperlet_tests::guest::wait_for_console(path, needle, Duration::from_secs(300));
}

/// A server on `node` through the agent: (id, domain).
fn server(node: &FleetNode) -> (String, String) {
    let guest = hyperlet_tests::guest::test_guest();
    let agent = &node.agent;
    let (s, kernel) = agent.import_image("kernel", "aki", "aki", json!({}), &guest.kernel);
    assert_eq!(s, 200, "{kernel}");
    let (s, ramdisk) = agent.import_image("ramdisk", "ari", "ari", json!({}), &guest.initrd);
    assert_eq!(s, 200, "{ramdisk}");
    let props = json!({"kernel_id": kernel["id"], "ramdisk_id": ramdisk["id"],
                       "os_command_line": "console=ttyS0"});
    let (s, root) = agent.import_image("tiny", "qcow2", "bare", props, &guest.root_qcow2);
    assert_eq!(s, 200, "{root}");
    let resp = agent.send(
        reqwest::Method::POST,
        "/v1/servers",
        Some(&json!({"name": "bench", "image_id": root["id"],
                     "flavor": {"vcpus": 1, "ram_mb": RAM_MB, "disk_gb": 1}})),
    );
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().expect("server");
    let id = body["id"].as_str().expect("id").to_string();
    let server = agent.wait_server(&id, "ACTIVE", Duration::from_secs(300));
    agent.wait_console(&id, "HYPERLET-GUEST: booted", 1, Duration::from_secs(300));
    (
        id,
        server["domain_name"].as_str().expect("domain").to_string(),
    )
}

/// Moves the server from `from` to `to` through hyperlet.
fn through_hyperlet(from: &FleetNode, to: &FleetNode, id: &str, domain: &str) -> Figures {
    let started = Instant::now();
    let resp = from.agent.send(
        reqwest::Method::POST,
        &format!("/v1/servers/{id}/action"),
        Some(&json!({"live_migrate": {"host": to.name}})),
    );
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text());
    let client = from.agent.client();
    loop {
        let resp = client
            .get(format!("{}/v1/servers/{id}", from.agent.url()))
            .bearer_auth(from.agent.token())
            .send()
            .expect("GET");
        if resp.status().as_u16() == 301 {
            let there = to.agent.get_json(&format!("/v1/servers/{id}"));
            if there["status"] == "ACTIVE" && there["task_state"].is_null() {
                break;
            }
        } else {
            let server: Value = resp.json().unwrap_or_default();
            assert!(server["fault"].is_null(), "the migration failed: {server}");
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no move");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = started.elapsed();
    let (job_ms, downtime_ms) = completed(to, domain);
    Figures {
        total,
        job_ms,
        downtime_ms,
    }
}

/// The baseline domain's definition on a node: its files in `dir`.
fn bare_xml(dir: &Path, uuid: &str) -> String {
    let guest = hyperlet_tests::guest::test_guest();
    DomainSpec {
        name: "bench-bare".into(),
        uuid: uuid.into(),
        domain_type: DomainType::Qemu,
        memory_mib: RAM_MB,
        vcpus: 1,
        boot: Boot::Kernel {
            kernel: guest.kernel.clone(),
            initrd: Some(guest.initrd.clone()),
            cmdline: "console=ttyS0".into(),
        },
        smbios: Smbios::nova(uuid),
        disks: vec![Disk {
            target: "vda".into(),
            source: DiskSource::File {
                path: dir.join("root.qcow2"),
                format: "qcow2".into(),
            },
            serial: None,
            read_only: false,
        }],
        nics: Vec::new(),
        console_log: dir.join("console.log"),
        vnc: true,
        metadata: DomainMetadata {
            node_id: "bench-baseline".into(),
            server_id: uuid.into(),
            server_name: "bench-bare".into(),
            spec_json: "{}".into(),
        },
        addresses: PciAddresses::default(),
    }
    .to_xml()
}

/// A fresh 1 GiB overlay over the test guest's base image in `dir`.
fn overlay(dir: &Path) {
    let base = hyperlet_tests::guest::test_guest().root_qcow2;
    let root = dir.join("root.qcow2");
    let _ = std::fs::remove_file(&root);
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&root)
        .arg("1G")
        .output()
        .expect("qemu-img (scripts/setup.sh installs qemu-utils)");
    assert!(out.status.success(), "{out:?}");
}

/// Moves the baseline domain from `from` to `to` with virsh alone.
fn by_hand(from: &FleetNode, to: &FleetNode, to_dir: &Path, uuid: &str) -> Figures {
    overlay(to_dir);
    let xml_path = to_dir.join("dest.xml");
    std::fs::write(&xml_path, bare_xml(to_dir, uuid)).expect("dest xml");
    let xml = xml_path.display().to_string();
    let dest_uri = PrivateLibvirt::tcp_uri(&to.ip);
    let data_uri = format!("tcp://{}", to.ip);
    let started = Instant::now();
    must(
        from.libvirt.virsh(&[
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--copy-storage-inc",
            "--auto-converge",
            "--migrate-disks",
            "vda",
            "--xml",
            &xml,
            "--persistent-xml",
            &xml,
            "--migrateuri",
            &data_uri,
            "bench-bare",
            &dest_uri,
        ]),
        "virsh migrate",
    );
    let total = started.elapsed();
    let (job_ms, downtime_ms) = completed(to, "bench-bare");
    Figures {
        total,
        job_ms,
        downtime_ms,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(name: &str, runs: &[Figures]) -> f64 {
    let total = median(
        runs.iter()
            .map(|f| f.total.as_secs_f64() * 1000.0)
            .collect(),
    );
    let job = median(runs.iter().map(|f| f.job_ms as f64).collect());
    let down = median(runs.iter().map(|f| f.downtime_ms as f64).collect());
    let worst_down = runs.iter().map(|f| f.downtime_ms).max().unwrap_or(0);
    println!(
        "| {name} | {total:.0} ms | {job:.0} ms | {down:.0} ms (max {worst_down} ms) | {} |",
        runs.len()
    );
    total
}

fn main() {
    hyperlet_tests::storage::require_root();
    let _vm = hyperlet_tests::vm_shared();
    let fabric = Fabric::new();
    let a = fabric.node("bench-a", 1, "");
    let b = fabric.node("bench-b", 2, "");
    let (id, domain) = server(&a);

    // The baseline: defined and started on A by hand.
    let work = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|n| work.path().join(n)).collect();
    for d in &dirs {
        std::fs::create_dir(d).expect("dir");
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    overlay(&dirs[0]);
    let xml = dirs[0].join("domain.xml");
    std::fs::write(&xml, bare_xml(&dirs[0], &uuid)).expect("xml");
    must(
        a.libvirt.virsh(&["define", xml.to_str().unwrap()]),
        "define",
    );
    must(a.libvirt.virsh(&["start", "bench-bare"]), "start");
    wait_console(&dirs[0].join("console.log"), "HYPERLET-GUEST: booted");

    let n = rounds();
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..n {
        // Alternate who goes first so both see the same machine load.
        let pairs = [(&a, &b, &dirs[1]), (&b, &a, &dirs[0])];
        for (from, to, to_dir) in pairs {
            if round % 2 == 0 {
                ours.push(through_hyperlet(from, to, &id, &domain));
                bare.push(by_hand(from, to, to_dir, &uuid));
            } else {
                bare.push(by_hand(from, to, to_dir, &uuid));
                ours.push(through_hyperlet(from, to, &id, &domain));
            }
        }
        eprintln!("round {}/{n} done", round + 1);
    }
    let max_downtime = hyperlet::config::MigrationConfig::default().max_downtime_ms;
    println!(
        "\n| 256 MiB TCG guest, A ⇄ B | total (median) | libvirt job | downtime (median) | moves |"
    );
    println!("|---|---|---|---|---|");
    let t_ours = report("hyperlet `live_migrate`", &ours);
    let t_bare = report(
        "`virsh migrate --live --p2p --copy-storage-inc` (baseline)",
        &bare,
    );
    println!(
        "\nhyperlet / baseline total: {:.2}× (target ≤ 1.2×); hyperlet's worst downtime {} ms \
         (limit [migration] max_downtime_ms = {max_downtime} ms)",
        t_ours / t_bare,
        ours.iter().map(|f| f.downtime_ms).max().unwrap_or(0)
    );
    let _ = a.libvirt.virsh(&["destroy", "bench-bare"]);
    let _ = b.libvirt.virsh(&["destroy", "bench-bare"]);
    let _ = a.libvirt.virsh(&["undefine", "bench-bare"]);
    let _ = b.libvirt.virsh(&["undefine", "bench-bare"]);
}
