//! Links planted on a real export: whatever another client of the share put under a volume's
//! name — a symbolic link or a hard link to a host file outside the export — the host's
//! `files` and `qemu-img` calls refuse it (`denied`, naming what it is) and the file outside
//! is left exactly as it was. Both access modes: the agent's own NFSv3 client against
//! nfs-ganesha (which reports the links as `NF3LNK` / `nlink` 2), and a kernel mount, stood
//! in for by a bind mount of the exported directory (no kernel NFS client on this machine).

use hyperlet::config::FilesGrant;
use hyperlet::volume::{DiskFormat, Files, QemuImg, VolumeError};
use hyperlet_tests::storage::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Contents, mode, owner and modification time of a file.
fn fingerprint(path: &Path) -> (Vec<u8>, u32, u32, u32, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

fn qemu_img(args: &[&str]) {
    sh("qemu-img", args, &[]);
}

fn planted_links_are_refused(access: &str, mount_root: Option<&Path>) {
    let server = ganesha();
    let (a, share) = (server.a.clone(), server.share_a());
    let grant: FilesGrant = toml::from_str(
        &files_table(std::slice::from_ref(&share), access, mount_root)
            .replace("[plugins.files]\n", ""),
    )
    .unwrap();
    let files = Files::new(&grant).unwrap();
    let qemu = QemuImg::new(files.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A host file outside the export, on the same file system (so it can be hard-linked).
    let outside_dir = server.outside();
    let secret = outside_dir.path().join("secret");
    std::fs::write(&secret, vec![7u8; 1 << 16]).unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
    let before = fingerprint(&secret);

    let id = unique();
    let name = |what: &str| format!("volume-{id}-{what}");
    let _cleanup = FileGuard(vec![(a.clone(), id.clone())]);
    let plant = |what: &str, hard: bool| -> String {
        let n = name(what);
        let at: PathBuf = a.join(&n);
        if hard {
            std::fs::hard_link(&secret, at).unwrap();
        } else {
            std::os::unix::fs::symlink(&secret, at).unwrap();
        }
        n
    };
    let (sym, hard) = (plant("sym", false), plant("hard", true));
    let (sym_info, hard_info) = (plant("sym.info", false), plant("hard.info", true));
    // A real volume and overlays whose backing files are the planted links.
    let real = name("real");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        a.join(&real).to_str().unwrap(),
        "1M",
    ]);
    let overlay = |what: &str, backing: &str| {
        let n = name(what);
        let path = a.join(&n);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing,
            "-F",
            "raw",
            path.to_str().unwrap(),
            "1M",
        ]);
        n
    };
    let (on_sym, on_hard) = (overlay("on-sym", &sym), overlay("on-hard", &hard));
    let fresh = name("fresh");

    let raw = DiskFormat::Raw;
    let qcow2 = DiskFormat::Qcow2;
    let mut refused = Vec::new();
    for (target, what) in [(&sym, "a symbolic link"), (&hard, "hard-linked")] {
        refused.push((what, rt.block_on(files.stat(&share, target)).unwrap_err()));
        refused.push((
            what,
            rt.block_on(files.apply_mode(&share, target)).unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.info(&share, target, None)).unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.info(&share, target, Some(raw)))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.resize(&share, target, raw, 1))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.create(&share, &fresh, qcow2, 1, Some((target, raw))))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.convert(&share, target, raw, &fresh, raw))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.convert(&share, &real, raw, target, raw))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.create(&share, target, raw, 1, None))
                .unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(qemu.rebase(&share, &on_hard, (target, raw)))
                .unwrap_err(),
        ));
    }
    for (top, what) in [(&on_sym, "a symbolic link"), (&on_hard, "hard-linked")] {
        refused.push((what, rt.block_on(qemu.commit(&share, top)).unwrap_err()));
        refused.push((
            what,
            rt.block_on(qemu.resize(&share, top, qcow2, 1)).unwrap_err(),
        ));
    }
    for (info, what) in [(&sym_info, "a symbolic link"), (&hard_info, "hard-linked")] {
        refused.push((
            what,
            rt.block_on(files.read_info_file(&share, info)).unwrap_err(),
        ));
        refused.push((
            what,
            rt.block_on(files.write_info_file(&share, info, "{}"))
                .unwrap_err(),
        ));
        refused.push((what, rt.block_on(files.stat(&share, info)).unwrap_err()));
    }
    for (what, e) in &refused {
        assert!(
            matches!(e, VolumeError::NotPlainFile { .. }),
            "{access}: want {what}, got {e:?}"
        );
        assert_eq!(e.code(), "denied", "{access}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(what) && text.contains("only regular files with a single link"),
            "{access}: {text}"
        );
    }
    // Creating over a planted name answers that it exists.
    for target in [&sym, &hard] {
        let e = rt
            .block_on(files.create_sparse(&share, target, 1 << 20))
            .unwrap_err();
        assert_eq!(e.code(), "exists", "{access}: {e}");
    }
    assert_eq!(
        fingerprint(&secret),
        before,
        "{access}: the file outside changed"
    );
    assert!(
        !a.join(&fresh).exists(),
        "{access}: a refused call created {fresh}"
    );
    // The links are still what they were; removing them removes the links only.
    assert!(std::fs::symlink_metadata(a.join(&sym))
        .unwrap()
        .file_type()
        .is_symlink());
    for target in [&sym, &hard, &sym_info, &hard_info] {
        rt.block_on(files.remove(&share, target)).unwrap();
    }
    assert_eq!(fingerprint(&secret).0, before.0);
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    // The real volume still works.
    assert!(rt.block_on(files.stat(&share, &real)).unwrap().is_some());
    rt.block_on(qemu.resize(&share, &real, raw, 1)).unwrap();
}

#[test]
fn links_planted_on_the_export_are_refused_over_userspace_nfs() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    planted_links_are_refused("libnfs", None);
}

/// The check-then-use race on a mounted share: a file checked and opened by the host is what
/// `qemu-img` reads even after another client of the export swapped its name for a symbolic
/// link to a host file — the tool is handed the descriptor, never the path.
#[test]
fn qemu_img_reads_the_file_the_host_checked_not_what_the_name_became() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let root = tempfile::tempdir().unwrap();
    let (files, _mount) = mounted_share(server, root.path());
    let share = server.share_a();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = unique();
    let name = format!("volume-{id}");
    let _cleanup = FileGuard(vec![(server.a.clone(), id.clone())]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        server.a.join(&name).to_str().unwrap(),
        "3G",
    ]);
    let opened = rt
        .block_on(files.open_for_tool(&share, &name, false, false))
        .unwrap();

    // Another client swaps the name for a link to a 64 KiB raw host file.
    let outside = server.outside();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, vec![7u8; 1 << 16]).unwrap();
    std::fs::rename(server.a.join(&name), outside.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&secret, server.a.join(&name)).unwrap();

    let info = rt
        .block_on(
            hyperlet::tool::Tool::new("qemu-img", "qemu-utils", std::time::Duration::from_secs(30))
                .with_inherited(opened.inherited())
                .run(&["info".into(), "--output=json".into(), opened.arg()]),
        )
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], 3u64 << 30, "{info}");
    // And opening the name now is refused: it is a link.
    let again = rt.block_on(files.open_for_tool(&share, &name, false, false));
    assert!(
        matches!(again, Err(VolumeError::NotPlainFile { .. })),
        "{again:?}"
    );
}

#[test]
fn links_planted_on_the_export_are_refused_through_a_mount() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    require_root();
    let server = ganesha();
    let root = tempfile::tempdir().unwrap();
    let (_files, _mount) = mounted_share(server, root.path());
    planted_links_are_refused("mount", Some(root.path()));
}
