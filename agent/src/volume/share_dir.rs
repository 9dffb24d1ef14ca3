//! Files in the top directory of a mounted share, reached without following any symbolic link.
//!
//! Anyone who can write the export (another node, a tenant's compromised host) can plant a
//! symbolic link or a hard link under a volume's name; the agent runs as root, so following
//! it would let them make the agent read, chmod or write any host file. Every call here
//! therefore works relative to the share directory's descriptor with a single-component name
//! ([`super::check_file_name`] guarantees it), opened `O_NOFOLLOW` — with one component, that
//! is what `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would give — and acts on the
//! descriptor it opened (`fstat`, `fchmod`, `fchown`), never on the path again. A file is
//! used only when that descriptor is a regular file with one link ([`plain_file`]).
//!
//! These are blocking calls: [`super::files`] runs them on [`super::workers`].

use super::VolumeError;
use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file is not one the host may use, or `None` when it is a regular file with one link.
pub fn plain_file(is_symlink: bool, is_dir: bool, is_regular: bool, links: u64) -> Option<String> {
    if is_symlink {
        Some("a symbolic link".into())
    } else if is_dir {
        Some("a directory".into())
    } else if !is_regular {
        Some("not a regular file".into())
    } else if links != 1 {
        Some(format!("hard-linked ({links} names)"))
    } else {
        None
    }
}

/// Why `meta` is not a regular file with one link, or `None` when it is.
pub fn describe(meta: &Metadata) -> Option<String> {
    let t = meta.file_type();
    let special = t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket();
    plain_file(
        t.is_symlink(),
        t.is_dir(),
        t.is_file() && !special,
        meta.nlink(),
    )
}

/// Who owns the files the host creates, and their permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// How [`ShareDir::open_for_tool`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolOpen {
    /// An existing regular file, read-only.
    Read,
    /// An existing regular file, read-write.
    ReadWrite,
    /// A new empty file (an existing name is refused), read-write, owned as given.
    Create(Ownership),
}

/// The open top directory of one mounted share.
pub struct ShareDir {
    dir: File,
    path: PathBuf,
    share: String,
}

impl ShareDir {
    /// Opens the share's directory (its mount point, which the agent made).
    ///
    /// # Errors
    /// [`VolumeError::Io`].
    pub fn open(path: &Path, share: &str) -> Result<Self, VolumeError> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| VolumeError::Io {
                op: "open the share directory",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            dir,
            path: path.to_path_buf(),
            share: share.to_owned(),
        })
    }

    fn io(&self, op: &'static str, name: &str) -> impl FnOnce(std::io::Error) -> VolumeError {
        let path = self.path.join(name);
        move |source| VolumeError::Io { op, path, source }
    }

    fn refuse(&self, name: &str, what: String) -> VolumeError {
        VolumeError::NotPlainFile {
            share: self.share.clone(),
            name: name.to_owned(),
            what,
        }
    }

    /// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode)`.
    fn openat(&self, name: &str, flags: libc::c_int, mode: u32) -> std::io::Result<File> {
        let c_name = CString::new(name).map_err(|_| ErrorKind::InvalidInput)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
        // SAFETY: openat(2) with a valid directory descriptor and a NUL-terminated name; the
        // returned descriptor is owned by nobody else.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c_name.as_ptr(),
                flags,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The metadata of `name` itself (a link is not followed), or `None` when it is missing.
    fn lstat(&self, name: &str) -> Result<Option<Metadata>, VolumeError> {
        match self.openat(name, libc::O_PATH, 0) {
            Ok(f) => f.metadata().map(Some).map_err(self.io("stat", name)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", name)(e)),
        }
    }

    /// Opens `name` (`flags`: `O_RDONLY` or `O_WRONLY`) when it is a regular file with one
    /// link; `None` when it is missing.
    fn open_plain(&self, name: &str, flags: libc::c_int) -> Result<Option<File>, VolumeError> {
        // O_NONBLOCK: a FIFO planted under the name must not block the open.
        let file = match self.openat(name, flags | libc::O_NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            // O_NOFOLLOW on a symbolic link.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(self.refuse(name, "a symbolic link".into()))
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(self.refuse(name, "a directory".into()))
            }
            Err(e) => return Err(self.io("open", name)(e)),
        };
        let meta = file.metadata().map_err(self.io("stat", name))?;
        if let Some(what) = describe(&meta) {
            return Err(self.refuse(name, what));
        }
        Ok(Some(file))
    }

    /// The metadata of `name` when it is a regular file with one link, `None` when missing.
    ///
    /// # Errors
    /// [`VolumeError::NotPlainFile`] for anything else; [`VolumeError::Io`].
    pub fn stat(&self, name: &str) -> Result<Option<Metadata>, VolumeError> {
        let Some(meta) = self.lstat(name)? else {
            return Ok(None);
        };
        match describe(&meta) {
            Some(what) => Err(self.refuse(name, what)),
            None => Ok(Some(meta)),
        }
    }

    /// Creates `name` (refusing an existing one) of apparent size `size`, owned as `own`.
    ///
    /// # Errors
    /// [`VolumeError::Io`] (`AlreadyExists` when it exists); nothing is left on failure.
    pub fn create_sparse(&self, name: &str, size: u64, own: Ownership) -> Result<(), VolumeError> {
        let file = self
            .openat(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(self.io("create", name))?;
        let made = file.set_len(size).and_then(|()| own_fd(&file, own));
        if let Err(e) = made {
            let _ = self.unlink(name);
            return Err(self.io("create", name)(e));
        }
        Ok(())
    }

    /// Opens `name` for a tool that is handed the descriptor (`/proc/self/fd/N`) rather than
    /// the path, so what it reads or writes is the file checked here whatever the path
    /// becomes meanwhile. `None` when an existing file is asked for and missing.
    ///
    /// # Errors
    /// [`VolumeError::NotPlainFile`]; [`VolumeError::Io`] (`AlreadyExists` for
    /// [`ToolOpen::Create`] on an existing name).
    pub fn open_for_tool(&self, name: &str, how: ToolOpen) -> Result<Option<OwnedFd>, VolumeError> {
        let file = match how {
            ToolOpen::Read => self.open_plain(name, libc::O_RDONLY)?,
            ToolOpen::ReadWrite => self.open_plain(name, libc::O_RDWR)?,
            ToolOpen::Create(own) => {
                let file = self
                    .openat(name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
                    .map_err(self.io("create", name))?;
                if let Err(e) = own_fd(&file, own) {
                    let _ = self.unlink(name);
                    return Err(self.io("create", name)(e));
                }
                Some(file)
            }
        };
        Ok(file.map(OwnedFd::from))
    }

    /// Gives the regular file `name` the ownership and mode `own`.
    ///
    /// # Errors
    /// [`VolumeError::NotPlainFile`]; [`VolumeError::Io`] (`NotFound` when it is missing).
    pub fn apply(&self, name: &str, own: Ownership) -> Result<(), VolumeError> {
        let file = self
            .open_plain(name, libc::O_RDONLY)?
            .ok_or_else(|| self.io("chmod", name)(ErrorKind::NotFound.into()))?;
        own_fd(&file, own).map_err(self.io("chmod", name))
    }

    /// Removes `name` (a link is removed, never what it points at); a missing one is fine.
    ///
    /// # Errors
    /// [`VolumeError::Io`].
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        match self.unlink(name) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other.map_err(self.io("remove", name)),
        }
    }

    fn unlink(&self, name: &str) -> std::io::Result<()> {
        let c_name = CString::new(name).map_err(|_| ErrorKind::InvalidInput)?;
        // SAFETY: unlinkat(2) with a valid directory descriptor and a NUL-terminated name.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), c_name.as_ptr(), 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the regular file `name`, at most `limit` bytes; `None` when it is missing.
    ///
    /// # Errors
    /// [`VolumeError::NotPlainFile`]; [`VolumeError::Io`] (`InvalidData` beyond `limit`).
    pub fn read(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>, VolumeError> {
        let Some(file) = self.open_plain(name, libc::O_RDONLY)? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        file.take(limit as u64 + 1)
            .read_to_end(&mut data)
            .map_err(self.io("read", name))?;
        if data.len() > limit {
            return Err(self.io("read", name)(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            )));
        }
        Ok(Some(data))
    }

    /// Replaces `name` with `data` atomically (a temporary file, synced, renamed over it),
    /// owned as `own`. An existing `name` must be a regular file with one link.
    ///
    /// # Errors
    /// [`VolumeError::NotPlainFile`]; [`VolumeError::Io`]; the temporary file is removed on
    /// failure.
    pub fn write_atomic(&self, name: &str, data: &[u8], own: Ownership) -> Result<(), VolumeError> {
        self.stat(name)?;
        let tmp = format!(".{name}.tmp-{:08x}", rand::random::<u32>());
        let written = (|| {
            let mut file =
                self.openat(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
            own_fd(&file, own)?;
            file.write_all(data)?;
            file.sync_all()?;
            self.rename(&tmp, name)
        })();
        if written.is_err() {
            let _ = self.unlink(&tmp);
        }
        written.map_err(self.io("write", name))
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let from = CString::new(from).map_err(|_| ErrorKind::InvalidInput)?;
        let to = CString::new(to).map_err(|_| ErrorKind::InvalidInput)?;
        let dir = self.dir.as_raw_fd();
        // SAFETY: renameat(2) within one valid directory descriptor, NUL-terminated names.
        if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The file system's (total, available) bytes and the apparent sizes of the regular files
    /// of the directory added up (links are not followed).
    ///
    /// # Errors
    /// [`VolumeError::Io`].
    pub fn usage(&self) -> Result<(u64, u64, u64), VolumeError> {
        let io = |source| VolumeError::Io {
            op: "measure",
            path: self.path.clone(),
            source,
        };
        let fs = nix::sys::statvfs::fstatvfs(&self.dir).map_err(|e| io(e.into()))?;
        let frag = fs.fragment_size();
        let mut allocated = 0u64;
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            // DirEntry::metadata does not follow links.
            let meta = entry.and_then(|e| e.metadata()).map_err(io)?;
            if meta.is_file() {
                allocated = allocated.saturating_add(meta.len());
            }
        }
        Ok((
            fs.blocks().saturating_mul(frag),
            fs.blocks_available().saturating_mul(frag),
            allocated,
        ))
    }
}

/// `fchown` and `fchmod` on an open file.
fn own_fd(file: &File, own: Ownership) -> std::io::Result<()> {
    std::os::unix::fs::fchown(file, Some(own.uid), Some(own.gid))?;
    file.set_permissions(PermissionsExt::from_mode(own.mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_special_files_are_refused_and_their_targets_untouched() {
        let share = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret");
        std::fs::write(&target, "secret").unwrap();
        std::fs::set_permissions(&target, PermissionsExt::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, share.path().join("volume-link")).unwrap();
        std::fs::hard_link(&target, share.path().join("volume-hard")).unwrap();
        std::fs::create_dir(share.path().join("volume-dir")).unwrap();
        nix::unistd::mkfifo(
            &share.path().join("volume-fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let dir = ShareDir::open(share.path(), "h:/x").unwrap();
        let own = Ownership {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mode: 0o660,
        };
        for (name, what) in [
            ("volume-link", "a symbolic link"),
            ("volume-hard", "hard-linked (2 names)"),
            ("volume-dir", "a directory"),
            ("volume-fifo", "not a regular file"),
        ] {
            let info = format!("{name}.info");
            let _ = std::fs::rename(share.path().join(name), share.path().join(&info));
            for e in [
                dir.stat(&info).unwrap_err(),
                dir.apply(&info, own).unwrap_err(),
                dir.read(&info, 100).unwrap_err(),
                dir.write_atomic(&info, b"{}", own).unwrap_err(),
            ] {
                assert_eq!(e.code(), "denied", "{name}: {e}");
                assert!(e.to_string().contains(what), "{name}: {e}");
            }
            let e = dir.create_sparse(&info, 1, own).unwrap_err();
            assert_eq!(e.code(), "exists", "{name}: {e}");
        }
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Removing a link removes the link only.
        dir.remove("volume-link.info").unwrap();
        dir.remove("volume-hard.info").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
        // Plain files work.
        dir.create_sparse("volume-1", 1 << 20, own).unwrap();
        assert_eq!(dir.stat("volume-1").unwrap().unwrap().len(), 1 << 20);
        dir.write_atomic("volume-1.info", b"{}", own).unwrap();
        assert_eq!(dir.read("volume-1.info", 10).unwrap().unwrap(), b"{}");
        assert!(dir.read("volume-1.info", 1).is_err());
        assert!(dir.stat("missing").unwrap().is_none());
    }
}
