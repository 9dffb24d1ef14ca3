//! Host tools for the volume interfaces: [`crate::tool`]'s runner, with its errors as
//! [`VolumeError`]s and stderr cleaned by the caller.

use super::VolumeError;
use crate::tool::{self, Limits, ToolError};
use std::ffi::OsStr;
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
    /// Resource limits (for tools reading untrusted files).
    pub limits: Option<Limits>,
    /// Descriptors the tool inherits (files passed as `/proc/self/fd/N`).
    pub inherited: Vec<std::os::fd::RawFd>,
}

impl Tool<'_> {
    /// A tool from `package` with no extra environment and no limits.
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

    /// Lets the tool inherit these descriptors (see [`tool::Tool::with_inherited`]).
    #[must_use]
    pub fn with_inherited(mut self, fds: impl IntoIterator<Item = std::os::fd::RawFd>) -> Self {
        self.inherited.extend(fds);
        self
    }

    /// Runs it under `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Runs it with `args` and returns its stdout; a failure carries stderr through `clean`.
    ///
    /// # Errors
    /// [`VolumeError::ToolMissing`], [`VolumeError::Timeout`] (the process was killed),
    /// [`VolumeError::OverLimit`] or [`VolumeError::CommandFailed`].
    pub async fn run(
        &self,
        args: &[String],
        clean: impl Fn(&str) -> String,
    ) -> Result<String, VolumeError> {
        let mut runner = tool::Tool::new(self.name, self.package, self.deadline);
        for (key, value) in &self.env {
            runner = runner.with_env(key, *value);
        }
        if let Some(limits) = self.limits {
            runner = runner.with_limits(limits);
        }
        runner = runner.with_inherited(self.inherited.iter().copied());
        runner.run(args).await.map_err(|e| match e {
            ToolError::Missing {
                tool,
                package,
                source,
            } => VolumeError::ToolMissing {
                tool,
                package,
                source,
            },
            ToolError::Timeout { tool, secs } => VolumeError::Timeout { tool, secs },
            ToolError::Failed { tool, stderr } => VolumeError::CommandFailed {
                tool,
                stderr: clean(&stderr),
            },
            e @ ToolError::OverLimit { .. } => VolumeError::OverLimit(e),
        })
    }
}

/// stderr trimmed, its lines joined with `; `.
pub fn plain_stderr(stderr: &str) -> String {
    tool::plain(stderr)
}
