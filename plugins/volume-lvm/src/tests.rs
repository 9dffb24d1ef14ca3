//! Unit tests against the SDK's simulated LVM host.

use super::*;
use hyperlet_plugin_sdk::testing::{driver, lvm as mock, snapshot, volume};

const VG: &str = "cinder-volumes";
const ID: &str = "4e1b0a9c-0000-4000-8000-000000000001";
const ID2: &str = "4e1b0a9c-0000-4000-8000-000000000002";
const SNAP: &str = "4e1b0a9c-0000-4000-8000-0000000000a1";

fn thick() -> LvmDriver {
    mock::reset();
    mock::add_vg(VG, 20);
    driver::<LvmDriver>(&[]).unwrap()
}

fn thin() -> LvmDriver {
    mock::reset();
    mock::add_vg(VG, 20);
    mock::add_thin_pool(VG, "cinder-volumes-pool", 10);
    driver::<LvmDriver>(&[("max_over_subscription_ratio", "5")]).unwrap()
}

fn lv(name: &str) -> Option<Lv> {
    mock::lvs(VG).into_iter().find(|l| l.name == name)
}

#[test]
fn settings_are_checked() {
    mock::reset();
    mock::add_vg("other", 5);
    let err = driver::<LvmDriver>(&[("volume_group", "other"), ("lvm_type", "fat")])
        .err()
        .unwrap();
    assert_eq!(err.code, "bad-setting");
    assert!(driver::<LvmDriver>(&[("bogus", "1")]).is_err());
    // The default group is not granted here: the host's refusal comes back.
    assert_eq!(driver::<LvmDriver>(&[]).err().unwrap().code, "denied");
    let err = driver::<LvmDriver>(&[("volume_group", "other"), ("lvm_type", "thin")])
        .err()
        .unwrap();
    assert!(
        err.message.contains("no thin pool other-pool"),
        "{}",
        err.message
    );
    driver::<LvmDriver>(&[("volume_group", "other")]).unwrap();
}

#[test]
fn thick_lifecycle() {
    let d = thick();
    let v = volume(ID, 4);
    d.create(&v).unwrap();
    assert_eq!(lv(&v.name).unwrap().size_bytes, 4 * GIB);
    d.extend(&v, 6).unwrap();
    assert_eq!(lv(&v.name).unwrap().size_bytes, 6 * GIB);

    let s = snapshot(SNAP, &v);
    d.create_snapshot(&s).unwrap();
    let snap_lv = lv(&format!("_snapshot-{SNAP}")).unwrap();
    assert_eq!(snap_lv.origin.as_deref(), Some(v.name.as_str()));
    assert_eq!(snap_lv.size_bytes, 6 * GIB);

    let err = d.delete(&v).unwrap_err();
    assert_eq!(err.code, "in-use");
    assert!(
        err.message.contains(&format!("_snapshot-{SNAP}")),
        "{}",
        err.message
    );

    // A volume from the snapshot: a new LV and a block copy.
    // 20 GiB, 12 used: a 10 GiB copy does not fit and nothing is created.
    let v2 = volume(ID2, 10);
    let err = d.create_from_snapshot(&v2, &s).unwrap_err();
    assert_eq!(err.code, "no-space", "{}", err.message);
    assert!(lv(&v2.name).is_none());
    assert!(err.message.contains("Backend LVM"), "{}", err.message);
    d.delete_snapshot(&s).unwrap();
    d.delete_snapshot(&s).unwrap();
    assert!(lv(&format!("_snapshot-{SNAP}")).is_none());

    let stats = d.capacity_stats().unwrap();
    assert_eq!(
        (stats.total_gb, stats.free_gb, stats.provisioned_gb),
        (20, 14, 6)
    );
    assert!(!stats.thin_provisioning);
    assert_eq!(stats.max_over_subscription_ratio, 1.0);
    assert_eq!(stats.backend_name, "LVM");

    assert_eq!(
        d.connection_info(&v).unwrap(),
        ConnectionInfo::Block(format!("/dev/{VG}/volume-{ID}"))
    );
    d.delete(&v).unwrap();
    d.delete(&v).unwrap();
    assert!(mock::lvs(VG).is_empty());
    assert_eq!(d.connection_info(&v).unwrap_err().code, "not-found");
}

#[test]
fn thick_clone_and_from_snapshot_copy_blocks() {
    let d = thick();
    let v = volume(ID, 2);
    d.create(&v).unwrap();
    let s = snapshot(SNAP, &v);
    d.create_snapshot(&s).unwrap();
    let v2 = volume(ID2, 3);
    d.create_from_snapshot(&v2, &s).unwrap();
    assert_eq!(lv(&v2.name).unwrap().size_bytes, 3 * GIB);
    assert_eq!(
        mock::copies(),
        [(VG.into(), format!("_snapshot-{SNAP}"), v2.name.clone())]
    );
    let v3 = volume("4e1b0a9c-0000-4000-8000-000000000003", 1);
    d.clone_volume(&v3, &v).unwrap();
    // At least the source's size; the temporary snapshot is gone.
    assert_eq!(lv(&v3.name).unwrap().size_bytes, 2 * GIB);
    assert!(mock::lvs(VG)
        .iter()
        .all(|l| !l.name.starts_with("clone-snap-")));
    assert_eq!(mock::copies()[1].2, v3.name);
}

#[test]
fn thin_volumes_and_snapshots() {
    let d = thin();
    let v = volume(ID, 8);
    d.create(&v).unwrap();
    let calls = mock::take_calls();
    assert!(
        calls.contains(&format!("lv-create {VG} volume-{ID} 8 cinder-volumes-pool")),
        "{calls:?}"
    );
    let s = snapshot(SNAP, &v);
    d.create_snapshot(&s).unwrap();
    assert!(mock::take_calls().contains(&format!(
        "lv-snapshot {VG} volume-{ID} _snapshot-{SNAP} thin"
    )));
    let v2 = volume(ID2, 12);
    d.create_from_snapshot(&v2, &s).unwrap();
    assert_eq!(lv(&v2.name).unwrap().size_bytes, 12 * GIB);
    assert!(mock::copies().is_empty());
    let stats = d.capacity_stats().unwrap();
    assert!(stats.thin_provisioning);
    assert_eq!(stats.max_over_subscription_ratio, 5.0);
    assert_eq!(stats.total_gb, 10);
    assert_eq!(stats.provisioned_gb, 8 + 8 + 12);
}

#[test]
fn snapshot_names_are_escaped() {
    assert_eq!(snapshot_lv_name("snapshot-1"), "_snapshot-1");
    assert_eq!(snapshot_lv_name("backup-1"), "backup-1");
}

#[test]
fn a_full_group_says_how_much_is_free() {
    let d = thick();
    let err = d.create(&volume(ID, 25)).unwrap_err();
    assert_eq!(err.code, "no-space");
    assert!(err.message.contains("20.00 GiB free"), "{}", err.message);
    assert!(mock::lvs(VG).is_empty());
}
