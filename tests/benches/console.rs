//! Console keystroke echo benchmark (issue #15): one key typed into the test guest's shell
//! and its echo seen back, through the agent (`hyperlet server console --attach` on a
//! pseudo-terminal: CLI → WebSocket → agent → libvirt console stream → guest, and back) vs
//! `virsh console` on a pseudo-terminal on the same guest (the baseline), taking turns in one
//! run. A raw WebSocket client (no CLI, no terminal) is reported too.
//!
//! libvirt gives a domain's console to one client at a time, so the three take turns: each
//! round opens one, types [`KEYS`] keys one at a time (each waits for its echo), and leaves.
//!
//! Run as root: `cargo build --release -p hyperlet && cargo bench -p hyperlet-tests --bench
//! console` (`HYPERLET_BENCH_ROUNDS`, default 5).

use hyperlet_tests::console::{ConsoleSocket, PtyProcess};
use hyperlet_tests::guest::test_guest;
use hyperlet_tests::{hyperlet_bin, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Keys typed per round and path.
const KEYS: usize = 100;
/// The key: a letter the guest's heartbeat lines never print.
const KEY: u8 = b'q';
/// Ctrl-U: the shell forgets the typed line (between batches).
const KILL_LINE: u8 = 0x15;

fn rounds() -> usize {
    std::env::var("HYPERLET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// One way of typing into the console.
trait Keyboard {
    /// Types `key`.
    fn press(&mut self, key: u8);
    /// Waits for the echo of the last key (an output chunk holding it).
    fn echo(&mut self, key: u8);
    /// Reads and discards output for `time`.
    fn drain(&mut self, time: Duration);
}

impl Keyboard for PtyProcess {
    fn press(&mut self, key: u8) {
        self.type_bytes(&[key]);
    }
    fn echo(&mut self, key: u8) {
        let needle = (key as char).to_string();
        self.read_until(&needle, Duration::from_secs(10));
    }
    fn drain(&mut self, time: Duration) {
        std::thread::sleep(time);
        let _ = self.read_for(Duration::from_millis(1));
    }
}

impl Keyboard for ConsoleSocket {
    fn press(&mut self, key: u8) {
        self.send(&[key]);
    }
    fn echo(&mut self, key: u8) {
        let needle = (key as char).to_string();
        self.read_until(&needle, Duration::from_secs(10));
    }
    fn drain(&mut self, time: Duration) {
        self.read_for(time);
    }
}

/// Types [`KEYS`] keys, each after the previous one's echo; the round trips.
fn type_keys(keyboard: &mut dyn Keyboard) -> Vec<Duration> {
    keyboard.drain(Duration::from_millis(300));
    let mut times = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        if i % 25 == 0 {
            keyboard.press(KILL_LINE);
            keyboard.drain(Duration::from_millis(200));
        }
        let start = Instant::now();
        keyboard.press(KEY);
        keyboard.echo(KEY);
        times.push(start.elapsed());
    }
    keyboard.press(KILL_LINE);
    keyboard.drain(Duration::from_millis(200));
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let (p50, p90, p99) = (
        percentile(times, 0.5),
        percentile(times, 0.9),
        percentile(times, 0.99),
    );
    println!(
        "{name:<34} n={:<5} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms",
        times.len(),
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

fn main() {
    let agent = Agent::start_with_config(
        "[hypervisor]\nsync_interval_ms = 500\n[capacity]\nreserved_host_memory_mb = 0\n",
    );
    let guest = test_guest();
    let (_, kernel) = agent.import_image("kernel", "aki", "aki", json!({}), &guest.kernel);
    let (_, ramdisk) = agent.import_image("ramdisk", "ari", "ari", json!({}), &guest.initrd);
    let props = json!({"kernel_id": kernel["id"], "ramdisk_id": ramdisk["id"],
        "os_command_line": "console=ttyS0 hyperlet.shell=1 hyperlet.dhcp=0"});
    let (status, root) = agent.import_image("tiny", "qcow2", "bare", props, &guest.root_qcow2);
    assert_eq!(status, 200, "{root}");
    let resp = agent.send(
        Method::POST,
        "/v1/servers",
        Some(&json!({"name": "bench-console", "image_id": root["id"],
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}})),
    );
    assert_eq!(resp.status(), 202);
    let server: Value = resp.json().unwrap();
    let id = server["id"].as_str().unwrap().to_string();
    let server = agent.wait_server(&id, "ACTIVE", Duration::from_secs(120));
    let domain = server["domain_name"].as_str().unwrap().to_string();
    agent.wait_console(&id, "HYPERLET-GUEST: ready", 1, Duration::from_secs(120));

    let token = agent.token();
    let url = agent.url();
    let (mut cli, mut virsh, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds() {
        let mut attached = PtyProcess::spawn(
            &hyperlet_bin(),
            &["server", "console", "--attach", &id, "--url", &url],
            &[("HYPERLET_TOKEN", &token)],
        );
        attached.read_until("Escape character", Duration::from_secs(10));
        cli.extend(type_keys(&mut attached));
        attached.type_bytes(&[0x1d]);
        assert!(attached.wait(Duration::from_secs(10)).success());

        // --force: the closed hub's reader keeps the console until the guest's next output.
        let mut baseline = PtyProcess::spawn(
            std::path::Path::new("virsh"),
            &["-c", "qemu:///system", "console", "--force", &domain],
            &[],
        );
        baseline.read_until("Escape character", Duration::from_secs(10));
        // Only echoes from the guest count: virsh must have the terminal in raw mode (a
        // terminal still echoing locally would answer every key at once).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while baseline
            .termios()
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "virsh console did not take the console: {}",
                baseline.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        virsh.extend(type_keys(&mut baseline));
        baseline.type_bytes(&[0x1d]);
        baseline.wait(Duration::from_secs(10));

        let answer: Value = agent
            .send(
                Method::POST,
                &format!("/v1/servers/{id}/remote-consoles"),
                Some(&json!({"type": "serial"})),
            )
            .json()
            .unwrap();
        let mut socket = ConsoleSocket::open(answer["url"].as_str().unwrap()).unwrap();
        raw.extend(type_keys(&mut socket));
        socket.close();
        eprintln!("round {} done", round + 1);
    }
    println!(
        "keystroke echo round trip, {} rounds x {KEYS} keys, TCG guest:",
        rounds()
    );
    let ours = report("hyperlet server console --attach", &mut cli);
    let base = report("virsh console (baseline)", &mut virsh);
    report("WebSocket client (no terminal)", &mut raw);
    println!(
        "ratio hyperlet/virsh (p50): {:.2}x (target <= 1.2x)",
        ours.as_secs_f64() / base.as_secs_f64()
    );
    let _ = agent.send(Method::DELETE, &format!("/v1/servers/{id}"), None);
    agent.wait_server_gone(&id, Duration::from_secs(60));
}
