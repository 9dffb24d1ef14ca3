//! The host side of the `files` interface of `hyperlet:volume`: files in the top directory of
//! the NFS shares a driver is granted.
//!
//! Every call names a share, which must be one of the grant's (compared after
//! normalisation), and a file name, which must be a single path component
//! ([`check_file_name`]); only then is the share reached:
//!
//! * `access = "mount"` — the share is mounted by the kernel under `mount_root` (mounted on
//!   first use when nothing is mounted there yet) and the files are local files, reached
//!   relative to the share directory without following links ([`super::share_dir`]), on a
//!   few threads of their own with a deadline ([`super::workers`]): a hung hard mount costs
//!   those threads, never tokio's shared blocking pool.
//! * `access = "libnfs"` — no mount: the agent's own NFSv3 client ([`super::nfs`]).
//!
//! Whatever another client of the export planted, the host only uses regular files with a
//! single link: a symbolic link, a hard link, a directory or a device under a volume's name is
//! refused ([`VolumeError::NotPlainFile`], `denied`), and what it points at is never touched.
//!
//! Files are created owned by the user and group QEMU runs as ([`super::owner`]) with the
//! grant's `file_mode` (never world-writable), so QEMU opens them without further ado; info
//! files are written atomically (temporary file + rename) and must be named `*.info`.

use super::mount::{ensure_mounted, mount_point};
use super::nfs::{NfsClient, NfsError};
use super::share_dir::{Ownership, ShareDir, ToolOpen};
use super::{check_file_name, workers, Share, VolumeError};
use crate::config::{FilesGrant, ShareAccess};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
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

/// A file of a share as a tool is given it: in mount mode a descriptor the agent opened and
/// checked, passed as `/proc/self/fd/N` (the tool inherits it); with libnfs an `nfs://` URL.
#[derive(Debug)]
pub struct ToolFile {
    fd: Option<OwnedFd>,
    url: Option<String>,
}

impl ToolFile {
    /// The argument the tool takes.
    pub fn arg(&self) -> String {
        match (&self.fd, &self.url) {
            (Some(fd), _) => format!("/proc/self/fd/{}", fd.as_raw_fd()),
            (None, Some(url)) => url.clone(),
            (None, None) => String::new(),
        }
    }

    /// The descriptor the tool must inherit, if any.
    pub fn inherited(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
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
    owner: (u32, u32),
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
            owner: super::owner::file_owner(grant)?,
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
        NfsClient::new(share.host(), share.export(), self.deadline).with_owner(self.owner)
    }

    fn nfs_error(share: &Share, op: String) -> impl FnOnce(super::nfs::NfsError) -> VolumeError {
        let share = share.to_string();
        move |source| match source {
            NfsError::NotPlainFile { name, what } => {
                VolumeError::NotPlainFile { share, name, what }
            }
            source => VolumeError::Nfs { share, op, source },
        }
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

    /// Opens `name` for a tool (see [`ToolFile`]). [`ToolOpen::Create`] makes the file in
    /// mount mode (with libnfs the tool creates it); its ownership is the grant's.
    ///
    /// # Errors
    /// [`VolumeError::FileNotFound`] for a missing existing file; [`VolumeError::FileExists`]
    /// for a name taken when creating; as [`Files::stat`].
    pub async fn open_for_tool(
        &self,
        share: &str,
        name: &str,
        write: bool,
        create: bool,
    ) -> Result<ToolFile, VolumeError> {
        let checked = self.check(share, name)?;
        if self.access == ShareAccess::Libnfs {
            return Ok(ToolFile {
                fd: None,
                url: Some(checked.url(name)),
            });
        }
        let how = match (create, write) {
            (true, _) => ToolOpen::Create(self.ownership()),
            (false, true) => ToolOpen::ReadWrite,
            (false, false) => ToolOpen::Read,
        };
        let file = name.to_owned();
        let opened = self
            .on_dir(checked, "open", name, move |d| d.open_for_tool(&file, how))
            .await;
        let fd = match opened {
            Ok(Some(fd)) => fd,
            Ok(None) => {
                return Err(VolumeError::FileNotFound {
                    share: share.to_owned(),
                    name: name.to_owned(),
                })
            }
            Err(VolumeError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                return Err(VolumeError::FileExists {
                    share: share.to_owned(),
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        Ok(ToolFile {
            fd: Some(fd),
            url: None,
        })
    }

    /// Who owns created files and their permissions.
    fn ownership(&self) -> Ownership {
        Ownership {
            uid: self.owner.0,
            gid: self.owner.1,
            mode: self.mode,
        }
    }

    /// Runs `work` on the opened directory of a mounted share, on the share workers, within
    /// the deadline.
    async fn on_dir<T: Send + 'static>(
        &self,
        share: &Share,
        op: &'static str,
        name: &str,
        work: impl FnOnce(&ShareDir) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, VolumeError> {
        let point = self.dir(share).await?;
        let shown = point.join(name);
        let share = share.to_string();
        workers::run(op, shown, self.deadline, move || {
            work(&ShareDir::open(&point, &share)?)
        })
        .await
    }

    /// Creates a sparse file of `size_bytes`; refuses to overwrite an existing one. It is
    /// owned by the QEMU user with the grant's mode.
    ///
    /// # Errors
    /// [`VolumeError::ShareNotGranted`], [`VolumeError::Escape`] or
    /// [`VolumeError::InvalidName`] before anything runs; [`VolumeError::FileExists`] (a link
    /// of that name included); I/O and NFS errors.
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
        let made = match self.access {
            ShareAccess::Mount => {
                let (own, file) = (self.ownership(), name.to_owned());
                self.on_dir(share, "create", name, move |d| {
                    d.create_sparse(&file, size_bytes, own)
                })
                .await
            }
            ShareAccess::Libnfs => {
                match self.client(share).create(name, size_bytes, self.mode).await {
                    Err(e) if e.code() == "exists" => Err(exists()),
                    other => other.map_err(Self::nfs_error(share, format!("create {name}"))),
                }
            }
        };
        match made {
            Err(VolumeError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                Err(exists())
            }
            other => other,
        }
    }

    /// Removes a file; a missing one is not an error. A link is removed, never what it points
    /// at.
    ///
    /// # Errors
    /// As [`Files::create_sparse`].
    pub async fn remove(&self, share: &str, name: &str) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let file = name.to_owned();
                self.on_dir(share, "remove", name, move |d| d.remove(&file))
                    .await
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
    /// As [`Files::create_sparse`]; [`VolumeError::NotPlainFile`] for anything but a regular
    /// file with one link (a symbolic link, a hard link, a directory).
    pub async fn stat(&self, share: &str, name: &str) -> Result<Option<FileStat>, VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let file = name.to_owned();
                let meta = self
                    .on_dir(share, "stat", name, move |d| d.stat(&file))
                    .await?;
                Ok(meta.map(|meta| FileStat {
                    size_bytes: meta.len(),
                    allocated_bytes: meta.blocks() * 512,
                }))
            }
            ShareAccess::Libnfs => {
                let attr = self
                    .client(share)
                    .stat(name)
                    .await
                    .map_err(Self::nfs_error(share, format!("stat {name}")))?;
                if let Some(a) = attr {
                    if let Some(what) = a.not_plain() {
                        return Err(VolumeError::NotPlainFile {
                            share: share.to_string(),
                            name: name.to_owned(),
                            what,
                        });
                    }
                }
                Ok(attr.map(|a| FileStat {
                    size_bytes: a.size,
                    allocated_bytes: a.used,
                }))
            }
        }
    }

    /// Gives a file the grant's owner and permissions (after a tool created it with its own).
    ///
    /// # Errors
    /// As [`Files::stat`].
    pub async fn apply_mode(&self, share: &str, name: &str) -> Result<(), VolumeError> {
        let share = self.check(share, name)?;
        match self.access {
            ShareAccess::Mount => {
                let (own, file) = (self.ownership(), name.to_owned());
                self.on_dir(share, "chmod", name, move |d| d.apply(&file, own))
                    .await
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
    /// As [`Files::stat`]; [`VolumeError::InvalidName`] for another name,
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
                let (own, file) = (self.ownership(), name.to_owned());
                let data = contents.as_bytes().to_vec();
                self.on_dir(share, "write", name, move |d| {
                    d.write_atomic(&file, &data, own)
                })
                .await
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
                let file = name.to_owned();
                self.on_dir(share, "read", name, move |d| d.read(&file, MAX_INFO_BYTES))
                    .await?
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
                let (total, available, allocated) =
                    self.on_dir(share, "measure", "", |d| d.usage()).await?;
                Ok(ShareStats {
                    total_bytes: total,
                    available_bytes: available,
                    allocated_bytes: allocated,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn grant(access: ShareAccess, mount_root: &Path) -> FilesGrant {
        FilesGrant {
            shares: vec!["127.0.0.1:/srv/nfs/a".into()],
            access,
            mount_root: mount_root.to_path_buf(),
            mount_options: None,
            file_mode: "0660".into(),
            file_owner: None,
            file_group: None,
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
