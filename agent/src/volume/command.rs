//! Running a host tool: argv (never a shell), `LC_ALL=C`, stdin closed, a deadline after
//! which the process is killed.

use super::VolumeError;
use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

/// A tool to run.
pub struct Tool<'a> {
    /// Its name (looked up in `PATH`), e.g. `qemu-img`.
    pub name: &'static str,
    /// The Debian package that has it, for the error when it is missing.
    pub package: &'static str,
    /// Extra environment.
    pub env: Vec<(&'static str, &'a OsStr)>,
    /// The deadline.
    pub deadline: Duration,
}

impl Tool<'_> {
    /// A tool from `package` with no extra environment.
    pub fn new(name: &'static str, package: &'static str, deadline: Duration) -> Self {
        Self {
            name,
            package,
            env: Vec::new(),
            deadline,
        }
    }

    /// Runs it with `args` and returns its stdout; a failure carries stderr through `clean`.
    ///
    /// # Errors
    /// [`VolumeError::ToolMissing`], [`VolumeError::Timeout`] (the process was killed) or
    /// [`VolumeError::CommandFailed`].
    pub async fn run(
        &self,
        args: &[String],
        clean: impl Fn(&str) -> String,
    ) -> Result<String, VolumeError> {
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
        tracing::debug!(tool, ?args, "running host tool");
        let missing = |source| VolumeError::ToolMissing {
            tool,
            package: self.package,
            source,
        };
        let child = cmd.spawn().map_err(missing)?;
        let out = match tokio::time::timeout(self.deadline, child.wait_with_output()).await {
            Err(_) => {
                return Err(VolumeError::Timeout {
                    tool,
                    secs: self.deadline.as_secs_f64(),
                })
            }
            Ok(Err(source)) => return Err(missing(source)),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(VolumeError::CommandFailed {
                tool,
                stderr: clean(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// stderr trimmed, its lines joined with `; `.
pub fn plain_stderr(stderr: &str) -> String {
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
