//! A simulated `files` host (and the state [`super::qemu_img`] works on) for native unit
//! tests of volume drivers.
//!
//! Off wasm, [`crate::volume::files`] calls land here. The mock keeps shares with their files
//! per thread: apparent size, allocated bytes, and for images their format, virtual size and
//! backing file. It refuses what the agent's host refuses — a share that was not added is
//! `denied` (as an ungranted one), a name with `/` or `..` is `denied`, overwriting with
//! `create-sparse` is `exists`, info files must be `*.info` — and records every call.
//!
//! ```
//! use hyperlet_plugin_sdk::testing::files as mock;
//! use hyperlet_plugin_sdk::volume::files;
//!
//! mock::reset();
//! mock::add_share("127.0.0.1:/srv/nfs/a", 100);
//! files::create_sparse("127.0.0.1:/srv/nfs/a", "volume-1", 1 << 30).unwrap();
//! let stat = files::stat("127.0.0.1:/srv/nfs/a", "volume-1").unwrap().unwrap();
//! assert_eq!((stat.size_bytes, stat.allocated_bytes), (1 << 30, 0));
//! assert_eq!(files::stat("127.0.0.1:/etc", "x").unwrap_err().code, "denied");
//! assert_eq!(mock::take_calls(), [
//!     "create-sparse 127.0.0.1:/srv/nfs/a volume-1 1073741824",
//!     "stat 127.0.0.1:/srv/nfs/a volume-1",
//!     "stat 127.0.0.1:/etc x",
//! ]);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::volume::{DiskFormat, FileStat, ShareStats};
use crate::PluginError;

const GIB: u64 = 1 << 30;

/// One file of a simulated share.
#[derive(Clone, Debug, PartialEq)]
pub struct MockFile {
    /// Apparent size, bytes.
    pub size: u64,
    /// Allocated bytes.
    pub allocated: u64,
    /// The image format, when `qemu-img` made it (a sparse file reads as raw).
    pub format: Option<DiskFormat>,
    /// Virtual size of an image, bytes.
    pub virtual_size: u64,
    /// The backing file (name in the same share, format).
    pub backing: Option<(String, DiskFormat)>,
    /// Contents of an info file.
    pub contents: Option<String>,
}

#[derive(Default)]
pub(crate) struct Share {
    pub(crate) total: u64,
    pub(crate) files: BTreeMap<String, MockFile>,
}

#[derive(Default)]
struct State {
    shares: BTreeMap<String, Share>,
    calls: Vec<String>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Forgets every share and call of this thread (shared with [`super::qemu_img`]).
pub fn reset() {
    STATE.with(|s| *s.borrow_mut() = State::default());
}

/// Adds a (granted) share of `total_gb`.
pub fn add_share(share: &str, total_gb: u64) {
    STATE.with(|s| {
        s.borrow_mut().shares.insert(
            share.to_owned(),
            Share {
                total: total_gb * GIB,
                files: BTreeMap::new(),
            },
        );
    });
}

/// Puts a file into a share as if someone else wrote it.
pub fn put_file(share: &str, name: &str, file: MockFile) {
    STATE.with(|s| {
        s.borrow_mut()
            .shares
            .get_mut(share)
            .expect("add the share first")
            .files
            .insert(name.to_owned(), file);
    });
}

/// A file of a share.
pub fn file(share: &str, name: &str) -> Option<MockFile> {
    STATE.with(|s| s.borrow().shares.get(share)?.files.get(name).cloned())
}

/// The names of a share's files, sorted.
pub fn file_names(share: &str) -> Vec<String> {
    STATE.with(|s| {
        s.borrow()
            .shares
            .get(share)
            .map(|sh| sh.files.keys().cloned().collect())
            .unwrap_or_default()
    })
}

/// The calls made so far to `files` and `qemu-img` (`"create-sparse share name bytes"`,
/// `"qemu-img create share name qcow2 1 backing raw"`, …), oldest first, forgetting them.
pub fn take_calls() -> Vec<String> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().calls))
}

pub(crate) fn error(code: &str, message: String) -> PluginError {
    PluginError::new(code, message)
}

pub(crate) fn check_name(name: &str) -> Result<(), PluginError> {
    if name.contains('/') || name.contains("..") {
        return Err(error(
            "denied",
            format!("Invalid file name {name:?}: it would leave its share"),
        ));
    }
    if name.is_empty() || name.starts_with('.') || name.starts_with('-') {
        return Err(error("invalid", format!("Invalid file name {name:?}")));
    }
    Ok(())
}

/// Records the call, then runs `f` on the (granted) share.
pub(crate) fn call<T>(
    words: &[&str],
    share: &str,
    f: impl FnOnce(&mut Share) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.calls.push(words.join(" "));
        let sh = s.shares.get_mut(share).ok_or_else(|| {
            error(
                "denied",
                format!("Share {share} is not granted to this driver"),
            )
        })?;
        f(sh)
    })
}

impl Share {
    pub(crate) fn allocated(&self) -> u64 {
        self.files.values().map(|f| f.allocated).sum()
    }
}

/// The mock of `create-sparse`.
///
/// # Errors
///
/// `denied`, `invalid`, `exists`.
pub fn create_sparse(share: &str, name: &str, size_bytes: u64) -> Result<(), PluginError> {
    let size = size_bytes.to_string();
    call(&["create-sparse", share, name, &size], share, |sh| {
        check_name(name)?;
        if sh.files.contains_key(name) {
            return Err(error(
                "exists",
                format!("File {name} already exists on share {share}"),
            ));
        }
        sh.files.insert(
            name.to_owned(),
            MockFile {
                size: size_bytes,
                allocated: 0,
                format: None,
                virtual_size: size_bytes,
                backing: None,
                contents: None,
            },
        );
        Ok(())
    })
}

/// The mock of `remove`.
///
/// # Errors
///
/// `denied`, `invalid`.
pub fn remove(share: &str, name: &str) -> Result<(), PluginError> {
    call(&["remove", share, name], share, |sh| {
        check_name(name)?;
        sh.files.remove(name);
        Ok(())
    })
}

/// The mock of `stat`.
///
/// # Errors
///
/// `denied`, `invalid`.
pub fn stat(share: &str, name: &str) -> Result<Option<FileStat>, PluginError> {
    call(&["stat", share, name], share, |sh| {
        check_name(name)?;
        Ok(sh.files.get(name).map(|f| FileStat {
            size_bytes: f.size,
            allocated_bytes: f.allocated,
        }))
    })
}

fn check_info(name: &str) -> Result<(), PluginError> {
    check_name(name)?;
    if !name.ends_with(".info") {
        return Err(error(
            "invalid",
            format!("Invalid info file name {name:?}: info files are named *.info"),
        ));
    }
    Ok(())
}

/// The mock of `write-info-file`.
///
/// # Errors
///
/// `denied`, `invalid` (not `*.info`, over 64 KiB).
pub fn write_info_file(share: &str, name: &str, contents: &str) -> Result<(), PluginError> {
    call(&["write-info-file", share, name], share, |sh| {
        check_info(name)?;
        if contents.len() > 64 * 1024 {
            return Err(error("invalid", format!("Info file {name} is too large")));
        }
        let len = contents.len() as u64;
        sh.files.insert(
            name.to_owned(),
            MockFile {
                size: len,
                allocated: len,
                format: None,
                virtual_size: len,
                backing: None,
                contents: Some(contents.to_owned()),
            },
        );
        Ok(())
    })
}

/// The mock of `read-info-file`.
///
/// # Errors
///
/// `denied`, `invalid`.
pub fn read_info_file(share: &str, name: &str) -> Result<Option<String>, PluginError> {
    call(&["read-info-file", share, name], share, |sh| {
        check_info(name)?;
        Ok(sh.files.get(name).and_then(|f| f.contents.clone()))
    })
}

/// The mock of `share-info`: available = total − allocated; allocated reports the apparent
/// sizes added up, as the host does.
///
/// # Errors
///
/// `denied`.
pub fn share_info(share: &str) -> Result<ShareStats, PluginError> {
    call(&["share-info", share], share, |sh| {
        Ok(ShareStats {
            total_bytes: sh.total,
            available_bytes: sh.total.saturating_sub(sh.allocated()),
            allocated_bytes: sh.files.values().map(|f| f.size).sum(),
        })
    })
}
