//! VMDK uploads: one sparse file (`KDMV`) carrying its own descriptor, with no parent and no
//! other extent.
//!
//! The sparse extent header (little-endian, 512 bytes) starts with `magic "KDMV"`, then
//! `version: u32` at 4, `flags: u32` at 8, `capacity` (sectors) at 12, `grainSize` at 20,
//! `descriptorOffset` and `descriptorSize` (sectors) at 28 and 36, `numGTEsPerGT` at 44,
//! `rgdOffset` at 48 and `gdOffset` at 56. A streamOptimized file written in one pass sets
//! `gdOffset` to all ones and repeats the real header as a footer 1024 bytes before the end.
//!
//! The embedded descriptor is text: `key=value` lines (`createType`, `parentCID`,
//! `parentFileNameHint`, ...) and extent lines (`RW 20480 SPARSE "disk.vmdk"`). QEMU follows
//! `parentFileNameHint` even in an embedded descriptor, so every parent reference is refused.

use super::{le32, le64, DiskFormat, InspectError, Source};

const SECTOR: u64 = 512;
/// `gdOffset` meaning "the grain directory (and the real header) are at the end".
const GD_AT_END: u64 = u64::MAX;
/// The largest embedded descriptor read.
const MAX_DESCRIPTOR: u64 = 1 << 20;
/// The create types whose data is all in this one file.
const ACCEPTED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

fn malformed(detail: String) -> InspectError {
    InspectError::Malformed {
        format: DiskFormat::Vmdk,
        detail,
    }
}

/// Checks a VMDK sparse upload; returns its virtual size.
pub(crate) fn inspect(src: &Source) -> Result<u64, InspectError> {
    let fmt = DiskFormat::Vmdk;
    let mut header = src.read(fmt, "the sparse header", 0, SECTOR)?;
    check_version(&header)?;
    if le64(&header, 56) == GD_AT_END {
        let at = src
            .len
            .checked_sub(2 * SECTOR)
            .filter(|&at| at >= SECTOR)
            .ok_or(InspectError::Truncated {
                format: fmt,
                what: "the footer",
                needed: 3 * SECTOR,
                len: src.len,
            })?;
        let footer = src.read(fmt, "the footer", at, SECTOR)?;
        if !footer.starts_with(b"KDMV") {
            return Err(malformed(format!(
                "the grain directory is at the end but there is no footer at {at}"
            )));
        }
        check_version(&footer)?;
        header = footer;
    }
    let capacity = le64(&header, 12);
    let (desc_sector, desc_sectors) = (le64(&header, 28), le64(&header, 36));
    if desc_sector == 0 || desc_sectors == 0 {
        return Err(InspectError::VmdkNoDescriptor);
    }
    let desc_len = desc_sectors
        .checked_mul(SECTOR)
        .filter(|&n| n <= MAX_DESCRIPTOR)
        .ok_or_else(|| {
            malformed(format!(
                "descriptor of {desc_sectors} sectors exceeds {MAX_DESCRIPTOR} bytes"
            ))
        })?;
    let desc_at = desc_sector
        .checked_mul(SECTOR)
        .ok_or_else(|| malformed(format!("descriptor offset {desc_sector} is out of range")))?;
    let desc = src.read(fmt, "the embedded descriptor", desc_at, desc_len)?;
    let text = &desc[..desc.iter().position(|&b| b == 0).unwrap_or(desc.len())];
    check_descriptor(&String::from_utf8_lossy(text))?;
    capacity
        .checked_mul(SECTOR)
        .ok_or_else(|| malformed(format!("capacity of {capacity} sectors is out of range")))
}

fn check_version(header: &[u8]) -> Result<(), InspectError> {
    let version = le32(header, 4);
    if !(1..=3).contains(&version) {
        return Err(InspectError::Unsupported {
            format: DiskFormat::Vmdk,
            detail: format!("sparse header version {version}"),
        });
    }
    Ok(())
}

/// Checks an embedded descriptor: accepted create type, no parent, one extent: this file.
pub(crate) fn check_descriptor(text: &str) -> Result<(), InspectError> {
    let mut create_type = None;
    let mut parent_cid = None;
    let mut parent_hint = None;
    let mut extents = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_ascii_whitespace().next().unwrap_or_default();
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            extents.push(line);
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "createType" => create_type = Some(value),
                "parentCID" => parent_cid = Some(value),
                "parentFileNameHint" => parent_hint = Some(value),
                _ => {}
            }
        }
    }
    if extents.is_empty() && create_type.is_none() {
        return Err(InspectError::VmdkNoDescriptor);
    }
    if let Some(name) = parent_hint {
        return Err(InspectError::BackingFile {
            format: DiskFormat::Vmdk,
            name,
        });
    }
    if let Some(cid) = parent_cid.filter(|cid| !cid.eq_ignore_ascii_case("ffffffff")) {
        return Err(InspectError::Differencing {
            format: DiskFormat::Vmdk,
            detail: format!("parentCID {cid}"),
        });
    }
    let create_type = create_type.unwrap_or_default();
    if !ACCEPTED_CREATE_TYPES.contains(&create_type.as_str()) {
        return Err(InspectError::VmdkCreateType { create_type });
    }
    match extents[..] {
        [extent] if is_self_extent(extent) => Ok(()),
        [] => Err(malformed("the descriptor lists no extent".into())),
        [extent] => Err(InspectError::VmdkExtent {
            extent: extent.to_owned(),
        }),
        [_, second, ..] => Err(InspectError::VmdkExtent {
            extent: second.to_owned(),
        }),
    }
}

/// `RW <sectors> SPARSE "<bare file name>"`: the image itself.
fn is_self_extent(line: &str) -> bool {
    let mut words = line.splitn(4, |c: char| c.is_ascii_whitespace());
    let (Some(_access), Some(sectors), Some(kind), Some(rest)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    let Some(name) = rest
        .trim()
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
    else {
        return false;
    };
    sectors.parse::<u64>().is_ok()
        && kind == "SPARSE"
        && !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '"'])
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, LIMIT};
    use super::super::{inspect, DiskFormat, InspectError};
    use super::*;
    use std::path::Path;

    /// Rewrites the embedded descriptor of a qemu-made sparse VMDK (at sector 1, 20 sectors).
    fn edit_descriptor(path: &Path, edit: impl Fn(&str) -> String) {
        let mut img = std::fs::read(path).unwrap();
        let area = &mut img[512..512 + 20 * 512];
        let len = area.iter().position(|&b| b == 0).unwrap();
        let text = edit(std::str::from_utf8(&area[..len]).unwrap());
        assert!(text.len() < area.len());
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        std::fs::write(path, img).unwrap();
    }

    fn refused(path: &Path) -> InspectError {
        inspect(path, DiskFormat::Vmdk, LIMIT).unwrap_err()
    }

    #[test]
    fn text_descriptor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let flat = create(
            d,
            "flat.vmdk",
            "vmdk",
            &["-o", "subformat=monolithicFlat"],
            "4M",
        );
        let err = refused(&flat);
        assert!(matches!(err, InspectError::VmdkDescriptorFile), "{err:?}");
        assert_eq!(
            err.to_string(),
            "VMDK is a text descriptor naming separate extent files; upload a monolithicSparse or streamOptimized VMDK"
        );
        // The flat extent itself is plain data, so it passes only as raw.
        let extent = d.join("flat-flat.vmdk");
        assert!(matches!(
            inspect(&extent, DiskFormat::Vmdk, LIMIT),
            Err(InspectError::FormatMismatch { .. })
        ));
        assert!(matches!(
            inspect(&flat, DiskFormat::Raw, LIMIT),
            Err(InspectError::FormatMismatch {
                detected: "a VMDK descriptor file",
                ..
            })
        ));
        // A split sparse image: the descriptor is text, each extent has an empty descriptor.
        let split = create(
            d,
            "split.vmdk",
            "vmdk",
            &["-o", "subformat=twoGbMaxExtentSparse"],
            "4M",
        );
        assert!(matches!(refused(&split), InspectError::VmdkDescriptorFile));
        let err = refused(&d.join("split-s001.vmdk"));
        assert!(matches!(err, InspectError::VmdkNoDescriptor), "{err:?}");
    }

    #[test]
    fn backing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = create(d, "base.vmdk", "vmdk", &[], "4M");
        assert!(inspect(&base, DiskFormat::Vmdk, LIMIT).is_ok());
        let child = create(
            d,
            "child.vmdk",
            "vmdk",
            &["-b", "base.vmdk", "-F", "vmdk"],
            "",
        );
        let err = refused(&child);
        assert_eq!(
            err.to_string(),
            "vmdk image names a backing file \"base.vmdk\"; uploads must be self-contained"
        );
        // Without the hint, the parent CID alone still marks a delta disk.
        edit_descriptor(&child, |t| {
            t.replace("parentFileNameHint=\"base.vmdk\"\n", "")
        });
        let err = refused(&child);
        assert!(
            matches!(&err, InspectError::Differencing { format: DiskFormat::Vmdk, detail } if detail.starts_with("parentCID ")),
            "{err:?}"
        );
    }

    #[test]
    fn foreign_extents_and_create_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let img = create(d, "x.vmdk", "vmdk", &[], "4M");
        type Edit = fn(&str) -> String;
        let cases: [(&str, Edit, &str); 6] = [
            (
                "abs",
                |t| t.replace("SPARSE \"x.vmdk\"", "SPARSE \"/etc/shadow\""),
                "extent",
            ),
            (
                "dotdot",
                |t| t.replace("SPARSE \"x.vmdk\"", "SPARSE \"..\""),
                "extent",
            ),
            (
                "flat",
                |t| t.replace("SPARSE \"x.vmdk\"", "FLAT \"x-flat.vmdk\" 0"),
                "extent",
            ),
            (
                "two",
                |t| {
                    t.replace(
                        "RW 8192 SPARSE \"x.vmdk\"",
                        "RW 8192 SPARSE \"x.vmdk\"\nRW 8192 FLAT \"/dev/sda\" 0",
                    )
                },
                "extent",
            ),
            (
                "vmfs",
                |t| t.replace("monolithicSparse", "vmfs"),
                "createType",
            ),
            (
                "none",
                |t| t.replace("RW 8192 SPARSE \"x.vmdk\"", ""),
                "none",
            ),
        ];
        for (name, edit, expect) in cases {
            let path = d.join(format!("{name}.vmdk"));
            std::fs::copy(&img, &path).unwrap();
            edit_descriptor(&path, edit);
            let err = refused(&path);
            let ok = match expect {
                "extent" => matches!(err, InspectError::VmdkExtent { .. }),
                "createType" => {
                    matches!(&err, InspectError::VmdkCreateType { create_type } if create_type == "vmfs")
                }
                _ => matches!(err, InspectError::Malformed { .. }),
            };
            assert!(ok, "{name}: {err:?}");
        }
        let path = d.join("abs.vmdk");
        assert_eq!(
            refused(&path).to_string(),
            "VMDK extent \"RW 8192 SPARSE \"/etc/shadow\"\" is not the image itself; uploads must be self-contained"
        );
    }

    #[test]
    fn stream_optimized_footer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let img = create(
            d,
            "so.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            "4M",
        );
        let mut bytes = std::fs::read(&img).unwrap();
        let mut footer = bytes[..512].to_vec();
        // Header: grain directory at the end, capacity unknown; footer: the real values.
        bytes[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        bytes[12..20].copy_from_slice(&0u64.to_le_bytes());
        footer[12..20].copy_from_slice(&16384u64.to_le_bytes());
        let mut marker = vec![0u8; 512];
        marker[12..16].copy_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&marker);
        bytes.extend_from_slice(&footer);
        bytes.extend_from_slice(&[0u8; 512]);
        let path = d.join("footer.vmdk");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            inspect(&path, DiskFormat::Vmdk, LIMIT)
                .unwrap()
                .virtual_size,
            16384 * 512
        );
        // No footer where it should be.
        let len = bytes.len();
        bytes[len - 1024..len - 1020].copy_from_slice(b"\0\0\0\0");
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(refused(&path), InspectError::Malformed { .. }));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let img = create(d, "x.vmdk", "vmdk", &[], "4M");
        let bytes = std::fs::read(&img).unwrap();
        let write = |name: &str, b: &[u8]| {
            let p = d.join(name);
            std::fs::write(&p, b).unwrap();
            p
        };
        let err = refused(&write("short.vmdk", &bytes[..300]));
        assert!(
            matches!(
                err,
                InspectError::Truncated {
                    what: "the sparse header",
                    needed: 512,
                    len: 300,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = refused(&write("nodesc.vmdk", &bytes[..600]));
        assert!(
            matches!(
                err,
                InspectError::Truncated {
                    what: "the embedded descriptor",
                    ..
                }
            ),
            "{err:?}"
        );
        let mut v = bytes.clone();
        v[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            refused(&write("v7.vmdk", &v)).to_string(),
            "Unsupported vmdk image: sparse header version 7"
        );
        let mut v = bytes.clone();
        v[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            refused(&write("bigdesc.vmdk", &v)),
            InspectError::Malformed { .. }
        ));
        let mut v = bytes.clone();
        v[28..36].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(
            refused(&write("fardesc.vmdk", &v)),
            InspectError::Malformed { .. }
        ));
        let mut v = bytes.clone();
        v[28..36].copy_from_slice(&0u64.to_le_bytes());
        assert!(matches!(
            refused(&write("zerodesc.vmdk", &v)),
            InspectError::VmdkNoDescriptor
        ));
        let mut v = bytes;
        v[12..20].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            refused(&write("huge.vmdk", &v)),
            InspectError::TooLarge { virtual_size, max: LIMIT } if virtual_size == 1 << 49
        ));
    }

    #[test]
    fn descriptor_rules() {
        let ok = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=FFFFFFFF\ncreateType=\"streamOptimized\"\n\nRW 100 SPARSE \"disk one.vmdk\"\n#DDB\nddb.adapterType = \"ide\"\n";
        check_descriptor(ok).unwrap();
        check_descriptor(&ok.replace("RW", "RDONLY")).unwrap();
        assert!(is_self_extent("RW 1 SPARSE \"a\""));
        assert!(!is_self_extent("RW 1 SPARSE a"));
        assert!(!is_self_extent("RW x SPARSE \"a\""));
        assert!(!is_self_extent("RW 1 ZERO"));
        assert!(!is_self_extent("RW 1 VMFSSPARSE \"a\""));
        assert!(!is_self_extent("RW 1 SPARSE \"sub/a\""));
        assert!(!is_self_extent("RW 1 SPARSE \"\""));
        assert!(matches!(
            check_descriptor(""),
            Err(InspectError::VmdkNoDescriptor)
        ));
    }
}
