//! The one runner of host tools (`qemu-img`, the LVM tools, `mount`): argv (never a shell),
//! `LC_ALL=C`, stdin closed, a deadline after which the process is killed, and optional
//! resource limits for tools that parse untrusted input.
//!
//! A `qemu-img` that reads a file someone else wrote (an upload, a file on a shared export)
//! can be made to allocate without bound or spin: such runs get [`Limits`] — an address-space
//! cap and a CPU-time cap, set with `setrlimit` in the child between `fork` and `exec` (as
//! OpenStack runs `qemu-img info` under `prlimit`). A run the kernel stopped for crossing a
//! limit is reported as [`ToolError::OverLimit`], naming the limit.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::tool::ToolError> {
//! use hyperlet::tool::{Limits, Tool};
//! use std::time::Duration;
//!
//! let out = Tool::new("qemu-img", "qemu-utils", Duration::from_secs(30))
//!     .with_limits(Limits::QEMU_IMG)
//!     .run(&["info".into(), "--output=json".into(), "-f".into(), "raw".into(), "/x".into()])
//!     .await?;
//! # let _ = out; Ok(()) }
//! ```

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

/// Resource limits of one tool run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest address space, bytes (`RLIMIT_AS`).
    pub address_space_bytes: u64,
    /// CPU time, seconds (`RLIMIT_CPU`).
    pub cpu_secs: u64,
}

impl Limits {
    /// What OpenStack gives `qemu-img` on untrusted images: 1 GiB of address space, 30 s of CPU.
    pub const QEMU_IMG: Limits = Limits {
        address_space_bytes: 1 << 30,
        cpu_secs: 30,
    };

    fn describe(&self) -> String {
        format!(
            "{} MiB of address space, {} s of CPU",
            self.address_space_bytes >> 20,
            self.cpu_secs
        )
    }
}

/// Errors of a tool run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool could not be started.
    #[error("Cannot run {tool} (install {package})")]
    Missing {
        /// The tool, e.g. `qemu-img`.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// The tool overran its deadline and was killed.
    #[error("{tool} did not finish within {secs} s")]
    Timeout {
        /// The tool.
        tool: &'static str,
        /// The deadline, seconds.
        secs: f64,
    },
    /// The tool was stopped for crossing its resource limits.
    #[error("{tool} was stopped at its resource limits ({limits}): {how}")]
    OverLimit {
        /// The tool.
        tool: &'static str,
        /// The limits, described.
        limits: String,
        /// What happened (the signal, or what the tool printed).
        how: String,
    },
    /// The tool exited with an error.
    #[error("{tool} failed: {stderr}")]
    Failed {
        /// The tool.
        tool: &'static str,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// A host tool to run.
#[derive(Debug, Clone)]
pub struct Tool {
    name: &'static str,
    package: &'static str,
    env: Vec<(&'static str, OsString)>,
    deadline: Duration,
    limits: Option<Limits>,
    inherited: Vec<RawFd>,
}

impl Tool {
    /// Tool `name` (looked up in `PATH`) from Debian package `package`, killed after `deadline`.
    pub fn new(name: &'static str, package: &'static str, deadline: Duration) -> Self {
        Self {
            name,
            package,
            env: Vec::new(),
            deadline,
            limits: None,
            inherited: Vec::new(),
        }
    }

    /// Lets the tool inherit these open descriptors under the same numbers, for arguments
    /// such as `/proc/self/fd/N` (a file the agent opened and checked, so the tool never
    /// resolves its path again). The caller keeps them open until the run ends.
    #[must_use]
    pub fn with_inherited(mut self, fds: impl IntoIterator<Item = RawFd>) -> Self {
        self.inherited.extend(fds);
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    /// Runs it under `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Runs it with `args` and returns its stdout.
    ///
    /// # Errors
    /// [`ToolError::Missing`], [`ToolError::Timeout`] (the process was killed),
    /// [`ToolError::OverLimit`] or [`ToolError::Failed`] (with its raw stderr).
    pub async fn run(&self, args: &[String]) -> Result<String, ToolError> {
        let tool = self.name;
        let mut cmd = tokio::process::Command::new(tool);
        cmd.args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let rlimits = self.limits.map(|limits| {
            [
                (
                    libc::RLIMIT_AS,
                    limits.address_space_bytes,
                    limits.address_space_bytes,
                ),
                // SIGXCPU at the soft limit, SIGKILL a second later.
                (libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1),
                (libc::RLIMIT_CORE, 0, 0),
            ]
        });
        if rlimits.is_some() || !self.inherited.is_empty() {
            let inherited = self.inherited.clone();
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // setrlimit(2) and fcntl(2), which are async-signal-safe; it allocates nothing and
            // touches no lock (both lists are moved into the closure beforehand).
            unsafe {
                cmd.pre_exec(move || {
                    for (resource, soft, hard) in rlimits.into_iter().flatten() {
                        let limit = libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        };
                        if libc::setrlimit(resource, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for &fd in &inherited {
                        if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        tracing::debug!(tool, ?args, limits = ?self.limits, "running host tool");
        let missing = |source| ToolError::Missing {
            tool,
            package: self.package,
            source,
        };
        let child = cmd.spawn().map_err(missing)?;
        let out = match tokio::time::timeout(self.deadline, child.wait_with_output()).await {
            Err(_) => {
                return Err(ToolError::Timeout {
                    tool,
                    secs: self.deadline.as_secs_f64(),
                })
            }
            Ok(Err(source)) => return Err(missing(source)),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(limits) = self.limits {
            if let Some(how) = over_limit(out.status, &stderr) {
                return Err(ToolError::OverLimit {
                    tool,
                    limits: limits.describe(),
                    how,
                });
            }
        }
        Err(ToolError::Failed { tool, stderr })
    }
}

/// Whether a run under limits ended because of them: killed by SIGXCPU or SIGKILL (CPU), or
/// out of memory (an abort, or an allocation failure it reported).
fn over_limit(status: std::process::ExitStatus, stderr: &str) -> Option<String> {
    let memory = || {
        let lower = stderr.to_ascii_lowercase();
        lower.contains("cannot allocate memory")
            || lower.contains("failed to allocate")
            || lower.contains("out of memory")
            // The dynamic loader, when even the libraries do not fit.
            || lower.contains("failed to map segment")
    };
    match status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => Some("out of CPU time".into()),
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) | Some(libc::SIGBUS) => Some(format!(
            "out of memory (killed by signal {})",
            status.signal()?
        )),
        _ if memory() => Some(format!("out of memory: {}", plain(stderr))),
        _ => None,
    }
}

/// A tool's stderr trimmed, its lines joined with `; `, at most 2000 characters.
pub fn plain(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut text = lines.join("; ");
    if let Some(cut) = text.char_indices().nth(2000).map(|(i, _)| i) {
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(limits: Option<Limits>) -> Tool {
        let tool = Tool::new("sh", "dash", Duration::from_secs(30));
        match limits {
            Some(l) => tool.with_limits(l),
            None => tool,
        }
    }

    #[tokio::test]
    async fn an_inherited_descriptor_is_what_the_tool_reads_and_nothing_else_leaks() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checked");
        std::fs::write(&path, "checked bytes").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let fd = file.as_raw_fd();
        let read = format!("cat /proc/self/fd/{fd}");
        let out = sh(None)
            .with_inherited([fd])
            .run(&["-c".into(), read.clone()])
            .await
            .unwrap();
        assert_eq!(out, "checked bytes");
        // Without asking, the descriptor (opened close-on-exec) is not there.
        assert!(sh(None).run(&["-c".into(), read]).await.is_err());
    }

    #[tokio::test]
    async fn a_spinning_tool_is_stopped_at_its_cpu_limit() {
        let limits = Limits {
            address_space_bytes: 1 << 30,
            cpu_secs: 1,
        };
        let e = sh(Some(limits))
            .run(&["-c".into(), "while :; do :; done".into()])
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::OverLimit { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("1 s of CPU") && text.contains("CPU time"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn qemu_img_is_stopped_at_its_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let args = [
            "info".to_owned(),
            "--output=json".into(),
            "-f".into(),
            "raw".into(),
            image.display().to_string(),
        ];
        let tool = Tool::new("qemu-img", "qemu-utils", Duration::from_secs(30));
        tool.run(&args).await.expect("qemu-img info without limits");
        // 8 MiB of address space: qemu-img cannot even map its libraries.
        let tiny = Limits {
            address_space_bytes: 8 << 20,
            cpu_secs: 30,
        };
        let e = tool.with_limits(tiny).run(&args).await.unwrap_err();
        assert!(matches!(e, ToolError::OverLimit { .. }), "{e}");
        assert!(e.to_string().contains("8 MiB of address space"), "{e}");
    }

    #[tokio::test]
    async fn failures_and_deadlines_are_reported() {
        let e = sh(None)
            .run(&["-c".into(), "echo bad >&2; exit 3".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ToolError::Failed { stderr, .. } if stderr.trim() == "bad"),
            "{e}"
        );
        let e = Tool::new("sh", "dash", Duration::from_millis(200))
            .run(&["-c".into(), "sleep 5".into()])
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::Timeout { .. }), "{e}");
        let e = Tool::new("hyperlet-no-such-tool", "nothing", Duration::from_secs(1))
            .run(&[])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("install nothing"), "{e}");
        assert_eq!(plain(" a \n\n b\n"), "a; b");
    }
}
