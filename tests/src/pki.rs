//! A throw-away certificate authority made with `openssl` for tests: a CA and certificates it
//! signs (servers with IP subject alternative names, clients).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl` in `dir` and fails the test with its error output.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in a directory (`ca.crt`, `ca.key`).
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a P-256 CA valid for two days in `dir`.
    pub fn new(dir: &Path) -> Self {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=hyperlet test CA",
            ],
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues `<name>.crt` and `<name>.key` with common name `cn` and the given extensions
    /// (e.g. `subjectAltName=IP:10.0.0.1\nextendedKeyUsage=serverAuth`); returns their paths.
    pub fn issue(&self, name: &str, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let dir = &self.dir;
        std::fs::write(dir.join(format!("{name}.ext")), format!("{extensions}\n")).expect("ext");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    }

    /// A server certificate for `ip`.
    pub fn server(&self, name: &str, ip: &str) -> (PathBuf, PathBuf) {
        self.issue(
            name,
            ip,
            &format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth"),
        )
    }
}
