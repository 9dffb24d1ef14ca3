//! Kernel NFS mounts of granted shares (`access = "mount"`): one mount point per share under
//! the grant's `mount_root`, named by a hash of the share as cinder names its mount points.

use super::command::{plain_stderr, Tool};
use super::{Share, VolumeError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The mount point of `share` under `root`: `<root>/<first 32 hex digits of sha256(share)>`.
pub fn mount_point(root: &Path, share: &Share) -> PathBuf {
    let digest = Sha256::digest(share.as_str().as_bytes());
    root.join(&hex::encode(digest)[..32])
}

/// Whether `path` is a mount point of this process's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape(m) == wanted)
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts `share` at `point` unless something is mounted there already
/// (`mount -t nfs [-o options] host:/export point`, with a deadline).
///
/// # Errors
/// [`VolumeError::Io`] when the mount point cannot be created; errors of `mount`;
/// [`VolumeError::Mount`] when the share is still not mounted afterwards.
pub async fn ensure_mounted(
    share: &Share,
    point: &Path,
    options: Option<&str>,
    deadline: Duration,
) -> Result<(), VolumeError> {
    if is_mounted(point) {
        return Ok(());
    }
    tokio::fs::create_dir_all(point)
        .await
        .map_err(|source| VolumeError::Io {
            op: "create the mount point",
            path: point.to_path_buf(),
            source,
        })?;
    let mut args = vec!["-t".to_owned(), "nfs".to_owned()];
    if let Some(options) = options {
        args.extend(["-o".to_owned(), options.to_owned()]);
    }
    args.extend([share.as_str().to_owned(), point.display().to_string()]);
    tracing::info!(share = %share, mount_point = %point.display(), "mounting NFS share");
    Tool::new("mount", "nfs-common", deadline)
        .run(&args, plain_stderr)
        .await?;
    if !is_mounted(point) {
        return Err(VolumeError::Mount {
            share: share.to_string(),
            mount_point: point.to_path_buf(),
            reason: "mount reported success but nothing is mounted there".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_and_escapes() {
        let share = Share::parse("127.0.0.1:/srv/nfs/abc").unwrap();
        let point = mount_point(Path::new("/var/lib/hyperlet/mnt"), &share);
        assert!(point.starts_with("/var/lib/hyperlet/mnt"));
        assert_eq!(point.file_name().unwrap().len(), 32);
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert!(is_mounted(Path::new("/")));
        assert!(!is_mounted(Path::new("/nonexistent-hyperlet")));
    }
}
