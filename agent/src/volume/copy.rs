//! Writing an image into a volume (cinder's `copy_image_to_volume`): the volume service's
//! "create a volume from an image" step, run natively by the agent after the driver created
//! the volume and answered its [`VolumeConnection`].

use super::command::{plain_stderr, Tool};
use super::qemu_img::References;
use super::{DiskFormat, VolumeConnection, VolumeError};
use crate::tool::Limits;
use serde_json::Value;
use std::path::Path;
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
    let (target, format) = match connection {
        VolumeConnection::Block { path } => {
            if !Path::new(path).exists() {
                return Err(VolumeError::NotActive { path: path.clone() });
            }
            (path.clone(), DiskFormat::Raw)
        }
        VolumeConnection::File { path, format } => {
            check_path(path)?;
            (path.clone(), *format)
        }
        VolumeConnection::Nfs { host, path, format } => {
            check_path(path)?;
            let share = super::Share::parse(&format!("{host}:/")).map_err(|_| {
                VolumeError::Invalid(format!("NFS server {host:?} is not a host name or address"))
            })?;
            (share.url(&path[1..]), *format)
        }
    };
    let tool = Tool::new("qemu-img", "qemu-utils", deadline);
    // The volume's file may have been written by anyone with access to the backend.
    let inspector = Tool::new("qemu-img", "qemu-utils", deadline).with_limits(Limits::QEMU_IMG);
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
