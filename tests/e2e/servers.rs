//! Servers on the real libvirtd + QEMU (TCG) with the tiny test guest: every verb, libvirt's
//! view at each step, the guest's console, bad input, crashes and a hung QEMU.

use hyperlet_tests::guest::test_guest;
use hyperlet_tests::{virsh, Agent};
use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Agent settings for server tests: fast sync, short timeouts, room for many small guests.
pub const CONFIG: &str = "[hypervisor]\nsync_interval_ms = 300\nclean_shutdown_timeout_secs = 10\n\
    call_timeout_secs = 5\n[capacity]\ncpu_allocation_ratio = 16.0\nreserved_host_memory_mb = 0\n";

const BOOTED: &str = "HYPERLET-GUEST: booted";
const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// Imports the test guest (kernel aki, ramdisk ari, qcow2 root naming them); returns the root
/// image id.
pub fn import_guest(agent: &Agent, cmdline_extra: &str) -> String {
    let guest = test_guest();
    let (s, kernel) = agent.import_image("kernel", "aki", "aki", json!({}), &guest.kernel);
    assert_eq!(s, 200, "{kernel}");
    let (s, ramdisk) = agent.import_image("ramdisk", "ari", "ari", json!({}), &guest.initrd);
    assert_eq!(s, 200, "{ramdisk}");
    let props = json!({
        "kernel_id": kernel["id"], "ramdisk_id": ramdisk["id"],
        "os_command_line": format!("console=ttyS0 {cmdline_extra}").trim().to_string(),
    });
    let (s, root) = agent.import_image("tiny", "qcow2", "bare", props, &guest.root_qcow2);
    assert_eq!(s, 200, "{root}");
    root["id"].as_str().unwrap().to_string()
}

/// An inline flavor with a 1 GiB root disk.
pub fn flavor(vcpus: u32, ram_mb: u64) -> Value {
    json!({"vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": 1})
}

/// The user data [`create`] gives every server (base64).
pub const USER_DATA: &str = "I2Nsb3VkLWNvbmZpZw==";
/// The key material of the public key [`create`] gives every server.
pub const KEY_MATERIAL: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIG9rZXk";

/// Creates a server and returns its id (the answer must be 202 BUILD).
pub fn create(agent: &Agent, name: &str, image: &str, flavor: Value) -> String {
    let resp = agent.send(
        Method::POST,
        "/v1/servers",
        Some(&json!({
            "name": name, "image_id": image, "flavor": flavor,
            "public_keys": {"k1": format!("ssh-ed25519 {KEY_MATERIAL} test")},
            "user_data": USER_DATA, "metadata": {"role": "test"},
        })),
    );
    assert_eq!(resp.status(), 202);
    let server: Value = resp.json().unwrap();
    assert_eq!(server["status"], "BUILD");
    server["id"].as_str().unwrap().to_string()
}

fn act(agent: &Agent, id: &str, body: Value) -> reqwest::blocking::Response {
    agent.send(
        Method::POST,
        &format!("/v1/servers/{id}/action"),
        Some(&body),
    )
}

fn accepted(agent: &Agent, id: &str, body: Value) {
    let resp = act(agent, id, body.clone());
    assert_eq!(
        resp.status(),
        202,
        "{body}: {}",
        resp.text().unwrap_or_default()
    );
}

fn domstate(domain: &str) -> String {
    let (ok, out) = virsh(&["domstate", domain]);
    assert!(ok, "virsh domstate {domain}: {out}");
    out.trim().to_string()
}

fn dominfo_cpus(domain: &str) -> String {
    let (_, out) = virsh(&["dominfo", domain]);
    out.lines()
        .find(|l| l.starts_with("CPU(s):"))
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn full_lifecycle_against_libvirt_and_the_guest_console() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "");
    let id = create(&agent, "life", &image, flavor(1, 192));
    let server = agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    let domain = server["domain_name"].as_str().unwrap().to_string();
    assert_eq!(domstate(&domain), "running");
    let (_, xml) = virsh(&["dumpxml", &domain]);
    assert!(
        xml.contains("type='qemu'") || xml.contains("type=\"qemu\""),
        "TCG domain: {xml}"
    );
    assert!(
        xml.contains("OpenStack Nova") && xml.contains("OpenStack Foundation"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<entry name='serial'>{id}</entry>")),
        "{xml}"
    );
    agent.wait_console(&id, "HYPERLET-GUEST: qga started", 1, BOOT_LIMIT);

    // The password goes through the guest agent: the guest reports root's new hash.
    let deadline = Instant::now() + 2 * BOOT_LIMIT;
    loop {
        let resp = act(
            &agent,
            &id,
            json!({"set_password": {"password": "s3cret-pw"}}),
        );
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 409, "set_password");
        assert!(Instant::now() < deadline, "the guest agent never answered");
        std::thread::sleep(Duration::from_millis(500));
    }
    agent.wait_console(&id, "HYPERLET-GUEST: password root $6$", 1, BOOT_LIMIT);

    accepted(&agent, &id, json!({"pause": null}));
    agent.wait_server(&id, "PAUSED", BOOT_LIMIT);
    assert_eq!(domstate(&domain), "paused");
    // An action not valid in this status names it.
    let resp = act(&agent, &id, json!({"suspend": null}));
    assert_eq!(resp.status(), 409);
    assert!(resp.text().unwrap().contains("PAUSED"));
    accepted(&agent, &id, json!({"unpause": null}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    assert_eq!(domstate(&domain), "running");

    // Stats come from libvirt's own calls: real figures, and the domain is not tainted
    // (QMP or guest-agent passthrough would mark it custom-monitor / custom-ga-command).
    let stats: Value = agent.get_json(&format!("/v1/servers/{id}/stats"));
    assert!(stats["cpu_time_ns"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(stats["vcpus"], 1, "{stats}");
    assert!(
        stats["memory_actual_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    let vda = &stats["block"][0];
    assert_eq!(vda["device"], "vda", "{stats}");
    assert!(vda["rd_bytes"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(vda["rd_operations"].as_u64().unwrap_or(0) > 0, "{stats}");
    let log = std::fs::read_to_string(format!("/var/log/libvirt/qemu/{domain}.log"))
        .expect("libvirt's domain log");
    assert!(!log.contains("tainted"), "libvirt tainted {domain}:\n{log}");

    accepted(&agent, &id, json!({"stop": null}));
    agent.wait_server(&id, "SHUTOFF", BOOT_LIMIT);
    assert_eq!(domstate(&domain), "shut off");
    accepted(&agent, &id, json!({"start": null}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, BOOTED, 2, BOOT_LIMIT);

    accepted(&agent, &id, json!({"reboot": {"type": "HARD"}}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, BOOTED, 3, BOOT_LIMIT);

    accepted(&agent, &id, json!({"suspend": null}));
    agent.wait_server(&id, "SUSPENDED", BOOT_LIMIT);
    assert_eq!(domstate(&domain), "shut off");
    let (_, info) = virsh(&["dominfo", &domain]);
    assert!(info.contains("Managed save:   yes"), "{info}");
    accepted(&agent, &id, json!({"resume": null}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    assert_eq!(domstate(&domain), "running");

    accepted(
        &agent,
        &id,
        json!({"resize": {"flavor": {"vcpus": 2, "ram_mb": 256, "disk_gb": 2}}}),
    );
    agent.wait_server(&id, "VERIFY_RESIZE", BOOT_LIMIT);
    assert_eq!(dominfo_cpus(&domain), "2");
    accepted(&agent, &id, json!({"revert_resize": null}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    assert_eq!(dominfo_cpus(&domain), "1");
    accepted(
        &agent,
        &id,
        json!({"resize": {"flavor": {"vcpus": 2, "ram_mb": 256, "disk_gb": 2}}}),
    );
    agent.wait_server(&id, "VERIFY_RESIZE", BOOT_LIMIT);
    accepted(&agent, &id, json!({"confirm_resize": null}));
    let server = agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    assert_eq!(server["flavor"]["vcpus"], 2);
    assert_eq!(dominfo_cpus(&domain), "2");

    accepted(&agent, &id, json!({"rebuild": {"image_id": image}}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, BOOTED, 1, BOOT_LIMIT);

    let tail = act(&agent, &id, json!({"console_output": {"length": 3}}));
    assert_eq!(tail.status(), 200);
    let tail: Value = tail.json().unwrap();
    assert!(tail["output"].as_str().unwrap().lines().count() <= 3);

    // The image is in use.
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/images/{image}"), None)
            .status(),
        409
    );

    let dir = agent.state_dir().join("servers").join(&id);
    assert!(dir.join("root.qcow2").exists());
    let resp = agent.send(Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().unwrap()["status"], "DELETED");
    agent.wait_server_gone(&id, BOOT_LIMIT);
    let (exists, _) = virsh(&["dominfo", &domain]);
    assert!(!exists, "domain {domain} left behind");
    assert!(!dir.exists(), "server files left behind");
    assert!(
        !std::path::Path::new(&format!("/var/log/libvirt/qemu/{domain}.log")).exists(),
        "libvirt's domain log left behind"
    );
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/images/{image}"), None)
            .status(),
        204
    );
}

#[test]
fn guest_power_off_and_out_of_band_changes_are_followed() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "hyperlet.poweroff=1");
    let id = create(&agent, "selfstop", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    // The guest powers itself off after booting.
    agent.wait_server(&id, "SHUTOFF", BOOT_LIMIT);

    // Someone undefines the domain behind the agent's back.
    let domain = format!("hyperlet-{id}");
    let (ok, out) = virsh(&["undefine", &domain]);
    assert!(ok, "{out}");
    let server = agent.wait_server(&id, "ERROR", BOOT_LIMIT);
    assert!(
        server["fault"].as_str().unwrap().contains("vanished"),
        "{server}"
    );
}

#[test]
fn bad_requests_are_refused_before_anything_is_created() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "");
    let big = tempfile::tempdir().unwrap();
    let big_root = big.path().join("big.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            big_root.to_str().unwrap(),
            "3G",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (_, big_image) = agent.import_image("big", "qcow2", "bare", json!({}), &big_root);
    let kernel_only = agent.get_json("/v1/images")["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["container_format"] == "aki")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"name": "a", "image_id": "00000000-0000-4000-8000-000000000000", "flavor": flavor(1, 128)}),
            404,
            "image",
        ),
        (
            json!({"name": "a", "image_id": big_image["id"], "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1}}),
            400,
            "smaller",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(1, 4 * 1024 * 1024)}),
            409,
            "memory",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(200, 128)}),
            409,
            "vCPU",
        ),
        (
            json!({"name": "", "image_id": image, "flavor": flavor(1, 128)}),
            400,
            "name",
        ),
        (
            json!({"name": "a\nb", "image_id": image, "flavor": flavor(1, 128)}),
            400,
            "name",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": {"vcpus": -1, "ram_mb": 128, "disk_gb": 1}}),
            400,
            "",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": {"vcpus": 0, "ram_mb": 128, "disk_gb": 1}}),
            400,
            "vcpus",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(1, 128), "user_data": "%%%not base64"}),
            400,
            "base64",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(1, 128), "public_keys": {"k": "not a key"}}),
            400,
            "OpenSSH",
        ),
        (
            json!({"name": "a", "image_id": kernel_only, "flavor": flavor(1, 128)}),
            400,
            "container_format",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(1, 128), "availability_zone": "elsewhere"}),
            409,
            "zone",
        ),
        (
            json!({"name": "a", "image_id": image, "flavor": flavor(1, 128), "colour": "red"}),
            400,
            "colour",
        ),
    ];
    for (body, status, needle) in cases {
        let resp = agent.send(Method::POST, "/v1/servers", Some(&body));
        let got = resp.status().as_u16();
        let text = resp.text().unwrap();
        assert_eq!(got, status, "{body} → {text}");
        assert!(
            text.contains(needle),
            "{body} → {text} (expected to mention {needle:?})"
        );
    }
    assert!(agent.get_json("/v1/servers")["servers"]
        .as_array()
        .unwrap()
        .is_empty());
    let (_, domains) = virsh(&["list", "--all", "--name"]);
    assert!(!domains.contains(&agent.state_dir().display().to_string()));

    // Unknown actions and arguments.
    let id = create(&agent, "ok", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    for body in [
        json!({}),
        json!({"jump": null}),
        json!({"pause": null, "stop": null}),
        json!({"reboot": {"type": "GENTLE"}}),
        json!({"console_output": {"length": -5}}),
        json!({"pause": {"now": true}}),
    ] {
        assert_eq!(act(&agent, &id, body.clone()).status(), 400, "{body}");
    }
    assert_eq!(
        act(
            &agent,
            "00000000-0000-4000-8000-000000000000",
            json!({"pause": null})
        )
        .status(),
        404
    );
}

#[test]
fn set_password_without_a_guest_agent_is_a_clear_409() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "hyperlet.qga=0");
    let id = create(&agent, "noagent", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, "HYPERLET-GUEST: ready", 1, BOOT_LIMIT);
    let resp = act(&agent, &id, json!({"set_password": {"password": "s3cret"}}));
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "no_guest_agent", "{body}");
}

#[test]
fn a_hung_qemu_does_not_hang_the_agent() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "");
    let id = create(&agent, "hang", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    let other = create(&agent, "other", &image, flavor(1, 128));
    agent.wait_server(&other, "ACTIVE", BOOT_LIMIT);
    let pidfile = format!("/run/libvirt/qemu/hyperlet-{id}.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let result = std::panic::catch_unwind(|| {
        // The stuck server's QMP call fails with a timeout…
        let started = Instant::now();
        let resp = agent.get(&format!("/v1/servers/{id}/stats"));
        assert_eq!(resp.status(), 504, "{}", resp.text().unwrap_or_default());
        assert!(started.elapsed() < Duration::from_secs(20));
        // …while everything else keeps answering quickly.
        for path in [
            "/v1/servers".to_string(),
            format!("/v1/servers/{other}"),
            format!("/v1/servers/{other}/stats"),
        ] {
            let started = Instant::now();
            let resp = agent.get(&path);
            let status = resp.status();
            assert_eq!(status, 200, "{path}: {}", resp.text().unwrap_or_default());
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} took {:?}",
                started.elapsed()
            );
        }
    });
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn kill_9_during_create_leaves_nothing_behind() {
    let _vm = hyperlet_tests::vm_shared();
    for step in ["disks", "define", "start"] {
        let mut agent = Agent::start_with_config(CONFIG);
        let image = import_guest(&agent, "");
        agent.signal(Signal::SIGTERM);
        agent.wait_exit(Duration::from_secs(10)).expect("exits");
        agent.env = vec![("HYPERLET_FAILPOINT".into(), format!("server.create:{step}"))];
        agent.restart();
        let id = create(&agent, "crash", &image, flavor(1, 128));
        // Wait until the failpoint is reached, then kill -9.
        let deadline = Instant::now() + BOOT_LIMIT;
        while !agent.log().contains("failpoint reached") {
            assert!(
                Instant::now() < deadline,
                "failpoint {step} not reached:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.kill9();
        agent.env.clear();
        agent.restart();
        let server = agent.wait_server(&id, "ERROR", BOOT_LIMIT);
        assert!(
            server["fault"].as_str().unwrap().contains("interrupted"),
            "{server}"
        );
        let (exists, _) = virsh(&["dominfo", &format!("hyperlet-{id}")]);
        assert!(!exists, "{step}: domain left behind");
        assert!(
            !agent.state_dir().join("servers").join(&id).exists(),
            "{step}: files left behind"
        );
        assert_eq!(
            agent
                .send(Method::DELETE, &format!("/v1/servers/{id}"), None)
                .status(),
            202
        );
        agent.wait_server_gone(&id, BOOT_LIMIT);
    }
}

/// Runs `body` on a fresh agent whose next operation stops at `failpoint`, kills the agent there
/// with SIGKILL and restarts it.
fn crash_at(agent: &mut Agent, failpoint: &str, body: impl FnOnce(&Agent)) {
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(10)).expect("exits");
    agent.env = vec![("HYPERLET_FAILPOINT".into(), failpoint.to_string())];
    agent.restart();
    body(agent);
    let deadline = Instant::now() + BOOT_LIMIT;
    while !agent.log().contains("failpoint reached") {
        assert!(
            Instant::now() < deadline,
            "failpoint {failpoint} not reached:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.kill9();
    agent.env.clear();
    agent.restart();
}

#[test]
fn kill_9_during_delete_resize_and_rebuild_recovers() {
    let _vm = hyperlet_tests::vm_shared();
    let mut agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "");

    // Delete, killed after undefine was recorded but before it ran: resumed to the end.
    let id = create(&agent, "del", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    crash_at(&mut agent, "server.delete:undefine:started", |a| {
        assert_eq!(
            a.send(Method::DELETE, &format!("/v1/servers/{id}"), None)
                .status(),
            202
        );
    });
    agent.wait_server_gone(&id, BOOT_LIMIT);
    assert!(
        !virsh(&["dominfo", &format!("hyperlet-{id}")]).0,
        "domain left behind"
    );
    assert!(
        !agent.state_dir().join("servers").join(&id).exists(),
        "files left behind"
    );

    // Resize, killed after the new definition: rolled back to the old flavor and disk.
    let id = create(&agent, "rsz", &image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    crash_at(&mut agent, "server.resize:define", |a| {
        accepted(
            a,
            &id,
            json!({"resize": {"flavor": {"vcpus": 2, "ram_mb": 160, "disk_gb": 2}}}),
        );
    });
    let server = agent.wait_server(&id, "SHUTOFF", BOOT_LIMIT);
    assert_eq!(server["flavor"]["vcpus"], 1, "{server}");
    assert!(
        server["fault"].as_str().unwrap().contains("interrupted"),
        "{server}"
    );
    assert_eq!(dominfo_cpus(&format!("hyperlet-{id}")), "1");
    let root = agent
        .state_dir()
        .join("servers")
        .join(&id)
        .join("root.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&root)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        info["virtual-size"],
        1024 * 1024 * 1024,
        "the old root disk is back"
    );
    accepted(&agent, &id, json!({"start": null}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);

    // Rebuild, killed after the new disks: the server is left in ERROR without a domain, and a
    // second rebuild repairs it.
    crash_at(&mut agent, "server.rebuild:disks", |a| {
        accepted(a, &id, json!({"rebuild": {"image_id": image}}));
    });
    let server = agent.wait_server(&id, "ERROR", BOOT_LIMIT);
    assert!(
        server["fault"].as_str().unwrap().contains("interrupted"),
        "{server}"
    );
    assert!(
        !virsh(&["dominfo", &format!("hyperlet-{id}")]).0,
        "half-rebuilt domain left behind"
    );
    accepted(&agent, &id, json!({"rebuild": {"image_id": image}}));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, BOOTED, 1, BOOT_LIMIT);
}

#[test]
fn lost_records_are_adopted_from_libvirt() {
    let _vm = hyperlet_tests::vm_shared();
    let mut agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "");
    let id = create(&agent, "adoptme", &image, flavor(1, 128));
    let server = agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    // User data and public keys stay in the agent's store: the domain XML is readable by
    // anyone with read-only libvirt access (virsh -r).
    let domain = server["domain_name"].as_str().unwrap();
    for args in [
        vec!["dumpxml", domain],
        vec!["dumpxml", "--inactive", domain],
        vec!["-r", "dumpxml", domain],
    ] {
        let (ok, xml) = virsh(&args);
        assert!(ok && xml.contains(&id), "virsh {args:?}: {xml}");
        for secret in [USER_DATA, KEY_MATERIAL] {
            assert!(
                !xml.contains(secret),
                "virsh {args:?} shows {secret}:\n{xml}"
            );
        }
    }
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(10)).expect("exits");
    let db = agent.state_dir().join("hyperlet.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DELETE FROM servers;")
        .output()
        .expect("sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success());
    agent.restart();
    let server = agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    assert_eq!(server["name"], "adoptme");
    assert_eq!(server["flavor"]["ram_mb"], 128);
    assert_eq!(server["metadata"]["role"], "test");
}

#[test]
fn twenty_concurrent_creates_all_reach_active() {
    let _vm = hyperlet_tests::vm_exclusive();
    let agent = Agent::start_with_config(CONFIG);
    let image = import_guest(&agent, "hyperlet.idle=1");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let agent = &agent;
                let image = &image;
                s.spawn(move || create(agent, &format!("many-{i}"), image, flavor(1, 96)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for id in &ids {
        agent.wait_server(id, "ACTIVE", Duration::from_secs(300));
    }
    for id in &ids {
        assert_eq!(
            agent
                .send(Method::DELETE, &format!("/v1/servers/{id}"), None)
                .status(),
            202
        );
    }
    for id in &ids {
        agent.wait_server_gone(id, Duration::from_secs(300));
    }
}
