//! REST basics: health, auth, real host figures, and every kind of bad request.

use hyperlet_tests::Agent;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn error_code(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_string();
    (status, code, message)
}

#[test]
fn healthz_and_openapi_are_public_everything_else_needs_the_token() {
    let agent = Agent::start();
    let c = agent.client();
    let health = c.get(format!("{}/healthz", agent.url())).send().unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().unwrap()["status"], "ok");
    assert_eq!(
        c.get(format!("{}/v1/openapi.json", agent.url()))
            .send()
            .unwrap()
            .status(),
        200
    );

    for path in ["/v1/host", "/v1/events", "/metrics", "/v1/nonexistent"] {
        let resp = c.get(format!("{}{path}", agent.url())).send().unwrap();
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{path}"
        );
        let (status, code, _) = error_code(resp);
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{path} without token"
        );
        let resp = c
            .get(format!("{}{path}", agent.url()))
            .bearer_auth("0123456789abcdef0123456789abcdef")
            .send()
            .unwrap();
        let (status, code, _) = error_code(resp);
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{path} wrong token"
        );
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
    let agent = Agent::start();
    let token = agent.token();
    let c = agent.client();
    let status = |value: String| {
        c.get(format!("{}/v1/host", agent.url()))
            .header("authorization", value)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(status(format!("{scheme} {token}")), 200, "{scheme}");
    }
    assert_eq!(status(format!("Bearer   {token}")), 200, "several spaces");
    let upper = token.to_ascii_uppercase();
    assert_ne!(upper, token, "the generated token has letters");
    for wrong in [
        format!("Bearer {upper}"),
        format!("Bearer {token}x"),
        format!("Bearer {}", &token[1..]),
        format!("Bearer{token}"),
        format!("Basic {token}"),
        format!("Bearer {token} {token}"),
        token.clone(),
    ] {
        assert_eq!(status(wrong.clone()), 401, "{wrong}");
    }
}

#[test]
fn host_reports_real_figures() {
    let agent = Agent::start();
    // The first libvirt check runs in the background and may take long on hosts where libvirt
    // re-probes QEMU each time (see docs/ARCHITECTURE.md); wait for it.
    let deadline = Instant::now() + Duration::from_secs(150);
    let host = loop {
        let host = agent.get_json("/v1/host");
        if !host["hypervisor"]["checked_at"].is_null() || Instant::now() > deadline {
            break host;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let hv = &host["hypervisor"];
    assert_eq!(
        hv["reachable"], true,
        "libvirtd must be running (scripts/setup.sh starts it): {hv}"
    );

    // Figures match what the machine says through other tools.
    let nproc = std::process::Command::new("nproc").output().unwrap();
    let nproc: u64 = String::from_utf8_lossy(&nproc.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host["capacity"]["vcpus"], nproc);
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(host["hostname"], hostname);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(host["capacity"]["memory_mb"], total_kb / 1024);
    let stat = nix::sys::statvfs::statvfs(&agent.state_dir()).unwrap();
    let disk_gb = stat.blocks() as u64 * stat.fragment_size() as u64 / (1024 * 1024 * 1024);
    assert_eq!(host["capacity"]["disk_gb"], disk_gb);

    let virsh = std::process::Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output()
        .expect("virsh (apt-get install libvirt-clients)");
    let virsh = String::from_utf8_lossy(&virsh.stdout);
    let libvirt = hv["versions"]["libvirt_version"].as_str().unwrap();
    let qemu = hv["versions"]["hypervisor_version"].as_str().unwrap();
    assert!(
        virsh.contains(&format!("Using library: libvirt {libvirt}")),
        "{virsh}"
    );
    assert!(
        virsh.contains(&format!("Running hypervisor: QEMU {qemu}")),
        "{virsh}"
    );

    // The domain type follows the real KVM probe, not libvirt's capabilities.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_virt {
        assert_eq!(hv["domain_type"], "qemu");
        assert_eq!(hv["accelerator"], "tcg");
        assert_eq!(hv["kvm"]["usable"], false);
    }
    assert_eq!(host["service_status"]["enabled"], true);
}

#[test]
fn bad_requests_get_the_right_4xx_and_change_nothing() {
    let agent = Agent::start();
    let c = agent.client();
    let url = format!("{}/v1/host", agent.url());
    let token = agent.token();
    let before = agent.get_json("/v1/host")["service_status"].clone();

    let send = |body: &str, content_type: Option<&str>| {
        let mut req = c.patch(&url).bearer_auth(&token).body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        error_code(req.send().unwrap())
    };
    let json_ct = Some("application/json");
    assert_eq!(send("{\"enabled\": fal", json_ct).0, 400);
    assert_eq!(send("{\"enabled\": fal", json_ct).1, "malformed_json");
    let (status, code, message) = send("{\"enabled\": false, \"colour\": 1}", json_ct);
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert!(message.contains("colour"), "{message}");
    assert_eq!(send("{\"enabled\": \"no\"}", json_ct).0, 400);
    let long = "x".repeat(256);
    let (status, _, message) = send(
        &json!({"enabled": false, "disabled_reason": long}).to_string(),
        json_ct,
    );
    assert_eq!(status, 400);
    assert!(message.contains("255"), "{message}");
    let (status, _, _) = send(
        &json!({"enabled": true, "disabled_reason": "x"}).to_string(),
        json_ct,
    );
    assert_eq!(status, 400);
    let (status, code, _) = send("{\"enabled\": false}", None);
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    // Over the body limit: refused from the Content-Length, before the body is read. The
    // agent answers and closes while a client may still be sending, so this speaks HTTP by
    // hand: headers only, then the answer (a client streaming 2 MiB could get EPIPE first).
    {
        use std::io::{Read, Write};
        let addr = agent.url().trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "PATCH /v1/host HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 << 20
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }

    let (status, code, _) = error_code(
        c.get(format!("{}/v1/no/such/thing", agent.url()))
            .bearer_auth(&token)
            .send()
            .unwrap(),
    );
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_code(c.delete(&url).bearer_auth(&token).send().unwrap());
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));

    // Nothing changed.
    assert_eq!(agent.get_json("/v1/host")["service_status"], before);

    // A good request does change it.
    let resp = c
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"enabled": false, "disabled_reason": "maintenance"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status = &agent.get_json("/v1/host")["service_status"];
    assert_eq!(status["enabled"], false);
    assert_eq!(status["disabled_reason"], "maintenance");
}

#[test]
fn every_response_carries_a_request_id_and_metrics_count_requests() {
    let agent = Agent::start();
    let c = agent.client();
    let resp = c.get(format!("{}/healthz", agent.url())).send().unwrap();
    let id = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let resp = c
        .get(format!("{}/v1/nope", agent.url()))
        .header("x-request-id", "ctrl-42")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "ctrl-42");
    let bad = c
        .get(format!("{}/healthz", agent.url()))
        .header("x-request-id", "has spaces and ünïcode")
        .send()
        .unwrap();
    assert_ne!(bad.headers()["x-request-id"], "has spaces and ünïcode");

    // The id appears in the agent's log lines of that request.
    std::thread::sleep(Duration::from_millis(200));
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ctrl-42") && l.contains("request finished")),
        "request id missing from the log:\n{log}"
    );

    for _ in 0..3 {
        agent.get("/v1/host");
    }
    let text = agent.get("/metrics").text().unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(
                "hyperlet_http_requests_total{route=\"/v1/host\",method=\"GET\",status=\"200\"}",
            )
        })
        .unwrap_or_else(|| panic!("no /v1/host counter in:\n{text}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3, "{line}");
    assert!(
        text.contains("route=\"unmatched\",method=\"GET\",status=\"401\""),
        "{text}"
    );
    assert!(text.contains("hyperlet_http_request_duration_seconds_bucket{route=\"/v1/host\""));
}
