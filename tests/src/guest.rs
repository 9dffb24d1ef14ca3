//! The tiny test guest (`tests/guest/`): a Debian kernel and a busybox initramfs that boots
//! under TCG in a few seconds and reports what it sees as `HYPERLET-GUEST: …` lines on its
//! serial console. See `tests/guest/README.md` for the kernel command line options and markers.
//!
//! [`test_guest`] builds it once per process into a shared cache directory (serialised across
//! processes with a file lock); [`wait_for_console`] waits for a marker in a console log.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The prefix of every line the guest's /init prints on the console.
pub const MARKER: &str = "HYPERLET-GUEST: ";

/// The guest's files, built by `tests/guest/build.sh`. All are world-readable, so QEMU (user
/// `libvirt-qemu`) can open them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestGuest {
    /// The kernel, for `<os><kernel>` (direct kernel boot; needs `console=ttyS0` on the
    /// command line).
    pub kernel: PathBuf,
    /// The gzip'd cpio initramfs, for `<os><initrd>`.
    pub initrd: PathBuf,
    /// An empty 64 MiB qcow2 to use as the root disk's backing file. Shared by every test:
    /// never attach it writable, put an overlay on it.
    pub root_qcow2: PathBuf,
}

/// The cache directory: `$HYPERLET_GUEST_CACHE`, or `/var/cache/hyperlet-tests/guest`.
pub fn guest_cache_dir() -> PathBuf {
    std::env::var_os("HYPERLET_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hyperlet-tests/guest"))
}

/// `tests/guest/build.sh` in this source tree.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh")
}

/// The test guest, built (or found up to date) in [`guest_cache_dir`] the first time it is
/// asked for in this process. Concurrent test processes wait for each other on a lock file in
/// the cache directory. An up-to-date cache costs about half a second (one `apt-cache` call).
///
/// # Panics
///
/// When the build fails, with the script's output and what to install.
pub fn test_guest() -> TestGuest {
    static GUEST: OnceLock<TestGuest> = OnceLock::new();
    GUEST.get_or_init(|| build_into(&guest_cache_dir())).clone()
}

fn build_into(dir: &Path) -> TestGuest {
    // Directories this creates get 0755 so QEMU (user libvirt-qemu) can reach the files;
    // existing ancestors are left alone (build.sh makes the cache directory itself 0755).
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("cannot create the guest cache {}: {e}", dir.display()));
    for d in &created {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", d.display()));
    }

    let lock_path = dir.join(".test-guest.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", lock_path.display()));

    let script = build_script();
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !output.status.success() {
        panic!(
            "building the test guest failed: {} {} exited with {}\n\
             --- stdout ---\n{}\n--- stderr ---\n{}\n\
             It needs root (apt-get download), the Debian mirror, and the packages \
             busybox-static cpio xz-utils qemu-utils and qemu-system-x86 (for qemu-ga's \
             libraries): run scripts/setup.sh, or apt-get install them.",
            script.display(),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    let guest = TestGuest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        root_qcow2: dir.join("root.qcow2"),
    };
    for file in [&guest.kernel, &guest.initrd, &guest.root_qcow2] {
        assert!(
            file.is_file(),
            "{} succeeded but {} is missing",
            script.display(),
            file.display()
        );
    }
    guest
}

/// Poll the console log at `path` every 100 ms until it contains `needle`, and return its whole
/// text (read lossily: a serial console may carry stray bytes). The file may not exist yet.
///
/// # Panics
///
/// After `timeout`, with the text read so far.
pub fn wait_for_console(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = read_console(path);
        if text.contains(needle) {
            return text;
        }
        if Instant::now() >= deadline {
            panic!(
                "{needle:?} did not appear in {} within {timeout:?}; console so far:\n{text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The console log at `path` as text (empty when it does not exist yet).
pub fn read_console(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The guest's marker lines in `text`, without the [`MARKER`] prefix (`"booted"`,
/// `"tick 3"`, `"ip 10.0.0.5"`, …), in order.
pub fn markers(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix(MARKER))
        .collect()
}

/// The values of the markers that start with `name ` (e.g. `marker_values(text, "ip")` gives
/// `["10.0.0.5"]`), in order.
pub fn marker_values<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    markers(text)
        .into_iter()
        .filter_map(|m| m.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .collect()
}

/// The number of the last `tick N` heartbeat in `text` (the guest prints one every 2 s while it
/// runs, none while it is paused).
pub fn last_tick(text: &str) -> Option<u64> {
    marker_values(text, "tick")
        .into_iter()
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// Runs a shell line in a running guest through its guest agent (`guest-exec` of `/bin/sh -c`,
/// then `guest-exec-status` until it exits); returns its exit code, stdout and stderr.
///
/// # Panics
///
/// When the guest agent does not answer, or the line is still running after `limit`.
pub fn guest_sh(domain: &str, script: &str, limit: Duration) -> (i64, String, String) {
    guest_sh_with(crate::virsh, domain, script, limit)
}

/// [`guest_sh`] through another libvirtd: `virsh` runs virsh against it (e.g.
/// `PrivateLibvirt::virsh` of a fleet node).
pub fn guest_sh_with(
    virsh: impl Fn(&[&str]) -> (bool, String),
    domain: &str,
    script: &str,
    limit: Duration,
) -> (i64, String, String) {
    use base64::Engine;
    let cmd = serde_json::json!({"execute": "guest-exec", "arguments": {
        "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}});
    let (ok, out) = virsh(&["qemu-agent-command", domain, &cmd.to_string()]);
    assert!(ok, "guest-exec in {domain}: {out}");
    let pid = serde_json::from_str::<serde_json::Value>(&out).expect("guest-exec answer")["return"]
        ["pid"]
        .clone();
    let deadline = Instant::now() + limit;
    loop {
        let status = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
        let (ok, out) = virsh(&["qemu-agent-command", domain, &status.to_string()]);
        assert!(ok, "guest-exec-status in {domain}: {out}");
        let r = serde_json::from_str::<serde_json::Value>(&out).expect("guest-exec-status answer")
            ["return"]
            .clone();
        if r["exited"] == true {
            let text = |key: &str| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(r[key].as_str().unwrap_or(""))
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            return (
                r["exitcode"].as_i64().unwrap_or(-1),
                text("out-data"),
                text("err-data"),
            );
        }
        assert!(
            Instant::now() < deadline,
            "{script:?} did not finish in {domain} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "[    1.6] Run /init as init process\r\n\
        HYPERLET-GUEST: booted\r\n\
        HYPERLET-GUEST: tick 0\n\
        HYPERLET-GUEST: ip 10.77.0.53\n\
        HYPERLET-GUEST: ip-cidr 10.77.0.53/24\n\
        HYPERLET-GUEST: tick 1\n\
        HYPERLET-GUEST: tick 1";

    #[test]
    fn parses_markers() {
        assert_eq!(markers(SAMPLE)[0], "booted");
        assert_eq!(marker_values(SAMPLE, "ip"), ["10.77.0.53"]);
        assert_eq!(marker_values(SAMPLE, "ip-cidr"), ["10.77.0.53/24"]);
        // The half-written last line still counts: the console is read while it grows.
        assert_eq!(last_tick(SAMPLE), Some(1));
        assert_eq!(last_tick("nothing"), None);
    }

    #[test]
    fn wait_for_console_returns_text() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        fs::write(&log, SAMPLE).unwrap();
        let text = wait_for_console(&log, "HYPERLET-GUEST: booted", Duration::from_secs(1));
        assert!(text.contains("tick 0"));
    }

    /// Builds the real guest (root, the Debian mirror): `cargo test -p hyperlet-tests --lib --
    /// --ignored guest`.
    #[test]
    #[ignore = "downloads a kernel and builds the guest; run by hand"]
    fn builds_the_guest() {
        let guest = test_guest();
        for file in [&guest.kernel, &guest.initrd, &guest.root_qcow2] {
            let mode = fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o444,
                0o444,
                "{} must be world-readable",
                file.display()
            );
        }
        assert_eq!(test_guest(), guest, "built once per process");
    }

    #[test]
    #[should_panic(expected = "did not appear")]
    fn wait_for_console_times_out() {
        let dir = tempfile::tempdir().unwrap();
        wait_for_console(
            &dir.path().join("missing.log"),
            "x",
            Duration::from_millis(200),
        );
    }
}
