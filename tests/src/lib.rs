//! Helpers for hyperlet's end-to-end tests: start a real `hyperlet serve` process on a free
//! loopback port with its own state directory, talk to it, signal it, and clean up.
//!
//! Every agent started here is stopped by its PID when its [`Agent`] is dropped.

pub mod browser;
pub mod console;
pub mod etcd;
pub mod fleet;
pub mod guest;
pub mod lag;
pub mod node;
pub mod pki;
pub mod plugins;
pub mod storage;

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

/// A plugin component built by `scripts/build-plugins.sh`
/// (`target/wasm32-wasip2/release/<crate>.wasm`).
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let bin = hyperlet_bin();
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: build the plugins with scripts/build-plugins.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A precompiled-plugin cache shared by the tests' agents (compiling once is enough).
pub fn shared_plugin_cache() -> PathBuf {
    let dir = std::env::temp_dir().join("hyperlet-test-plugin-cache");
    std::fs::create_dir_all(&dir).expect("plugin cache dir");
    dir
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
    /// Extra environment for the agent process (e.g. a failpoint).
    pub env: Vec<(String, String)>,
    /// Command prefix the agent runs under (e.g. `nsenter` into a fleet node's namespaces).
    pub wrap: Vec<String>,
    /// CA certificate the test client trusts (an agent serving TLS).
    pub ca: Option<PathBuf>,
    starts: u32,
}

/// Where and how [`Agent::launch`] starts an agent.
pub struct Launch {
    /// Config file text (empty: none).
    pub toml: String,
    /// Extra `serve` arguments.
    pub args: Vec<String>,
    /// The `--listen` address.
    pub addr: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Command prefix (see [`Agent::wrap`]).
    pub wrap: Vec<String>,
    /// CA the client trusts (see [`Agent::ca`]).
    pub ca: Option<PathBuf>,
}

impl Agent {
    /// Starts an agent with default settings and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[], "http")
    }

    /// Starts an agent whose config file has `toml` (plus the test defaults below).
    pub fn start_with_config(toml: &str) -> Self {
        Self::start_configured(toml, &[], "http")
    }

    /// Starts an agent with extra `serve` arguments.
    pub fn start_with(args: &[&str], scheme: &'static str) -> Self {
        Self::start_configured("", args, scheme)
    }

    fn start_configured(toml: &str, args: &[&str], scheme: &'static str) -> Self {
        Self::launch(Launch {
            toml: toml.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            addr: format!("127.0.0.1:{}", free_port()),
            scheme,
            wrap: Vec::new(),
            ca: None,
        })
    }

    /// Starts an agent as `launch` says and waits until it answers.
    pub fn launch(launch: Launch) -> Self {
        let Launch {
            toml,
            args,
            addr,
            scheme,
            wrap,
            ca,
        } = launch;
        let dir = tempfile::tempdir().expect("tempdir");
        // QEMU runs as libvirt-qemu and must reach disks and kernels under the state dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tempdir");
        let mut args = args;
        if !toml.is_empty() {
            let path = dir.path().join("hyperlet.toml");
            std::fs::write(&path, toml).expect("write config");
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        let mut agent = Self {
            child: None,
            addr,
            dir,
            args,
            scheme,
            env: Vec::new(),
            wrap,
            ca,
            starts: 0,
        };
        agent.spawn();
        agent.wait_ready();
        agent
    }

    /// The prefix of this agent's nftables tables (`<prefix>_l2`, `<prefix>_sg`), unique
    /// per test agent.
    pub fn firewall_prefix(&self) -> String {
        format!("hlt{}", self.addr.rsplit(':').next().unwrap_or("0"))
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

    /// The admin token: the config's `[auth] token`, else the one the agent generated.
    pub fn token(&self) -> String {
        // A token set in the config file (`[auth] token`) wins, as in the agent.
        let configured = std::fs::read_to_string(self.dir.path().join("hyperlet.toml"))
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|t| t.get("auth")?.get("token")?.as_str().map(str::to_string));
        if let Some(token) = configured {
            return token;
        }
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
        let mut command = match self.wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(hyperlet_bin());
                c
            }
            None => Command::new(hyperlet_bin()),
        };
        let child = command
            .arg("serve")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--listen")
            .arg(&self.addr)
            .args(&self.args)
            .env("HYPERLET_LOG_FORMAT", "json")
            // Tables of this agent's own: agents of concurrent tests never share one.
            .env("HYPERLET_FIREWALL_TABLE_PREFIX", self.firewall_prefix())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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

    /// A blocking client for the agent (trusting [`Agent::ca`] when set). It never follows
    /// redirects: a test sees the agent's own answer (a moved server's 301).
    pub fn client(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("CA certificate");
            builder = builder
                .use_rustls_tls()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        builder.build().expect("client")
    }

    /// `GET path` with the admin token.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(self.token())
            .send()
            .unwrap_or_else(|e| self.unreachable(&format!("GET {path}"), &e))
    }

    /// Whether the agent process runs: its `/proc` state, `gone`, or `stopped by the test`.
    pub fn process_state(&self) -> String {
        self.child
            .as_ref()
            .map_or("stopped by the test".to_string(), |c| {
                // An exited child stays a zombie until the test reaps it.
                std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("State:"))
                            .map(String::from)
                    })
                    .map_or_else(|| "gone".to_string(), |state| format!("in {state}"))
            })
    }

    /// Fails a test whose request could not reach the agent, saying whether the agent still
    /// runs and what it logged last (a connection refused is most often an agent that died).
    pub fn unreachable(&self, request: &str, error: &reqwest::Error) -> ! {
        let running = self.process_state();
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        panic!(
            "{request}: {error:?}\nthe agent process (pid {:?}) is {running}; its log ends:\n{}",
            self.child.as_ref().map(Child::id),
            tail.join("\n")
        );
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
        // The networks this agent made: their namespaces and bridges go too (a failed test
        // may leave them; the kernel objects outlive the process). An agent that died before
        // writing its token made none (and `token()` would panic again while unwinding).
        let token = std::fs::read_to_string(self.state_dir().join("admin.token")).ok();
        let networks: Vec<String> = if let (Some(_), Some(token)) = (&self.child, token) {
            self.client()
                .get(format!("{}/v1/networks", self.url()))
                .bearer_auth(token.trim())
                .timeout(Duration::from_secs(5))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|v| v["networks"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect()
        } else {
            Vec::new()
        };
        self.kill9();
        // Remove the domains this agent created: their disks live under its state dir.
        let state = self.state_dir().display().to_string();
        let (_, names) = virsh(&["list", "--all", "--name"]);
        for name in names
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("hyperlet-"))
        {
            let (_, xml) = virsh(&["dumpxml", "--inactive", name]);
            if xml.contains(&state) {
                let _ = virsh(&["destroy", name]);
                let _ = virsh(&["undefine", "--managed-save", "--nvram", name]);
            }
        }
        let _ = Command::new("nft")
            .args([
                "delete",
                "table",
                "bridge",
                &format!("{}_l2", self.firewall_prefix()),
            ])
            .output();
        let _ = Command::new("nft")
            .args([
                "delete",
                "table",
                "inet",
                &format!("{}_sg", self.firewall_prefix()),
            ])
            .output();
        for id in networks {
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "delete",
                    &hyperlet::net::model::dhcp_namespace(&id),
                ])
                .output();
            let _ = Command::new("ip")
                .args(["link", "delete", &hyperlet::net::model::bridge_name(&id)])
                .output();
        }
    }
}

impl Agent {
    /// `POST`/`PUT`/`DELETE`… `path` with the admin token and an optional JSON body.
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::blocking::Response {
        let mut req = self
            .client()
            .request(method.clone(), format!("{}{path}", self.url()))
            .bearer_auth(self.token());
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send()
            .unwrap_or_else(|e| self.unreachable(&format!("{method} {path}"), &e))
    }

    /// Creates an image and uploads `file` into it; returns the image JSON (status as the
    /// upload left it) and the HTTP status of the upload.
    pub fn import_image(
        &self,
        name: &str,
        disk_format: &str,
        container_format: &str,
        properties: serde_json::Value,
        file: &Path,
    ) -> (u16, serde_json::Value) {
        let body = serde_json::json!({
            "name": name, "disk_format": disk_format,
            "container_format": container_format, "properties": properties,
        });
        let created = self.send(reqwest::Method::POST, "/v1/images", Some(&body));
        assert_eq!(created.status(), 201, "create image {name}");
        let image: serde_json::Value = created.json().unwrap();
        let id = image["id"].as_str().unwrap().to_string();
        let resp = self
            .client()
            .put(format!("{}/v1/images/{id}/file", self.url()))
            .bearer_auth(self.token())
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(file).expect("image file"))
            .send()
            .expect("upload");
        let status = resp.status().as_u16();
        let after = self.get_json(&format!("/v1/images/{id}"));
        (status, after)
    }

    /// Polls `GET /v1/servers/{id}` until its status is `status` (panics on ERROR or timeout).
    pub fn wait_server(&self, id: &str, status: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            let resp = self.get(&format!("/v1/servers/{id}"));
            if resp.status() == 200 {
                last = resp.json().unwrap();
                if last["status"] == status && last["task_state"].is_null() {
                    return last;
                }
                if last["status"] == "ERROR" && status != "ERROR" {
                    panic!("server {id} went to ERROR: {last}\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("server {id} did not reach {status} within {limit:?}; last: {last}");
    }

    /// Polls until `GET /v1/servers/{id}` answers 404.
    pub fn wait_server_gone(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.get(&format!("/v1/servers/{id}")).status() == 404 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("server {id} still exists after {limit:?}");
    }

    /// Polls `GET path` until its `status` is none of `transitional` (panics after 180 s or
    /// when it answers anything but 200) and returns it.
    pub fn wait_settled(&self, path: &str, transitional: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let resp = self.get(path);
            assert_eq!(resp.status(), 200, "GET {path}");
            let item: serde_json::Value = resp.json().unwrap();
            if !transitional.iter().any(|t| item["status"] == *t) {
                return item;
            }
            assert!(
                Instant::now() < deadline,
                "{path} stays {}:\n{}",
                item["status"],
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until `GET path` answers 404 (panics after 180 s).
    pub fn wait_gone(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.get(path).status() != 404 {
            assert!(
                Instant::now() < deadline,
                "{path} is still there:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The agent's server console text.
    pub fn console(&self, id: &str) -> String {
        let resp = self.send(
            reqwest::Method::POST,
            &format!("/v1/servers/{id}/action"),
            Some(&serde_json::json!({"console_output": null})),
        );
        assert_eq!(resp.status(), 200, "console_output");
        let out: serde_json::Value = resp.json().unwrap();
        out["output"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until the server's console contains `needle` `count` times.
    pub fn wait_console(&self, id: &str, needle: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut text = String::new();
        while Instant::now() < deadline {
            text = self.console(id);
            if text.matches(needle).count() >= count {
                return text;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("console of {id} does not show {needle:?} {count}× within {limit:?}:\n{text}");
    }
}

static VM_LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shared hold on the machine for a test that boots a few guests. Tests that boot many at once
/// take [`vm_exclusive`] instead, so they never starve each other's guests of CPU (TCG on two
/// cores).
pub fn vm_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    VM_LOAD.read().unwrap_or_else(|p| p.into_inner())
}

/// Exclusive hold on the machine for a test that boots many guests at once.
pub fn vm_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    VM_LOAD.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs `virsh -c qemu:///system <args>`; returns (success, stdout+stderr).
pub fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .expect("virsh (apt-get install libvirt-clients)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs the `hyperlet` CLI with `args` and extra environment; returns (status, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(hyperlet_bin())
        .args(args)
        .env_remove("HYPERLET_TOKEN")
        .env_remove("HYPERLET_URL")
        .env_remove("HYPERLET_FLEET_ENDPOINTS")
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
