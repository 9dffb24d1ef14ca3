//! Running `qemu-img` for the image paths that need it (blank ephemeral disks, resizing,
//! converting uploads), through the one host-tool runner ([`crate::tool`]): plain paths, an
//! explicit format, a deadline, and resource limits when it reads an untrusted upload.

use super::ImageError;
use crate::tool::{Limits, Tool, ToolError};
use std::time::Duration;

/// Runs `qemu-img <args>` and waits at most `deadline`; the process is killed on overrun.
///
/// # Errors
/// [`ImageError::Convert`] naming the command when it fails, cannot start or overruns.
pub async fn run(args: &[&str], deadline: Duration) -> Result<(), ImageError> {
    run_with(args, deadline, None).await
}

/// [`run`] under `limits` (for images someone else wrote); `None` runs without limits.
///
/// # Errors
/// As [`run`]; a run stopped at its limits says which limits.
pub async fn run_with(
    args: &[&str],
    deadline: Duration,
    limits: Option<Limits>,
) -> Result<(), ImageError> {
    let mut tool = Tool::new("qemu-img", "qemu-utils", deadline);
    if let Some(limits) = limits {
        tool = tool.with_limits(limits);
    }
    let argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let what = format!("qemu-img {}", args.first().copied().unwrap_or_default());
    tool.run(&argv).await.map(drop).map_err(|e| match e {
        ToolError::Failed { stderr, .. } => {
            ImageError::Convert(format!("{what} failed: {}", crate::tool::plain(&stderr)))
        }
        other => ImageError::Convert(other.to_string()),
    })
}
