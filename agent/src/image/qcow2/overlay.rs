//! Native creation of copy-on-write overlays.
//!
//! An empty overlay is four clusters of metadata, all known in advance, so writing it directly
//! avoids forking `qemu-img create` (tens of milliseconds) on every instance boot. The file is
//! laid out exactly as `qemu-img create -f qcow2 -b <base> -F <fmt>` lays it out:
//!
//! ```text
//! 0x00000  v3 header (112 bytes), backing format extension, end marker, backing file name
//! 0x10000  refcount table: one entry -> 0x20000
//! 0x20000  refcount block: 16-bit count 1 for each metadata cluster
//! 0x30000  L1 table: l1_size zero entries (every cluster reads through to the backing file)
//! ```
//!
//! The L1 table is left as a hole (zeros) by extending the file, and the file ends where the
//! L1 table ends, like QEMU's own. The backing file name is always stored absolute, so it can
//! never be read as a `json:` pseudo-path or resolved against the overlay's directory.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{encode_v3, read_header, Qcow2Header};
use super::table::{max_overlay_size, OverlayLayout, REFCOUNT_ORDER};
use super::{Qcow2Error, MAX_BACKING_FILE_NAME};

/// Overlays use QEMU's default 64 KiB clusters.
const CLUSTER_BITS: u32 = 16;

/// Creates a new qcow2 v3 overlay at `path` over `backing`.
///
/// `backing_format` is `"qcow2"` or `"raw"` and is recorded in the backing format extension,
/// so QEMU never probes the backing file. The backing path is made absolute (not resolved
/// through symlinks). `virtual_size` must be a multiple of 512 and at least the backing
/// image's size (its qcow2 virtual size, or a raw file's length rounded up to 512); a larger
/// size grows the disk, the extra part reading as zeros. The file is created with
/// `O_CREAT|O_EXCL`, synced, and its directory synced; on failure it is removed.
///
/// # Errors
///
/// * [`Qcow2Error::UnsupportedBackingFormat`], [`Qcow2Error::ZeroVirtualSize`],
///   [`Qcow2Error::UnalignedVirtualSize`], [`Qcow2Error::VirtualSizeTooLarge`] (over 2 PiB),
///   [`Qcow2Error::BackingNameTooLong`], [`Qcow2Error::NotUtf8`] for bad arguments;
/// * [`Qcow2Error::BackingOpen`] / [`Qcow2Error::BackingHeader`] when the backing image cannot
///   be opened or is not valid qcow2, and [`Qcow2Error::SmallerThanBacking`];
/// * [`Qcow2Error::AlreadyExists`] when `path` exists, [`Qcow2Error::Write`] when writing fails.
pub fn create_overlay(
    path: &Path,
    backing: &Path,
    backing_format: &str,
    virtual_size: u64,
) -> Result<(), Qcow2Error> {
    if backing_format != "qcow2" && backing_format != "raw" {
        return Err(Qcow2Error::UnsupportedBackingFormat {
            format: backing_format.to_owned(),
        });
    }
    if virtual_size == 0 {
        return Err(Qcow2Error::ZeroVirtualSize);
    }
    if !virtual_size.is_multiple_of(512) {
        return Err(Qcow2Error::UnalignedVirtualSize { size: virtual_size });
    }
    let too_large = || Qcow2Error::VirtualSizeTooLarge {
        size: virtual_size,
        max: max_overlay_size(CLUSTER_BITS),
    };
    let layout = OverlayLayout::new(virtual_size, CLUSTER_BITS).ok_or_else(too_large)?;

    let backing = std::path::absolute(backing).map_err(|source| Qcow2Error::BackingOpen {
        path: backing.to_path_buf(),
        source,
    })?;
    let name = backing.to_str().ok_or(Qcow2Error::NotUtf8 {
        what: "backing file name",
    })?;
    if name.len() as u64 > u64::from(MAX_BACKING_FILE_NAME) {
        return Err(Qcow2Error::BackingNameTooLong {
            size: name.len() as u64,
        });
    }
    let backing_size = backing_size(&backing, backing_format)?;
    if virtual_size < backing_size {
        return Err(Qcow2Error::SmallerThanBacking {
            size: virtual_size,
            backing_size,
        });
    }

    let header = Qcow2Header {
        version: 3,
        cluster_bits: CLUSTER_BITS,
        virtual_size,
        backing_file: Some(name.to_owned()),
        backing_format: Some(backing_format.to_owned()),
        incompatible_features: 0,
        // lazy_refcounts off.
        compatible_features: 0,
        autoclear_features: 0,
        external_data_file: None,
        crypt_method: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: 0,
        compression_type: 0,
        l1_size: layout.l1_size,
        l1_table_offset: layout.l1_table_offset,
        refcount_table_offset: layout.refcount_table_offset,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        feature_names: Vec::new(),
        extensions: Vec::new(),
    };
    let head = encode_v3(&header)?;
    write_new(path, &head, &layout)
}

/// The backing image's virtual size.
fn backing_size(path: &Path, format: &str) -> Result<u64, Qcow2Error> {
    let open_err = |source| Qcow2Error::BackingOpen {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    if format == "qcow2" {
        match read_header(&mut file) {
            Ok(h) => Ok(h.virtual_size),
            Err(Qcow2Error::Read(source)) => Err(open_err(source)),
            Err(e) => Err(Qcow2Error::BackingHeader {
                path: path.to_path_buf(),
                source: Box::new(e),
            }),
        }
    } else {
        // Seeking measures block devices too, where metadata reports 0.
        let len = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        Ok(len.div_ceil(512) * 512)
    }
}

/// Writes the overlay with `O_EXCL`, syncs it and its directory; removes it on failure.
fn write_new(path: &Path, head: &[u8], layout: &OverlayLayout) -> Result<(), Qcow2Error> {
    let write_err = |source| Qcow2Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Qcow2Error::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                write_err(e)
            }
        })?;
    let written = (|| {
        file.write_all_at(head, 0)?;
        file.write_all_at(&layout.refcount_table(), layout.refcount_table_offset)?;
        file.write_all_at(&layout.refcount_block(), layout.refcount_block_offset)?;
        file.set_len(layout.file_len)?;
        file.sync_all()?;
        sync_parent(path)
    })();
    drop(file);
    if let Err(e) = written {
        // Best effort: the error being reported is the write failure.
        let _ = std::fs::remove_file(path);
        return Err(write_err(e));
    }
    Ok(())
}

/// Makes the new directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{qemu_img, qemu_img_status, qemu_io};
    use super::*;
    use std::path::PathBuf;

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `qemu-img check`: no errors, no leaks, no corruptions.
    fn assert_check_clean(img: &Path) {
        let (ok, text) = qemu_img_status(&["check", "-f", "qcow2", s(img)]);
        assert!(ok, "qemu-img check failed: {text}");
        assert!(text.contains("No errors were found"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&qemu_img(&[
            "check",
            "-f",
            "qcow2",
            "--output=json",
            s(img),
        ]))
        .unwrap();
        assert_eq!(json["check-errors"], 0, "{json}");
        for key in ["leaks", "corruptions", "leaks-fixed", "corruptions-fixed"] {
            assert!(json.get(key).is_none_or(|v| v == 0), "{key}: {json}");
        }
    }

    fn info(img: &Path) -> serde_json::Value {
        serde_json::from_str(&qemu_img(&["info", "-f", "qcow2", "--output=json", s(img)])).unwrap()
    }

    fn assert_info(img: &Path, size: u64, backing: &Path, format: &str) {
        let info = info(img);
        assert_eq!(info["format"], "qcow2", "{info}");
        assert_eq!(info["virtual-size"], size, "{info}");
        assert_eq!(info["backing-filename"], s(backing), "{info}");
        assert_eq!(info["full-backing-filename"], s(backing), "{info}");
        assert_eq!(info["backing-filename-format"], format, "{info}");
        assert_eq!(info["cluster-size"], 65536, "{info}");
        let data = &info["format-specific"]["data"];
        assert_eq!(data["compat"], "1.1", "{info}");
        assert_eq!(data["lazy-refcounts"], false, "{info}");
        assert_eq!(data["refcount-bits"], 16, "{info}");
        assert_eq!(data["corrupt"], false, "{info}");
    }

    fn io(format: &str, img: &Path, cmd: &str) -> String {
        qemu_io(&["-f", format, "-c", cmd, s(img)])
    }

    fn base(dir: &Path, format: &str, size: &str) -> PathBuf {
        let p = dir.join(format!("base.{format}"));
        qemu_img(&["create", "-f", format, s(&p), size]);
        p
    }

    #[test]
    fn overlay_over_raw_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "64M");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &base, "raw", 64 << 20).unwrap();
        assert_check_clean(&ov);
        assert_info(&ov, 64 << 20, &base, "raw");
        // The same layout and length as qemu-img's own.
        assert_eq!(std::fs::metadata(&ov).unwrap().len(), 0x30000 + 8);
    }

    #[test]
    fn overlay_over_qcow2_base_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "qcow2", "1G");
        // Data in the base shows through the overlay.
        io("qcow2", &base, "write -P 0xcd 1M 64k");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &base, "qcow2", 1 << 30).unwrap();
        assert_check_clean(&ov);
        assert_info(&ov, 1 << 30, &base, "qcow2");

        let out = io("qcow2", &ov, "write -P 0xab 0 64k");
        assert!(out.contains("wrote 65536/65536 bytes at offset 0"), "{out}");
        let out = io("qcow2", &ov, "read -P 0xab 0 64k");
        assert!(out.contains("read 65536/65536 bytes at offset 0"), "{out}");
        io("qcow2", &ov, "read -P 0xcd 1M 64k");
        // Unwritten, unbacked data reads as zeros; the base did not change.
        io("qcow2", &ov, "read -P 0 2M 64k");
        io("qcow2", &base, "read -P 0 0 64k");
        assert_check_clean(&ov);
        assert_check_clean(&base);
        let (ok, text) =
            qemu_img_status(&["compare", "-f", "qcow2", "-F", "qcow2", s(&ov), s(&base)]);
        assert!(
            !ok && text.contains("Content mismatch at offset 0"),
            "{text}"
        );
    }

    #[test]
    fn growing_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "qcow2", "64M");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &base, "qcow2", 3 << 30).unwrap();
        assert_check_clean(&ov);
        assert_info(&ov, 3 << 30, &base, "qcow2");
        let h = read_header(&mut File::open(&ov).unwrap()).unwrap();
        assert_eq!(h.l1_size, 6);
        // Past the base's end: writable, and zeros where unwritten.
        io("qcow2", &ov, "write -P 0x5a 2G 64k");
        io("qcow2", &ov, "read -P 0x5a 2G 64k");
        io("qcow2", &ov, "read -P 0 100M 64k");
        assert_check_clean(&ov);
    }

    #[test]
    fn growing_overlay_over_raw() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "10M");
        io("raw", &base, "write -P 0x11 0 4k");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &base, "raw", 20 << 20).unwrap();
        assert_check_clean(&ov);
        assert_info(&ov, 20 << 20, &base, "raw");
        io("qcow2", &ov, "read -P 0x11 0 4k");
        io("qcow2", &ov, "write -P 0x22 15M 4k");
        io("qcow2", &ov, "read -P 0x22 15M 4k");
        assert_check_clean(&ov);
    }

    #[test]
    fn header_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "qcow2", "1G");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &base, "qcow2", 1 << 30).unwrap();
        let h = read_header(&mut File::open(&ov).unwrap()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.virtual_size, 1 << 30);
        assert_eq!(h.backing_file.as_deref(), Some(s(&base)));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.incompatible_features, 0);
        assert_eq!(h.compatible_features, 0);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.header_length, 112);
        assert_eq!((h.l1_size, h.l1_table_offset), (2, 0x30000));
        assert_eq!(
            (h.refcount_table_offset, h.refcount_table_clusters),
            (0x10000, 1)
        );
    }

    #[test]
    fn relative_backing_path_is_stored_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "1M");
        // A path relative to the current directory that leads to the base.
        let cwd = std::env::current_dir().unwrap();
        let ups = "../".repeat(cwd.components().count() - 1);
        let rel = PathBuf::from(format!("{ups}{}", s(&base).trim_start_matches('/')));
        assert!(rel.is_relative());
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&ov, &rel, "raw", 1 << 20).unwrap();
        let stored = info(&ov)["backing-filename"].as_str().unwrap().to_owned();
        assert!(stored.starts_with('/'), "{stored}");
        assert_eq!(Path::new(&stored).canonicalize().unwrap(), base);
        assert_check_clean(&ov);
    }

    #[test]
    fn refuses_smaller_than_backing() {
        let dir = tempfile::tempdir().unwrap();
        let qbase = base(dir.path(), "qcow2", "64M");
        let ov = dir.path().join("ov.qcow2");
        let err = create_overlay(&ov, &qbase, "qcow2", 32 << 20).unwrap_err();
        assert!(matches!(
            err,
            Qcow2Error::SmallerThanBacking {
                size: 0x200_0000,
                backing_size: 0x400_0000
            }
        ));
        assert_eq!(
            err.to_string(),
            "Overlay size 33554432 is smaller than the backing image size 67108864"
        );
        assert!(!ov.exists());

        let rbase = base(dir.path(), "raw", "10M");
        let err = create_overlay(&ov, &rbase, "raw", 5 << 20).unwrap_err();
        assert!(
            matches!(err, Qcow2Error::SmallerThanBacking { .. }),
            "{err:?}"
        );

        // A raw file's length is rounded up to whole sectors.
        let odd = dir.path().join("odd.raw");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let err = create_overlay(&ov, &odd, "raw", 512).unwrap_err();
        assert!(matches!(
            err,
            Qcow2Error::SmallerThanBacking {
                size: 512,
                backing_size: 1024
            }
        ));
        create_overlay(&ov, &odd, "raw", 1024).unwrap();
        assert_check_clean(&ov);
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "1M");
        let ov = dir.path().join("ov.qcow2");
        std::fs::write(&ov, b"precious").unwrap();
        let err = create_overlay(&ov, &base, "raw", 1 << 20).unwrap_err();
        assert!(matches!(err, Qcow2Error::AlreadyExists { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{} already exists", ov.display()));
        assert_eq!(std::fs::read(&ov).unwrap(), b"precious");
    }

    #[test]
    fn bad_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "1M");
        let ov = dir.path().join("ov.qcow2");
        let err = create_overlay(&ov, &base, "vmdk", 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unsupported backing format \"vmdk\", expected \"qcow2\" or \"raw\""
        );
        assert!(matches!(
            create_overlay(&ov, &base, "raw", 0),
            Err(Qcow2Error::ZeroVirtualSize)
        ));
        assert!(matches!(
            create_overlay(&ov, &base, "raw", (1 << 20) + 1),
            Err(Qcow2Error::UnalignedVirtualSize { .. })
        ));
        let err = create_overlay(&ov, &base, "raw", 1 << 52).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Virtual size 4503599627370496 exceeds the maximum 2251799813685248"
        );
        let long = PathBuf::from(format!("/{}", "a/".repeat(600)));
        assert!(matches!(
            create_overlay(&ov, &long, "raw", 1 << 20),
            Err(Qcow2Error::BackingNameTooLong { size: 1201 })
        ));
        assert!(!ov.exists());
    }

    #[test]
    fn bad_backing() {
        let dir = tempfile::tempdir().unwrap();
        let ov = dir.path().join("ov.qcow2");
        let missing = dir.path().join("missing.qcow2");
        let err = create_overlay(&ov, &missing, "qcow2", 1 << 20).unwrap_err();
        assert!(matches!(err, Qcow2Error::BackingOpen { .. }), "{err:?}");
        // Declared qcow2, but raw content.
        let raw = base(dir.path(), "raw", "1M");
        let err = create_overlay(&ov, &raw, "qcow2", 1 << 20).unwrap_err();
        match &err {
            Qcow2Error::BackingHeader { source, .. } => {
                assert!(
                    matches!(**source, Qcow2Error::BadMagic { .. }),
                    "{source:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!ov.exists());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), "raw", "1M");
        let ov = dir.path().join("no-such-dir").join("ov.qcow2");
        let err = create_overlay(&ov, &base, "raw", 1 << 20).unwrap_err();
        assert!(matches!(err, Qcow2Error::Write { .. }), "{err:?}");
        assert!(!ov.exists());
    }
}
