//! Real storage for tests: a throwaway LVM volume group on a loop device (activation
//! disabled — this machine has no device-mapper) and one nfs-ganesha server on 127.0.0.1:2049
//! shared by the test binary (stopped by PID when it exits), plus the plugin config stanzas
//! that grant them to volume drivers.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Fails unless the test runs as root (loop devices, LVM, an NFS server).
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "volume driver tests use loop devices, LVM and an NFS server: run them as root"
    );
}

/// Runs a tool and returns its stdout; panics with what to install when it is missing.
pub fn sh(tool: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} (scripts/setup.sh installs lvm2, qemu-utils, libnfs-utils, nfs-ganesha): {e}")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A fresh UUID.
pub fn unique() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A `[[plugins]]` stanza of a volume driver built from crate `krate`, with its grant tables.
pub fn stanza(name: &str, krate: &str, grants: &str, settings: &str, tables: &str) -> String {
    crate::plugins::stanza(
        "volume-driver",
        120_000,
        name,
        krate,
        grants,
        settings,
        tables,
    )
}

// ---------------------------------------------------------------------------------------------
// LVM on a loop device.

/// A throwaway volume group on a loop device over a sparse file, activation disabled.
pub struct TestVg {
    /// The volume group's name.
    pub vg: String,
    /// The directory of its lvm.conf (LVM_SYSTEM_DIR).
    pub conf_dir: PathBuf,
    loop_dev: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestVg {
    /// A group of `gib` GiB on a fresh loop device.
    pub fn new(gib: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf_dir = dir.path().join("lvm");
        std::fs::create_dir(&conf_dir).expect("lvm conf dir");
        std::fs::write(
            conf_dir.join("lvm.conf"),
            "global { activation = 0 }\ndevices { filter = [ \"a|^/dev/loop|\", \"r|.*|\" ] }\n",
        )
        .expect("lvm.conf");
        let file = dir.path().join("pv.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(gib * GIB))
            .expect("sparse backing file");
        let mut guard = Self {
            vg: format!("hyperlet-e2e-{}", &unique()[..8]),
            conf_dir,
            loop_dev: None,
            _dir: dir,
        };
        let dev = sh("losetup", &["-f", "--show", file.to_str().unwrap()], &[]);
        guard.loop_dev = Some(dev.trim().to_owned());
        let dev = guard.loop_dev.clone().unwrap();
        let env = [("LVM_SYSTEM_DIR", guard.conf_dir.as_path())];
        sh("pvcreate", &["-q", &dev], &env);
        sh("vgcreate", &["-q", &guard.vg, &dev], &env);
        guard
    }

    /// The loop device holding the group's physical volume.
    pub fn loop_device(&self) -> &str {
        self.loop_dev.as_deref().expect("loop device")
    }

    /// The environment the LVM tools need for this group.
    pub fn env(&self) -> [(&'static str, &Path); 1] {
        [("LVM_SYSTEM_DIR", self.conf_dir.as_path())]
    }

    /// `(name, bytes, origin)` of every LV, sorted, read with `lvs`.
    pub fn lvs(&self) -> Vec<(String, u64, String)> {
        let out = sh(
            "lvs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "--separator",
                ",",
                "-o",
                "lv_name,lv_size,origin",
                &self.vg,
            ],
            &self.env(),
        );
        let mut lvs: Vec<_> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.trim().split(',').collect();
                (f[0].to_owned(), f[1].parse().unwrap(), f[2].to_owned())
            })
            .collect();
        lvs.sort();
        lvs
    }

    /// `(vg_size, vg_free)` in bytes, read with `vgs`.
    pub fn vgs(&self) -> (u64, u64) {
        let out = sh(
            "vgs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "--separator",
                ",",
                "-o",
                "vg_size,vg_free",
                &self.vg,
            ],
            &self.env(),
        );
        let f: Vec<u64> = out.trim().split(',').map(|x| x.parse().unwrap()).collect();
        (f[0], f[1])
    }

    /// The `[plugins.lvm]` table granting this group.
    pub fn grant(&self) -> String {
        format!(
            "[plugins.lvm]\nvolume_groups = [\"{}\"]\nlvm_system_dir = \"{}\"\n",
            self.vg,
            self.conf_dir.display()
        )
    }
}

impl Drop for TestVg {
    fn drop(&mut self) {
        let quiet = |tool: &str, args: &[&str]| {
            let _ = Command::new(tool)
                .args(args)
                .env("LVM_SYSTEM_DIR", &self.conf_dir)
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .output();
        };
        if let Some(dev) = self.loop_dev.take() {
            quiet("vgremove", &["-f", &self.vg]);
            quiet("pvremove", &["-ff", "-y", &dev]);
            quiet("losetup", &["-d", &dev]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One nfs-ganesha for the whole test binary.

/// Processes this test binary started, stopped by PID at exit.
static STARTED: Mutex<Vec<Child>> = Mutex::new(Vec::new());
/// The exported file system: its mount point (removed at exit) and loop device.
static EXPORT_ROOT: Mutex<Option<(PathBuf, String)>> = Mutex::new(None);

/// Size of the file system the exports live on. The backing file is sparse: the disk holds only
/// what the tests write, and the NFS driver's `nfs_used_ratio` check sees this file system, not
/// however full the host's `/tmp` happens to be.
const EXPORT_FS_BYTES: u64 = 16 * GIB;

extern "C" fn stop_started() {
    let Ok(mut children) = STARTED.lock() else {
        return;
    };
    // Ganesha first, then the portmapper it registered with.
    while let Some(mut child) = children.pop() {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some((root, dev)) = EXPORT_ROOT.lock().ok().and_then(|r| r.clone()) {
        unmount_export_fs(&root, &dev);
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Mounts a fresh ext4 of [`EXPORT_FS_BYTES`] on `root` (a loop device over a sparse file
/// beside it); returns the loop device.
fn mount_export_fs(root: &Path) -> String {
    let image = root.with_extension("img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(EXPORT_FS_BYTES))
        .expect("sparse backing file of the NFS exports");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=1",
            image.to_str().unwrap(),
        ],
        &[],
    );
    let dev = sh("losetup", &["-f", "--show", image.to_str().unwrap()], &[])
        .trim()
        .to_owned();
    // The image is reachable through the loop device alone from here on.
    let _ = std::fs::remove_file(&image);
    std::fs::create_dir_all(root).unwrap();
    sh("mount", &[&dev, root.to_str().unwrap()], &[]);
    dev
}

/// Undoes [`mount_export_fs`]; lazily when something still holds the file system.
fn unmount_export_fs(root: &Path, dev: &str) {
    let unmounted = Command::new("umount")
        .arg(root)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !unmounted {
        let _ = Command::new("umount").arg("-l").arg(root).status();
    }
    let _ = Command::new("losetup").args(["-d", dev]).status();
}

static NFS_USE: RwLock<()> = RwLock::new(());

thread_local! {
    /// Holds of [`NFS_USE`] taken by this thread.
    static NFS_HELD: Cell<u32> = const { Cell::new(0) };
}

/// A hold on the shared NFS server: shared by the tests that use it, exclusive for the one
/// that stops it (SIGSTOP), so no other test runs against a stopped server. [`ganesha`]
/// refuses a thread holding neither.
pub struct NfsHold {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

impl Drop for NfsHold {
    fn drop(&mut self) {
        NFS_HELD.with(|h| h.set(h.get() - 1));
    }
}

/// Shared hold on the NFS server: take it first in a test that uses [`ganesha`].
pub fn nfs_shared() -> NfsHold {
    let guard = NFS_USE.read().unwrap_or_else(|p| p.into_inner());
    NFS_HELD.with(|h| h.set(h.get() + 1));
    NfsHold {
        _shared: Some(guard),
        _exclusive: None,
    }
}

/// Exclusive hold on the NFS server, for a test that stops it.
pub fn nfs_exclusive() -> NfsHold {
    let guard = NFS_USE.write().unwrap_or_else(|p| p.into_inner());
    NFS_HELD.with(|h| h.set(h.get() + 1));
    NfsHold {
        _shared: None,
        _exclusive: Some(guard),
    }
}

/// The shared NFS server: two exported directories.
pub struct Ganesha {
    /// Exported directory of share A.
    pub a: PathBuf,
    /// Exported directory of share B.
    pub b: PathBuf,
    /// Its index in [`STARTED`].
    index: usize,
}

impl Ganesha {
    /// A fresh directory on the exports' file system but outside both exports (a host file
    /// a test links into or renames out of an export must live there).
    pub fn outside(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.a.parent().expect("export root")).expect("temp dir")
    }

    /// The server's process (to stop it: hold [`nfs_exclusive`]).
    pub fn pid(&self) -> nix::unistd::Pid {
        let started = STARTED.lock().unwrap();
        nix::unistd::Pid::from_raw(started[self.index].id() as i32)
    }

    /// Share A as `host:/path`.
    pub fn share_a(&self) -> String {
        format!("127.0.0.1:{}", self.a.display())
    }
    /// The `[[plugins]]` stanza of the NFS volume driver (backend `nfs`) over share A,
    /// reached with the agent's own NFS client (libnfs).
    pub fn driver_stanza(&self) -> String {
        stanza(
            "nfs",
            "volume-nfs",
            "[\"log\", \"files\", \"qemu-img\"]",
            &format!("nfs_shares = \"{}\"", self.share_a()),
            &files_table(&[self.share_a()], "libnfs", None),
        )
    }
    /// Share B as `host:/path`.
    pub fn share_b(&self) -> String {
        format!("127.0.0.1:{}", self.b.display())
    }
}

/// The port nfs-ganesha's MOUNT service listens on (fixed, so [`NfsRelay`] can carry it).
pub const MOUNT_PORT: u16 = 20048;

/// The shared NFS server as seen from another network namespace (a fleet test node): a TCP
/// relay listening on that namespace's own 127.0.0.1 at the portmapper, MOUNT and NFS ports,
/// each connection carried to the same port of the host's 127.0.0.1, where nfs-ganesha
/// listens. Every node then reaches the same shares at the same address (`share_a()`), as
/// nodes reach one filer in production. Stops on drop (listeners and open connections closed).
pub struct NfsRelay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<Mutex<Vec<std::net::TcpStream>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl NfsRelay {
    /// Starts relaying in the named network namespace (`/run/netns/<netns>`).
    pub fn start(netns: &str) -> Self {
        let path = format!("/run/netns/{netns}");
        // A socket belongs to the namespace of the thread that made it: bind from a thread
        // that entered the node's namespace, serve from threads of this one.
        let listeners = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            [111, MOUNT_PORT, 2049].map(|port| {
                let l = std::net::TcpListener::bind(("127.0.0.1", port))
                    .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port} in {path}: {e}"));
                l.set_nonblocking(true).expect("nonblocking listener");
                (port, l)
            })
        })
        .join()
        .expect("relay listeners");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(Mutex::new(Vec::new()));
        let threads = listeners
            .into_iter()
            .map(|(port, listener)| {
                let (stop, open) = (stop.clone(), open.clone());
                std::thread::spawn(move || relay_accept(port, listener, &stop, &open))
            })
            .collect();
        Self {
            stop,
            open,
            threads,
        }
    }
}

fn relay_accept(
    port: u16,
    listener: std::net::TcpListener,
    stop: &std::sync::atomic::AtomicBool,
    open: &Mutex<Vec<std::net::TcpStream>>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => return,
        };
        let _ = client.set_nonblocking(false);
        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        if let Ok(mut list) = open.lock() {
            list.extend([client, server]);
        }
        for (from, to) in pairs {
            if let (Ok(mut from), Ok(mut to)) = (from, to) {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    }
}

impl Drop for NfsRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Ok(list) = self.open.lock() {
            for s in list.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Whether a portmapper answers on 127.0.0.1.
pub fn portmapper_answers() -> bool {
    match Command::new("rpcinfo")
        .args(["-p", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(e) => panic!("cannot run rpcinfo ({e}): install rpcbind (scripts/setup.sh)"),
    }
}

/// Starts a server in the foreground as a child, kept in [`STARTED`]; returns its index.
pub fn spawn(tool: &str, args: &[&str], log: &Path) -> usize {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {tool} (scripts/setup.sh installs nfs-ganesha nfs-ganesha-vfs rpcbind): {e}")
        });
    let mut started = STARTED.lock().unwrap();
    started.push(child);
    started.len() - 1
}

/// Whether child `index` of [`STARTED`] has exited.
pub fn exited(index: usize) -> bool {
    let mut started = STARTED.lock().unwrap();
    !matches!(started[index].try_wait(), Ok(None))
}

/// The shared NFS server, started on first use. The calling test must hold [`nfs_shared`] (or
/// [`nfs_exclusive`]).
pub fn ganesha() -> &'static Ganesha {
    assert!(
        NFS_HELD.with(Cell::get) > 0,
        "take hyperlet_tests::storage::nfs_shared() at the top of a test that uses the NFS server"
    );
    static SERVER: OnceLock<Ganesha> = OnceLock::new();
    SERVER.get_or_init(|| {
        require_root();
        // SAFETY: registers a plain `extern "C"` function that only signals and reaps the
        // children this binary started; it is called once, by `exit`.
        unsafe {
            nix::libc::atexit(stop_started);
        }
        let root = std::env::temp_dir().join(format!("hyperlet-nfs-{}", std::process::id()));
        let dev = mount_export_fs(&root);
        *EXPORT_ROOT.lock().unwrap() = Some((root.clone(), dev));
        let (a, b) = (root.join("a"), root.join("b"));
        for d in [&root, &a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        if std::net::TcpStream::connect(("127.0.0.1", 2049)).is_ok() {
            panic!(
                "another NFS server already listens on 127.0.0.1:2049; these tests start their \
                 own nfs-ganesha there: stop the other one"
            );
        }
        if !portmapper_answers() {
            let rpcbind = spawn("rpcbind", &["-f", "-w"], &root.join("rpcbind.log"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !portmapper_answers() {
                assert!(
                    !exited(rpcbind),
                    "rpcbind exited: {}",
                    std::fs::read_to_string(root.join("rpcbind.log")).unwrap_or_default()
                );
                assert!(
                    Instant::now() < deadline,
                    "rpcbind did not answer within 10 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let export = |id: u32, path: &Path| {
            format!(
                "EXPORT {{\n  Export_Id = {id};\n  Path = {p};\n  Pseudo = {p};\n  \
                 Protocols = 3, 4;\n  Transports = TCP;\n  Access_Type = RW;\n  \
                 Squash = No_Root_Squash;\n  SecType = sys;\n  FSAL {{ Name = VFS; }}\n}}\n",
                p = path.display()
            )
        };
        let config = format!(
            "NFS_CORE_PARAM {{\n  Bind_Addr = 127.0.0.1;\n  NFS_Port = 2049;\n  \
             MNT_Port = {MOUNT_PORT};\n  Protocols = 3, 4;\n  Enable_NLM = false;\n  Enable_RQUOTA = false;\n}}\n\
             NFSV4 {{ Graceless = true; }}\nLOG {{ Default_Log_Level = WARN; }}\n{}{}",
            export(7101, &a),
            export(7102, &b)
        );
        let conf = root.join("ganesha.conf");
        std::fs::write(&conf, config).unwrap();
        let log = root.join("ganesha.log");
        let server = spawn(
            "ganesha.nfsd",
            &[
                "-F",
                "-f",
                conf.to_str().unwrap(),
                "-L",
                log.to_str().unwrap(),
                "-p",
                root.join("ganesha.pid").to_str().unwrap(),
                "-N",
                "NIV_WARN",
            ],
            &root.join("ganesha.out"),
        );
        let url = format!("nfs://127.0.0.1{}/", a.display());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = match Command::new("nfs-ls")
                .arg(&url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                Ok(status) => status.success(),
                Err(e) => {
                    panic!("cannot run nfs-ls ({e}): install libnfs-utils (scripts/setup.sh)")
                }
            };
            if ok {
                break;
            }
            assert!(
                !exited(server),
                "ganesha.nfsd exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "nfs-ganesha did not export {} within 30 s: {}",
                a.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ganesha {
            a,
            b,
            index: server,
        }
    })
}

/// How a test looks at a share: over NFS (QEMU's client, `nfs-ls`), or through the local
/// directory when the host worked on a bind mount of it (ganesha caches attributes, so it does
/// not see at once what was written behind its back).
#[derive(Clone, Copy)]
pub enum Observe {
    /// Over NFS.
    Nfs,
    /// Through the local directory.
    Local,
}

impl Observe {
    /// `qemu-img info` of a file of the exported directory `dir`.
    pub fn image(self, dir: &Path, name: &str) -> serde_json::Value {
        let target = match self {
            Self::Nfs => format!("nfs://127.0.0.1{}/{name}", dir.display()),
            Self::Local => dir.join(name).display().to_string(),
        };
        let out = sh("qemu-img", &["info", "-U", "--output=json", &target], &[]);
        serde_json::from_str(&out).unwrap()
    }

    /// The names in the exported directory `dir`, sorted.
    pub fn ls(self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Self::Nfs => {
                let url = format!("nfs://127.0.0.1{}/", dir.display());
                sh("nfs-ls", &[&url], &[])
                    .lines()
                    .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
                    .filter(|n| n != "." && n != "..")
                    .collect()
            }
            Self::Local => std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
        };
        names.sort();
        names
    }
}

/// The (uid, gid) QEMU runs as on this host (Debian: libvirt-qemu, kvm).
pub fn qemu_owner() -> (u32, u32) {
    let user = nix::unistd::User::from_name("libvirt-qemu")
        .ok()
        .flatten()
        .expect("user libvirt-qemu (scripts/setup.sh installs libvirt-daemon-system)");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// The names in an exported directory, read over NFS (`nfs-ls`).
pub fn nfs_ls(dir: &Path) -> Vec<String> {
    Observe::Nfs.ls(dir)
}

/// Removes the files of a test (by volume id) from an exported directory on drop.
pub struct FileGuard(pub Vec<(PathBuf, String)>);

impl Drop for FileGuard {
    fn drop(&mut self) {
        for (dir, id) in &self.0 {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().contains(id.as_str()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

/// Unmounts a bind mount on drop.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The `[plugins.files]` table granting `shares`, reached by `access` (`libnfs` or `mount`),
/// with the documented defaults otherwise (files owned by the QEMU user, mode 0660).
pub fn files_table(shares: &[String], access: &str, mount_root: Option<&Path>) -> String {
    let list: Vec<String> = shares.iter().map(|s| format!("\"{s}\"")).collect();
    let mut t = format!(
        "[plugins.files]\nshares = [{}]\naccess = \"{access}\"\n",
        list.join(", ")
    );
    if let Some(root) = mount_root {
        t.push_str(&format!("mount_root = \"{}\"\n", root.display()));
    }
    t
}

/// A mount-mode grant of `server`'s share A, bind-mounted where the host expects it.
pub fn mounted_share(server: &Ganesha, root: &Path) -> (hyperlet::volume::Files, MountGuard) {
    let grant: hyperlet::config::FilesGrant = toml::from_str(
        &files_table(&[server.share_a()], "mount", Some(root)).replace("[plugins.files]\n", ""),
    )
    .unwrap();
    let files = hyperlet::volume::Files::new(&grant).unwrap();
    let point = files.mount_point(&hyperlet::volume::Share::parse(&server.share_a()).unwrap());
    std::fs::create_dir_all(&point).unwrap();
    let guard = MountGuard(point.clone());
    sh(
        "mount",
        &[
            "--bind",
            server.a.to_str().unwrap(),
            point.to_str().unwrap(),
        ],
        &[],
    );
    (files, guard)
}
