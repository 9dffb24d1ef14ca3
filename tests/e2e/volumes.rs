//! Volumes end to end through REST on the real volume drivers: LVM on a loop-device volume
//! group (activation disabled, no device-mapper here) and NFS on a real nfs-ganesha — volume
//! types, create (empty, from an image, snapshot, clone), extend, snapshots, capacity, bad
//! input, boot from volume, and a volume moved between two running guests with its data.

use crate::networks::post;
use crate::servers::{import_guest, CONFIG};
use hyperlet_tests::storage::{ganesha, stanza, Observe, TestVg};
use hyperlet_tests::{virsh, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn delete(agent: &Agent, path: &str) -> (u16, String) {
    let resp = agent.send(Method::DELETE, path, None);
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

/// Waits until the volume reaches `status` (fails at once on `error`).
pub fn wait_volume(agent: &Agent, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = agent.get_json(&format!("/v1/volumes/{id}"));
        if v["status"] == status {
            return v;
        }
        assert!(v["status"] != "error", "volume {id} failed: {v}");
        assert!(
            Instant::now() < deadline,
            "volume {id} never became {status}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `GET path` shows `status` (fails at once on `error`).
pub fn wait_for(agent: &Agent, path: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = agent.get_json(path);
        if v["status"] == status {
            return v;
        }
        assert!(v["status"] != "error", "{path} failed: {v}");
        assert!(
            Instant::now() < deadline,
            "{path} never became {status}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `GET path` answers 404.
pub fn wait_gone(agent: &Agent, path: &str) {
    agent.wait_gone(path);
}

fn create_volume(agent: &Agent, body: Value) -> Value {
    let (s, v) = post(agent, "/v1/volumes", body.clone());
    assert_eq!(s, 202, "{body} → {v}");
    assert_eq!(v["status"], "creating");
    wait_volume(agent, v["id"].as_str().unwrap(), "available")
}

/// The agent's configuration with one LVM backend on `vg`.
pub fn lvm_config(vg: &TestVg) -> String {
    format!(
        "{}\n{}",
        CONFIG,
        stanza(
            "lvm",
            "volume-lvm",
            "[\"log\", \"lvm\"]",
            &format!("volume_group = \"{}\"", vg.vg),
            &vg.grant()
        )
    )
}

#[test]
fn lvm_volumes_through_the_api_and_bad_input() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let vg = TestVg::new(6);
    let config = lvm_config(&vg);
    let agent = Agent::start_with_config(&config);
    let (s, answer) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "fast", "backend": "nope"}),
    );
    assert_eq!(s, 404, "{answer}");
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "fast", "backend": "lvm", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");
    let (s, answer) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "fast", "backend": "lvm"}),
    );
    assert_eq!(s, 409, "{answer}");

    let backends = agent.get_json("/v1/backends");
    let lvm = &backends["backends"][0];
    assert_eq!(lvm["name"], "lvm", "{backends}");
    let (vg_size, vg_free) = vg.vgs();
    assert_eq!(lvm["total_gb"], vg_size >> 30, "{backends}");
    assert_eq!(lvm["free_gb"], vg_free >> 30, "{backends}");

    // Bad input: nothing is created.
    for (body, want) in [
        (json!({"size_gb": 0}), 400),
        (json!({"size_gb": -1}), 400),
        (json!({"size_gb": 1, "volume_type": "nope"}), 404),
        (json!({"size_gb": 1, "snapshot_id": "nope"}), 404),
        (
            json!({"size_gb": 1, "image_id": "4e1b0a9c-0000-4000-8000-000000000001"}),
            404,
        ),
        (json!({"size_gb": 100}), 409),
        (json!({"size_gb": 1, "bogus": true}), 400),
    ] {
        let (s, answer) = post(&agent, "/v1/volumes", body.clone());
        assert_eq!(s, want, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if want == 409 {
            assert!(
                message.contains("lvm") && message.contains("free"),
                "{answer}"
            );
        }
    }
    assert_eq!(agent.get_json("/v1/volumes")["volumes"], json!([]));
    assert!(vg.lvs().is_empty(), "{:?}", vg.lvs());

    let v = create_volume(&agent, json!({"size_gb": 1, "name": "data"}));
    let id = v["id"].as_str().unwrap();
    let lv = format!("volume-{id}");
    assert_eq!(vg.lvs(), vec![(lv.clone(), 1 << 30, String::new())]);

    // Extend: larger only.
    let (s, answer) = post(
        &agent,
        &format!("/v1/volumes/{id}/action"),
        json!({"extend": {"new_size_gb": 1}}),
    );
    assert_eq!(s, 400, "{answer}");
    let (s, grown) = post(
        &agent,
        &format!("/v1/volumes/{id}/action"),
        json!({"extend": {"new_size_gb": 2}}),
    );
    assert_eq!(s, 202, "{grown}");
    assert_eq!(grown["status"], "extending");
    let grown = wait_volume(&agent, id, "available");
    assert_eq!(grown["size_gb"], 2);
    assert_eq!(vg.lvs()[0].1, 2 << 30);

    // Snapshots: an LVM snapshot of the origin; the volume cannot go while it exists.
    let (s, snap) = post(&agent, "/v1/snapshots", json!({"volume_id": id}));
    assert_eq!(s, 202, "{snap}");
    let snap_id = snap["id"].as_str().unwrap();
    wait_for(&agent, &format!("/v1/snapshots/{snap_id}"), "available");
    let lvs = vg.lvs();
    assert!(
        lvs.iter()
            .any(|(n, _, origin)| n.contains(snap_id) && origin == &lv),
        "{lvs:?}"
    );
    let (s, answer) = delete(&agent, &format!("/v1/volumes/{id}"));
    assert_eq!(s, 409, "{answer}");
    assert_eq!(delete(&agent, &format!("/v1/snapshots/{snap_id}")).0, 202);
    wait_gone(&agent, &format!("/v1/snapshots/{snap_id}"));
    let (s, answer) = delete(&agent, "/v1/volume-types/fast");
    assert_eq!(s, 409, "a used type: {answer}");
    assert_eq!(delete(&agent, &format!("/v1/volumes/{id}")).0, 202);
    wait_gone(&agent, &format!("/v1/volumes/{id}"));
    assert!(vg.lvs().is_empty(), "{:?}", vg.lvs());
    // A client-chosen id: a retry is the same volume, another body with it is 409.
    let retried = crate::client_ids::check_client_id(
        &agent,
        "/v1/volumes",
        202,
        json!({"size_gb": 1, "name": "retried", "volume_type": "fast"}),
        json!({"size_gb": 2, "name": "retried", "volume_type": "fast"}),
    );
    let rid = retried["id"].as_str().unwrap();
    wait_volume(&agent, rid, "available");
    assert_eq!(
        vg.lvs().len(),
        1,
        "one LV for the retried create: {:?}",
        vg.lvs()
    );
    assert_eq!(delete(&agent, &format!("/v1/volumes/{rid}")).0, 202);
    wait_gone(&agent, &format!("/v1/volumes/{rid}"));
    assert_eq!(delete(&agent, "/v1/volume-types/fast").0, 204);
}

/// Runs a shell line in a guest through the guest agent and returns its stdout.
fn guest_sh(domain: &str, script: &str) -> String {
    hyperlet_tests::guest::guest_sh(domain, script, Duration::from_secs(60)).1
}

pub fn boot(agent: &Agent, name: &str, source: Value) -> (String, String) {
    let mut body = json!({"name": name, "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}});
    for (k, v) in source.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, server) = post(agent, "/v1/servers", body);
    assert_eq!(s, 202, "{server}");
    let id = server["id"].as_str().unwrap().to_string();
    let server = agent.wait_server(&id, "ACTIVE", Duration::from_secs(120));
    agent.wait_console(
        &id,
        "HYPERLET-GUEST: qga started",
        1,
        Duration::from_secs(120),
    );
    (id, server["domain_name"].as_str().unwrap().to_string())
}

#[test]
fn nfs_volumes_boot_attach_and_carry_data_between_servers() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let _vm = hyperlet_tests::vm_shared();
    let nfs = ganesha();
    let config = format!("{}\n{}", CONFIG, nfs.driver_stanza());
    let agent = Agent::start_with_config(&config);
    let image = import_guest(&agent, "");
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "shared", "backend": "nfs", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");

    // Boot from a volume made from the image.
    let root = create_volume(
        &agent,
        json!({"size_gb": 1, "image_id": image, "name": "root"}),
    );
    assert_eq!(root["bootable"], true);
    let root_id = root["id"].as_str().unwrap().to_string();
    let (s1, dom1) = boot(&agent, "from-volume", json!({"boot_volume_id": root_id}));
    let (ok, xml) = virsh(&["dumpxml", &dom1]);
    assert!(
        ok && xml.contains("protocol='nfs'") && xml.contains(&format!("volume-{root_id}")),
        "{xml}"
    );
    assert_eq!(
        agent.get_json(&format!("/v1/volumes/{root_id}"))["status"],
        "in-use"
    );
    let (s, answer) = delete(&agent, &format!("/v1/volumes/{root_id}"));
    assert_eq!(s, 409, "an in-use root volume: {answer}");

    // A data volume: attach to server 1, write a marker, detach, attach to server 2, read it.
    let data = create_volume(&agent, json!({"size_gb": 1, "name": "data"}));
    let data_id = data["id"].as_str().unwrap().to_string();
    let (s, server) = post(
        &agent,
        &format!("/v1/servers/{s1}/volumes"),
        json!({"volume_id": data_id}),
    );
    assert_eq!(s, 202, "{server}");
    assert_eq!(server["status"], "attaching");
    assert_eq!(server["device"], "vdb");
    wait_volume(&agent, &data_id, "in-use");
    agent.wait_console(
        &s1,
        "HYPERLET-GUEST: disk-added vdb",
        1,
        Duration::from_secs(60),
    );
    let marker = format!("HYPERLET-MARK-{}", &data_id[..8]);
    guest_sh(
        &dom1,
        &format!(
            "printf '{marker}' | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null; sync"
        ),
    );
    let (s, answer) = delete(&agent, &format!("/v1/volumes/{data_id}"));
    assert_eq!(s, 409, "an attached volume: {answer}");
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/servers/{s1}/volumes/{data_id}"),
        None,
    );
    assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
    agent.wait_console(
        &s1,
        "HYPERLET-GUEST: disk-removed vdb",
        1,
        Duration::from_secs(60),
    );
    wait_volume(&agent, &data_id, "available");

    let (s2, dom2) = boot(&agent, "second", json!({"image_id": image}));
    let (s, _) = post(
        &agent,
        &format!("/v1/servers/{s2}/volumes"),
        json!({"volume_id": data_id}),
    );
    assert_eq!(s, 202);
    wait_volume(&agent, &data_id, "in-use");
    agent.wait_console(
        &s2,
        "HYPERLET-GUEST: disk-added vdb",
        1,
        Duration::from_secs(60),
    );
    let read = guest_sh(
        &dom2,
        "dd if=/dev/vdb bs=512 count=1 2>/dev/null | tr -d '\\000'",
    );
    assert!(
        read.contains(&marker),
        "server 2 read {read:?}, not {marker}"
    );
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/servers/{s2}/volumes/{data_id}"),
        None,
    );
    assert_eq!(resp.status(), 202);
    wait_volume(&agent, &data_id, "available");
    agent.wait_console(
        &s2,
        "HYPERLET-GUEST: disk-removed vdb",
        1,
        Duration::from_secs(60),
    );

    // Snapshot, a volume from it, a clone, extend.
    let (s, snap) = post(&agent, "/v1/snapshots", json!({"volume_id": data_id}));
    assert_eq!(s, 202, "{snap}");
    let snap_id = snap["id"].as_str().unwrap().to_string();
    wait_for(&agent, &format!("/v1/snapshots/{snap_id}"), "available");
    let from_snap = create_volume(&agent, json!({"size_gb": 1, "snapshot_id": snap_id}));
    let clone = create_volume(&agent, json!({"size_gb": 2, "source_volid": data_id}));
    let clone_id = clone["id"].as_str().unwrap().to_string();
    let (s, grown) = post(
        &agent,
        &format!("/v1/volumes/{clone_id}/action"),
        json!({"extend": {"new_size_gb": 3}}),
    );
    assert_eq!(s, 202, "{grown}");
    wait_volume(&agent, &clone_id, "available");
    let info = Observe::Nfs.image(&nfs.a, &format!("volume-{clone_id}"));
    assert_eq!(info["virtual-size"], 3u64 << 30, "{info}");
    // The clone and the snapshot's volume carry the marker too.
    for (n, id) in [clone_id.as_str(), from_snap["id"].as_str().unwrap()]
        .into_iter()
        .enumerate()
    {
        let (s, _) = post(
            &agent,
            &format!("/v1/servers/{s2}/volumes"),
            json!({"volume_id": id}),
        );
        assert_eq!(s, 202);
        wait_volume(&agent, id, "in-use");
        agent.wait_console(
            &s2,
            "HYPERLET-GUEST: disk-added vdb",
            n + 2,
            Duration::from_secs(60),
        );
        let read = guest_sh(
            &dom2,
            "dd if=/dev/vdb bs=512 count=1 2>/dev/null | tr -d '\\000'",
        );
        assert!(read.contains(&marker), "volume {id}: read {read:?}");
        let resp = agent.send(
            Method::DELETE,
            &format!("/v1/servers/{s2}/volumes/{id}"),
            None,
        );
        assert_eq!(resp.status(), 202);
        wait_volume(&agent, id, "available");
        agent.wait_console(
            &s2,
            "HYPERLET-GUEST: disk-removed vdb",
            n + 2,
            Duration::from_secs(60),
        );
    }

    // Clean up: servers (their volumes become available), then volumes and the snapshot.
    for s in [&s1, &s2] {
        assert_eq!(delete(&agent, &format!("/v1/servers/{s}")).0, 202);
        agent.wait_server_gone(s, Duration::from_secs(120));
    }
    assert_eq!(
        agent.get_json(&format!("/v1/volumes/{root_id}"))["status"],
        "available"
    );
    for id in [from_snap["id"].as_str().unwrap(), &clone_id] {
        assert_eq!(delete(&agent, &format!("/v1/volumes/{id}")).0, 202);
        wait_gone(&agent, &format!("/v1/volumes/{id}"));
    }
    assert_eq!(delete(&agent, &format!("/v1/snapshots/{snap_id}")).0, 202);
    wait_gone(&agent, &format!("/v1/snapshots/{snap_id}"));
    for id in [&data_id, &root_id] {
        assert_eq!(delete(&agent, &format!("/v1/volumes/{id}")).0, 202);
        wait_gone(&agent, &format!("/v1/volumes/{id}"));
    }
}

#[test]
fn kill_9_during_a_volume_create_leaves_no_backend_object() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let vg = TestVg::new(4);
    let config = lvm_config(&vg);
    let mut agent = Agent::start_with_config(&config);
    let (s, t) = post(
        &agent,
        "/v1/volume-types",
        json!({"name": "lvm", "backend": "lvm", "is_default": true}),
    );
    assert_eq!(s, 201, "{t}");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(10)).expect("exits");
    agent.env = vec![(
        "HYPERLET_FAILPOINT".into(),
        "volume.create:driver_create".into(),
    )];
    agent.restart();
    let (s, v) = post(&agent, "/v1/volumes", json!({"size_gb": 1}));
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.log().contains("failpoint reached") {
        assert!(
            Instant::now() < deadline,
            "failpoint not reached:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The LV exists now; the agent dies before the create is finished.
    assert_eq!(vg.lvs().len(), 1, "{:?}", vg.lvs());
    agent.kill9();
    agent.env.clear();
    agent.restart();
    let v = agent.get_json(&format!("/v1/volumes/{id}"));
    assert_eq!(v["status"], "error", "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("interrupted"),
        "{v}"
    );
    assert!(
        vg.lvs().is_empty(),
        "the rolled-back create left {:?}",
        vg.lvs()
    );
    assert_eq!(delete(&agent, &format!("/v1/volumes/{id}")).0, 202);
    wait_gone(&agent, &format!("/v1/volumes/{id}"));
}

/// A rogue volume driver answers a connection to a file outside its shares (standing in for
/// the agent's own database) and absurd capacity figures: the image is never written there,
/// the volume ends in `error` naming the driver and the reason, and the figures give clear
/// answers (no panic, no null).
#[test]
fn rogue_driver_answers_change_nothing() {
    let _nfs = hyperlet_tests::storage::nfs_shared();
    let victims = tempfile::tempdir().unwrap();
    let victim = victims.path().join("hyperlet.db");
    // Larger than the image, so that a copy would fit and overwrite it.
    let precious = b"precious state ".repeat(300_000);
    std::fs::write(&victim, &precious).unwrap();
    let tables = "[plugins.lvm]\nvolume_groups = [\"hyperlet-none\"]\n[plugins.files]\n\
                  shares = [\"127.0.0.1:/nonexistent\"]\naccess = \"mount\"\n";
    let settings = "volume_group = \"hyperlet-none\", share = \"127.0.0.1:/nonexistent\"";
    let grants = "[\"lvm\", \"files\", \"qemu-img\"]";
    let max = u64::MAX;
    let config = format!(
        "{CONFIG}\n{}{}",
        stanza(
            "rogue",
            "hyperlet-fixture-vol-rogue",
            grants,
            &format!("{settings}, answer = \"file={}\"", victim.display()),
            tables
        ),
        stanza(
            "rogue-stats",
            "hyperlet-fixture-vol-rogue",
            grants,
            &format!(
                "{settings}, stats = \"{max},{max},{max},true,{:e}\"",
                f64::MAX
            ),
            tables
        ),
    );
    let agent = Agent::start_with_config(&config);
    for (name, backend) in [("rogue", "rogue"), ("huge", "rogue-stats")] {
        let (s, t) = post(
            &agent,
            "/v1/volume-types",
            json!({"name": name, "backend": backend}),
        );
        assert_eq!(s, 201, "{t}");
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("image.raw");
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &pattern).unwrap();
    let (s, image) = agent.import_image("pattern", "raw", "bare", json!({}), &raw);
    assert_eq!(s, 200, "{image}");

    let (s, v) = post(
        &agent,
        "/v1/volumes",
        json!({"size_gb": 1, "volume_type": "rogue", "image_id": image["id"]}),
    );
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        let v = agent.get_json(&format!("/v1/volumes/{id}"));
        if v["status"] == "error" {
            break v;
        }
        assert_eq!(v["status"], "creating", "{v}");
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("rogue") && error.contains("not the mount point of a granted share"),
        "{v}"
    );
    assert!(
        std::fs::read(&victim).unwrap() == precious,
        "the victim was written"
    );

    // Capacity figures at the limits: shown as numbers, and a volume that cannot be summed in
    // is a 409 naming the backend, not a panic.
    let backends = agent.get_json("/v1/backends");
    let huge = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "rogue-stats")
        .unwrap_or_else(|| panic!("{backends}"));
    assert_eq!(huge["provisioned_gb"], max, "{backends}");
    assert_eq!(huge["max_over_subscription_ratio"], f64::MAX, "{backends}");
    let (s, answer) = post(
        &agent,
        "/v1/volumes",
        json!({"size_gb": 1, "volume_type": "huge"}),
    );
    assert_eq!(s, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rogue-stats"),
        "{answer}"
    );
}
