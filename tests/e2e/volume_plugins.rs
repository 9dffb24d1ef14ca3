//! Volume drivers in the agent's real plugin registry, against real LVM and a real NFS server
//! (run as root).
//!
//! The built components (`volume_lvm.wasm`, `volume_nfs.wasm`, `hyperlet_fixture_vol_rogue.wasm`)
//! are loaded through `PluginRegistry` and called from a blocking thread of a tokio runtime,
//! as the agent calls them; their effect is observed with the LVM tools, `nfs-ls` and
//! `qemu-img info nfs://…`.
//!
//! * LVM: a volume group on a loop device over a sparse file, with an `lvm.conf` that disables
//!   activation (this machine has no device-mapper), unique per test; a Drop guard removes the
//!   LVs, the VG, the PV, the loop device (by its path) and the config directory.
//! * NFS: nfs-ganesha serves two temporary directories on 127.0.0.1:2049 (NFSv3, VFS, no root
//!   squash). One NFS server per machine fits that port, so the tests share one instance,
//!   started on first use (with `rpcbind -f -w` when no portmapper answers). Both run as
//!   children of the test process and are stopped by PID when it exits (an `atexit` hook), and
//!   the exported directories are removed then; each test uses its own volume ids and removes
//!   its files.

use hyperlet::config::{FilesGrant, PluginKind, ShareAccess};
use hyperlet::plugin::{LoadedPlugin, PluginError, PluginRegistry, PluginStatus};
use hyperlet::volume::{
    copy_image_to, CapacityStats, DiskFormat, Files, Share, SnapshotRef, VolumeConnection,
    VolumeRef,
};
use hyperlet_tests::plugins::{call, registry, reported};
use hyperlet_tests::storage::*;
use std::path::Path;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Registry plumbing.

/// The loaded driver `name`, or a panic with the load error.
fn driver(registry: &PluginRegistry, name: &str) -> Arc<LoadedPlugin> {
    let view = registry
        .views()
        .into_iter()
        .find(|v| v.name == name)
        .expect("configured");
    assert_eq!(view.status, PluginStatus::Loaded, "{:?}", view.error);
    assert_eq!(view.kind, PluginKind::VolumeDriver);
    registry.volume_driver(name).unwrap()
}

/// The code and message of a failure the plugin reported.
// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn lvm_driver_manages_volumes_and_snapshots_in_its_volume_group() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let t = TestVg::new(8);
    let toml = stanza(
        "lvm",
        "volume-lvm",
        r#"["log", "lvm"]"#,
        &format!(
            "volume_group = \"{}\", volume_backend_name = \"lvm-e2e\"",
            t.vg
        ),
        &t.grant(),
    );
    let (rt, registry) = registry(&toml);
    assert_eq!(registry.volume_driver_names(), ["lvm"]);
    let view = &registry.views()[0];
    assert_eq!(view.call_timeout_ms, 120_000);
    assert_eq!(view.lvm.as_ref().unwrap().volume_groups, [t.vg.as_str()]);
    assert!(view.needs.contains(&"lvm".to_string()), "{:?}", view.needs);
    assert!(
        !view.needs.contains(&"files".to_string()),
        "{:?}",
        view.needs
    );
    let plugin = driver(&registry, "lvm");

    let v = VolumeRef::new(unique(), 1);
    let vol = v.clone();
    call(
        &rt,
        &plugin,
        move |p| async move { p.volume_create(&vol).await },
    )
    .unwrap();
    assert_eq!(t.lvs(), [(v.name.clone(), GIB, String::new())]);

    let vol = v.clone();
    call(&rt, &plugin, move |p| async move {
        p.volume_extend(&vol, 2).await
    })
    .unwrap();
    assert_eq!(t.lvs(), [(v.name.clone(), 2 * GIB, String::new())]);

    let s = SnapshotRef::new(unique(), v.clone());
    let snap = s.clone();
    call(&rt, &plugin, move |p| async move {
        p.snapshot_create(&snap).await
    })
    .unwrap();
    let snap_lv = format!("_{}", s.name);
    assert!(
        t.lvs()
            .contains(&(snap_lv.clone(), 2 * GIB, v.name.clone())),
        "{:?}",
        t.lvs()
    );

    // Deleting a volume with a snapshot is refused; nothing changes.
    let before = t.lvs();
    let vol = v.clone();
    let (code, message) = reported(
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_delete(&vol).await },
        )
        .unwrap_err(),
    );
    assert_eq!(code, "in-use", "{message}");
    assert!(message.contains(&snap_lv), "{message}");
    assert_eq!(t.lvs(), before);

    // A block copy needs active LVs: here (no device-mapper) it fails cleanly, leaving nothing.
    let v2 = VolumeRef::new(unique(), 2);
    let (vol, snap) = (v2.clone(), s.clone());
    let (code, message) = reported(
        call(&rt, &plugin, move |p| async move {
            p.volume_from_snapshot(&vol, &snap).await
        })
        .unwrap_err(),
    );
    assert_eq!(code, "unsupported", "{message}");
    assert!(message.contains("not active"), "{message}");
    assert_eq!(t.lvs(), before);

    let vol = v.clone();
    assert_eq!(
        call(&rt, &plugin, move |p| async move {
            p.connection_info(&vol).await
        })
        .unwrap(),
        VolumeConnection::Block {
            path: format!("/dev/{}/{}", t.vg, v.name)
        }
    );

    // Stats with cinder's thick formulas, checked against vgs.
    let stats: CapacityStats = call(
        &rt,
        &plugin,
        move |p| async move { p.capacity_stats().await },
    )
    .unwrap();
    let (size, free) = t.vgs();
    assert_eq!(stats.backend_name, "lvm-e2e");
    assert_eq!((stats.total_gb, stats.free_gb), (size / GIB, free / GIB));
    assert_eq!(stats.provisioned_gb, 4);
    assert!(!stats.thin_provisioning);
    assert_eq!(stats.max_over_subscription_ratio, 1.0);

    // Too big: no-space, naming the backend and its free capacity.
    let big = VolumeRef::new(unique(), 100);
    let (code, message) = reported(
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_create(&big).await },
        )
        .unwrap_err(),
    );
    assert_eq!(code, "no-space", "{message}");
    assert!(
        message.contains("lvm-e2e") && message.contains("GiB free"),
        "{message}"
    );

    // Snapshot first, then the volume; both deletes are idempotent.
    for _ in 0..2 {
        let snap = s.clone();
        call(&rt, &plugin, move |p| async move {
            p.snapshot_delete(&snap).await
        })
        .unwrap();
    }
    assert_eq!(t.lvs(), [(v.name.clone(), 2 * GIB, String::new())]);
    for _ in 0..2 {
        let vol = v.clone();
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_delete(&vol).await },
        )
        .unwrap();
    }
    assert!(t.lvs().is_empty());
    let vol = v.clone();
    let (code, _) = reported(
        call(&rt, &plugin, move |p| async move {
            p.connection_info(&vol).await
        })
        .unwrap_err(),
    );
    assert_eq!(code, "not-found");
}

/// Runs the NFS driver's whole lifecycle against share A of the shared server.
fn nfs_lifecycle(access: &str, mount_root: Option<&Path>) {
    let server = ganesha();
    let observe = if mount_root.is_some() {
        Observe::Local
    } else {
        Observe::Nfs
    };
    let nfs_image = |dir: &Path, name: &str| observe.image(dir, name);
    let nfs_ls = |dir: &Path| observe.ls(dir);
    let (a, share_a) = (server.a.clone(), server.share_a());
    let table = files_table(std::slice::from_ref(&share_a), access, mount_root);
    let settings = format!("nfs_shares = \"{share_a}\", volume_backend_name = \"nfs-e2e\"");
    let toml = format!(
        "{}{}",
        stanza(
            "nfs",
            "volume-nfs",
            r#"["log", "files", "qemu-img"]"#,
            &settings,
            &table
        ),
        stanza(
            "nfs-qcow2",
            "volume-nfs",
            r#"["log", "files", "qemu-img"]"#,
            &format!("{settings}, nfs_qcow2_volumes = \"true\""),
            &table
        ),
    );
    let (rt, registry) = registry(&toml);
    let plugin = driver(&registry, "nfs");
    let qcow2 = driver(&registry, "nfs-qcow2");
    let (v, v2, v3, vq) = (
        VolumeRef::new(unique(), 1),
        VolumeRef::new(unique(), 2),
        VolumeRef::new(unique(), 2),
        VolumeRef::new(unique(), 1),
    );
    let _files = FileGuard(
        [&v, &v2, &v3, &vq]
            .iter()
            .map(|x| (a.clone(), x.id.clone()))
            .collect(),
    );

    // Raw, sparse.
    let vol = v.clone();
    call(
        &rt,
        &plugin,
        move |p| async move { p.volume_create(&vol).await },
    )
    .unwrap();
    assert!(nfs_ls(&a).contains(&v.name));
    let img = nfs_image(&a, &v.name);
    assert_eq!(img["format"], "raw");
    assert_eq!(img["virtual-size"], GIB);
    assert!(img["actual-size"].as_u64().unwrap() < 1 << 20, "{img}");
    // Owned by the QEMU user, not world-writable (the grant's defaults).
    let meta = std::fs::metadata(a.join(&v.name)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), qemu_owner());

    // qcow2 on request.
    let vol = vq.clone();
    call(
        &rt,
        &qcow2,
        move |p| async move { p.volume_create(&vol).await },
    )
    .unwrap();
    let img = nfs_image(&a, &vq.name);
    assert_eq!(img["format"], "qcow2");
    assert_eq!(img["virtual-size"], GIB);
    let vol = vq.clone();
    match call(&rt, &qcow2, move |p| async move {
        p.connection_info(&vol).await
    })
    .unwrap()
    {
        VolumeConnection::Nfs { format, .. } => assert_eq!(format, DiskFormat::Qcow2),
        other => panic!("{other:?}"),
    }

    // Extend.
    let vol = v.clone();
    call(&rt, &plugin, move |p| async move {
        p.volume_extend(&vol, 2).await
    })
    .unwrap();
    assert_eq!(nfs_image(&a, &v.name)["virtual-size"], 2 * GIB);

    // Snapshot: an overlay on the base, recorded in the info file, and now active.
    let s = SnapshotRef::new(unique(), v.clone());
    let snap = s.clone();
    call(&rt, &plugin, move |p| async move {
        p.snapshot_create(&snap).await
    })
    .unwrap();
    let overlay = format!("{}.{}", v.name, s.id);
    // qemu-img made it; the host gave it the QEMU user's ownership.
    let meta = std::fs::metadata(a.join(&overlay)).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), {
        let (uid, gid) = qemu_owner();
        (uid, gid, 0o660)
    });
    let img = nfs_image(&a, &overlay);
    assert_eq!(img["format"], "qcow2");
    assert_eq!(img["virtual-size"], 2 * GIB);
    let backing = img["backing-filename"].as_str().unwrap();
    assert!(
        backing.ends_with(&format!("/{}", v.name)) || backing == v.name,
        "{backing}"
    );
    assert_eq!(img["backing-filename-format"], "raw");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join(format!("{}.info", v.name))).unwrap())
            .unwrap();
    assert_eq!(info["active"], overlay.as_str());
    assert_eq!(info[s.id.as_str()], overlay.as_str());
    let vol = v.clone();
    assert_eq!(
        call(&rt, &plugin, move |p| async move {
            p.connection_info(&vol).await
        })
        .unwrap(),
        VolumeConnection::Nfs {
            host: "127.0.0.1".into(),
            path: format!("{}/{overlay}", a.display()),
            format: DiskFormat::Qcow2,
        }
    );
    let vol = v.clone();
    let (code, message) = reported(
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_delete(&vol).await },
        )
        .unwrap_err(),
    );
    assert_eq!(code, "in-use", "{message}");

    // A volume from the snapshot and a clone: self-contained files, grown to their size.
    let (vol, snap) = (v2.clone(), s.clone());
    call(&rt, &plugin, move |p| async move {
        p.volume_from_snapshot(&vol, &snap).await
    })
    .unwrap();
    let img = nfs_image(&a, &v2.name);
    assert_eq!(
        (img["format"].as_str(), img.get("backing-filename")),
        (Some("raw"), None)
    );
    assert_eq!(img["virtual-size"], 2 * GIB);
    let (vol, src) = (v3.clone(), v.clone());
    call(&rt, &plugin, move |p| async move {
        p.volume_clone(&vol, &src).await
    })
    .unwrap();
    let img = nfs_image(&a, &v3.name);
    assert_eq!(
        (img["format"].as_str(), img.get("backing-filename")),
        (Some("raw"), None)
    );

    // Deleting the snapshot commits the overlay into the base, which becomes active again.
    for _ in 0..2 {
        let snap = s.clone();
        call(&rt, &plugin, move |p| async move {
            p.snapshot_delete(&snap).await
        })
        .unwrap();
    }
    let names = nfs_ls(&a);
    assert!(!names.contains(&overlay), "{names:?}");
    assert!(!names.contains(&format!("{}.info", v.name)), "{names:?}");
    let vol = v.clone();
    match call(&rt, &plugin, move |p| async move {
        p.connection_info(&vol).await
    })
    .unwrap()
    {
        VolumeConnection::Nfs { path, format, .. } => {
            assert_eq!(path, format!("{}/{}", a.display(), v.name));
            assert_eq!(format, DiskFormat::Raw);
        }
        other => panic!("{other:?}"),
    }

    // Stats from the share, checked against its file system.
    let stats = call(
        &rt,
        &plugin,
        move |p| async move { p.capacity_stats().await },
    )
    .unwrap();
    let fs = nix::sys::statvfs::statvfs(&a).unwrap();
    let total = fs.blocks() * fs.fragment_size();
    assert_eq!(stats.backend_name, "nfs-e2e");
    assert_eq!(stats.total_gb, total / GIB);
    assert!(stats.free_gb <= stats.total_gb);
    assert!(stats.provisioned_gb > 2 + 2 + 2, "{stats:?}");
    assert!(stats.thin_provisioning);

    for vol in [&v, &v2, &v3] {
        let vol = (*vol).clone();
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_delete(&vol).await },
        )
        .unwrap();
    }
    let vol = vq.clone();
    call(
        &rt,
        &qcow2,
        move |p| async move { p.volume_delete(&vol).await },
    )
    .unwrap();
    let names = nfs_ls(&a);
    for x in [&v, &v2, &v3, &vq] {
        assert!(names.iter().all(|n| !n.contains(&x.id)), "{names:?}");
    }
}

#[test]
fn nfs_driver_over_userspace_nfs() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    nfs_lifecycle("libnfs", None);
}

#[test]
fn nfs_driver_over_a_mount() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    // No kernel NFS client here: the share's mount point is a bind mount of the exported
    // directory, which the host finds mounted and uses as it would a kernel NFS mount.
    let root = tempfile::tempdir().unwrap();
    let (files, _mount) = hyperlet_tests::storage::mounted_share(server, root.path());
    assert_eq!(files.access(), ShareAccess::Mount);
    nfs_lifecycle("mount", Some(root.path()));
}

#[test]
fn a_full_nfs_backend_answers_no_space() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let share = server.share_a();
    let toml = stanza(
        "nfs-full",
        "volume-nfs",
        r#"["files", "qemu-img", "log"]"#,
        &format!(
            "nfs_shares = \"{share}\", volume_backend_name = \"nfs-full\", nfs_used_ratio = \"0.0001\""
        ),
        &files_table(std::slice::from_ref(&share), "libnfs", None),
    );
    let (rt, registry) = registry(&toml);
    let plugin = driver(&registry, "nfs-full");
    let v = VolumeRef::new(unique(), 1);
    let vol = v.clone();
    let (code, message) = reported(
        call(
            &rt,
            &plugin,
            move |p| async move { p.volume_create(&vol).await },
        )
        .unwrap_err(),
    );
    assert_eq!(code, "no-space", "{message}");
    assert!(
        message.contains("nfs-full") && message.contains(&share),
        "{message}"
    );
    assert!(!nfs_ls(&server.a).contains(&v.name));
}

#[test]
fn rogue_driver_is_denied_and_changes_nothing() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let t = TestVg::new(4);
    let toml = stanza(
        "rogue",
        "hyperlet-fixture-vol-rogue",
        r#"["lvm", "files", "qemu-img"]"#,
        &format!(
            "volume_group = \"{}\", share = \"{}\", other_vg = \"cinder-volumes\", other_share = \"{}\"",
            t.vg,
            server.share_a(),
            server.share_b()
        ),
        &format!(
            "{}{}",
            t.grant(),
            files_table(&[server.share_a()], "libnfs", None)
        ),
    );
    let (rt, registry) = registry(&toml);
    let plugin = driver(&registry, "rogue");
    let parent = server.a.parent().unwrap().to_path_buf();
    // Other tests share the NFS server and create `volume-<uuid>…` files meanwhile: only what
    // is not theirs counts (the rogue's attacks use other names).
    let listing = |d: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with("volume-"))
            .collect();
        n.sort();
        n
    };
    let before = (
        t.lvs(),
        listing(&server.a),
        listing(&server.b),
        listing(&parent),
    );
    for (attack, says) in [
        ("other-vg", "not granted"),
        ("other-vg-remove", "not granted"),
        ("dotdot-lv", "would leave its volume group"),
        ("slash-lv", "would leave its volume group"),
        ("other-share", "not granted"),
        ("dotdot-file", "would leave its share"),
        ("slash-file", "would leave its share"),
        ("info-escape", "would leave its share"),
        ("qemu-other-share", "not granted"),
        ("qemu-backing", "would leave its share"),
        ("qemu-convert-escape", "would leave its share"),
    ] {
        let v = VolumeRef {
            id: attack.into(),
            name: attack.into(),
            size_gb: 1,
        };
        let (code, message) = reported(
            call(
                &rt,
                &plugin,
                move |p| async move { p.volume_create(&v).await },
            )
            .expect_err(&format!("{attack} must be refused")),
        );
        assert_eq!(code, "denied", "{attack}: {message}");
        assert!(message.contains(says), "{attack}: {message}");
    }
    assert_eq!(
        (
            t.lvs(),
            listing(&server.a),
            listing(&server.b),
            listing(&parent)
        ),
        before
    );
}

#[test]
fn driver_without_its_grants_is_not_loaded() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let toml = format!(
        "{}{}",
        stanza("no-lvm", "volume-lvm", r#"["log"]"#, "", ""),
        stanza(
            "no-files",
            "volume-nfs",
            r#"["log", "files"]"#,
            "nfs_shares = \"127.0.0.1:/x\"",
            "[plugins.files]\nshares = [\"127.0.0.1:/x\"]\n"
        )
    );
    let (_rt, registry) = registry(&toml);
    let views = registry.views();
    assert_eq!(views[0].status, PluginStatus::Failed);
    let error = views[0].error.as_deref().unwrap();
    assert!(error.contains("not granted: lvm"), "{error}");
    let error = views[1].error.as_deref().unwrap();
    assert!(error.contains("not granted: qemu-img"), "{error}");
    assert!(matches!(
        registry.volume_driver("no-lvm"),
        Err(PluginError::NotLoaded { .. })
    ));
    match registry.volume_driver("nope") {
        Err(PluginError::NotLoaded { reason, .. }) => {
            assert!(
                reason.contains("volume drivers: no-lvm, no-files"),
                "{reason}"
            )
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn an_image_is_copied_into_an_nfs_volume() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let share = server.share_a();
    let toml = stanza(
        "nfs-img",
        "volume-nfs",
        r#"["log", "files", "qemu-img"]"#,
        &format!("nfs_shares = \"{share}\""),
        &files_table(std::slice::from_ref(&share), "libnfs", None),
    );
    let (rt, registry) = registry(&toml);
    let plugin = driver(&registry, "nfs-img");
    let v = VolumeRef::new(unique(), 1);
    let _files = FileGuard(vec![(server.a.clone(), v.id.clone())]);
    let vol = v.clone();
    call(
        &rt,
        &plugin,
        move |p| async move { p.volume_create(&vol).await },
    )
    .unwrap();
    let vol = v.clone();
    let connection = call(&rt, &plugin, move |p| async move {
        p.connection_info(&vol).await
    })
    .unwrap();

    // An image with recognisable contents: 4 MiB of a pattern, as qcow2.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("image.raw");
    let pattern: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &pattern).unwrap();
    let image = dir.path().join("image.qcow2");
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
        &[],
    );
    rt.block_on(copy_image_to(&connection, &image, "qcow2"))
        .unwrap();
    let url = format!("nfs://127.0.0.1{}/{}", server.a.display(), v.name);
    // Identical contents (the volume is larger: the rest reads as zeros).
    sh(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            image.to_str().unwrap(),
            &url,
        ],
        &[],
    );
    // A larger image does not fit; an image with a backing file is refused.
    let big = dir.path().join("big.qcow2");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", big.to_str().unwrap(), "2G"],
        &[],
    );
    let e = rt
        .block_on(copy_image_to(&connection, &big, "qcow2"))
        .unwrap_err();
    assert!(e.to_string().contains("larger than the volume"), "{e}");
    let overlay = dir.path().join("overlay.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            image.to_str().unwrap(),
            "-F",
            "qcow2",
            overlay.to_str().unwrap(),
        ],
        &[],
    );
    let e = rt
        .block_on(copy_image_to(&connection, &overlay, "qcow2"))
        .unwrap_err();
    assert!(e.to_string().contains("backing"), "{e}");
    let e = rt
        .block_on(copy_image_to(&connection, &image, "vmdk"))
        .unwrap_err();
    assert!(e.to_string().contains("vmdk"), "{e}");
    let vol = v.clone();
    call(
        &rt,
        &plugin,
        move |p| async move { p.volume_delete(&vol).await },
    )
    .unwrap();
}

/// Removes a path (file, link or directory tree) on drop.
struct PathGuard(Vec<std::path::PathBuf>);

impl Drop for PathGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() && !p.is_symlink() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The reason of a refused answer; panics on any other outcome.
fn refused(plugin: &str, r: Result<VolumeConnection, PluginError>) -> String {
    match r {
        Err(PluginError::BadAnswer { plugin: p, reason }) => {
            assert_eq!(p, plugin);
            reason
        }
        other => panic!("expected {plugin}'s answer to be refused, got {other:?}"),
    }
}

#[test]
fn rogue_connection_answers_are_refused() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let t = TestVg::new(4);
    let share_a = server.share_a();
    // The rogue answers what the volume id says: once over libnfs, once over a mount (a bind
    // mount of the export, as this machine has no kernel NFS client).
    let root = tempfile::tempdir().unwrap();
    let settings = format!("volume_group = \"{}\", share = \"{share_a}\"", t.vg);
    let grants = r#"["lvm", "files", "qemu-img"]"#;
    let toml = format!(
        "{}{}",
        stanza(
            "rogue",
            "hyperlet-fixture-vol-rogue",
            grants,
            &settings,
            &format!(
                "{}{}",
                t.grant(),
                files_table(std::slice::from_ref(&share_a), "libnfs", None)
            ),
        ),
        stanza(
            "rogue-mount",
            "hyperlet-fixture-vol-rogue",
            grants,
            &settings,
            &format!(
                "{}{}",
                t.grant(),
                files_table(std::slice::from_ref(&share_a), "mount", Some(root.path()))
            ),
        ),
    );
    let grant: FilesGrant = toml::from_str(
        &files_table(std::slice::from_ref(&share_a), "mount", Some(root.path()))
            .replace("[plugins.files]\n", ""),
    )
    .unwrap();
    let point = Files::new(&grant)
        .unwrap()
        .mount_point(&Share::parse(&share_a).unwrap());
    std::fs::create_dir_all(&point).unwrap();
    let _mount = MountGuard(point.clone());
    sh(
        "mount",
        &[
            "--bind",
            server.a.to_str().unwrap(),
            point.to_str().unwrap(),
        ],
        &[],
    );
    let (rt, registry) = registry(&toml);
    let (rogue, rogue_mount) = (driver(&registry, "rogue"), driver(&registry, "rogue-mount"));

    // What the attacks point at: an LV of the granted group with a planted device node, a
    // victim file outside any share, another volume's file and a symbolic link in share A.
    let id = unique();
    let own = format!("volume-{id}");
    let lv = format!("volume-{}", unique());
    sh("lvcreate", &["-q", "-L", "4m", "-n", &lv, &t.vg], &t.env());
    let dev_dir = std::path::PathBuf::from(format!("/dev/{}", t.vg));
    let disk_link = std::path::PathBuf::from(format!("/dev/disk/hyperlet-e2e-{id}"));
    let _paths = PathGuard(vec![dev_dir.clone(), disk_link.clone()]);
    std::fs::create_dir_all(&dev_dir).unwrap();
    let node = dev_dir.join(&lv);
    std::os::unix::fs::symlink(t.loop_device(), &node).unwrap();
    std::fs::create_dir_all("/dev/disk").unwrap();
    std::os::unix::fs::symlink(&node, &disk_link).unwrap();
    let victims = tempfile::tempdir().unwrap();
    let victim = victims.path().join("hyperlet.db");
    std::fs::write(&victim, b"precious state").unwrap();
    let other = format!("volume-{}", unique());
    let _files = FileGuard(vec![
        (server.a.clone(), id.clone()),
        (server.a.clone(), other.clone()),
    ]);
    std::fs::write(server.a.join(&other), b"another volume").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", server.a.join(&own)).unwrap();
    let linked = format!("{own}.linked");
    std::fs::hard_link(server.a.join(&other), server.a.join(&linked)).unwrap();
    let (a, b) = (server.a.display(), server.b.display());
    let mp = point.display();
    let vg = &t.vg;

    let attacks: Vec<(&Arc<LoadedPlugin>, String, String)> = vec![
        (
            &rogue,
            "block=/dev/sda".into(),
            "/dev/<granted volume group>".into(),
        ),
        (
            &rogue,
            "block=/dev/cinder-volumes/volume-1".into(),
            "VG cinder-volumes is not granted".into(),
        ),
        (
            &rogue,
            format!("block=/dev/{vg}/../sda"),
            "not an absolute path under /dev".into(),
        ),
        (
            &rogue,
            format!("block=/dev/{vg}/volume-missing"),
            "does not exist".into(),
        ),
        // A granted-looking name that is a link to another device (here the group's own PV).
        (
            &rogue,
            format!("block={}", node.display()),
            "is not active on this host".into(),
        ),
        // A link elsewhere in /dev to the granted-looking name.
        (
            &rogue,
            format!("block={}", disk_link.display()),
            "VG disk is not granted".into(),
        ),
        (
            &rogue,
            format!("file={}", victim.display()),
            "files.access = \"mount\"".into(),
        ),
        (
            &rogue_mount,
            format!("file={}", victim.display()),
            "not the mount point of a granted share".into(),
        ),
        (
            &rogue_mount,
            "file=/var/lib/hyperlet/hyperlet.db".into(),
            "not the mount point of a granted share".into(),
        ),
        (
            &rogue_mount,
            format!("file={mp}/{other}"),
            "is not a file of volume".into(),
        ),
        (
            &rogue_mount,
            format!("file={mp}/{own}"),
            "symbolic link".into(),
        ),
        // Its own name, but a second name of another volume's file.
        (
            &rogue_mount,
            format!("file={mp}/{linked}"),
            "hard links".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.2:{a}/{own}"),
            "not a granted share".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{b}/{own}"),
            "not a granted share".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{a}x/{own}"),
            "not a granted share".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{a}/sub/{own}"),
            "not a granted share".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{a}/../b/{own}"),
            "not an absolute path".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{a}/{other}"),
            "is not a file of volume".into(),
        ),
        (
            &rogue,
            format!("nfs=127.0.0.1:{a}/{own}"),
            "not a regular file".into(),
        ),
        (
            &rogue_mount,
            format!("nfs=127.0.0.1:{a}/{own}"),
            "symbolic link".into(),
        ),
    ];
    for (plugin, spec, says) in attacks {
        let v = VolumeRef {
            id: spec.clone(),
            name: own.clone(),
            size_gb: 1,
        };
        let name = plugin.config.name.clone();
        let reason = refused(
            &name,
            call(
                &rt,
                plugin,
                move |p| async move { p.connection_info(&v).await },
            ),
        );
        assert!(reason.contains(&says), "{name} {spec}: {reason}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious state");

    // The volume's own regular file (here a snapshot overlay's name: the NFS server caches
    // what `own` was) is accepted, over NFS and through the mount.
    let overlay = format!("{own}.{}", unique());
    std::fs::write(server.a.join(&overlay), b"").unwrap();
    for (plugin, spec) in [
        (&rogue, format!("nfs=127.0.0.1:{a}/{overlay}")),
        (&rogue_mount, format!("nfs=127.0.0.1:{a}/{overlay}")),
        (&rogue_mount, format!("file={mp}/{overlay}")),
    ] {
        let v = VolumeRef {
            id: spec.clone(),
            name: own.clone(),
            size_gb: 1,
        };
        call(
            &rt,
            plugin,
            move |p| async move { p.connection_info(&v).await },
        )
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
}
