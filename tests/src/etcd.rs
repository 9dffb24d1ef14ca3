//! A private etcd for fleet tests: its own data directory and free ports, started as a child
//! process and stopped by its PID (on drop too).
//!
//! ```no_run
//! let etcd = hyperlet_tests::etcd::Etcd::start();
//! println!("{}", etcd.endpoint());
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ip: String,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd on loopback and waits until it is healthy.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Starts etcd listening on `ip` (an address of this namespace) and waits until it is
    /// healthy.
    pub fn start_on(ip: &str) -> Self {
        assert!(
            std::path::Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed: run scripts/setup.sh (Debian package etcd-server)"
        );
        let mut etcd = Self {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            ip: ip.to_string(),
            client_port: super::free_port(),
            peer_port: super::free_port(),
        };
        etcd.start_again();
        etcd
    }

    /// etcd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client URL (`http://ip:port`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// etcd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Starts etcd again on the same data directory and ports (after [`Etcd::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("/usr/bin/etcd")
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited with {status}:\n{}", self.log());
            }
            let healthy = client
                .get(format!("{}/health", self.endpoint()))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .is_some_and(|t| t.contains("\"true\""));
            if healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within 30 s:\n{}", self.log());
    }

    /// Kills etcd (SIGKILL, by PID) and waits for it; the data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
