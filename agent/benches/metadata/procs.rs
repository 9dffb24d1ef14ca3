//! External programs (each with a deadline), and the namespace guard.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hyperlet::net::netns;

/// Fails, saying what to install, unless `program` can be started.
pub fn require(program: &str, version_flag: &str, package: &str) {
    let started = Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = started {
        panic!(
            "cannot run {program} ({e}): install the Debian package {package} (scripts/setup.sh does)"
        );
    }
}

/// What a finished program said.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `cmd` to the end, killing it (by its PID) if it takes longer than `limit`.
pub fn run_within(mut cmd: Command, limit: Duration) -> Ran {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `ip ARGS…`, which must succeed.
pub fn ip(args: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let ran = run_within(cmd, Duration::from_secs(10));
    assert!(ran.status.success(), "ip {args:?} failed: {}", ran.stderr);
}

/// A command run inside namespace `ns` (`ip netns exec`, which execs the program: the
/// child's PID is the program's).
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// `GET url` with curl from namespace `ns`, the body written to `out`; returns the status
/// (0 when there was no answer).
pub fn curl_to(ns: &str, url: &str, out: &Path, max_time_s: u32) -> u16 {
    let mut cmd = in_ns(ns, "curl");
    cmd.args([
        "-s",
        "--max-time",
        &max_time_s.to_string(),
        "--create-dirs",
        "-o",
    ])
    .arg(out)
    .args(["-w", "%{http_code}", url]);
    let ran = run_within(cmd, Duration::from_secs(u64::from(max_time_s) + 5));
    String::from_utf8_lossy(&ran.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Directories 0755 and files 0644 under `path`, `path` included.
pub fn make_readable(path: &Path) {
    let meta = fs::metadata(path).expect("stat");
    let mode = if meta.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if meta.is_dir() {
        for entry in fs::read_dir(path).expect("read dir") {
            make_readable(&entry.expect("dir entry").path());
        }
    }
}

/// A named network namespace, deleted on drop (the veth end in it goes with it).
pub struct NsGuard(pub String);

impl NsGuard {
    /// Creates `hyperlet-bench-md<role>-<tag>`.
    pub fn create(role: &str, tag: &str) -> Self {
        let name = format!("hyperlet-bench-md{role}-{tag}");
        netns::create(&name).unwrap_or_else(|e| {
            panic!("cannot create namespace {name} (the bench must run as root): {e}")
        });
        Self(name)
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.0) {
            eprintln!("warning: cannot delete namespace {}: {e}", self.0);
        }
    }
}
