//! The OpenAPI document against the real agent, fuzzed by schemathesis (PyPI; scripts/setup.sh
//! installs it into /opt/hyperlet-venv): every check, positive and negative data, a bounded
//! number of cases per operation. Any failure of a check fails the test, named.
//! `fuzz/schemathesis.toml` holds the few settings with their reasons (413 for a body over the
//! size limit; two operations where a schema-valid body can still be refused with 400 for a
//! rule no JSON Schema states: subnet address arithmetic and an upload's bytes).
//!
//! The agent has no plugins, so nothing the fuzzer creates can reach a backend; whatever it
//! does create (images, a server from an uploaded image) is removed when the [`Agent`] drops.
//! `HYPERLET_FUZZ_SEED` and `HYPERLET_FUZZ_EXAMPLES` change the seed and the case count.

use hyperlet_tests::Agent;
use std::path::Path;
use std::process::Command;

const SCHEMATHESIS: &str = "/opt/hyperlet-venv/bin/schemathesis";

#[test]
fn schemathesis_finds_no_server_error_or_contract_breach() {
    assert!(
        Path::new(SCHEMATHESIS).exists(),
        "{SCHEMATHESIS} is missing: run scripts/setup.sh (it installs schemathesis into a venv)"
    );
    let agent = Agent::start();
    let seed = std::env::var("HYPERLET_FUZZ_SEED").unwrap_or_else(|_| "20261203".into());
    let examples = std::env::var("HYPERLET_FUZZ_EXAMPLES").unwrap_or_else(|_| "10".into());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fuzz/schemathesis.toml");
    let out = Command::new(SCHEMATHESIS)
        .current_dir(agent.dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/v1/openapi.json", agent.url())])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", agent.token()),
        ])
        .args(["--checks", "all", "--mode", "all"])
        .args(["--max-examples", &examples, "--seed", &seed])
        // The event stream never ends: it is read for this long, then judged on what came.
        .args(["--request-timeout", "3"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--output-truncate", "false"])
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let failures = text
            .find("FAILURES")
            .map_or(text.as_ref(), |start| &text[start..]);
        panic!(
            "schemathesis found failures (seed {seed}; exit {}):\n{failures}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        text.contains("Tested:") && !text.contains("Tested: 0"),
        "schemathesis tested nothing:\n{text}"
    );
}
