//! Unit tests against the SDK's simulated share and qemu-img hosts.

use super::*;
use hyperlet_plugin_sdk::testing::{driver, files as mock, snapshot, volume};

const A: &str = "127.0.0.1:/srv/nfs/a";
const B: &str = "127.0.0.1:/srv/nfs/b";
const ID: &str = "4e1b0a9c-0000-4000-8000-000000000001";
const ID2: &str = "4e1b0a9c-0000-4000-8000-000000000002";
const S1: &str = "4e1b0a9c-0000-4000-8000-0000000000a1";
const S2: &str = "4e1b0a9c-0000-4000-8000-0000000000a2";

fn nfs(extra: &[(&str, &str)]) -> NfsDriver {
    mock::reset();
    mock::add_share(A, 100);
    mock::add_share(B, 100);
    let shares = format!("{A},{B}");
    let mut settings = vec![("nfs_shares", shares.as_str())];
    settings.extend_from_slice(extra);
    driver::<NfsDriver>(&settings).unwrap()
}

fn info_of(share: &str, id: &str) -> Option<SnapInfo> {
    let name = format!("volume-{id}.info");
    mock::file(share, &name)
        .and_then(|f| f.contents)
        .map(|t| SnapInfo::parse(&name, &t).unwrap())
}

#[test]
fn settings_are_checked() {
    mock::reset();
    mock::add_share(A, 10);
    assert_eq!(driver::<NfsDriver>(&[]).err().unwrap().code, "bad-setting");
    assert_eq!(
        driver::<NfsDriver>(&[("nfs_shares", "nohost")])
            .err()
            .unwrap()
            .code,
        "bad-setting"
    );
    // A share that is not granted: the host's refusal comes back at configure.
    let err = driver::<NfsDriver>(&[("nfs_shares", B)]).err().unwrap();
    assert_eq!(err.code, "denied");
    let err = driver::<NfsDriver>(&[("nfs_shares", A), ("nfs_used_ratio", "2")])
        .err()
        .unwrap();
    assert!(err.message.contains("nfs_used_ratio"), "{}", err.message);
    let share = ShareName::parse("[fd00::1]:/x/").unwrap();
    assert_eq!(
        (share.host.as_str(), share.export.as_str()),
        ("fd00::1", "/x")
    );
    assert_eq!(share.path_of("v"), "/x/v");
}

#[test]
fn raw_volumes_go_to_the_least_allocated_share() {
    let d = nfs(&[]);
    let v = volume(ID, 3);
    d.create(&v).unwrap();
    let f = mock::file(A, &v.name).unwrap();
    assert_eq!((f.size, f.allocated, f.format), (3 * GIB, 0, None));
    // Make A look fuller: the next volume lands on B.
    mock::put_file(
        A,
        "other",
        mock::MockFile {
            size: 10 * GIB,
            allocated: 10 * GIB,
            format: None,
            virtual_size: 10 * GIB,
            backing: None,
            contents: None,
        },
    );
    let v2 = volume(ID2, 1);
    d.create(&v2).unwrap();
    assert!(mock::file(B, &v2.name).is_some());
    assert_eq!(
        d.connection_info(&v2).unwrap(),
        ConnectionInfo::Nfs(NfsLocation {
            host: "127.0.0.1".into(),
            path: format!("/srv/nfs/b/volume-{ID2}"),
            format: DiskFormat::Raw,
        })
    );
    d.extend(&v, 5).unwrap();
    assert_eq!(mock::file(A, &v.name).unwrap().virtual_size, 5 * GIB);
    d.delete(&v).unwrap();
    d.delete(&v).unwrap();
    assert!(mock::file(A, &v.name).is_none());
}

#[test]
fn qcow2_volumes_on_request() {
    let d = nfs(&[("nfs_qcow2_volumes", "true")]);
    let v = volume(ID, 2);
    d.create(&v).unwrap();
    let f = mock::file(A, &v.name).unwrap();
    assert_eq!(f.format, Some(DiskFormat::Qcow2));
    assert_eq!(f.virtual_size, 2 * GIB);
    match d.connection_info(&v).unwrap() {
        ConnectionInfo::Nfs(loc) => assert_eq!(loc.format, DiskFormat::Qcow2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshots_form_a_chain_recorded_in_the_info_file() {
    let d = nfs(&[]);
    let v = volume(ID, 2);
    d.create(&v).unwrap();
    let s1 = snapshot(S1, &v);
    let s2 = snapshot(S2, &v);
    d.create_snapshot(&s1).unwrap();
    d.create_snapshot(&s1).unwrap(); // idempotent
    d.create_snapshot(&s2).unwrap();
    let f1 = format!("volume-{ID}.{S1}");
    let f2 = format!("volume-{ID}.{S2}");
    let info = info_of(A, ID).unwrap();
    assert_eq!(info.active, f2);
    assert_eq!(info.file_of(S1), Some(f1.as_str()));
    assert_eq!(
        mock::file(A, &f1).unwrap().backing,
        Some((v.name.clone(), DiskFormat::Raw))
    );
    assert_eq!(
        mock::file(A, &f2).unwrap().backing,
        Some((f1.clone(), DiskFormat::Qcow2))
    );
    match d.connection_info(&v).unwrap() {
        ConnectionInfo::Nfs(loc) => {
            assert_eq!(loc.path, format!("/srv/nfs/a/{f2}"));
            assert_eq!(loc.format, DiskFormat::Qcow2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.delete(&v).unwrap_err().code, "in-use");

    // A volume from S1 is a copy of S1's data: the base file.
    let v2 = volume(ID2, 4);
    mock::take_calls();
    d.create_from_snapshot(&v2, &s1).unwrap();
    let calls = mock::take_calls();
    assert!(
        calls.contains(&format!(
            "qemu-img convert {A} volume-{ID} raw volume-{ID2} raw"
        )),
        "{calls:?}"
    );
    let f = mock::file(A, &v2.name).unwrap();
    assert_eq!((f.virtual_size, f.backing), (4 * GIB, None));

    // Deleting S1 (not the newest): commit f1 into the base, rebase f2 onto the base.
    d.delete_snapshot(&s1).unwrap();
    let calls = mock::take_calls();
    assert!(
        calls.contains(&format!("qemu-img commit {A} {f1}")),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("qemu-img rebase {A} {f2} volume-{ID} raw")),
        "{calls:?}"
    );
    assert!(mock::file(A, &f1).is_none());
    let info = info_of(A, ID).unwrap();
    assert_eq!(
        (info.active.as_str(), info.snapshots.len()),
        (f2.as_str(), 1)
    );
    // Deleting S2 (the newest): commit it, the base becomes active, no info file left.
    d.delete_snapshot(&s2).unwrap();
    d.delete_snapshot(&s2).unwrap();
    assert!(mock::file(A, &f2).is_none());
    assert!(info_of(A, ID).is_none());
    d.delete(&v).unwrap();
    assert_eq!(mock::file_names(A), [format!("volume-{ID2}")]);
}

#[test]
fn clone_copies_the_active_chain() {
    let d = nfs(&[]);
    let v = volume(ID, 2);
    d.create(&v).unwrap();
    d.create_snapshot(&snapshot(S1, &v)).unwrap();
    let v2 = volume(ID2, 2);
    mock::take_calls();
    d.clone_volume(&v2, &v).unwrap();
    assert!(mock::take_calls().contains(&format!(
        "qemu-img convert {A} volume-{ID}.{S1} qcow2 volume-{ID2} raw"
    )));
    assert_eq!(mock::file(A, &v2.name).unwrap().backing, None);
}

#[test]
fn a_full_backend_says_so() {
    let d = nfs(&[]);
    let err = d.create(&volume(ID, 150)).unwrap_err();
    assert_eq!(err.code, "no-space");
    assert!(err.message.contains("Backend NFS"), "{}", err.message);
    assert!(err.message.contains("100.00 GiB free"), "{}", err.message);
    assert!(mock::file_names(A).is_empty() && mock::file_names(B).is_empty());
    let stats = d.capacity_stats().unwrap();
    assert_eq!(
        (stats.total_gb, stats.free_gb, stats.provisioned_gb),
        (200, 200, 0)
    );
    assert!(stats.thin_provisioning);
}
