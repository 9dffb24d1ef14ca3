//! A private libvirtd for tests that must hurt it (SIGSTOP, kill) or that need several nodes
//! on one machine — never the host's shared one.
//!
//! [`PrivateLibvirt::start`] makes a network namespace and, inside it, a private mount
//! namespace in which a per-test directory is bind-mounted over `/run`, `/etc/libvirt`,
//! `/var/lib/libvirt`, `/var/log/libvirt` and `/var/cache/libvirt`; then it starts `virtlogd`
//! and `libvirtd` there. Their sockets are reachable from the host through the directory
//! ([`PrivateLibvirt::uri`]); QEMU processes they start run inside the namespaces, invisible to
//! the host's libvirtd. Private `/etc/libvirt` (a copy of the host's without domain
//! definitions) keeps persistent domains out of the host's configuration; private `/run`
//! keeps the pid files of the host's daemons from blocking this pair. Each libvirtd has its
//! own host UUID and listens on TCP port 16509 in its namespace (no auth: only the namespace
//! and a test's fabric reach it), so nodes of a fabric can migrate to each other
//! ([`PrivateLibvirt::tcp_uri`]).
//!
//! Dropping it destroys and undefines its domains, stops its daemons by PID (resuming them
//! first if a test stopped them), kills any process left in its network namespace, deletes the
//! namespace and removes the directory (the mounts die with the mount namespace).
//!
//! ```no_run
//! let node = hyperlet_tests::node::PrivateLibvirt::start();
//! let (ok, out) = node.virsh(&["list", "--all"]);
//! assert!(ok, "{out}");
//! ```

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A libvirtd + virtlogd pair in private namespaces.
pub struct PrivateLibvirt {
    dir: tempfile::TempDir,
    netns: String,
    libvirtd: Option<Pid>,
    virtlogd: Option<Pid>,
}

/// The directories made private, as (subdirectory of the test directory, mount point).
const PRIVATE: [(&str, &str); 5] = [
    ("run", "/run"),
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn copy_tree(from: &Path, to: &Path) {
    let (ok, out) = run(Command::new("cp").arg("-a").arg(from).arg(to));
    assert!(ok, "cp -a {} {}: {out}", from.display(), to.display());
}

fn alive(pid: Pid) -> bool {
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|rest| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after `grace`.
fn stop(pid: Pid, grace: Duration) {
    let _ = kill(pid, Signal::SIGCONT);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

impl PrivateLibvirt {
    /// Starts the pair and waits (at most 30 s) until libvirtd answers.
    ///
    /// # Panics
    /// When a tool is missing (with what to install) or the daemons do not start.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hyperlet-node-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        for (sub, _) in PRIVATE {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        // Seeds: the host's libvirt configuration and state, without its domains.
        copy_tree(Path::new("/etc/libvirt/."), &dir.path().join("etc"));
        copy_tree(Path::new("/var/lib/libvirt/."), &dir.path().join("lib"));
        // Every node its own host UUID (libvirt refuses to migrate between hosts with the same
        // one) and a TCP listener for migrations over the fabric: plain TCP without auth, as
        // only this namespace and the test's fabric can reach it (TLS in production).
        let mut conf =
            std::fs::read_to_string(dir.path().join("etc/libvirtd.conf")).unwrap_or_default();
        conf.push_str(&format!(
            "\n# hyperlet test node\nlisten_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\n\
             host_uuid = \"{}\"\n",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(dir.path().join("etc/libvirtd.conf"), conf).expect("libvirtd.conf");
        let qemu_etc = dir.path().join("etc/qemu");
        if let Ok(entries) = std::fs::read_dir(&qemu_etc) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "xml") || path.ends_with("autostart") {
                    let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
                }
            }
        }
        let netns = format!(
            "hlt-node-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (ok, out) = run(Command::new("ip").args(["netns", "add", &netns]));
        assert!(ok, "ip netns add {netns} (apt-get install iproute2): {out}");
        let mut node = Self {
            dir,
            netns,
            libvirtd: None,
            virtlogd: None,
        };
        let root = node.root().display().to_string();
        let mut script = String::from("set -e\n");
        for (sub, target) in PRIVATE {
            script.push_str(&format!("mount --bind '{root}/{sub}' '{target}'\n"));
        }
        script.push_str(
            "mkdir -p /run/libvirt /run/netns /run/lock\nip link set lo up\n\
             virtlogd -d\nlibvirtd -d --listen\n",
        );
        let (ok, out) = run(Command::new("ip").args([
            "netns",
            "exec",
            &node.netns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        assert!(
            ok,
            "starting a private libvirtd failed (apt-get install libvirt-daemon-system util-linux): {out}"
        );
        node.virtlogd = Some(node.wait_pid("virtlogd"));
        node.libvirtd = Some(node.wait_pid("libvirtd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = node.virsh(&["list", "--all"]);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the private libvirtd does not answer: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    /// The URI another node uses to reach this libvirtd at `address` (its fabric address).
    pub fn tcp_uri(address: &str) -> String {
        format!("qemu+tcp://{address}/system")
    }

    fn wait_pid(&self, daemon: &str) -> Pid {
        let file = self.root().join(format!("run/{daemon}.pid"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            {
                return Pid::from_raw(pid);
            }
            assert!(
                Instant::now() < deadline,
                "{daemon} wrote no pid file {}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The per-test directory holding the private trees.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The network namespace the daemons and their guests live in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// libvirtd's PID (in the host's PID namespace).
    pub fn libvirtd_pid(&self) -> Pid {
        self.libvirtd.expect("libvirtd started")
    }

    /// The read-write URI, e.g. for the agent's `hypervisor.uri`.
    pub fn uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}/run/libvirt/libvirt-sock",
            self.root().display()
        )
    }

    /// The read-only URI (what `virsh -r` uses).
    pub fn read_only_uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}/run/libvirt/libvirt-sock-ro",
            self.root().display()
        )
    }

    /// libvirt's log of a domain (`/var/log/libvirt/qemu/<name>.log` inside the node).
    pub fn domain_log(&self, domain: &str) -> PathBuf {
        self.root().join(format!("log/qemu/{domain}.log"))
    }

    /// Runs `virsh` against this libvirtd; returns (success, stdout+stderr).
    pub fn virsh(&self, args: &[&str]) -> (bool, String) {
        run(Command::new("virsh").arg("-c").arg(self.uri()).args(args))
    }

    /// Runs `virsh -r` (a read-only connection) against this libvirtd.
    pub fn virsh_read_only(&self, args: &[&str]) -> (bool, String) {
        run(Command::new("virsh")
            .arg("-r")
            .arg("-c")
            .arg(self.read_only_uri())
            .args(args))
    }

    /// Kills libvirtd with SIGKILL, as a crash would: its guests (QEMU) keep running.
    pub fn kill_libvirtd(&mut self) {
        let pid = self.libvirtd.take().expect("libvirtd started");
        let _ = kill(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts libvirtd again in the node's namespaces (entered through virtlogd's) after
    /// [`PrivateLibvirt::kill_libvirtd`]; waits until it answers.
    pub fn restart_libvirtd(&mut self) {
        assert!(self.libvirtd.is_none(), "libvirtd still runs");
        let _ = std::fs::remove_file(self.root().join("run/libvirtd.pid"));
        let via = self.virtlogd.expect("virtlogd started").to_string();
        let (ok, out) = run(Command::new("nsenter")
            .args(["-t", &via, "-m", "-n", "--", "libvirtd", "-d", "--listen"]));
        assert!(ok, "restarting libvirtd: {out}");
        self.libvirtd = Some(self.wait_pid("libvirtd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = self.virsh(&["list", "--all"]);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "libvirtd does not answer: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// PIDs of the processes in this node's network namespace (its daemons and guests).
    fn processes_in_netns(&self) -> Vec<Pid> {
        let Ok(ns) = std::fs::metadata(format!("/run/netns/{}", self.netns)) else {
            return Vec::new();
        };
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
            })
            .map(Pid::from_raw)
            .collect()
    }
}

impl Drop for PrivateLibvirt {
    fn drop(&mut self) {
        if let Some(pid) = self.libvirtd {
            let _ = kill(pid, Signal::SIGCONT); // a test may have stopped it
            let (_, names) = self.virsh(&["list", "--all", "--name"]);
            for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = self.virsh(&["destroy", name]);
                let _ = self.virsh(&["undefine", "--managed-save", "--nvram", name]);
            }
            stop(pid, Duration::from_secs(10));
        }
        if let Some(pid) = self.virtlogd {
            stop(pid, Duration::from_secs(5));
        }
        // Whatever else is still in the namespace was started by this node (QEMU).
        for pid in self.processes_in_netns() {
            stop(pid, Duration::from_secs(5));
        }
        let _ = run(Command::new("ip").args(["netns", "delete", &self.netns]));
    }
}
