//! Writing an image into a volume (cinder's `copy_image_to_volume`): the volume service's
//! "create a volume from an image" step, run natively by the agent after the driver created
//! the volume and answered its [`VolumeConnection`].

use super::command::{plain_stderr, Tool};
use super::qemu_img::References;
use super::{DiskFormat, VolumeConnection, VolumeError};
use crate::tool::Limits;
use serde_json::Value;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The deadline of [`copy_image_to`].
pub const COPY_DEADLINE: Duration = Duration::from_secs(3600);

/// Writes image `source` (of `source_format`, `raw` or `qcow2`) into the volume `connection`
/// reaches, converting it to the volume's format: `qemu-img convert -n -f <source_format>
/// -O <format> <source> <target>`, the target being the block device, the local file or
/// `nfs://<host><path>` (QEMU's libnfs driver, no mount needed). The image must have no
/// backing or data file and must fit the volume. Runs under [`COPY_DEADLINE`].
///
/// # Errors
/// [`VolumeError::Invalid`] for an unknown format, an image with a backing or data file, or
/// one larger than the volume; [`VolumeError::NotActive`] for a missing block device; errors
/// of `qemu-img` (the process is killed at the deadline).
pub async fn copy_image_to(
    connection: &VolumeConnection,
    source: &Path,
    source_format: &str,
) -> Result<(), VolumeError> {
    copy_image_to_with_deadline(connection, source, source_format, COPY_DEADLINE).await
}

/// [`copy_image_to`] with another deadline (for each `qemu-img` run).
///
/// # Errors
/// As [`copy_image_to`].
pub async fn copy_image_to_with_deadline(
    connection: &VolumeConnection,
    source: &Path,
    source_format: &str,
    deadline: Duration,
) -> Result<(), VolumeError> {
    let source_format = match source_format {
        "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        other => {
            return Err(VolumeError::Invalid(format!(
                "image format {other:?} cannot be copied into a volume (raw or qcow2)"
            )))
        }
    };
    // A volume file is opened once, here, without following a link, and handed to qemu-img
    // as its descriptor: what was checked is what is written, whatever the path becomes.
    let mut held: Option<OwnedFd> = None;
    let (target, format) = match connection {
        VolumeConnection::Block { path } => {
            if !Path::new(path).exists() {
                return Err(VolumeError::NotActive { path: path.clone() });
            }
            (path.clone(), DiskFormat::Raw)
        }
        VolumeConnection::File { path, format } => {
            check_path(path)?;
            let fd = open_volume_file(PathBuf::from(path), deadline).await?;
            let arg = format!("/proc/self/fd/{}", fd.as_raw_fd());
            held = Some(fd);
            (arg, *format)
        }
        VolumeConnection::Nfs { host, path, format } => {
            check_path(path)?;
            let share = super::Share::parse(&format!("{host}:/")).map_err(|_| {
                VolumeError::Invalid(format!("NFS server {host:?} is not a host name or address"))
            })?;
            (share.url(&path[1..]), *format)
        }
    };
    let inherited = held.as_ref().map(AsRawFd::as_raw_fd);
    let tool = Tool::new("qemu-img", "qemu-utils", deadline).with_inherited(inherited);
    // The volume's file may have been written by anyone with access to the backend.
    let inspector = Tool::new("qemu-img", "qemu-utils", deadline)
        .with_limits(Limits::QEMU_IMG)
        .with_inherited(inherited);
    let info = |path: String, format: DiskFormat| {
        let tool = &inspector;
        async move {
            let out = tool
                .run(
                    &[
                        "info".into(),
                        "-U".into(),
                        "--output=json".into(),
                        "-f".into(),
                        format.as_str().into(),
                        path,
                    ],
                    plain_stderr,
                )
                .await?;
            serde_json::from_str::<Value>(&out).map_err(|_| VolumeError::Parse {
                tool: "qemu-img",
                line: out.chars().take(200).collect(),
            })
        }
    };
    let image = info(source.display().to_string(), source_format).await?;
    if !References::of(&image).is_none() {
        return Err(VolumeError::Invalid(format!(
            "image {} names a backing or data file; only self-contained images are copied",
            source.display()
        )));
    }
    let volume = info(target.clone(), format).await?;
    let size = |v: &Value| v.get("virtual-size").and_then(Value::as_u64).unwrap_or(0);
    if size(&image) > size(&volume) {
        return Err(VolumeError::Invalid(format!(
            "the image's virtual size ({} bytes) is larger than the volume ({} bytes)",
            size(&image),
            size(&volume)
        )));
    }
    tool.run(
        &[
            "convert".into(),
            "-n".into(),
            "-f".into(),
            source_format.as_str().into(),
            "-O".into(),
            format.as_str().into(),
            source.display().to_string(),
            target,
        ],
        plain_stderr,
    )
    .await
    .map(drop)
}

/// Opens a volume file read-write without following a link (`O_NOFOLLOW`, and `O_NONBLOCK`
/// so a FIFO cannot block), refusing anything but a regular file with one link; on the share
/// workers, within `deadline` (the file may be on a hard NFS mount).
async fn open_volume_file(path: PathBuf, deadline: Duration) -> Result<OwnedFd, VolumeError> {
    let shown = path.clone();
    super::workers::run("open the volume file", shown, deadline, move || {
        let io = |source| VolumeError::Io {
            op: "open the volume file",
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    VolumeError::Invalid(format!(
                        "volume file {} is a symbolic link",
                        path.display()
                    ))
                } else {
                    io(e)
                }
            })?;
        let meta = file.metadata().map_err(io)?;
        if let Some(what) = super::share_dir::describe(&meta) {
            return Err(VolumeError::Invalid(format!(
                "volume file {} is {what}",
                path.display()
            )));
        }
        Ok(OwnedFd::from(file))
    })
    .await
}

/// An absolute path without `..` components.
fn check_path(path: &str) -> Result<(), VolumeError> {
    if !path.starts_with('/')
        || path.split('/').any(|c| c == "..")
        || path.chars().any(char::is_control)
    {
        return Err(VolumeError::Invalid(format!(
            "volume path {path:?} must be absolute, without '..'"
        )));
    }
    Ok(())
}
