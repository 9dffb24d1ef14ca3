//! Running `qemu-img` for the rare paths that need it (blank ephemeral disks, resizing),
//! always with plain paths, an explicit format and a deadline.

use super::ImageError;
use std::time::Duration;

/// Runs `qemu-img <args>` and waits at most `deadline`; the process is killed on overrun.
///
/// # Errors
/// [`ImageError::Convert`] naming the command when it fails, cannot start or overruns.
pub async fn run(args: &[&str], deadline: Duration) -> Result<(), ImageError> {
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let what = format!("qemu-img {}", args.join(" "));
    match tokio::time::timeout(deadline, cmd.output()).await {
        Err(_) => Err(ImageError::Convert(format!(
            "{what} did not finish within {} s",
            deadline.as_secs()
        ))),
        Ok(Err(e)) => Err(ImageError::Convert(format!(
            "cannot run qemu-img (install qemu-utils): {e}"
        ))),
        Ok(Ok(out)) if !out.status.success() => Err(ImageError::Convert(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Ok(Ok(_)) => Ok(()),
    }
}
