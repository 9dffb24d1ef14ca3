//! The node page (`/ui/`) in a real headless Chromium (Debian `chromium` + `chromium-driver`)
//! against an agent serving TLS, with a real booted guest: sign in, see the guest ACTIVE,
//! type into its shell through the serial console, see its VNC display, stop it and see
//! SHUTOFF arrive from `/v1/events` without a reload. Screenshots of each step are saved
//! under `target/tmp/node-page/` for people to look at.

use crate::consoles::boot_shell_server;
use crate::servers::{import_guest, CONFIG};
use hyperlet_tests::browser::{Browser, BrowserNet};
use hyperlet_tests::pki::Pki;
use hyperlet_tests::{free_port, Agent, Launch};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// The guest is slow to answer while other tests' guests run.
const GUEST_LIMIT: Duration = Duration::from_secs(120);

/// The base64 SHA-256 of a certificate's public key, the form Chromium's
/// `--ignore-certificate-errors-spki-list` takes: the browser trusts exactly this key.
fn spki_hash(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64 -w0",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts an agent serving TLS on `ip` with a certificate for it from a CA made for the test.
fn tls_agent(pki_dir: &Path, ip: &str) -> Agent {
    let pki = Pki::new(pki_dir);
    let (cert, key) = pki.server("server", ip);
    Agent::launch(Launch {
        toml: CONFIG.to_string(),
        args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        addr: format!("{ip}:{}", free_port()),
        scheme: "https",
        wrap: Vec::new(),
        ca: Some(pki.ca()),
    })
}

/// The page and its files: public, with their protective headers; everything else still
/// needs the token.
fn check_files_and_headers(agent: &Agent) {
    let client = agent.client();
    let get = |path: &str| client.get(format!("{}{path}", agent.url())).send().unwrap();

    let page = get("/ui/");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self';",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp} lacks {part}");
    }
    // Scripts from the agent only; the one inline allowance is style attributes.
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(csp.matches("unsafe-inline").count(), 1, "{csp}");
    assert!(csp.contains("style-src-attr 'unsafe-inline'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a style nonce")
        .to_string();
    let html = page.text().unwrap();
    assert!(html.contains(&format!("nonce=\"{nonce}\"")));
    assert!(!html.contains("<script>"), "no inline script");
    // A fresh nonce for every load.
    let again = get("/ui/");
    assert_ne!(
        again.headers()["content-security-policy"].to_str().unwrap(),
        csp
    );

    let redirect = agent
        .client()
        .get(format!("{}/ui", agent.url()))
        .send()
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");

    let script = get("/ui/app.js");
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].to_str().unwrap().to_string();
    let cached = client
        .get(format!("{}/ui/app.js", agent.url()))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(cached.status(), 304);
    // A proxy may weaken the tag or send a list.
    let weak = client
        .get(format!("{}/ui/app.js", agent.url()))
        .header("if-none-match", format!("\"other\", W/{etag}"))
        .send()
        .unwrap();
    assert_eq!(weak.status(), 304);

    for (path, what) in [
        ("/ui/vendor/xterm/LICENSE", "MIT"),
        ("/ui/vendor/novnc/LICENSE.txt", "MPL"),
    ] {
        let licence = get(path);
        assert_eq!(licence.status(), 200, "{path}");
        assert!(licence.text().unwrap().contains(what), "{path}");
    }
    for missing in ["/ui/nope.js", "/ui/%2E%2E%2FCargo.toml", "/ui/vendor/"] {
        let resp = get(missing);
        assert_eq!(resp.status(), 404, "{missing}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
    // The page being public opens nothing else.
    assert_eq!(get("/v1/host").status(), 401);
    assert_eq!(get("/v1/servers").status(), 401);
}

#[test]
fn node_page_in_chromium_signs_in_types_into_a_guest_and_follows_its_status() {
    let _vm = hyperlet_tests::vm_shared();
    let pki = tempfile::tempdir().unwrap();
    // The browser's own namespace; the agent listens on the host's end of its link.
    let net = BrowserNet::new();
    let agent = tls_agent(pki.path(), &net.host_ip);
    let token = agent.token();
    check_files_and_headers(&agent);

    let image = import_guest(&agent, "hyperlet.shell=1 hyperlet.dhcp=0");
    let id = boot_shell_server(&agent, "page-guest", &image);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-page");
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_hash(&pki.path().join("server.crt"))
    );
    let browser = Browser::start(&net, &[trust], &shots);
    let page = format!("{}/ui/", agent.url());
    assert!(
        page.starts_with(&format!("https://{}:", net.host_ip)),
        "{page}"
    );
    browser.goto(&page);
    browser.wait_for("#login-form", LIMIT);
    browser.screenshot("01-sign-in");

    // A wrong token is refused and keeps the sign-in form.
    browser.type_into("#token", "not-the-token");
    browser.click("#sign-in");
    browser.wait_text("#login-error", "not the admin token", LIMIT);
    assert!(browser.find("#dashboard:not([hidden])").is_none());

    // The refused attempt is the only thing the browser console has said so far.
    let said = browser.console_messages();
    assert!(!said.is_empty(), "the refused sign-in was not logged");
    for (level, text) in said {
        assert!(
            text.contains("/v1/host") && text.contains("401"),
            "browser console {level}: {text}"
        );
    }
    browser.clear("#token");
    browser.type_into("#token", &token);
    browser.click("#sign-in");
    let row = format!("tr[data-server-id=\"{id}\"]");
    browser.wait_text(&format!("{row} td.status"), "ACTIVE", LIMIT);
    browser.wait_text("#live", "live", LIMIT);
    assert!(
        !browser.url().contains(&token),
        "the token is never in the URL"
    );
    let stored = browser.execute(
        "return sessionStorage.getItem('hyperlet.admin-token')",
        json!([]),
    );
    assert_eq!(stored, json!(token), "kept in session storage");
    let host = agent.get_json("/v1/host");
    browser.wait_text("#node-name", host["hostname"].as_str().unwrap(), LIMIT);
    let capacity = browser.text("#capacity");
    assert!(
        capacity.contains("vCPUs") && capacity.contains("Memory"),
        "{capacity}"
    );
    assert!(browser.text("#servers").contains("page-guest"));
    browser.screenshot("02-dashboard");

    // Marks this document: a reload would lose the mark.
    browser.execute(
        "window.hyperletTestMark = 'same page'; return null",
        json!([]),
    );

    // The serial console: type into the guest's shell and read its answer.
    browser.click(&format!("{row} button[data-open=\"serial\"]"));
    browser.wait_for("#serial-status[data-state=\"connected\"]", LIMIT);
    browser.wait_for("#terminal .xterm-helper-textarea", LIMIT);
    browser.type_into(
        "#terminal .xterm-helper-textarea",
        "echo page-$((6*7))-answer\u{E007}",
    );
    browser.wait_text("#terminal .xterm-rows", "page-42-answer", GUEST_LIMIT);
    // 24-bit colour from the guest is drawn (xterm.js sets it as a style attribute).
    browser.type_into(
        "#terminal .xterm-helper-textarea",
        "printf '\\033[38;2;255;0;0m%s\\033[0m\\n' colour-$((2*3))\u{E007}",
    );
    browser.wait_text("#terminal .xterm-rows", "colour-6", GUEST_LIMIT);
    let red = browser.execute(
        "return [...document.querySelectorAll('#terminal .xterm-rows span')] \
            .filter((s) => s.textContent.includes('colour-6')) \
            .map((s) => getComputedStyle(s).color)",
        json!([]),
    );
    assert!(
        red.as_array()
            .is_some_and(|c| c.iter().any(|c| c == "rgb(255, 0, 0)")),
        "colour-6 is not red: {red}"
    );
    browser.screenshot("03-serial-console");
    // xterm.js wrote its styles into <style> elements, each admitted by the load's nonce.
    let styles = browser.execute(
        "return [...document.querySelectorAll('style')].map((s) => s.nonce.length > 0)",
        json!([]),
    );
    let styles = styles.as_array().expect("style elements");
    assert!(
        !styles.is_empty() && styles.iter().all(|s| s == true),
        "{styles:?}"
    );

    // The console log tab shows what the guest printed.
    browser.click("#detail-tabs [data-tab=\"log\"]");
    browser.wait_text("#console-log", "HYPERLET-GUEST: ready", LIMIT);

    // The VNC view through noVNC.
    browser.click("#detail-tabs [data-tab=\"vnc\"]");
    browser.wait_for("#vnc-status[data-state=\"connected\"]", LIMIT);
    browser.wait_for("#vnc-screen canvas", LIMIT);
    browser.screenshot("04-vnc");

    // Stop: the row turns SHUTOFF from the event stream alone, in the same document: the
    // page's list reads are made to fail from here on, so only the event can change the row.
    browser.click("#detail-tabs [data-tab=\"serial\"]");
    browser.execute(
        "const real = window.fetch; \
         window.fetch = (path, init) => \
           String(path) === '/v1/servers' \
             ? Promise.reject(new Error('list reads disabled by the test')) \
             : real(path, init); \
         return null",
        json!([]),
    );
    browser.click(&format!(
        "{row} button[data-action=\"stop\"]:not([disabled])"
    ));
    browser.wait_text(&format!("{row} td.status"), "SHUTOFF", GUEST_LIMIT);
    let mark = browser.execute("return window.hyperletTestMark ?? null", json!([]));
    assert_eq!(
        mark,
        json!("same page"),
        "the status changed without a reload"
    );
    assert_eq!(
        agent.get_json(&format!("/v1/servers/{id}"))["status"],
        "SHUTOFF"
    );
    browser.wait_for("#serial-status[data-state=\"closed\"]", LIMIT);
    assert!(browser.text("#serial-status").contains("4002"));
    browser.screenshot("05-stopped");

    // Nothing the page did broke its Content-Security-Policy or failed in its scripts.
    let messages = browser.console_messages();
    let problems: Vec<&(String, String)> = messages
        .iter()
        .filter(|(level, text)| {
            level == "SEVERE" || text.contains("Content Security Policy") || text.contains("CSP")
        })
        .collect();
    assert!(problems.is_empty(), "browser console: {problems:?}");

    // Signing out forgets the token.
    browser.click("#sign-out");
    browser.wait_for("#login-form", LIMIT);
    let stored: Value = browser.execute(
        "return sessionStorage.getItem('hyperlet.admin-token')",
        json!([]),
    );
    assert_eq!(stored, Value::Null);
    assert!(!agent.log().contains(&token), "the token is never logged");
}
