//! The baseline: an nginx of our own (own config, pid and log files in the temp dir) inside the
//! server namespace, stopped by its PID.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procs::in_ns;
use super::{METADATA_IP, NGINX_PORT, WORKERS};

/// An nginx master process started by this bench, stopped by its PID on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in namespace `ns` with a configuration under `dir` serving `dir/docs`.
    pub fn start(ns: &str, dir: &Path) -> Self {
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(dir)).expect("write nginx.conf");
        fs::create_dir_all(dir.join("tmp")).expect("create nginx's temp directory");
        let mut cmd = in_ns(ns, "nginx");
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start nginx ({e}): install the Debian package nginx")
        });
        Nginx {
            child,
            dir: dir.to_owned(),
        }
    }

    /// The error log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Panics with the error log if nginx has exited.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait for nginx") {
            panic!("nginx exited ({status}); its error log:\n{}", self.log());
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // The child is nginx's master (`ip netns exec` execs it): SIGTERM makes it stop its
        // workers and exit.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: nginx (pid {pid}) ignored SIGTERM for 5 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Static files; no access log (the agent logs no request either); open file descriptors
/// cached; keep-alive connections never closed by request count (hyper does not close them
/// either); the same content types as the agent.
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes {WORKERS};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    open_file_cache max=64 inactive=600s;
    open_file_cache_valid 600s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type "text/plain; charset=utf-8";
    server {{
        listen {METADATA_IP}:{NGINX_PORT};
        root {d}/docs;
        location ~ \.json$ {{ default_type application/json; }}
        location ~ /user_data$ {{ default_type text/plain; }}
    }}
}}
"#
    )
}
