//! The host side of the `files` interface of `hyperlet:volume`: files in the top directory of
//! the NFS shares a driver is granted.
//!
//! Every call names a share, which must be one of the grant's (compared after
//! normalisation), and a file name, which must be a single path component
//! ([`check_file_name`]); only then is the share reached:
//!
//! * `access = "mount"` — the share is mounted by the kernel under `mount_root` (mounted on
//!   first use when nothing is mounted there yet) and the files are local files. Symbolic links
//!   are never followed.
//! * `access = "libnfs"` — no mount: the agent's own NFSv3 client ([`super::nfs`]).
//!
//! Files are created with the grant's `file_mode`; info files are written atomically
//! (temporary file + rename) and must be named `*.info`.

use super::mount::{ensure_mounted, mount_point};
use super::nfs::NfsClient;
use super::{check_file_name, Share, VolumeError};
use crate::config::{FilesGrant, ShareAccess};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest info file, bytes.
pub const MAX_INFO_BYTES: usize = 64 * 1024;

/// What a file looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Apparent size, bytes.
    pub size_bytes: u64,
    /// Bytes allocated.
    pub allocated_bytes: u64,
}

/// Capacity of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareStats {
    /// Size of the file system, bytes.
    pub total_bytes: u64,
    /// Space available to this client, bytes.
    pub available_bytes: u64,
    /// Sum of the apparent sizes of the regular files in the share's top directory, bytes.
    pub allocated_bytes: u64,
}

/// Where a file of a share is, for tools that open it themselves (`qemu-img`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path under the share's mount point.
    Path(PathBuf),
    /// An `nfs://` URL for QEMU's libnfs driver.
    Url(String),
}

impl Location {
    /// The argument a tool takes.
    pub fn arg(&self) -> String {
        match self {
            Self::Path(p) => p.display().to_string(),
            Self::Url(u) => u.clone(),
        }
    }
}

/// File access restricted to a granted set of NFS shares.
#[derive(Debug, Clone)]
pub struct Files {
    shares: Vec<Share>,
    access: ShareAccess,
    mount_root: PathBuf,
    mount_options: Option<String>,
    mode: u32,
    deadline: Duration,
}

impl Files {
    /// Access to the shares of `grant`; one operation may take `command_timeout_secs`.
    ///
    /// # Errors
    /// [`VolumeError::InvalidShare`] or [`VolumeError::Invalid`] for bad grant parameters.
    pub fn new(grant: &FilesGrant) -> Result<Self, VolumeError> {
        let shares = grant
            .shares
            .iter()
            .map(|s| Share::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            shares,
            access: grant.access,
            mount_root: grant.mount_root.clone(),
            mount_options: grant.mount_options.clone(),
            mode: grant.mode().map_err(VolumeError::Invalid)?,
            deadline: Duration::from_secs(grant.command_timeout_secs),
        })
    }

    /// Gives every operation at most `deadline`.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The deadline of one operation.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// How shares are reached.
    pub fn access(&self) -> ShareAccess {
        self.access
    }

    /// The permissions of created files.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The granted shares.
    pub fn shares(&self) -> &[Share] {
        &self.shares
    }

    /// The granted share `share` names.
    ///
    /// # Errors
    /// [`VolumeError::ShareNotGranted`] for any other share (malformed ones included).
    pub fn share(&self, share: &str) -> Result<&Share, VolumeError> {
        let wanted = Share::parse(share).ok();
        self.shares
            .iter()
            .find(|s| Some(*s) == wanted.as_ref())
            .ok_or_else(|| VolumeError::ShareNotGranted {
                share: share.to_owned(),
                granted: self
                    .shares
                    .iter()
                    .map(Share::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The mount point of a granted share (`access = "mount"`).
    pub fn mount_point(&self, share: &Share) -> PathBuf {
        mount_point(&self.mount_root, share)
    }

    /// The share's directory, mounted if need be (`access = "mount"`).
    async fn dir(&self, share: &Share) -> Result<PathBuf, VolumeError> {
        let point = self.mount_point(share);
        ensure_mounted(share, &point, self.mount_options.as_deref(), self.deadline).await?;
        Ok(point)
    }

    fn client(&self, share: &Share) -> NfsClient {
        NfsClient::new(share.host(), share.export(), self.deadline)
    }

    fn nfs_error(share: &Share, op: String) -> impl FnOnce(super::nfs::NfsError) -> VolumeError {
        let share = share.to_string();
        move |source| VolumeError::Nfs { share, op, source }
    }

    /// Checks the share and the name; returns the share.
    fn check(&self, share: &str, name: &str) -> Result<&Share, VolumeError> {
        let share = self.share(share)?;
        check_file_name(name)?;
        Ok(share)
    }

    /// Where `name` of `share` is for a tool (mounting the share if need be).
    ///
    /// # Errors
    /// As the other calls.
    pub async fn location(&self, share: &str, name: &str) -> Result<Location, VolumeError> {
        let share = self.check(share, name)?;
        Ok(match self.access {
            ShareAccess::Mount => Location::Path(self.dir(share).await?.join(name)),
            ShareAccess::Libnfs => Location::Url(share.url(name)),
        })
    }

    /// Creates a sparse file of `size_bytes`; refuses to overwrite an existing one.
    ///
    /// # Errors
    /// [`VolumeError::ShareNotGranted`], [`VolumeError::Escape`] or
    /// [`VolumeError::InvalidName`] before anything runs; [`VolumeError::FileExists`]; I/O and
    /// NFS errors.
    pub async fn create_sparse(
        &self,
        share: &str,
        name: &str,
        size_bytes: u64,
    ) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        let exists = || VolumeError::FileExists {
            share: share.to_string(),
            name: name.to_owned(),
        };
        match self.access {
            ShareAccess::Mount => {
                let path = self.dir(share).await?.join(name);
                let mode = self.mode;
                let made = self
                    .blocking(move || {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(mode)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&path)?;
                        let sized = file
                            .set_len(size_bytes)
                            .and_then(|()| file.set_permissions(PermissionsExt::from_mode(mode)));
                        if sized.is_err() {
                            let _ = std::fs::remove_file(&path);
                        }
                        sized
                    })
                    .await;
                match made {
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(exists()),
                    other => other.map_err(|source| VolumeError::Io {
                        op: "create",
                        path: self.mount_point(share).join(name),
                        source,
                    }),
                }
            }
            ShareAccess::Libnfs => {
                match self.client(share).create(name, size_bytes, self.mode).await {
                    Err(e) if e.code() == "exists" => Err(exists()),
                    other => other.map_err(Self::nfs_error(share, format!("create {name}"))),
                }
            }
        }
    }

    /// Removes a file; a missing one is not an error.
    ///
    /// # Errors
    /// As [`Files::create_sparse`].
    pub async fn remove(&self, share: &str, name: &str) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let path = self.dir(share).await?.join(name);
                let shown = path.clone();
                self.blocking(move || match std::fs::remove_file(&path) {
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .await
                .map_err(|source| VolumeError::Io {
                    op: "remove",
                    path: shown,
                    source,
                })
            }
            ShareAccess::Libnfs => self
                .client(share)
                .remove(name)
                .await
                .map_err(Self::nfs_error(share, format!("remove {name}"))),
        }
    }

    /// Size of a file, or `None` when it does not exist.
    ///
    /// # Errors
    /// As [`Files::create_sparse`].
    pub async fn stat(&self, share: &str, name: &str) -> Result<Option<FileStat>, VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let path = self.dir(share).await?.join(name);
                match tokio::fs::symlink_metadata(&path).await {
                    Ok(meta) => Ok(Some(FileStat {
                        size_bytes: meta.len(),
                        allocated_bytes: meta.blocks() * 512,
                    })),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(VolumeError::Io {
                        op: "stat",
                        path,
                        source,
                    }),
                }
            }
            ShareAccess::Libnfs => Ok(self
                .client(share)
                .stat(name)
                .await
                .map_err(Self::nfs_error(share, format!("stat {name}")))?
                .map(|a| FileStat {
                    size_bytes: a.size,
                    allocated_bytes: a.used,
                })),
        }
    }

    /// Gives a file the grant's permissions (after a tool created it with its own).
    ///
    /// # Errors
    /// As [`Files::create_sparse`].
    pub async fn apply_mode(&self, share: &str, name: &str) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let path = self.dir(share).await?.join(name);
                tokio::fs::set_permissions(&path, PermissionsExt::from_mode(self.mode))
                    .await
                    .map_err(|source| VolumeError::Io {
                        op: "chmod",
                        path,
                        source,
                    })
            }
            ShareAccess::Libnfs => self
                .client(share)
                .chmod(name, self.mode)
                .await
                .map_err(Self::nfs_error(share, format!("chmod {name}"))),
        }
    }

    fn check_info_name(name: &str) -> Result<(), VolumeError> {
        if !name.ends_with(".info") {
            return Err(VolumeError::InvalidName {
                what: "info file",
                name: name.to_owned(),
                reason: "info files are named *.info",
            });
        }
        Ok(())
    }

    /// Writes info file `name` (`*.info`, at most 64 KiB) atomically.
    ///
    /// # Errors
    /// As [`Files::create_sparse`]; [`VolumeError::InvalidName`] for another name,
    /// [`VolumeError::Invalid`] for contents over 64 KiB.
    pub async fn write_info_file(
        &self,
        share: &str,
        name: &str,
        contents: &str,
    ) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        Self::check_info_name(name)?;
        if contents.len() > MAX_INFO_BYTES {
            return Err(VolumeError::Invalid(format!(
                "info file {name} would hold {} bytes (at most {MAX_INFO_BYTES})",
                contents.len()
            )));
        }
        match self.access {
            ShareAccess::Mount => {
                let dir = self.dir(share).await?;
                let target = dir.join(name);
                let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
                let data = contents.as_bytes().to_vec();
                let mode = self.mode;
                let shown = target.clone();
                self.blocking(move || write_atomic(&tmp, &target, &data, mode))
                    .await
                    .map_err(|source| VolumeError::Io {
                        op: "write",
                        path: shown,
                        source,
                    })
            }
            ShareAccess::Libnfs => self
                .client(share)
                .write_atomic(name, contents.as_bytes(), self.mode)
                .await
                .map_err(Self::nfs_error(share, format!("write {name}"))),
        }
    }

    /// Reads info file `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// As [`Files::write_info_file`]; a file over 64 KiB or not UTF-8 is refused.
    pub async fn read_info_file(
        &self,
        share: &str,
        name: &str,
    ) -> Result<Option<String>, VolumeError> {
        let share = self.check(share, name)?;
        Self::check_info_name(name)?;
        let bytes = match self.access {
            ShareAccess::Mount => {
                let path = self.dir(share).await?.join(name);
                let shown = path.clone();
                self.blocking(move || read_limited(&path))
                    .await
                    .map_err(|source| VolumeError::Io {
                        op: "read",
                        path: shown,
                        source,
                    })?
            }
            ShareAccess::Libnfs => self
                .client(share)
                .read(name, MAX_INFO_BYTES)
                .await
                .map_err(Self::nfs_error(share, format!("read {name}")))?,
        };
        bytes
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|_| VolumeError::Invalid(format!("info file {name} is not UTF-8")))
            })
            .transpose()
    }

    /// Capacity of a granted share: the file system's size and available space, and the
    /// apparent sizes of the regular files in its top directory added up.
    ///
    /// # Errors
    /// [`VolumeError::ShareNotGranted`]; I/O and NFS errors.
    pub async fn share_info(&self, share: &str) -> Result<ShareStats, VolumeError> {
        let share = self.share(share)?;
        match self.access {
            ShareAccess::Mount => {
                let dir = self.dir(share).await?;
                let shown = dir.clone();
                self.blocking(move || {
                    let fs = nix::sys::statvfs::statvfs(&dir).map_err(std::io::Error::from)?;
                    let frag = fs.fragment_size();
                    let mut allocated = 0u64;
                    for entry in std::fs::read_dir(&dir)? {
                        let meta = entry?.metadata()?;
                        if meta.is_file() {
                            allocated = allocated.saturating_add(meta.len());
                        }
                    }
                    Ok(ShareStats {
                        total_bytes: fs.blocks().saturating_mul(frag),
                        available_bytes: fs.blocks_available().saturating_mul(frag),
                        allocated_bytes: allocated,
                    })
                })
                .await
                .map_err(|source| VolumeError::Io {
                    op: "measure",
                    path: shown,
                    source,
                })
            }
            ShareAccess::Libnfs => {
                let (fs, files) = self
                    .client(share)
                    .usage()
                    .await
                    .map_err(Self::nfs_error(share, "measure".into()))?;
                Ok(ShareStats {
                    total_bytes: fs.total,
                    available_bytes: fs.available,
                    allocated_bytes: files
                        .iter()
                        .fold(0u64, |sum, (_, a)| sum.saturating_add(a.size)),
                })
            }
        }
    }

    /// Runs blocking file work with the deadline.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        match tokio::time::timeout(self.deadline, tokio::task::spawn_blocking(work)).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(_) => Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no answer within {:?}", self.deadline),
            )),
        }
    }
}

/// Writes `data` to `tmp`, syncs it and renames it over `target`.
fn write_atomic(tmp: &Path, target: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(tmp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Reads at most [`MAX_INFO_BYTES`] of a file that is not a symbolic link.
fn read_limited(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    file.take(MAX_INFO_BYTES as u64 + 1)
        .read_to_end(&mut data)?;
    if data.len() > MAX_INFO_BYTES {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_INFO_BYTES} bytes"),
        ));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(access: ShareAccess, mount_root: &Path) -> FilesGrant {
        FilesGrant {
            shares: vec!["127.0.0.1:/srv/nfs/a".into()],
            access,
            mount_root: mount_root.to_path_buf(),
            mount_options: None,
            file_mode: "0660".into(),
            command_timeout_secs: 1,
        }
    }

    #[tokio::test]
    async fn refusals_come_before_any_mount_or_connection() {
        let root = tempfile::tempdir().unwrap();
        for access in [ShareAccess::Mount, ShareAccess::Libnfs] {
            let files = Files::new(&grant(access, root.path())).unwrap();
            assert_eq!(files.mode(), 0o660);
            assert!(files.share("127.0.0.1:/srv/nfs/a/").is_ok());
            for other in [
                "127.0.0.1:/srv/nfs/b",
                "127.0.0.1:/srv/nfs/a/../b",
                "127.0.0.1:/srv/nfs",
                "127.0.0.2:/srv/nfs/a",
                "garbage",
            ] {
                let e = files.stat(other, "volume-1").await.unwrap_err();
                assert!(matches!(e, VolumeError::ShareNotGranted { .. }), "{e}");
                assert_eq!(e.code(), "denied");
                assert!(
                    e.to_string().contains("granted: 127.0.0.1:/srv/nfs/a"),
                    "{e}"
                );
                assert!(files.share_info(other).await.is_err());
            }
            let share = "127.0.0.1:/srv/nfs/a";
            for escape in ["../x", "/etc/passwd", "a/b", ".."] {
                for e in [
                    files.create_sparse(share, escape, 1).await.unwrap_err(),
                    files.remove(share, escape).await.unwrap_err(),
                    files.stat(share, escape).await.unwrap_err(),
                    files.location(share, escape).await.unwrap_err(),
                    files
                        .write_info_file(share, &format!("{escape}.info"), "{}")
                        .await
                        .unwrap_err(),
                ] {
                    assert_eq!(e.code(), "denied", "{escape}: {e}");
                }
            }
            for bad in [".hidden", "", "a b"] {
                let e = files.create_sparse(share, bad, 1).await.unwrap_err();
                assert_eq!(e.code(), "invalid", "{bad}: {e}");
            }
            let e = files
                .write_info_file(share, "volume-1", "{}")
                .await
                .unwrap_err();
            assert!(e.to_string().contains("*.info"), "{e}");
            let big = "x".repeat(MAX_INFO_BYTES + 1);
            let e = files
                .write_info_file(share, "volume-1.info", &big)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "invalid", "{e}");
            assert!(files.read_info_file(share, "volume-1").await.is_err());
        }
        // Nothing was mounted or created under the mount root.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_grants_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut g = grant(ShareAccess::Mount, root.path());
        g.file_mode = "rw".into();
        assert!(matches!(Files::new(&g), Err(VolumeError::Invalid(_))));
        let mut g = grant(ShareAccess::Mount, root.path());
        g.shares.push("nohost".into());
        assert!(matches!(
            Files::new(&g),
            Err(VolumeError::InvalidShare { .. })
        ));
    }
}
