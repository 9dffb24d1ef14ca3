//! WebAssembly plugins in a real agent: the first-party scheduler chain, admission control,
//! misbehaving plugins contained, hot reload, and the plugin CLI.

use hyperlet_tests::{plugin_wasm, run_cli, shared_plugin_cache, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// A `[[plugins]]` stanza.
fn stanza(name: &str, kind: &str, path: &Path, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\ngrants = [\"log\"]\n{extra}\n",
        path.display()
    )
}

fn runtime() -> String {
    format!(
        "[plugin_runtime]\nreload_interval_ms = 200\ncache_dir = \"{}\"\n",
        shared_plugin_cache().display()
    )
}

/// The full first-party chain: 6 filters and 2 weighers.
fn chain_config(ram_multiplier: f64) -> String {
    let mut config = runtime();
    for (name, krate) in [
        ("compute-status", "hyperlet-filter-compute-status"),
        ("ram", "hyperlet-filter-ram"),
        ("disk", "hyperlet-filter-disk"),
        ("vcpu", "hyperlet-filter-vcpu"),
        ("availability-zone", "hyperlet-filter-availability-zone"),
        ("image-properties", "hyperlet-filter-image-properties"),
    ] {
        config.push_str(&stanza(name, "filter", &plugin_wasm(krate), ""));
    }
    config.push_str(&stanza(
        "ram-weigher",
        "weigher",
        &plugin_wasm("hyperlet-weigher-ram"),
        &format!("multiplier = {ram_multiplier:?}"),
    ));
    config.push_str(&stanza(
        "capacity-weigher",
        "weigher",
        &plugin_wasm("hyperlet-weigher-capacity"),
        "",
    ));
    config
}

fn host(name: &str, ram_total: u64, ram_used: u64) -> Value {
    json!({
        "name": name, "vcpus_total": 8, "vcpus_used": 0, "ram_total_mb": ram_total,
        "ram_used_mb": ram_used, "ram_free_mb": ram_total - ram_used, "disk_total_gb": 100,
        "disk_used_gb": 0, "volume_free_gb": 10,
    })
}

fn evaluate(agent: &Agent, body: Value) -> (u16, Value) {
    let resp = agent.send(Method::POST, "/v1/scheduler/evaluate", Some(&body));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

fn result<'a>(evaluation: &'a Value, name: &str) -> &'a Value {
    evaluation["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap()
}

#[test]
fn first_party_chain_filters_and_ranks_hosts() {
    let agent = Agent::start_with_config(&chain_config(1.0));
    let plugins = agent.get_json("/v1/plugins");
    let plugins = plugins["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 8);
    for p in plugins {
        assert_eq!(p["status"], "loaded", "{p}");
        assert_eq!(p["version"], "1.1.0", "{p}");
    }

    let mut disabled = host("disabled", 16384, 0);
    disabled["enabled"] = json!(false);
    let mut far = host("far", 16384, 0);
    far["availability_zone"] = json!("az2");
    let mut arm = host("arm", 16384, 0);
    arm["architecture"] = json!("aarch64");
    let body = json!({
        "spec": {"vcpus": 2, "ram_mb": 2048, "disk_gb": 10, "availability_zone": "nova",
                 "image_properties": {"architecture": "x86_64"}},
        "hosts": [host("small", 4096, 3072), host("big", 32768, 0), host("medium", 16384, 0),
                  disabled, far, arm],
    });
    let (status, evaluation) = evaluate(&agent, body.clone());
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(evaluation["passed"], 2, "{evaluation}");
    // Best first: more free RAM spreads.
    let order: Vec<&str> = evaluation["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["big", "medium"]);
    assert_eq!(result(&evaluation, "small")["failed_by"], "ram");
    assert!(
        result(&evaluation, "small")["reason"]
            .as_str()
            .unwrap()
            .contains("2048"),
        "{evaluation}"
    );
    assert_eq!(
        result(&evaluation, "disabled")["failed_by"],
        "compute-status"
    );
    assert_eq!(result(&evaluation, "far")["failed_by"], "availability-zone");
    assert_eq!(result(&evaluation, "arm")["failed_by"], "image-properties");
    drop(agent);

    // A negative multiplier stacks: the fullest host that fits comes first.
    let agent = Agent::start_with_config(&chain_config(-1.0));
    let (status, evaluation) = evaluate(&agent, body);
    assert_eq!(status, 200);
    assert_eq!(evaluation["hosts"][0]["name"], "medium", "{evaluation}");

    // Without hosts, the chain runs over this node.
    let (status, evaluation) = evaluate(&agent, json!({"spec": {"vcpus": 1, "ram_mb": 64}}));
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(evaluation["passed"], 1, "{evaluation}");
    let (status, evaluation) = evaluate(
        &agent,
        json!({"spec": {"vcpus": 1, "ram_mb": 64 * 1024 * 1024}}),
    );
    assert_eq!(status, 200);
    assert_eq!(evaluation["passed"], 0);
    assert_eq!(evaluation["hosts"][0]["failed_by"], "ram");

    // Bad requests.
    assert_eq!(evaluate(&agent, json!({"spec": {"vcpus": -1}})).0, 400);
    assert_eq!(
        evaluate(&agent, json!({"spec": {}, "hosts": [{"nom": "x"}]})).0,
        400
    );
}

#[test]
fn server_create_is_refused_when_the_chain_says_no() {
    let agent = Agent::start_with_config(&(chain_config(1.0) + crate::servers::CONFIG));
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("arm.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let (_, image) = agent.import_image(
        "arm",
        "raw",
        "bare",
        json!({"architecture": "aarch64"}),
        &raw,
    );
    let resp = agent.send(Method::POST, "/v1/servers", Some(&json!({
        "name": "nope", "image_id": image["id"], "flavor": {"vcpus": 1, "ram_mb": 64, "disk_gb": 1},
    })));
    assert_eq!(resp.status(), 409);
    let text = resp.text().unwrap();
    assert!(
        text.contains("image-properties") && text.contains("aarch64"),
        "{text}"
    );
    assert!(agent.get_json("/v1/servers")["servers"]
        .as_array()
        .unwrap()
        .is_empty());
}

fn fixture_agent(kind: &str, krate: &str, extra: &str) -> Agent {
    let mut config = runtime();
    config.push_str(&stanza(
        "good",
        "filter",
        &plugin_wasm("hyperlet-filter-ram"),
        "",
    ));
    config.push_str(&stanza("fixture", kind, &plugin_wasm(krate), extra));
    Agent::start_with_config(&config)
}

fn plugin_view(agent: &Agent, name: &str) -> Value {
    let list = agent.get_json("/v1/plugins");
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
        .clone()
}

#[test]
fn plugins_that_cannot_load_are_refused_with_the_reason() {
    for (krate, kind, needle) in [
        ("hyperlet-fixture-ungranted", "filter", "filesystem"),
        (
            "hyperlet-weigher-ram",
            "filter",
            "configured as kind = \"filter\"",
        ),
        (
            "hyperlet-fixture-old-version",
            "filter",
            "hyperlet:scheduler@0.9.0",
        ),
        (
            "hyperlet-fixture-new-version",
            "filter",
            "hyperlet:scheduler@2.0.0",
        ),
    ] {
        let agent = fixture_agent(kind, krate, "");
        let view = plugin_view(&agent, "fixture");
        assert_eq!(view["status"], "failed", "{krate}: {view}");
        let error = view["error"].as_str().unwrap();
        assert!(error.contains(needle), "{krate}: {error}");
        let log = agent.log();
        assert!(
            log.lines()
                .any(|l| l.contains("plugin not loaded") && l.contains("\"fixture\"")),
            "{krate}: the log says why:\n{log}"
        );
        // The agent serves, and the good plugin works; the chain reports the skipped one.
        let (status, evaluation) = evaluate(
            &agent,
            json!({"spec": {"ram_mb": 10}, "hosts": [host("h", 1024, 0)]}),
        );
        assert_eq!(status, 200, "{krate}: {evaluation}");
        assert_eq!(evaluation["passed"], 1);
        assert_eq!(evaluation["skipped_plugins"][0]["name"], "fixture");
    }
    // A grant the plugin needs but was not given.
    let mut config = runtime();
    config.push_str(
        &stanza(
            "ram",
            "filter",
            &plugin_wasm("hyperlet-filter-compute-status"),
            "",
        )
        .replace("grants = [\"log\"]", "grants = []"),
    );
    let agent = Agent::start_with_config(&config);
    let view = plugin_view(&agent, "ram");
    assert_eq!(view["status"], "failed");
    assert!(
        view["error"].as_str().unwrap().contains("not granted: log"),
        "{view}"
    );
}

#[test]
fn misbehaving_plugins_are_contained() {
    for (krate, extra, needle) in [
        (
            "hyperlet-fixture-loop",
            "call_timeout_ms = 300",
            "did not answer within 300 ms",
        ),
        (
            "hyperlet-fixture-membomb",
            "memory_limit_mb = 16",
            "trapped",
        ),
        ("hyperlet-fixture-panic", "", "trapped"),
        (
            "hyperlet-fixture-huge",
            "settings = { mode = \"big\" }\nmemory_limit_mb = 32",
            "fixture",
        ),
        (
            "hyperlet-fixture-huge",
            "settings = { mode = \"count\" }",
            "verdicts for 1 hosts",
        ),
    ] {
        let agent = fixture_agent("filter", krate, extra);
        assert_eq!(
            plugin_view(&agent, "fixture")["status"],
            "loaded",
            "{krate}"
        );
        let started = Instant::now();
        let (status, body) = evaluate(
            &agent,
            json!({"spec": {"ram_mb": 10}, "hosts": [host("h", 1024, 0)]}),
        );
        assert_eq!(status, 502, "{krate}: {body}");
        assert_eq!(body["error"]["code"], "plugin_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("fixture") && message.contains(needle),
            "{krate}: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{krate} took {:?}",
            started.elapsed()
        );
        // The agent stays healthy and keeps its other plugins.
        assert_eq!(agent.get("/healthz").status(), 200);
        assert_eq!(plugin_view(&agent, "good")["status"], "loaded");
        assert!(plugin_view(&agent, "fixture")["failures"].as_u64().unwrap() >= 1);
        // The same plugin is called again (on a fresh instance) and contained again.
        assert_eq!(
            evaluate(&agent, json!({"spec": {}, "hosts": [host("h", 1024, 0)]})).0,
            502
        );
        if krate == "hyperlet-fixture-panic" {
            // The guest's stderr (the panic message) is in the agent's log, tagged.
            let log = agent.log();
            assert!(
                log.lines().any(|l| l.contains("\"plugin\":\"fixture\"")
                    && l.contains("stderr:")
                    && l.contains("panicked")),
                "guest stderr not in the log:\n{log}"
            );
        }
    }
}

#[test]
fn plugins_reload_when_their_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filter.wasm");
    std::fs::copy(plugin_wasm("hyperlet-filter-ram"), &path).unwrap();
    let mut config = runtime();
    config.push_str(&stanza("swappable", "filter", &path, ""));
    let agent = Agent::start_with_config(&config);
    let before = plugin_view(&agent, "swappable");
    let mut far = host("far", 1024, 0);
    far["availability_zone"] = json!("az2");
    let body = json!({"spec": {"ram_mb": 10, "availability_zone": "nova"}, "hosts": [far]});
    assert_eq!(
        evaluate(&agent, body.clone()).1["passed"],
        1,
        "the RAM filter passes it"
    );

    // Swap in the AZ filter (write to a temp file, then rename: an atomic replace).
    let tmp = dir.path().join("filter.wasm.new");
    std::fs::copy(plugin_wasm("hyperlet-filter-availability-zone"), &tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = plugin_view(&agent, "swappable");
        if now["sha256"] != before["sha256"] {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        evaluate(&agent, body).1["passed"],
        0,
        "the AZ filter fails it"
    );

    // A broken file keeps the old version serving, with the error shown.
    std::fs::write(&path, b"not wasm").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = plugin_view(&agent, "swappable");
        if now["error"].is_string() {
            assert_eq!(now["status"], "loaded", "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "the broken file was not noticed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn plugin_cli_inspects_lists_and_scaffolds() {
    let (status, out, err) = run_cli(
        &[
            "plugin",
            "inspect",
            plugin_wasm("hyperlet-filter-ram").to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("filter") && out.contains("1.1.0"), "{out}");
    let (status, out, _) = run_cli(
        &[
            "plugin",
            "inspect",
            "--json",
            plugin_wasm("hyperlet-fixture-ungranted").to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success());
    let info: Value = serde_json::from_str(&out).unwrap();
    assert!(
        info["unavailable"][0]
            .as_str()
            .unwrap()
            .contains("wasi:filesystem"),
        "{info}"
    );

    let agent = Agent::start_with_config(&chain_config(1.0));
    let url = agent.url();
    let state = agent.state_dir().display().to_string();
    let (status, out, err) = run_cli(
        &["plugin", "list"],
        &[("HYPERLET_URL", &url), ("HYPERLET_STATE_DIR", &state)],
    );
    assert!(status.success(), "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("loaded")).count(),
        8,
        "{out}"
    );

    // Scaffolds of each kind: their unit tests pass on the mock host, they build, load and
    // answer with the settings their README shows.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let mut config = runtime();
    let vg = hyperlet_tests::storage::TestVg::new(2);
    let driver_settings = format!(
        "settings = {{ volume_group = \"{}\" }}\n{}",
        vg.vg,
        vg.grant()
    );
    for (kind, name, settings, readme_has) in [
        (
            "filter",
            "my-filter",
            "settings = { headroom_mb = \"512\" }".to_string(),
            "settings = { headroom_mb = \"512\" }",
        ),
        (
            "weigher",
            "my-weigher",
            "settings = { multiplier = \"1.0\" }".to_string(),
            "settings = { multiplier = \"1.0\" }",
        ),
        (
            "volume-driver",
            "my-driver",
            driver_settings,
            "[plugins.lvm]\nvolume_groups = [\"my-volumes\"]",
        ),
        (
            "network-backend",
            "my-backend",
            "settings = { bridge_prefix = \"brq\" }\n[plugins.netlink]\nname_prefixes = [\"brq\"]"
                .to_string(),
            "[plugins.netlink]\nname_prefixes = [\"brq\"]",
        ),
    ] {
        let crate_dir = dir.path().join(name);
        let (status, _, err) = run_cli(
            &[
                "plugin",
                "new",
                kind,
                name,
                "--dir",
                crate_dir.to_str().unwrap(),
            ],
            &[],
        );
        assert!(status.success(), "{err}");
        let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("kind = \"{kind}\"")) && readme.contains(readme_has),
            "the README's stanza: {readme}"
        );
        let cargo = |args: &[&str]| {
            let out = std::process::Command::new("cargo")
                .args(args)
                .arg("--offline")
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&crate_dir)
                .output()
                .expect("cargo");
            assert!(
                out.status.success(),
                "{name}: cargo {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        cargo(&["test", "--quiet"]);
        cargo(&["build", "--target", "wasm32-wasip2", "--release"]);
        let wasm = target.join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let grants = match kind {
            "volume-driver" => "grants = [\"log\", \"lvm\"]\n",
            "network-backend" => "grants = [\"log\", \"netlink\"]\n",
            _ => "grants = [\"log\"]\n",
        };
        let stanza = stanza(name, kind, &wasm, &settings).replace("grants = [\"log\"]\n", grants);
        let _ = write!(config, "{stanza}");
    }
    let agent = Agent::start_with_config(&config);
    for name in ["my-filter", "my-weigher", "my-driver", "my-backend"] {
        assert_eq!(
            plugin_view(&agent, name)["status"],
            "loaded",
            "{name}: {}",
            agent.log()
        );
    }
    // h1 has fewer vCPUs left than h2; h3 too little free memory for the filter's headroom.
    let mut h1 = host("h1", 4096, 0);
    h1["vcpus_used"] = json!(6);
    let mut h2 = host("h2", 4096, 0);
    h2["vcpus_used"] = json!(2);
    let (status, body) = evaluate(
        &agent,
        json!({"spec": {}, "hosts": [h1, h2, host("h3", 1024, 800)]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["passed"], 2, "{body}");
    assert_eq!(
        body["hosts"][0]["name"], "h2",
        "the weigher's choice: {body}"
    );
    assert!(
        body["hosts"][0]["weights"]["my-weigher"].is_number(),
        "{body}"
    );
    assert_eq!(body["hosts"][2]["failed_by"], "my-filter", "{body}");
    // The scaffolded driver reports its group's capacity as a backend.
    let backends = agent.get_json("/v1/backends");
    let mine = backends["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "my-driver").cloned())
        .unwrap_or_else(|| panic!("my-driver among the backends: {backends}"));
    assert_eq!(mine["total_gb"], 1, "{mine}");
    // The scaffolded backend refuses what it does not serve, before anything is made.
    let resp = agent.send(
        Method::POST,
        "/v1/networks",
        Some(&json!({"name": "v", "network_type": "vxlan", "segmentation_id": 4242, "backend": "my-backend"})),
    );
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert!(
        (400..500).contains(&status) && text.contains("not supported by this backend"),
        "{status} {text}"
    );
    // And makes the bridge of a local network, which goes with the network.
    let net = crate::networks::create_network(
        &agent,
        json!({"name": "l", "network_type": "local", "backend": "my-backend"}),
    );
    assert_eq!(net["status"], "ACTIVE", "{net}");
    let id = net["id"].as_str().expect("id");
    let bridge = format!("brq{}", &id[..11]);
    let shown = |name: &str| {
        std::process::Command::new("ip")
            .args(["link", "show", name])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(shown(&bridge), "{bridge} made by the scaffolded backend");
    let resp = agent.send(Method::DELETE, &format!("/v1/networks/{id}"), None);
    assert!(resp.status().is_success(), "{:?}", resp.text());
    agent.wait_gone(&format!("/v1/networks/{id}"));
    assert!(!shown(&bridge), "{bridge} removed with its network");
}

/// `wasm` plus a custom section: the same component, but a different file (a new version).
fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"hyperlet-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(payload.len() as u8); // LEB128 size (< 128)
    out.extend_from_slice(&payload);
    out
}

#[test]
fn calls_in_flight_finish_on_the_old_version_during_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filter.wasm");
    let slow = std::fs::read(plugin_wasm("hyperlet-fixture-slow")).unwrap();
    std::fs::write(&path, with_custom_section(&slow, "v1")).unwrap();
    let mut config = runtime();
    // About 4 s of busy work per call (50 ms per 33 million rounds).
    config.push_str(&stanza(
        "swappable",
        "filter",
        &path,
        "settings = { iterations = \"2640000000\" }\ncall_timeout_ms = 60000",
    ));
    let agent = Agent::start_with_config(&config);
    let before = plugin_view(&agent, "swappable")["sha256"].clone();
    let body = json!({"spec": {"ram_mb": 10}, "hosts": [host("h", 1024, 0)]});
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| evaluate(&agent, body.clone()));
        // Swap in a new version while that call runs.
        std::thread::sleep(Duration::from_millis(300));
        let tmp = dir.path().join("filter.wasm.new");
        std::fs::write(&tmp, with_custom_section(&slow, "v2")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let view = loop {
            let view = plugin_view(&agent, "swappable");
            if view["sha256"] != before {
                break view;
            }
            assert!(Instant::now() < deadline, "not reloaded: {view}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            !in_flight.is_finished(),
            "the call ended before the reload; make it slower"
        );
        assert_eq!(
            view["calls"], 0,
            "the new version has served nothing yet: {view}"
        );
        // The call in flight finishes, successfully, on the old version…
        let (status, evaluation) = in_flight.join().unwrap();
        assert_eq!(status, 200, "{evaluation}");
        assert_eq!(plugin_view(&agent, "swappable")["calls"], 0);
        // …and the next call is the new version's first.
        assert_eq!(evaluate(&agent, body.clone()).0, 200);
        assert_eq!(plugin_view(&agent, "swappable")["calls"], 1);
    });
}

/// A field of `/proc/<pid>/status` as a number (`VmRSS`, `VmHWM` in KiB; `Threads`).
fn proc_status(agent: &Agent, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc status:\n{status}"))
}

/// Runs `evaluate` on another thread while checking that `/healthz` answers within 1 s the
/// whole time; returns the evaluation's status and body.
fn evaluate_while_healthy(agent: &Agent, body: Value) -> (u16, String) {
    std::thread::scope(|s| {
        let call = s.spawn(|| {
            let resp = agent.send(Method::POST, "/v1/scheduler/evaluate", Some(&body));
            let status = resp.status().as_u16();
            (status, resp.text().unwrap())
        });
        while !call.is_finished() {
            let started = Instant::now();
            assert_eq!(agent.get("/healthz").status(), 200);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "/healthz took {:?} during the call",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        call.join().unwrap()
    })
}

/// The hostile fixture as the only plugin.
fn hostile_agent(extra: &str) -> Agent {
    let mut config = runtime();
    config.push_str(
        &stanza(
            "fixture",
            "filter",
            &plugin_wasm("hyperlet-fixture-hostile"),
            extra,
        )
        .replace("grants = [\"log\"]", "grants = [\"log\", \"clocks\"]"),
    );
    Agent::start_with_config(&config)
}

#[test]
fn hostile_answers_cost_the_host_little() {
    let hosts = json!({"spec": {"ram_mb": 10}, "hosts": [host("h", 1024, 0)]});
    for (settings, status, needle) in [
        // 40 MiB of error message: copied once within the answer budget, then cut to 1 KiB.
        ("mode = \"error\", mb = \"40\"", 502, "bytes cut)"),
        // 100 MiB: more than the answer budget (64 MiB of 512): refused while copying.
        ("mode = \"error\"", 502, "passed the host more than"),
        // Four million one-byte reasons for one host: refused before they are copied.
        (
            "mode = \"many\", count = \"4000000\"",
            502,
            "passed the host more than",
        ),
        // A 4 MiB log line: the agent's log gets 1 KiB of it.
        ("mode = \"log\"", 200, ""),
    ] {
        let agent = hostile_agent(&format!(
            "settings = {{ {settings} }}\nmemory_limit_mb = 512\ncall_timeout_ms = 20000"
        ));
        assert_eq!(plugin_view(&agent, "fixture")["status"], "loaded");
        let (rss, peak) = (proc_status(&agent, "VmRSS"), proc_status(&agent, "VmHWM"));
        let (got, body) = evaluate_while_healthy(&agent, hosts.clone());
        assert_eq!(got, status, "{settings}: {}", &body[..body.len().min(2000)]);
        assert!(
            body.len() < 4096,
            "{settings}: a {} byte answer",
            body.len()
        );
        assert!(body.contains(needle), "{settings}: {body}");
        // What the host spent receiving the answer stayed far below the guest's own memory.
        let (rss_after, peak_after) = (proc_status(&agent, "VmRSS"), proc_status(&agent, "VmHWM"));
        assert!(
            rss_after < rss + 300 * 1024 && peak_after < peak + 300 * 1024,
            "{settings}: RSS {rss} → {rss_after} KiB, peak {peak} → {peak_after} KiB"
        );
        // The log holds no more than a cut version of what the plugin said.
        let log = agent.log();
        let longest = log.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 4096, "{settings}: a log line of {longest} bytes");
        if settings.contains("log") {
            assert!(
                log.lines()
                    .any(|l| l.contains("\"plugin\":\"fixture\"") && l.contains("bytes cut)")),
                "the plugin's line is not in the log:\n{log}"
            );
        }
        assert_eq!(agent.get("/healthz").status(), 200);
    }
}

#[test]
fn a_call_sleeping_in_a_host_import_ends_at_its_deadline() {
    let agent =
        hostile_agent("settings = { mode = \"sleep\", ms = \"60000\" }\ncall_timeout_ms = 500");
    let body = json!({"spec": {"ram_mb": 10}, "hosts": [host("h", 1024, 0)]});
    // Warm up, then count threads: a call must leave none behind.
    let threads = proc_status(&agent, "Threads");
    for _ in 0..2 {
        let started = Instant::now();
        let (status, text) = evaluate_while_healthy(&agent, body.clone());
        assert_eq!(status, 502, "{text}");
        assert!(text.contains("did not answer within 500 ms"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the call ended after {:?}",
            started.elapsed()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = proc_status(&agent, "Threads");
        if now <= threads {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent has {now} threads, {threads} before the calls"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(plugin_view(&agent, "fixture")["failures"], 2);
}

#[test]
fn an_agent_starts_when_a_plugin_sleeps_in_configure() {
    let started = Instant::now();
    let mut config = runtime();
    config.push_str(&stanza(
        "good",
        "filter",
        &plugin_wasm("hyperlet-filter-ram"),
        "",
    ));
    config.push_str(
        &stanza(
            "fixture",
            "filter",
            &plugin_wasm("hyperlet-fixture-hostile"),
            "settings = { mode = \"sleep-configure\", ms = \"60000\" }\ncall_timeout_ms = 1000",
        )
        .replace("grants = [\"log\"]", "grants = [\"log\", \"clocks\"]"),
    );
    let agent = Agent::start_with_config(&config);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the agent took {:?} to start",
        started.elapsed()
    );
    let view = plugin_view(&agent, "fixture");
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1000 ms"),
        "{view}"
    );
    assert_eq!(plugin_view(&agent, "good")["status"], "loaded");
    let (status, _) = evaluate(&agent, json!({"spec": {}, "hosts": [host("h", 1024, 0)]}));
    assert_eq!(status, 200);
}

/// Strips what differs between two runs of the same chain (its timing).
fn ranking(evaluation: &Value) -> Value {
    let mut e = evaluation.clone();
    e.as_object_mut().unwrap().remove("elapsed_us");
    e
}

#[test]
fn plugin_eval_offline_answers_as_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({"vcpus": 2, "ram_mb": 2048, "disk_gb": 10, "availability_zone": "nova",
                      "image_properties": {"architecture": "x86_64"}});
    let mut far = host("far", 16384, 0);
    far["availability_zone"] = json!("az2");
    let hosts = json!([
        host("small", 4096, 3072),
        host("big", 32768, 0),
        host("medium", 16384, 0),
        far
    ]);
    let spec_file = dir.path().join("spec.json");
    let hosts_file = dir.path().join("hosts.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    std::fs::write(&hosts_file, hosts.to_string()).unwrap();
    let chain_file = dir.path().join("chain.toml");
    let config = chain_config(-1.0);
    std::fs::write(&chain_file, &config).unwrap();
    let files = [
        "--spec",
        spec_file.to_str().unwrap(),
        "--hosts",
        hosts_file.to_str().unwrap(),
    ];

    // The whole chain offline, then the same config in a running agent: the same answer.
    let mut args = vec![
        "plugin",
        "eval",
        "--json",
        "--chain",
        chain_file.to_str().unwrap(),
    ];
    args.extend(files);
    let (status, out, err) = run_cli(&args, &[]);
    assert!(status.success(), "{err}");
    let offline: Value = serde_json::from_str(&out).unwrap();
    let agent = Agent::start_with_config(&config);
    let (status, online) = evaluate(&agent, json!({"spec": spec, "hosts": hosts}));
    assert_eq!(status, 200, "{online}");
    assert_eq!(ranking(&offline), ranking(&online));
    assert_eq!(offline["hosts"][0]["name"], "medium", "{offline}");
    assert_eq!(result(&offline, "far")["failed_by"], "availability-zone");

    // The table names each refusal and the ranking.
    let mut args = vec!["plugin", "eval", "--chain", chain_file.to_str().unwrap()];
    args.extend(files);
    let (status, out, err) = run_cli(&args, &[]);
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("medium") && lines[1].contains("passed"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("small") && l.contains("ram: needs 2048 MiB")),
        "{out}"
    );
    assert!(out.contains("2 of 4 hosts passed"), "{out}");

    // One component with settings: a weigher's multiplier turns the ranking round.
    let weigher = plugin_wasm("hyperlet-weigher-ram");
    let mut args = vec![
        "plugin",
        "eval",
        "--json",
        weigher.to_str().unwrap(),
        "--name",
        "ram-weigher",
        "--multiplier",
        "-1",
        "--settings",
        "basis=free",
    ];
    args.extend(files);
    let (status, out, err) = run_cli(&args, &[]);
    assert!(status.success(), "{err}");
    let single: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(single["passed"], 4, "{single}");
    assert_eq!(single["hosts"][0]["name"], "small", "{single}");
    assert_eq!(single["hosts"][3]["name"], "big", "{single}");
    assert_eq!(
        single["hosts"][3]["weights"]["ram-weigher"], -1.0,
        "{single}"
    );

    // What the agent would refuse, eval refuses too, saying why; nothing is evaluated.
    let filter = plugin_wasm("hyperlet-filter-ram");
    for (extra, expect) in [
        (vec!["--settings", "bogus=1"], "Unknown setting bogus"),
        (vec!["--grant", "filesystem"], "grant"),
        (vec!["--settings", "novalue"], "KEY=VALUE"),
    ] {
        let mut args = vec!["plugin", "eval", filter.to_str().unwrap()];
        args.extend(extra);
        args.extend(files);
        let (status, out, err) = run_cli(&args, &[]);
        assert!(!status.success(), "{out}");
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    let driver = plugin_wasm("volume-nfs");
    let mut args = vec!["plugin", "eval", driver.to_str().unwrap()];
    args.extend(files);
    let (status, _, err) = run_cli(&args, &[]);
    assert!(!status.success());
    assert!(err.contains("volume-driver plugin"), "{err}");
    let mut args = vec!["plugin", "eval", filter.to_str().unwrap(), "--spec"];
    args.extend([
        hosts_file.to_str().unwrap(),
        "--hosts",
        hosts_file.to_str().unwrap(),
    ]);
    let (status, _, err) = run_cli(&args, &[]);
    assert!(!status.success());
    assert!(err.contains("is not a RequestSpec"), "{err}");
}

/// A chain of the identity-aware first-party filters (WIT scheduler 1.1) and a filter built
/// against 1.0, on a node with traits and metadata of its own.
fn identity_chain_config() -> String {
    let mut config = runtime();
    config.push_str(&stanza(
        "traits",
        "filter",
        &plugin_wasm("hyperlet-filter-traits"),
        "",
    ));
    config.push_str(&stanza(
        "aggregate-metadata",
        "filter",
        &plugin_wasm("hyperlet-filter-aggregate-metadata"),
        "settings = { isolate = \"true\" }",
    ));
    config.push_str(&stanza(
        "v1-0",
        "filter",
        &plugin_wasm("hyperlet-fixture-v1-0-filter"),
        "",
    ));
    config.push_str(
        "[host]\ntraits = [\"CUSTOM_GPU\", \"HW_CPU_X86_AVX2\"]\nmetadata = { ssd = \"true\" }\n",
    );
    config
}

#[test]
fn scheduler_plugins_see_host_names_traits_and_metadata() {
    let agent = Agent::start_with_config(&identity_chain_config());
    let plugins = agent.get_json("/v1/plugins");
    let versions: Vec<(&str, &str)> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["status"], "loaded", "{p}");
            (p["name"].as_str().unwrap(), p["version"].as_str().unwrap())
        })
        .collect();
    // A 1.0 plugin loads unchanged beside 1.1 ones.
    assert_eq!(
        versions,
        [
            ("traits", "1.1.0"),
            ("aggregate-metadata", "1.1.0"),
            ("v1-0", "1.0.0")
        ]
    );

    let with = |name: &str, traits: &[&str], metadata: Value| {
        let mut h = host(name, 16384, 0);
        h["traits"] = json!(traits);
        h["metadata"] = metadata;
        h
    };
    let hosts = json!([
        with(
            "gpu-1",
            &["CUSTOM_GPU", "HW_CPU_X86_AVX2"],
            json!({"ssd": "true"})
        ),
        with("gpu-2", &["CUSTOM_GPU"], json!({"ssd": "false"})),
        with("plain", &["HW_CPU_X86_AVX2"], json!({"ssd": "true"})),
        with(
            "win",
            &["CUSTOM_GPU"],
            json!({"ssd": "true", "os_distro": "windows"})
        ),
        host("tiny", 1024, 0),
    ]);
    let spec = json!({"ram_mb": 2048, "image_properties": {
        "trait:CUSTOM_GPU": "required", "trait:CUSTOM_WINDOWS": "forbidden",
        "aggregate_instance_extra_specs:ssd": "true", "os_distro": "debian"}});
    let (status, evaluation) = evaluate(&agent, json!({"spec": spec, "hosts": hosts}));
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(evaluation["passed"], 1, "{evaluation}");
    assert_eq!(evaluation["hosts"][0]["name"], "gpu-1");
    assert_eq!(result(&evaluation, "plain")["failed_by"], "traits");
    assert_eq!(
        result(&evaluation, "plain")["reason"],
        "host plain lacks required trait CUSTOM_GPU"
    );
    assert_eq!(
        result(&evaluation, "gpu-2")["failed_by"],
        "aggregate-metadata"
    );
    assert_eq!(
        result(&evaluation, "gpu-2")["reason"],
        "host gpu-2 has ssd=false, wanted true"
    );
    assert_eq!(
        result(&evaluation, "win")["reason"],
        "host win is set aside for os_distro=windows, the image has debian"
    );
    // A host without traits fails the traits filter first, by its name.
    assert_eq!(
        result(&evaluation, "tiny")["reason"],
        "host tiny lacks required trait CUSTOM_GPU"
    );
    // The 1.0 filter still gets the same batch: without the identity filters' demands, tiny
    // falls to it.
    let (status, evaluation) = evaluate(
        &agent,
        json!({"spec": {"ram_mb": 2048}, "hosts": [host("tiny", 1024, 0), host("big", 4096, 0)]}),
    );
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(result(&evaluation, "tiny")["failed_by"], "v1-0");
    assert_eq!(
        result(&evaluation, "tiny")["reason"],
        "1.0 filter: 1024 MiB free"
    );

    // This node reports its own traits and metadata from `[host]`, to plugins and in /v1/host.
    let me = agent.get_json("/v1/host");
    assert_eq!(
        me["traits"],
        json!(["CUSTOM_GPU", "HW_CPU_X86_AVX2"]),
        "{me}"
    );
    assert_eq!(me["metadata"], json!({"ssd": "true"}));
    let (status, evaluation) = evaluate(
        &agent,
        json!({"spec": {"ram_mb": 16, "image_properties": {
        "trait:CUSTOM_GPU": "required", "aggregate_instance_extra_specs:ssd": "true"}}}),
    );
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(evaluation["passed"], 1, "{evaluation}");
    let (_, evaluation) = evaluate(
        &agent,
        json!({"spec": {"ram_mb": 16, "image_properties": {
        "trait:CUSTOM_FPGA": "required"}}}),
    );
    assert_eq!(evaluation["passed"], 0, "{evaluation}");
    assert!(evaluation["hosts"][0]["reason"]
        .as_str()
        .unwrap()
        .ends_with("lacks required trait CUSTOM_FPGA"));

    // Bad identities are refused with 400, naming what is wrong.
    let too_many: Vec<String> = (0..257).map(|i| format!("CUSTOM_T{i}")).collect();
    // Every entry within its bounds, but together more than a fleet record can carry.
    let big_metadata: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("key-{i}"), json!("v".repeat(255))))
        .collect();
    let long = "x".repeat(256);
    for (bad_hosts, expect) in [
        (json!([with("a", &["custom_gpu"], json!({}))]), "upper-case"),
        (
            json!([with("a", &[], json!({})), with("a", &[], json!({}))]),
            "appears twice",
        ),
        (json!([{"name": ""}]), "needs a name"),
        (json!([{"name": "a", "traits": too_many}]), "at most 256"),
        (
            json!([{"name": "a", "metadata": big_metadata}]),
            "bytes of traits and metadata",
        ),
        (json!([with("a", &[], json!({"k": long}))]), "at most 255"),
        (json!([with("a", &[], json!({"": "v"}))]), "metadata key"),
    ] {
        let (status, body) = evaluate(&agent, json!({"spec": {}, "hosts": bad_hosts}));
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(expect), "{expect}: {body}");
    }
}

#[test]
fn bad_host_identity_config_is_refused_at_start() {
    for bad in [
        "[host]\ntraits = [\"not a trait\"]\n",
        "[host]\nmetadata = { \"\" = \"x\" }\n",
        "[host]\ncolour = \"red\"\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:1\"\n{bad}")).unwrap();
        let out = std::process::Command::new(hyperlet_tests::hyperlet_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("host"), "{bad}: {err}");
    }
}

/// The guide's examples of one kind of block: `<!-- example: KIND NAME -->` then a fenced
/// block, as (kind, name, code).
fn guide_examples() -> Vec<(String, String, String)> {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/README.md");
    let text = std::fs::read_to_string(guide).unwrap();
    let mut examples = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .strip_prefix("<!-- example: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let (kind, name) = marker.split_once(' ').unwrap();
        assert!(lines.next().unwrap().starts_with("```"), "{marker}");
        let code: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        examples.push((kind.to_string(), name.to_string(), code.join("\n") + "\n"));
    }
    examples
}

/// Acceptance of #16: plugins written only from the guide — a filter refusing hosts in
/// maintenance by name, one refusing hosts without a trait, a weigher preferring a metadata
/// value — scaffolded with `plugin new`, built, evaluated offline with `plugin eval`, then in a
/// running agent through `POST /v1/scheduler/evaluate`, with the same result.
#[test]
fn guide_plugins_scaffolded_evaluated_offline_and_in_an_agent() {
    let examples = guide_examples();
    let names: Vec<&str> = examples.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["no-maintenance", "needs-trait", "by-metadata"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let mut config = runtime();
    for (kind, name, code) in &examples {
        let crate_dir = dir.path().join(name);
        let (status, _, err) = run_cli(
            &[
                "plugin",
                "new",
                kind,
                name,
                "--dir",
                crate_dir.to_str().unwrap(),
            ],
            &[],
        );
        assert!(status.success(), "{err}");
        std::fs::write(crate_dir.join("src/lib.rs"), code).unwrap();
        for args in [
            &["test", "--quiet"][..],
            &["build", "--target", "wasm32-wasip2", "--release"][..],
        ] {
            let out = std::process::Command::new("cargo")
                .args(args)
                .arg("--offline")
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&crate_dir)
                .output()
                .expect("cargo");
            assert!(
                out.status.success(),
                "{name}: cargo {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let wasm = target.join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let settings = match name.as_str() {
            "needs-trait" => "settings = { trait = \"CUSTOM_GPU\" }",
            "by-metadata" => "settings = { key = \"priority\" }",
            _ => "",
        };
        config.push_str(&stanza(name, kind, &wasm, settings));
    }
    let chain = dir.path().join("chain.toml");
    std::fs::write(&chain, &config).unwrap();
    let node = |name: &str, gpu: bool, priority: &str| {
        let mut h = host(name, 16384, 0);
        h["traits"] = if gpu {
            json!(["CUSTOM_GPU"])
        } else {
            json!([])
        };
        h["metadata"] = json!({"priority": priority});
        h
    };
    let hosts = json!([
        node("maint-1", true, "9"),
        node("node-a", true, "3"),
        node("node-b", true, "7"),
        node("node-c", false, "10"),
    ]);
    let spec = json!({"vcpus": 1, "ram_mb": 512});
    let hosts_file = dir.path().join("hosts.json");
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&hosts_file, hosts.to_string()).unwrap();
    std::fs::write(&spec_file, spec.to_string()).unwrap();

    let (status, out, err) = run_cli(
        &[
            "plugin",
            "eval",
            "--json",
            "--chain",
            chain.to_str().unwrap(),
            "--spec",
            spec_file.to_str().unwrap(),
            "--hosts",
            hosts_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    let offline: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(offline["passed"], 2, "{offline}");
    assert_eq!(offline["hosts"][0]["name"], "node-b", "{offline}");
    assert_eq!(offline["hosts"][1]["name"], "node-a", "{offline}");
    assert_eq!(result(&offline, "maint-1")["failed_by"], "no-maintenance");
    assert_eq!(
        result(&offline, "maint-1")["reason"],
        "maint-1 is in maintenance"
    );
    assert_eq!(
        result(&offline, "node-c")["reason"],
        "node-c lacks trait CUSTOM_GPU"
    );

    let agent = Agent::start_with_config(&config);
    let (status, online) = evaluate(&agent, json!({"spec": spec, "hosts": hosts}));
    assert_eq!(status, 200, "{online}");
    assert_eq!(ranking(&offline), ranking(&online));
}
