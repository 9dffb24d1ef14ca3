//! What a volume driver *answers* is checked against its grants as strictly as what it asks:
//! a [`VolumeConnection`] is handed to libvirt (attach) and to `qemu-img convert -n` (create
//! from an image), so a driver that could answer any path could give a guest `/dev/sda` or
//! make the agent write an image over its own database.
//!
//! [`check_connection`] uses the same grant objects as the driver's requests ([`Lvm`],
//! [`Files`]) and the same name rules:
//!
//! * a **block device** must be an LV of a granted volume group ([`Lvm::check_device`]);
//! * a **local file** must be a regular file (not a symbolic link, no second hard link)
//!   directly in the mount point of a granted share (`access = "mount"`), named for the
//!   volume;
//! * an **NFS file** must be on a granted server, directly in a granted export, a regular file
//!   named for the volume.
//!
//! "Named for the volume" is how the host knows the driver made the file for this volume:
//! the agent asks a driver about a volume only when the volume's backend is that driver, and
//! volume names are `volume-<uuid>`, unique on the node. A file named `<volume name>` or
//! `<volume name>.<suffix>` (cinder's remotefs layout: the base file and its snapshot
//! overlays; never the `.info` file) in a share granted to the driver is therefore that
//! volume's file; any other file of the share — another volume's, an operator's — is refused.
//! Drivers sharing a share can reach each other's files through their requests anyway, so
//! the rule is as strong as the grant itself.

use super::files::Location;
use super::nfs::NfsClient;
use super::{check_file_name, Files, Lvm, Share, VolumeConnection, VolumeError, VolumeRef};
use crate::config::ShareAccess;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// NFS file type of a regular file (RFC 1813 `ftype3`).
const NF3REG: u32 = 1;

/// Checks a connection a driver answered for `volume` against its grants (`lvm`, `files`;
/// `None` when not granted). Only the file's metadata is read; nothing is written.
///
/// # Errors
/// [`VolumeError::RefusedConnection`] naming the reason, or the error of the grant check
/// ([`VolumeError::NotGranted`], [`VolumeError::Escape`], …), the lookup
/// ([`VolumeError::LvNotFound`], [`VolumeError::FileNotFound`]) or the tool that failed.
pub async fn check_connection(
    lvm: Option<&Lvm>,
    files: Option<&Files>,
    volume: &VolumeRef,
    answer: &VolumeConnection,
) -> Result<(), VolumeError> {
    let refuse = |reason: String| VolumeError::RefusedConnection {
        answer: answer.to_string(),
        reason,
    };
    match answer {
        VolumeConnection::Block { path } => {
            let lvm = lvm.ok_or_else(|| {
                refuse("block devices are accepted only for LVs of a granted volume group, and the driver has no lvm grant".into())
            })?;
            lvm.check_device(path).await
        }
        VolumeConnection::File { path, .. } => {
            let files = files.ok_or_else(|| {
                refuse(
                    "files are accepted only in granted shares, and the driver has no files grant"
                        .into(),
                )
            })?;
            if files.access() != ShareAccess::Mount {
                return Err(refuse(
                    "local files are accepted only from shares mounted by the host (files.access = \"mount\")".into(),
                ));
            }
            let (dir, name) = split(path).ok_or_else(|| refuse("not an absolute path".into()))?;
            let share = files
                .shares()
                .iter()
                .find(|s| files.mount_point(s) == Path::new(dir))
                .ok_or_else(|| {
                    refuse(format!(
                        "{dir} is not the mount point of a granted share ({})",
                        granted(files)
                    ))
                })?;
            check_name(volume, name).map_err(&refuse)?;
            check_local(files, share, name).await
        }
        VolumeConnection::Nfs { host, path, .. } => {
            let files = files.ok_or_else(|| {
                refuse("NFS files are accepted only on granted shares, and the driver has no files grant".into())
            })?;
            let (dir, name) = split(path).ok_or_else(|| refuse("not an absolute path".into()))?;
            let server = Share::parse(&format!("{host}:{dir}"))
                .map_err(|_| refuse(format!("{host}:{dir} is not an NFS share")))?;
            let share = files
                .shares()
                .iter()
                .find(|s| **s == server)
                .ok_or_else(|| {
                    refuse(format!(
                        "{server} is not a granted share ({}); the file must be directly in one",
                        granted(files)
                    ))
                })?;
            check_name(volume, name).map_err(&refuse)?;
            match files.access() {
                ShareAccess::Mount => check_local(files, share, name).await,
                ShareAccess::Libnfs => {
                    let client = NfsClient::new(share.host(), share.export(), files.deadline());
                    let attr = client
                        .stat(name)
                        .await
                        .map_err(|source| VolumeError::Nfs {
                            share: share.to_string(),
                            op: format!("stat {name}"),
                            source,
                        })?
                        .ok_or_else(|| VolumeError::FileNotFound {
                            share: share.to_string(),
                            name: name.to_owned(),
                        })?;
                    if attr.kind != NF3REG {
                        return Err(refuse(format!(
                            "{name} on {share} is not a regular file (NFS type {})",
                            attr.kind
                        )));
                    }
                    Ok(())
                }
            }
        }
    }
}

/// `(directory, last component)` of an absolute path without `..`, `.` or empty components.
fn split(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let clean = path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    clean.then_some((dir, name))
}

fn granted(files: &Files) -> String {
    files
        .shares()
        .iter()
        .map(Share::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file name the driver may answer for `volume`: a valid name in a share that is the
/// volume's own (see the module docs).
fn check_name(volume: &VolumeRef, name: &str) -> Result<(), String> {
    check_file_name(name).map_err(|e| e.to_string())?;
    let own = name == volume.name
        || name
            .strip_prefix(volume.name.as_str())
            .is_some_and(|rest| rest.starts_with('.') && !rest.ends_with(".info"));
    if own {
        Ok(())
    } else {
        Err(format!(
            "{name} is not a file of volume {} (expected {} or {}.<snapshot>)",
            volume.id, volume.name, volume.name
        ))
    }
}

/// The file must be a regular file in the (mounted) share directory, not a symbolic link.
async fn check_local(files: &Files, share: &Share, name: &str) -> Result<(), VolumeError> {
    let Location::Path(path) = files.location(share.as_str(), name).await? else {
        return Err(VolumeError::Invalid(format!(
            "share {share} is not reached through a mount"
        )));
    };
    match tokio::fs::symlink_metadata(&path).await {
        // A second name elsewhere on the file system could be anything's (a hard link).
        Ok(meta) if meta.file_type().is_file() && meta.nlink() > 1 => {
            Err(VolumeError::RefusedConnection {
                answer: format!("file {}", path.display()),
                reason: format!("it has {} hard links", meta.nlink()),
            })
        }
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => Err(VolumeError::RefusedConnection {
            answer: format!("file {}", path.display()),
            reason: if meta.file_type().is_symlink() {
                "it is a symbolic link".into()
            } else {
                "it is not a regular file".into()
            },
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(VolumeError::FileNotFound {
            share: share.to_string(),
            name: name.to_owned(),
        }),
        Err(source) => Err(VolumeError::Io {
            op: "inspect",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_only_when_clean() {
        assert_eq!(
            split("/srv/nfs/a/volume-1"),
            Some(("/srv/nfs/a", "volume-1"))
        );
        assert_eq!(split("/volume-1"), Some(("/", "volume-1")));
        for bad in ["relative/x", "/a/../b", "/a//b", "/a/./b", "/a/"] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_volume_s_own_files() {
        let v = VolumeRef::new("1", 1);
        for ok in ["volume-1", "volume-1.snap-2"] {
            assert!(check_name(&v, ok).is_ok(), "{ok}");
        }
        for bad in [
            "volume-2",
            "volume-10",
            "volume-1.info",
            "hyperlet.db",
            "volume-1-x",
        ] {
            assert!(check_name(&v, bad).is_err(), "{bad}");
        }
    }
}
