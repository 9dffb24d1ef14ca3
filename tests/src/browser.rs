//! A real headless Chromium driven through chromedriver's W3C WebDriver HTTP API (Debian
//! packages `chromium` and `chromium-driver`, installed by `scripts/setup.sh`).
//!
//! The browser runs in a network namespace of its own ([`BrowserNet`]), joined to the host by
//! a veth pair: Chromium cancels requests in flight (`ERR_NETWORK_CHANGED`) whenever the
//! interfaces it sees change, and other tests add and remove host interfaces all the time.
//! chromedriver runs there too, in its own process group, answering only the host side's
//! address; dropping the [`Browser`] ends the session and stops that group (chromedriver and
//! the Chromium it started), and nothing else; dropping the [`BrowserNet`] deletes the
//! namespace and its link.

use crate::free_port;
use base64::Engine;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the Debian packages put the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The browser's network namespace and the veth pair joining it to the host: the agent
/// under test listens on [`BrowserNet::host_ip`], the browser reaches it from
/// [`BrowserNet::browser_ip`].
pub struct BrowserNet {
    /// The namespace's name.
    pub netns: String,
    /// The host side's address (a /30 of 10.231.0.0/16).
    pub host_ip: String,
    /// The browser side's address.
    pub browser_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl BrowserNet {
    /// Makes the namespace (loopback up) and its link to the host.
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4();
        let bytes = id.as_bytes();
        let short = &id.simple().to_string()[..6];
        let (netns, host_if, ns_if) = (
            format!("hl-browser-{short}"),
            format!("hlbh{short}"),
            format!("hlbn{short}"),
        );
        let host_ip = format!("10.231.{}.{}", bytes[0], (bytes[1] & 0xfc) + 1);
        let browser_ip = format!("10.231.{}.{}", bytes[0], (bytes[1] & 0xfc) + 2);
        ip(&["netns", "add", &netns]);
        let net = Self {
            netns,
            host_ip,
            browser_ip,
        };
        ip(&["-n", &net.netns, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &net.netns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_ip),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &net.netns,
            "addr",
            "add",
            &format!("{}/30", net.browser_ip),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &net.netns, "link", "set", &ns_if, "up"]);
        net
    }
}

impl Default for BrowserNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BrowserNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and so the host's end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stdin(Stdio::null())
            .output();
    }
}

/// One browser session.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
    /// Where [`Browser::screenshot`] saves its PNGs.
    pub screenshots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium in `net`'s namespace. `extra_args` go to
    /// Chromium (e.g. which certificate to trust); screenshots go to `screenshots` (created).
    pub fn start(net: &BrowserNet, extra_args: &[String], screenshots: &Path) -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install the Debian package {package} (scripts/setup.sh does)"
            );
        }
        std::fs::create_dir_all(screenshots).expect("screenshot directory");
        let profile = tempfile::tempdir().expect("browser profile");
        let port = free_port();
        // `ip netns exec` execs chromedriver in place: the child's PID is chromedriver's.
        let driver = Command::new("ip")
            .args(["netns", "exec", &net.netns, CHROMEDRIVER])
            .arg(format!("--port={port}"))
            .arg(format!("--allowed-ips={}", net.host_ip))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut browser = Self {
            driver,
            base: format!("http://{}:{port}", net.browser_ip),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            _profile: profile,
            screenshots: screenshots.to_path_buf(),
        };
        browser.wait_driver();
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--metrics-recording-only",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=1400,1600",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        args.extend(extra_args.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = browser.raw("POST", "/session", Some(caps));
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn wait_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = self.http.get(format!("{}/status", self.base)).send() {
                if resp
                    .json::<Value>()
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    return;
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver call; panics on a WebDriver error. Returns `value`.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_raw(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = request.send().map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let answer: Value = resp.json().map_err(|e| e.to_string())?;
        let value = answer["value"].clone();
        if ok {
            Ok(value)
        } else {
            Err(format!("{}: {}", value["error"], value["message"]))
        }
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.raw("POST", "/url", Some(json!({"url": url})));
    }

    /// The element matching `css`, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        let found = self
            .try_raw(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        found[ELEMENT_KEY].as_str().map(str::to_string)
    }

    /// Waits until `css` matches a displayed element; returns it.
    pub fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let shown = self.execute(
                "const e = document.querySelector(arguments[0]); \
                 return e !== null && e.checkVisibility();",
                json!([css]),
            );
            if shown == json!(true) {
                if let Some(id) = self.find(css) {
                    return id;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no displayed {css} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element matching `css` (waiting for it). An element the page replaced
    /// between finding and clicking it (a re-rendered table row) is found again.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let id = self.wait_for(css, Duration::from_secs(30));
            match self.try_raw("POST", &format!("/element/{id}/click"), None) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && Instant::now() < deadline => {}
                Err(e) => self.fail(&format!("click {css}: {e}")),
            }
        }
    }

    /// Types `text` into the element matching `css` (waiting for it).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.wait_for(css, Duration::from_secs(30));
        self.raw(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Empties the form field matching `css` (waiting for it).
    pub fn clear(&self, css: &str) {
        let id = self.wait_for(css, Duration::from_secs(30));
        self.raw("POST", &format!("/element/{id}/clear"), None);
    }

    /// The rendered text of the element matching `css`, or empty when there is none.
    pub fn text(&self, css: &str) -> String {
        self.find(css)
            .and_then(|id| {
                self.try_raw("GET", &format!("/element/{id}/text"), None)
                    .ok()
            })
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text(css);
            if text.contains(needle) {
                return text;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{css} did not show {needle:?} within {limit:?}; it shows {text:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.raw(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The page's current URL.
    pub fn url(&self) -> String {
        self.raw("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The browser console's messages since the last call (level and text).
    pub fn console_messages(&self) -> Vec<(String, String)> {
        let log = self.raw("POST", "/se/log", Some(json!({"type": "browser"})));
        log.as_array()
            .unwrap_or_else(|| panic!("the browser log is not a list: {log}"))
            .iter()
            .map(|m| {
                (
                    m["level"].as_str().unwrap_or_default().to_string(),
                    m["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Panics with `why`, after saving a screenshot (`failure.png`) and printing where the
    /// page is and what its console said, for the person reading the test's output.
    fn fail(&self, why: &str) -> ! {
        let url = self.try_raw("GET", "/url", None);
        let title = self.try_raw("GET", "/title", None);
        eprintln!("browser at {url:?}, title {title:?}");
        if let Ok(log) = self.try_raw("POST", "/se/log", Some(json!({"type": "browser"}))) {
            eprintln!("browser console: {log}");
        }
        if self.try_raw("GET", "/screenshot", None).is_ok() {
            self.screenshot("failure");
        }
        panic!("{why}");
    }

    /// Saves a PNG of the window as `<screenshots>/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.raw("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 screenshot"))
            .expect("screenshot is base64");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium quits); a chromedriver that does not answer is stopped.
        let _ = self
            .http
            .delete(&self.base)
            .timeout(Duration::from_secs(10))
            .send();
        // chromedriver and the Chromium it started share the group made for it.
        let pgid = Pid::from_raw(self.driver.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
