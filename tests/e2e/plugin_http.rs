//! Outgoing HTTP from plugins (the `http` grant, issue #16): the maintenance filter asks a
//! real HTTP service on loopback which hosts are under maintenance; a hostile plugin trying
//! other origins, methods, huge and slow answers, redirects and floods is contained, and
//! nothing it was not granted reaches any server.

use hyperlet_tests::{plugin_wasm, Agent};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A small HTTP/1.1 server on 127.0.0.1 answering by path, counting what reaches it.
struct Service {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
    maintenance: Arc<Mutex<String>>,
    stop: Arc<AtomicUsize>,
}

impl Service {
    fn start(redirect_to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let maintenance = Arc::new(Mutex::new(r#"{"hosts": ["maint-a"]}"#.to_string()));
        let stop = Arc::new(AtomicUsize::new(0));
        let (h, m, s) = (hits.clone(), maintenance.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, m) = (h.clone(), m.clone());
                std::thread::spawn(move || serve(conn, &h, &m, redirect_to));
            }
        });
        Self {
            port,
            hits,
            maintenance,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    conn: TcpStream,
    hits: &Mutex<Vec<String>>,
    maintenance: &Mutex<String>,
    redirect_to: u16,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    hits.lock().unwrap().push(format!("{method} {path}"));
    let mut out = conn;
    let reply = |out: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(body);
    };
    match path {
        "/maintenance" => {
            let body = maintenance.lock().unwrap().clone();
            reply(
                &mut out,
                "200 OK",
                "content-type: application/json\r\n",
                body.as_bytes(),
            );
        }
        "/huge" => {
            let size = 8 << 20;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            let _ = out.write_all(head.as_bytes());
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..size / chunk.len() {
                if out.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        "/echo" => {
            let got = format!("got {}", body.len());
            reply(&mut out, "200 OK", "", got.as_bytes());
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(5));
            reply(&mut out, "200 OK", "", b"late");
        }
        "/redirect" => reply(
            &mut out,
            "302 Found",
            &format!("location: http://127.0.0.1:{redirect_to}/maintenance\r\n"),
            b"",
        ),
        _ => reply(&mut out, "200 OK", "", b"ok"),
    }
}

fn evaluate(agent: &Agent, body: Value) -> (u16, Value) {
    let resp = agent.send(Method::POST, "/v1/scheduler/evaluate", Some(&body));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

fn host(name: &str) -> Value {
    json!({"name": name, "vcpus_total": 8, "ram_total_mb": 8192, "ram_free_mb": 8192, "disk_total_gb": 100})
}

fn http_stanza(name: &str, krate: &str, grants: &str, settings: &str, table: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"filter\"\npath = \"{}\"\ngrants = {grants}\n\
         call_timeout_ms = 3000\nsettings = {{ {settings} }}\n{table}\n",
        plugin_wasm(krate).display()
    )
}

#[test]
fn the_maintenance_filter_asks_a_real_service() {
    let service = Service::start(1);
    let grant = format!(
        "[plugins.http]\norigins = [\"http://127.0.0.1:{}\"]\ntimeout_ms = 1000\n",
        service.port
    );
    let config = http_stanza(
        "maintenance",
        "hyperlet-filter-maintenance",
        "[\"log\", \"http\"]",
        &format!("url = \"{}\"", service.url("/maintenance")),
        &grant,
    );
    let agent = Agent::start_with_config(&config);
    let hosts = json!([host("maint-a"), host("node-1"), host("node-2")]);
    let (status, e) = evaluate(&agent, json!({"spec": {}, "hosts": hosts}));
    assert_eq!(status, 200, "{e}\n{}", agent.log());
    assert_eq!(e["passed"], 2, "{e}");
    let refused = e["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "maint-a")
        .unwrap();
    assert_eq!(refused["failed_by"], "maintenance");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("maint-a is under maintenance"),
        "{e}"
    );
    // The service is asked on every evaluation: what it says now counts.
    *service.maintenance.lock().unwrap() = r#"["node-1", "node-2"]"#.into();
    let (_, e) = evaluate(&agent, json!({"spec": {}, "hosts": hosts}));
    assert_eq!(e["passed"], 1, "{e}");
    assert_eq!(e["hosts"][0]["name"], "maint-a", "{e}");
    assert_eq!(service.hits(), ["GET /maintenance", "GET /maintenance"]);
    // A broken answer fails the evaluation, naming the filter and why (no guess).
    *service.maintenance.lock().unwrap() = "not json".into();
    let (status, e) = evaluate(&agent, json!({"spec": {}, "hosts": hosts}));
    assert!(status >= 500, "{status} {e}");
    assert!(
        e.to_string().contains("maintenance") && e.to_string().contains("not JSON"),
        "{e}"
    );
}

#[test]
fn a_hostile_plugins_requests_are_contained() {
    let other = Service::start(1);
    let service = Service::start(other.port);
    let grant = format!(
        "[plugins.http]\norigins = [\"http://127.0.0.1:{}\"]\nmethods = [\"GET\"]\ntimeout_ms = 500\n\
         max_response_bytes = 65536\nmax_requests_per_call = 4\n",
        service.port
    );
    let settings = format!(
        "base = \"http://127.0.0.1:{}\", other = \"{}\"",
        service.port,
        other.url("/secret")
    );
    let mut config = http_stanza(
        "rogue",
        "hyperlet-fixture-http-rogue",
        "[\"http\"]",
        &settings,
        &grant,
    );
    // The same component without the grant is not even loaded.
    config.push_str(&http_stanza(
        "ungranted",
        "hyperlet-fixture-http-rogue",
        "[]",
        &settings,
        "",
    ));
    let agent = Agent::start_with_config(&config);
    let plugins = agent.get_json("/v1/plugins");
    let ungranted = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ungranted")
        .unwrap();
    assert!(
        ungranted["error"].as_str().unwrap_or("").contains("http"),
        "{ungranted}"
    );

    let attempt = |mode: &str| -> String {
        let started = std::time::Instant::now();
        let (status, e) = evaluate(
            &agent,
            json!({"spec": {"image_properties": {"mode": mode}}, "hosts": [host("h")]}),
        );
        assert_eq!(status, 200, "{mode}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode} took {:?}",
            started.elapsed()
        );
        let rogue = e["hosts"][0]["reason"].as_str().unwrap().to_string();
        rogue
    };
    assert_eq!(attempt("ok"), "ok: status 200 body ok");
    assert_eq!(attempt("other"), "other: error Denied");
    assert_eq!(attempt("post"), "post: error Denied");
    assert_eq!(attempt("huge"), "huge: error TooLarge");
    assert_eq!(attempt("slow"), "slow: error Timeout");
    assert_eq!(
        attempt("redirect"),
        "redirect: status 302 then error Denied"
    );
    assert_eq!(attempt("flood"), "flood: 5 requests, last error Denied");
    // Nothing that was not granted reached a server: the other origin saw no request, and the
    // service saw only GETs (the POST and the fifth flood request never left the host).
    assert!(other.hits().is_empty(), "{:?}", other.hits());
    let hits = service.hits();
    assert!(hits.iter().all(|h| h.starts_with("GET ")), "{hits:?}");
    assert_eq!(
        hits.iter().filter(|h| *h == "GET /ok").count(),
        1 + 4,
        "{hits:?}"
    );
    // The agent is fine after all of it.
    assert_eq!(attempt("ok"), "ok: status 200 body ok");
    assert!(
        agent.log().contains("http request denied"),
        "denials are logged"
    );
}

/// `openssl s_server -WWW` over a test CA's certificate, serving `ok` from a directory; killed
/// (by its PID) when dropped.
struct TlsService {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_origins_are_checked_against_the_granted_roots() {
    let dir = tempfile::tempdir().unwrap();
    let pki = hyperlet_tests::pki::Pki::new(dir.path());
    let (cert, key) = pki.server("https", "127.0.0.1");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("ok"), "ok").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(&www)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl (apt-get install openssl)");
    let server = TlsService { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("https://127.0.0.1:{}", server.port);
    let stanza = |name: &str, ca: &str| {
        http_stanza(
            name,
            "hyperlet-fixture-http-rogue",
            "[\"http\"]",
            &format!("base = \"{base}\""),
            &format!("[plugins.http]\norigins = [\"{base}\"]\ntimeout_ms = 2000\n{ca}"),
        )
    };
    let config = stanza(
        "with-ca",
        &format!("ca_file = \"{}\"\n", pki.ca().display()),
    ) + &stanza("system-roots", "");
    let agent = Agent::start_with_config(&config);
    let (status, e) = evaluate(
        &agent,
        json!({"spec": {"image_properties": {"mode": "ok"}}, "hosts": [host("h")]}),
    );
    assert_eq!(status, 200, "{e}");
    // The first filter fails every host, so the chain stops there: its reason is the answer.
    assert_eq!(e["hosts"][0]["failed_by"], "with-ca", "{e}");
    assert_eq!(e["hosts"][0]["reason"], "ok: status 200 body ok", "{e}");
    // The system's roots do not know the test CA: the TLS handshake fails, nothing is sent.
    let config = stanza("system-roots", "");
    drop(agent);
    let agent = Agent::start_with_config(&config);
    let (_, e) = evaluate(
        &agent,
        json!({"spec": {"image_properties": {"mode": "ok"}}, "hosts": [host("h")]}),
    );
    let reason = e["hosts"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.starts_with("ok: error Failed"), "{e}");
}

#[test]
fn a_granted_post_sends_its_body_within_the_cap() {
    let service = Service::start(1);
    let grant = format!(
        "[plugins.http]\norigins = [\"http://127.0.0.1:{}\"]\nmethods = [\"GET\", \"POST\"]\n\
         max_request_bytes = 65536\n",
        service.port
    );
    let settings = format!("base = \"http://127.0.0.1:{}\"", service.port);
    let config = http_stanza(
        "rogue",
        "hyperlet-fixture-http-rogue",
        "[\"http\"]",
        &settings,
        &grant,
    );
    let agent = Agent::start_with_config(&config);
    let attempt = |mode: &str| -> String {
        let (status, e) = evaluate(
            &agent,
            json!({"spec": {"image_properties": {"mode": mode}}, "hosts": [host("h")]}),
        );
        assert_eq!(status, 200, "{mode}: {e}");
        e["hosts"][0]["reason"].as_str().unwrap().to_string()
    };
    assert_eq!(attempt("upload"), "upload: status 200 body got 20480");
    assert_eq!(attempt("upload-big"), "upload-big: error TooLarge");
    // The oversized body never reached the service.
    assert_eq!(service.hits(), ["POST /echo"]);
}

#[test]
fn a_named_origin_is_resolved_and_reached() {
    let service = Service::start(1);
    let base = format!("http://localhost:{}", service.port);
    let grant = format!("[plugins.http]\norigins = [\"{base}\"]\n");
    let config = http_stanza(
        "rogue",
        "hyperlet-fixture-http-rogue",
        "[\"http\"]",
        &format!("base = \"{base}\""),
        &grant,
    );
    let agent = Agent::start_with_config(&config);
    let (status, e) = evaluate(
        &agent,
        json!({"spec": {"image_properties": {"mode": "ok"}}, "hosts": [host("h")]}),
    );
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["hosts"][0]["reason"], "ok: status 200 body ok", "{e}");
}
