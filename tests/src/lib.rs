//! Helpers for hyperlet's end-to-end tests: start a real `hyperlet serve` process on a free
//! loopback port with its own state directory, talk to it, signal it, and clean up.
//!
//! Every agent started here is stopped by its PID when its [`Agent`] is dropped.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `hyperlet` binary under test: `$HYPERLET_BIN`, or the one next to this test binary's
/// target directory (`target/<profile>/hyperlet`).
pub fn hyperlet_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HYPERLET_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/hyperlet
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("hyperlet");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p hyperlet` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running `hyperlet serve`.
pub struct Agent {
    child: Option<Child>,
    /// Temporary directory holding the state dir and logs (removed on drop).
    pub dir: tempfile::TempDir,
    /// The `--listen` address.
    pub addr: String,
    /// Extra arguments given to `serve`.
    pub args: Vec<String>,
    /// `https` when TLS is configured.
    pub scheme: &'static str,
    starts: u32,
}

impl Agent {
    /// Starts an agent with default settings and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[], "http")
    }

    /// Starts an agent with extra `serve` arguments.
    pub fn start_with(args: &[&str], scheme: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut agent = Self {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            scheme,
            starts: 0,
        };
        agent.spawn();
        agent.wait_ready();
        agent
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The log file of the current run.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("agent-{}.log", self.starts))
    }

    /// The log of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The admin token the agent generated.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    /// The agent's PID.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(hyperlet_bin())
            .arg("serve")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--listen")
            .arg(&self.addr)
            .args(&self.args)
            .env("HYPERLET_LOG_FORMAT", "json")
            .env_remove("HYPERLET_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hyperlet");
        self.child = Some(child);
    }

    /// Waits until the agent logs that it is serving (or fails the test with its log).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "hyperlet exited with {status} during startup:\n{}",
                    self.log()
                );
            }
            if self.log().contains("hyperlet is serving") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "hyperlet did not start serving within 30 s:\n{}",
            self.log()
        );
    }

    /// A blocking client for a plain-HTTP agent.
    pub fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// `GET path` with the admin token.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(self.token())
            .send()
            .expect("request")
    }

    /// `GET path` with the admin token, decoded as JSON after checking for 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self.get(path);
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().expect("JSON body")
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the agent");
    }

    /// Waits for the agent to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs the agent and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again on the same state directory and address.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the agent before restarting it");
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the `hyperlet` CLI with `args` and extra environment; returns (status, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(hyperlet_bin())
        .args(args)
        .env_remove("HYPERLET_TOKEN")
        .env_remove("HYPERLET_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run hyperlet");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads Server-Sent Events from a blocking response, line by line.
pub struct SseReader {
    lines: std::io::Lines<std::io::BufReader<reqwest::blocking::Response>>,
}

/// One SSE message.
#[derive(Debug, Clone, Default)]
pub struct SseMessage {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined.
    pub data: String,
}

impl SseReader {
    /// Wraps a `text/event-stream` response.
    pub fn new(resp: reqwest::blocking::Response) -> Self {
        use std::io::BufRead;
        Self {
            lines: std::io::BufReader::new(resp).lines(),
        }
    }

    /// The next message (skipping keep-alive comments), or `None` at the end of the stream.
    pub fn next_message(&mut self) -> Option<SseMessage> {
        let mut msg = SseMessage::default();
        let mut any = false;
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                if any {
                    return Some(msg);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            any = true;
            if let Some(v) = line.strip_prefix("id:") {
                msg.id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                msg.event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !msg.data.is_empty() {
                    msg.data.push('\n');
                }
                msg.data.push_str(v.trim_start());
            }
        }
        None
    }

    /// Reads messages until one has event kind `kind`; panics after `limit` messages.
    pub fn until_event(&mut self, kind: &str, limit: usize) -> SseMessage {
        for _ in 0..limit {
            let msg = self.next_message().expect("stream ended early");
            if msg.event.as_deref() == Some(kind) {
                return msg;
            }
        }
        panic!("no {kind} event within {limit} messages");
    }
}
