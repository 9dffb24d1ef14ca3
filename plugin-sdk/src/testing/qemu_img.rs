//! A simulated `qemu-img` host for native unit tests of volume drivers, working on the shares
//! of [`super::files`] (reset and inspect them there).
//!
//! Images keep a format, a virtual size and a backing file; a qcow2 image starts with 192 KiB
//! allocated, a converted image allocates its virtual size. The host's refusals are mirrored:
//! ungranted shares and escaping names are `denied`, an existing target is `exists`, a missing
//! image or backing file is `not-found`, a raw overlay or a shrink is `invalid`.
//!
//! ```
//! use hyperlet_plugin_sdk::testing::files as mock;
//! use hyperlet_plugin_sdk::volume::{qemu_img, BackingFile, DiskFormat};
//!
//! mock::reset();
//! let share = "127.0.0.1:/srv/nfs/a";
//! mock::add_share(share, 100);
//! qemu_img::create(share, "volume-1", DiskFormat::Raw, 2, None).unwrap();
//! let backing = BackingFile { name: "volume-1".into(), format: DiskFormat::Raw };
//! qemu_img::create(share, "volume-1.s1", DiskFormat::Qcow2, 2, Some(&backing)).unwrap();
//! let info = qemu_img::info(share, "volume-1.s1", Some(DiskFormat::Qcow2)).unwrap();
//! assert_eq!(info.backing_file.as_deref(), Some("volume-1"));
//! assert_eq!(qemu_img::resize(share, "volume-1.s1", DiskFormat::Qcow2, 1).unwrap_err().code, "invalid");
//! ```

use super::files::{call, check_name, error, MockFile};
use crate::volume::{BackingFile, DiskFormat, ImageInfo};
use crate::PluginError;

const GIB: u64 = 1 << 30;
const QCOW2_HEADER: u64 = 192 * 1024;

fn fmt(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

fn not_found(share: &str, name: &str) -> PluginError {
    error(
        "not-found",
        format!("File {name} does not exist on share {share}"),
    )
}

/// The mock of `create`.
///
/// # Errors
///
/// `denied`, `invalid`, `exists`, `not-found` (backing).
pub fn create(
    share: &str,
    name: &str,
    format: DiskFormat,
    size_gb: u64,
    backing: Option<&BackingFile>,
) -> Result<(), PluginError> {
    let size = size_gb.to_string();
    let mut words = vec!["qemu-img create", share, name, fmt(format), &size];
    if let Some(b) = backing {
        words.extend([b.name.as_str(), fmt(b.format)]);
    }
    call(&words, share, |sh| {
        check_name(name)?;
        if size_gb == 0 {
            return Err(error("invalid", "Invalid size 0 GiB".into()));
        }
        if let Some(b) = backing {
            check_name(&b.name)?;
            if format != DiskFormat::Qcow2 {
                return Err(error("invalid", "An overlay must be qcow2".into()));
            }
            if !sh.files.contains_key(&b.name) {
                return Err(not_found(share, &b.name));
            }
        }
        if sh.files.contains_key(name) {
            return Err(error(
                "exists",
                format!("File {name} already exists on share {share}"),
            ));
        }
        let virtual_size = size_gb * GIB;
        let (size, allocated) = match format {
            DiskFormat::Raw => (virtual_size, 0),
            DiskFormat::Qcow2 => (QCOW2_HEADER, QCOW2_HEADER),
        };
        sh.files.insert(
            name.to_owned(),
            MockFile {
                size,
                allocated,
                format: Some(format),
                virtual_size,
                backing: backing.map(|b| (b.name.clone(), b.format)),
                contents: None,
            },
        );
        Ok(())
    })
}

/// The mock of `convert`: the target gets the source's virtual size, no backing file, and
/// allocates its virtual size.
///
/// # Errors
///
/// `denied`, `invalid`, `exists`, `not-found`.
pub fn convert(
    share: &str,
    source: &str,
    source_format: DiskFormat,
    target: &str,
    format: DiskFormat,
) -> Result<(), PluginError> {
    let words = [
        "qemu-img convert",
        share,
        source,
        fmt(source_format),
        target,
        fmt(format),
    ];
    call(&words, share, |sh| {
        check_name(source)?;
        check_name(target)?;
        let src = sh
            .files
            .get(source)
            .cloned()
            .ok_or_else(|| not_found(share, source))?;
        if sh.files.contains_key(target) {
            return Err(error(
                "exists",
                format!("File {target} already exists on share {share}"),
            ));
        }
        let size = match format {
            DiskFormat::Raw => src.virtual_size,
            DiskFormat::Qcow2 => QCOW2_HEADER + src.virtual_size,
        };
        sh.files.insert(
            target.to_owned(),
            MockFile {
                size,
                allocated: size,
                format: Some(format),
                virtual_size: src.virtual_size,
                backing: None,
                contents: None,
            },
        );
        Ok(())
    })
}

/// The mock of `info`: the format asked for, or the image's own when `None`.
///
/// # Errors
///
/// `denied`, `invalid`, `not-found`.
pub fn info(share: &str, name: &str, format: Option<DiskFormat>) -> Result<ImageInfo, PluginError> {
    call(&["qemu-img info", share, name], share, |sh| {
        check_name(name)?;
        let f = sh.files.get(name).ok_or_else(|| not_found(share, name))?;
        let own = f.format.unwrap_or(DiskFormat::Raw);
        Ok(ImageInfo {
            format: fmt(format.unwrap_or(own)).to_owned(),
            virtual_size_bytes: f.virtual_size,
            actual_size_bytes: f.allocated,
            backing_file: f.backing.as_ref().map(|(n, _)| n.clone()),
            backing_format: f.backing.as_ref().map(|(_, bf)| fmt(*bf).to_owned()),
        })
    })
}

/// The mock of `resize`.
///
/// # Errors
///
/// `denied`, `invalid` (shrink), `not-found`.
pub fn resize(
    share: &str,
    name: &str,
    format: DiskFormat,
    new_size_gb: u64,
) -> Result<(), PluginError> {
    let size = new_size_gb.to_string();
    call(
        &["qemu-img resize", share, name, fmt(format), &size],
        share,
        |sh| {
            check_name(name)?;
            let f = sh
                .files
                .get_mut(name)
                .ok_or_else(|| not_found(share, name))?;
            let bytes = new_size_gb * GIB;
            if bytes < f.virtual_size {
                return Err(error(
                    "invalid",
                    format!("Refusing to shrink image {name} to {new_size_gb} GiB"),
                ));
            }
            f.virtual_size = bytes;
            if f.format != Some(DiskFormat::Qcow2) {
                f.size = bytes;
            }
            Ok(())
        },
    )
}

/// The mock of `commit`: the backing file takes the overlay's allocation.
///
/// # Errors
///
/// `denied`, `invalid` (no backing file), `not-found`.
pub fn commit(share: &str, name: &str) -> Result<(), PluginError> {
    call(&["qemu-img commit", share, name], share, |sh| {
        check_name(name)?;
        let f = sh
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(share, name))?;
        let (backing, _) = f
            .backing
            .clone()
            .ok_or_else(|| error("invalid", format!("{name} has no backing file")))?;
        let b = sh
            .files
            .get_mut(&backing)
            .ok_or_else(|| not_found(share, &backing))?;
        b.allocated =
            (b.allocated + f.allocated.saturating_sub(QCOW2_HEADER)).min(b.size.max(b.allocated));
        b.virtual_size = b.virtual_size.max(f.virtual_size);
        Ok(())
    })
}

/// The mock of `rebase`.
///
/// # Errors
///
/// `denied`, `invalid`, `not-found`.
pub fn rebase(share: &str, name: &str, backing: &BackingFile) -> Result<(), PluginError> {
    call(
        &[
            "qemu-img rebase",
            share,
            name,
            &backing.name,
            fmt(backing.format),
        ],
        share,
        |sh| {
            check_name(name)?;
            check_name(&backing.name)?;
            if !sh.files.contains_key(&backing.name) {
                return Err(not_found(share, &backing.name));
            }
            let f = sh
                .files
                .get_mut(name)
                .ok_or_else(|| not_found(share, name))?;
            if f.format != Some(DiskFormat::Qcow2) {
                return Err(error("invalid", format!("{name} is not a qcow2 overlay")));
            }
            f.backing = Some((backing.name.clone(), backing.format));
            Ok(())
        },
    )
}
