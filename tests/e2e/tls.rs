//! TLS and mutual TLS with certificates made by openssl for this test.

use hyperlet_tests::pki::Pki;
use hyperlet_tests::{run_cli, Agent};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_pki(dir: &Path) {
    let pki = Pki::new(dir);
    pki.server("server", "127.0.0.1");
    pki.issue("client", "controller", "extendedKeyUsage=clientAuth");
    let identity = [
        std::fs::read_to_string(dir.join("client.crt")).unwrap(),
        std::fs::read_to_string(dir.join("client.key")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("client.pem"), identity).unwrap();
}

fn client(dir: &Path, with_identity: bool) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let mut builder = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10));
    if with_identity {
        let id =
            reqwest::Identity::from_pem(&std::fs::read(dir.join("client.pem")).unwrap()).unwrap();
        builder = builder.identity(id);
    }
    builder.build().unwrap()
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let agent = Agent::start_with(
        &[
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.crt"),
        ],
        "https",
    );
    let token = agent.token();

    let resp = client(pki.path(), true)
        .get(format!("{}/v1/host", agent.url()))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Without a client certificate the handshake is refused.
    let err = client(pki.path(), false)
        .get(format!("{}/healthz", agent.url()))
        .send();
    assert!(err.is_err(), "a client without a certificate got in");

    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://{}/healthz", agent.addr))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // The CLI speaks mutual TLS too.
    let url = agent.url();
    let (status, out, err) = run_cli(
        &[
            "host",
            "show",
            "--ca-cert",
            &p("ca.crt"),
            "--client-identity",
            &p("client.pem"),
            "--token",
            &token,
        ],
        &[("HYPERLET_URL", url.as_str())],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("domain_type"), "{out}");
}

#[test]
fn tls_without_client_ca_serves_any_client() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let agent = Agent::start_with(
        &[
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
        ],
        "https",
    );
    let resp = client(pki.path(), false)
        .get(format!("{}/v1/host", agent.url()))
        .bearer_auth(agent.token())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn unusable_tls_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = Command::new(hyperlet_tests::hyperlet_bin())
        .args(["serve", "--listen", "127.0.0.1:1", "--tls-cert"])
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.pem"), "{err}");
}
