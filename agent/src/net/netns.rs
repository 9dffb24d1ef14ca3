//! Named network namespaces, compatible with iproute2's `ip netns`.
//!
//! A namespace `NAME` is a bind mount of a network namespace onto the empty file
//! `/run/netns/NAME`; the mount keeps the namespace alive without any process in it. Like
//! iproute2, `/run/netns` itself is made a shared mount (bind-mounted onto itself first when it
//! is not a mount point yet), so namespace mounts propagate between mount namespaces.
//!
//! The functions here block briefly (a thread is started and joined); call them from
//! `tokio::task::spawn_blocking` when on the async runtime. A thread that entered a namespace is
//! never reused: [`create`] and [`run_in`] each use a fresh thread that exits afterwards.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;

/// Where iproute2 (and we) keep the namespace bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// The longest namespace name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Serialises the one-time shared-mount setup of [`NETNS_DIR`].
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

/// Checks a namespace name: 1–64 characters from `[A-Za-z0-9_.-]`, not `.` or `..`
/// (neutron's `qdhcp-<uuid>` fits).
///
/// # Errors
///
/// [`NetError::InvalidName`] explaining which rule was broken.
pub fn validate_name(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            what: "namespace",
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("must be at most 64 characters");
    }
    if name == "." || name == ".." {
        return bad("must not be . or ..");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// The bind-mount path of namespace `name` (`/run/netns/NAME`).
///
/// # Errors
///
/// [`NetError::InvalidName`] when the name is not valid.
pub fn path(name: &str) -> Result<PathBuf, NetError> {
    validate_name(name)?;
    Ok(PathBuf::from(NETNS_DIR).join(name))
}

/// Whether namespace `name` exists (its file exists under [`NETNS_DIR`]).
///
/// # Errors
///
/// [`NetError::InvalidName`] when the name is not valid.
pub fn exists(name: &str) -> Result<bool, NetError> {
    Ok(path(name)?.exists())
}

/// Creates [`NETNS_DIR`] and makes it a shared mount, as `ip netns add` does.
fn prepare_run_dir() -> Result<(), NetError> {
    let _guard = RUN_DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(NETNS_DIR).map_err(|e| NetError::sys(format!("create {NETNS_DIR}"), e))?;
    let mut bound = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // Not a mount point yet: bind it onto itself once, then retry.
            Err(nix::errno::Errno::EINVAL) if !bound => {
                mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| {
                    NetError::sys(format!("bind-mount {NETNS_DIR} onto itself"), e.into())
                })?;
                bound = true;
            }
            Err(e) => {
                return Err(NetError::sys(
                    format!("make {NETNS_DIR} a shared mount"),
                    e.into(),
                ))
            }
        }
    }
}

/// Creates the network namespace `name` (like `ip netns add NAME`).
///
/// The namespace has only a `lo` that is down, as with iproute2.
///
/// # Errors
///
/// [`NetError::InvalidName`], [`NetError::NamespaceExists`], [`NetError::PermissionDenied`]
/// without root, or [`NetError::Sys`] when a mount or `unshare` fails. On failure nothing is left
/// behind.
pub fn create(name: &str) -> Result<(), NetError> {
    let target = path(name)?;
    prepare_run_dir()?;
    // The mount point: an empty file, created exclusively so two creators cannot share it.
    if let Err(e) = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o0)
        .open(&target)
    {
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            NetError::NamespaceExists(name.to_owned())
        } else {
            NetError::sys(format!("create {}", target.display()), e)
        });
    }
    let thread_target = target.clone();
    let result = on_fresh_thread(format!("create namespace {name}"), move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys("unshare(CLONE_NEWNET)", e.into()))?;
        // This thread now lives in the new namespace; pin it with a bind mount.
        mount(
            Some("/proc/thread-self/ns/net"),
            &thread_target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            NetError::sys(
                format!(
                    "bind-mount the new namespace onto {}",
                    thread_target.display()
                ),
                e.into(),
            )
        })
    })
    .and_then(|r| r);
    if result.is_err() {
        let _ = fs::remove_file(&target);
    }
    result
}

/// Deletes the network namespace `name` (like `ip netns delete NAME`): unmounts it (lazily, so
/// sockets or processes still inside keep it alive until they are gone) and removes the file.
///
/// # Errors
///
/// [`NetError::InvalidName`], [`NetError::NamespaceNotFound`], or [`NetError::Sys`] /
/// [`NetError::PermissionDenied`] when the unmount or removal fails.
pub fn delete(name: &str) -> Result<(), NetError> {
    let target = path(name)?;
    if !target.exists() {
        return Err(NetError::NamespaceNotFound(name.to_owned()));
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a leftover file); removing it is all that is needed.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => {
            return Err(NetError::sys(
                format!("unmount {}", target.display()),
                e.into(),
            ))
        }
    }
    fs::remove_file(&target).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            NetError::NamespaceNotFound(name.to_owned())
        } else {
            NetError::sys(format!("remove {}", target.display()), e)
        }
    })
}

/// Lists the named namespaces under [`NETNS_DIR`], sorted; none when it does not exist.
///
/// # Errors
///
/// [`NetError::Sys`] when the directory cannot be read.
pub fn list() -> Result<Vec<String>, NetError> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::sys(format!("read {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetError::sys(format!("read {NETNS_DIR}"), e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `f` on a fresh thread that has entered namespace `name` and returns its result.
///
/// Sockets and netlink connections `f` opens belong to that namespace for their whole life,
/// even after the thread is gone — this is how per-network DHCP and metadata sockets are made.
///
/// # Errors
///
/// [`NetError::InvalidName`], [`NetError::NamespaceNotFound`], [`NetError::Sys`] when `setns`
/// fails, or [`NetError::Thread`] when `f` panics.
pub fn run_in<F, T>(name: &str, f: F) -> Result<T, NetError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let target = path(name)?;
    let ns = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&target)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NetError::NamespaceNotFound(name.to_owned())
            } else {
                NetError::sys(format!("open {}", target.display()), e)
            }
        })?;
    let op = format!("enter namespace {name}");
    let setns_op = op.clone();
    on_fresh_thread(op, move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::sys(setns_op, e.into()))?;
        drop(ns);
        Ok(f())
    })
    .and_then(|r| r)
}

/// Runs `f` on a new, named OS thread and joins it.
fn on_fresh_thread<F, T>(op: String, f: F) -> Result<T, NetError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("hyperlet-netns".into())
        .spawn(f)
        .map_err(|e| NetError::Thread {
            op: op.clone(),
            reason: e.to_string(),
        })?;
    handle.join().map_err(|panic| NetError::Thread {
        op,
        reason: panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_owned()),
    })
}
