//! Overlay creation: native [`hyperlet::image::qcow2::create_overlay`] against
//! `qemu-img create -f qcow2 -b <base> -F qcow2`, the baseline, measured in the same run over
//! the same 1 GiB qcow2 base, in the same directory, interleaved.
//!
//! `cargo bench -p hyperlet --bench overlay` prints a Markdown table. `HYPERLET_BENCH_N` sets
//! the iterations per method (default 200). Both methods end with the overlay on disk: the
//! native one syncs the file and its directory; `qemu-img` flushes on close.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyperlet::image::qcow2::{create_overlay, read_header};

const DEFAULT_N: usize = 200;
const WARMUP: usize = 5;
const VIRTUAL_SIZE: u64 = 1 << 30;

fn qemu_img_create(base: &Path, out: &Path) {
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(base)
        .args(["-F", "qcow2"])
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run qemu-img ({e}): install qemu-utils"));
    assert!(status.success(), "qemu-img create failed: {status}");
}

fn native_create(base: &Path, out: &Path) {
    create_overlay(out, base, "qcow2", VIRTUAL_SIZE).expect("create_overlay");
}

/// One timed creation on a fresh path.
fn time(dir: &Path, tag: &str, i: usize, create: impl Fn(&Path)) -> Duration {
    let out = dir.join(format!("{tag}-{i}.qcow2"));
    let start = Instant::now();
    create(&out);
    start.elapsed()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(sorted: &[Duration]) -> Stats {
    let n = sorted.len();
    let rank = |q: f64| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats {
        p50: rank(0.50),
        p99: rank(0.99),
        mean: sorted.iter().sum::<Duration>() / n as u32,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn check(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run qemu-img ({e}): install qemu-utils"));
    assert!(
        out.status.success(),
        "qemu-img check {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn main() {
    let n = std::env::var("HYPERLET_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_N);
    let dir = tempfile::Builder::new()
        .prefix("hyperlet-bench-overlay")
        .tempdir_in(std::env::var_os("HYPERLET_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .expect("temporary directory");
    let base = dir.path().join("base.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg(VIRTUAL_SIZE.to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run qemu-img ({e}): install qemu-utils"));
    assert!(status.success(), "qemu-img create base failed");

    // Interleaved, so that both methods see the same background load.
    let native_create = |out: &Path| native_create(&base, out);
    let qemu_img_create = |out: &Path| qemu_img_create(&base, out);
    for i in 0..WARMUP {
        time(dir.path(), "native-warmup", i, native_create);
        time(dir.path(), "qemu-warmup", i, qemu_img_create);
    }
    let (mut native, mut qemu) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        native.push(time(dir.path(), "native", i, native_create));
        qemu.push(time(dir.path(), "qemu", i, qemu_img_create));
    }
    native.sort();
    qemu.sort();

    // Both produce equivalent, valid overlays.
    for tag in ["native-0", "qemu-0"] {
        let path = dir.path().join(format!("{tag}.qcow2"));
        check(&path);
        let h = read_header(&mut std::fs::File::open(&path).expect("open")).expect("header");
        assert_eq!(h.virtual_size, VIRTUAL_SIZE);
        assert_eq!(h.backing_file.as_deref(), base.to_str());
    }

    let (a, b) = (stats(&native), stats(&qemu));
    println!(
        "Overlay creation over a 1 GiB qcow2 base, n = {n} per method (filesystem of {}):",
        dir.path().display()
    );
    println!();
    println!("| method | p50 | p99 | mean |");
    println!("|---|---:|---:|---:|");
    println!(
        "| native `create_overlay` | {} | {} | {} |",
        ms(a.p50),
        ms(a.p99),
        ms(a.mean)
    );
    println!(
        "| `qemu-img create -b … -F qcow2` | {} | {} | {} |",
        ms(b.p50),
        ms(b.p99),
        ms(b.mean)
    );
    let speedup = |x: Duration, y: Duration| y.as_secs_f64() / x.as_secs_f64();
    println!(
        "| **speedup** | **{:.1}×** | **{:.1}×** | **{:.1}×** |",
        speedup(a.p50, b.p50),
        speedup(a.p99, b.p99),
        speedup(a.mean, b.mean)
    );
    println!();
    let target = speedup(a.p50, b.p50) >= 10.0;
    println!(
        "Target (native ≥ 10× faster at p50): {}",
        if target { "met" } else { "NOT met" }
    );
}
