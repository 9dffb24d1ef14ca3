//! VHDX uploads: a valid current header with no log to replay, known required regions and
//! metadata, and no parent.
//!
//! Layout (little-endian, [MS-VHDX]): the file type identifier `vhdxfile` at 0; two 4 KiB
//! headers at 64 KiB and 128 KiB (`head`, CRC-32C, sequence number; the valid one with the
//! higher sequence number is current); two 64 KiB region tables at 192 KiB and 256 KiB
//! (`regi`, CRC-32C, entries of GUID, file offset, length, required). The metadata region
//! starts with a table (`metadata`, entries of item GUID, offset, length, flags) whose items
//! give the virtual disk size, the file parameters (with the `HasParent` bit) and, for a
//! differencing disk, the parent locator.

use super::{le16, le32, le64, DiskFormat, InspectError, Source};

const KIB: u64 = 1024;
const FMT: DiskFormat = DiskFormat::Vhdx;

/// A GUID in its on-disk (Microsoft, mixed-endian) form.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

const REGION_BAT: [u8; 16] = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
const REGION_METADATA: [u8; 16] = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
const ITEM_FILE_PARAMETERS: [u8; 16] = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
const ITEM_VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
const ITEM_VIRTUAL_DISK_ID: [u8; 16] = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
const ITEM_LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
const ITEM_PHYSICAL_SECTOR_SIZE: [u8; 16] = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
const ITEM_PARENT_LOCATOR: [u8; 16] = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);

/// File parameters flag: this is a differencing disk.
const HAS_PARENT: u32 = 1 << 1;
/// Metadata entry flag: the item must be understood.
const IS_REQUIRED: u32 = 1 << 2;
/// Region table entries and metadata entries are at most 2047.
const MAX_ENTRIES: u64 = 2047;

fn malformed(detail: impl Into<String>) -> InspectError {
    InspectError::Malformed {
        format: FMT,
        detail: detail.into(),
    }
}

fn unsupported(detail: String) -> InspectError {
    InspectError::Unsupported {
        format: FMT,
        detail,
    }
}

/// Checks a VHDX upload; returns its virtual size.
pub(crate) fn inspect(src: &Source) -> Result<u64, InspectError> {
    // The current header.
    let mut current: Option<Vec<u8>> = None;
    for at in [64 * KIB, 128 * KIB] {
        let h = src.read(FMT, "the headers", at, 4 * KIB)?;
        if !h.starts_with(b"head") || !checksum_ok(&h) {
            continue;
        }
        if current.as_ref().is_none_or(|c| le64(&h, 8) > le64(c, 8)) {
            current = Some(h);
        }
    }
    let header = current.ok_or_else(|| malformed("no valid header"))?;
    let version = le16(&header, 66);
    if version != 1 {
        return Err(unsupported(format!("version {version}")));
    }
    if header[48..64].iter().any(|&b| b != 0) {
        return Err(InspectError::VhdxLog);
    }

    // The region table (the second copy when the first is damaged).
    let mut table = None;
    for at in [192 * KIB, 256 * KIB] {
        let t = src.read(FMT, "the region table", at, 64 * KIB)?;
        if t.starts_with(b"regi") && checksum_ok(&t) {
            table = Some(t);
            break;
        }
    }
    let table = table.ok_or_else(|| malformed("no valid region table"))?;
    let count = u64::from(le32(&table, 8));
    if count > MAX_ENTRIES {
        return Err(malformed(format!("{count} region table entries")));
    }
    let (mut metadata, mut bat) = (None, false);
    for i in 0..count as usize {
        let e = &table[16 + i * 32..16 + (i + 1) * 32];
        let id: [u8; 16] = e[..16].try_into().unwrap_or_default();
        let (offset, length, required) = (le64(e, 16), le32(e, 24), le32(e, 28));
        if id == REGION_METADATA {
            metadata = Some((offset, u64::from(length)));
        } else if id == REGION_BAT {
            bat = true;
        } else if required & 1 != 0 {
            return Err(unsupported(format!(
                "unknown required region {}",
                hex::encode(id)
            )));
        }
    }
    if !bat {
        return Err(malformed("no BAT region"));
    }
    let (region, region_len) = metadata.ok_or_else(|| malformed("no metadata region"))?;
    if region_len < 64 * KIB {
        return Err(malformed(format!("metadata region of {region_len} bytes")));
    }

    // The metadata table and the items that matter.
    let meta = src.read(FMT, "the metadata table", region, 64 * KIB)?;
    if !meta.starts_with(b"metadata") {
        return Err(malformed("bad metadata table signature"));
    }
    let count = u64::from(le16(&meta, 10));
    if count > MAX_ENTRIES {
        return Err(malformed(format!("{count} metadata entries")));
    }
    let mut disk_size = None;
    for i in 0..count as usize {
        let e = &meta[32 + i * 32..32 + (i + 1) * 32];
        let id: [u8; 16] = e[..16].try_into().unwrap_or_default();
        let (offset, length, flags) = (u64::from(le32(e, 16)), u64::from(le32(e, 20)), le32(e, 24));
        if offset.saturating_add(length) > region_len {
            return Err(malformed(format!(
                "metadata item at {offset}+{length} outside its {region_len}-byte region"
            )));
        }
        let item = |what, size| {
            if length < size {
                return Err(malformed(format!("{what} item of {length} bytes")));
            }
            src.read(FMT, what, region + offset, size)
        };
        match id {
            ITEM_PARENT_LOCATOR => {
                return Err(InspectError::Differencing {
                    format: FMT,
                    detail: "parent locator present".into(),
                });
            }
            ITEM_FILE_PARAMETERS if le32(&item("file parameters", 8)?, 4) & HAS_PARENT != 0 => {
                return Err(InspectError::Differencing {
                    format: FMT,
                    detail: "HasParent file parameter set".into(),
                });
            }
            ITEM_VIRTUAL_DISK_SIZE => disk_size = Some(le64(&item("virtual disk size", 8)?, 0)),
            ITEM_FILE_PARAMETERS
            | ITEM_VIRTUAL_DISK_ID
            | ITEM_LOGICAL_SECTOR_SIZE
            | ITEM_PHYSICAL_SECTOR_SIZE => {}
            _ if flags & IS_REQUIRED != 0 => {
                return Err(unsupported(format!(
                    "unknown required metadata item {}",
                    hex::encode(id)
                )));
            }
            _ => {}
        }
    }
    disk_size.ok_or_else(|| malformed("no virtual disk size"))
}

/// Whether the CRC-32C at offset 4 matches `block` with that field zeroed.
fn checksum_ok(block: &[u8]) -> bool {
    let stored = le32(block, 4);
    let mut zeroed = block.to_vec();
    zeroed[4..8].fill(0);
    crc32c(&zeroed) == stored
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, LIMIT};
    use super::super::{inspect, InspectError};
    use super::*;
    use std::path::{Path, PathBuf};

    const META: usize = 3 << 20;

    #[test]
    fn crc32c_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn guids_match_the_on_disk_form() {
        assert_eq!(hex::encode(REGION_BAT), "6677c22d23f600429d64115e9bfd4a08");
        assert_eq!(
            hex::encode(REGION_METADATA),
            "06a27c8b90479a4bb8fe575f050f886e"
        );
    }

    fn fix_checksum(b: &mut [u8], at: usize, len: usize) {
        b[at + 4..at + 8].fill(0);
        let crc = crc32c(&b[at..at + len]);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// A qemu-made 16 MiB dynamic VHDX, edited. Its metadata region is at 3 MiB.
    fn variant(dir: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
        let base = dir.join("base.vhdx");
        if !base.exists() {
            create(dir, "base.vhdx", "vhdx", &[], "16M");
        }
        let mut bytes = std::fs::read(&base).unwrap();
        assert_eq!(&bytes[META..META + 8], b"metadata");
        edit(&mut bytes);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn refused(path: &Path) -> InspectError {
        inspect(path, DiskFormat::Vhdx, LIMIT).unwrap_err()
    }

    /// The index of the metadata entry for `id`.
    fn entry(b: &[u8], id: [u8; 16]) -> usize {
        (0..5)
            .map(|i| META + 32 + i * 32)
            .find(|&e| b[e..e + 16] == id)
            .unwrap()
    }

    #[test]
    fn parent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let has_parent = variant(d, "hp.vhdx", |b| {
            let e = entry(b, ITEM_FILE_PARAMETERS);
            let off = META + le32(b, e + 16) as usize;
            b[off + 4] |= HAS_PARENT as u8;
        });
        assert_eq!(
            refused(&has_parent).to_string(),
            "vhdx image is a differencing image (HasParent file parameter set); uploads must be self-contained"
        );
        // A parent locator item (turn the virtual disk ID entry into one).
        let locator = variant(d, "loc.vhdx", |b| {
            let e = entry(b, ITEM_VIRTUAL_DISK_ID);
            b[e..e + 16].copy_from_slice(&ITEM_PARENT_LOCATOR);
        });
        assert!(matches!(
            refused(&locator),
            InspectError::Differencing { detail, .. } if detail == "parent locator present"
        ));
    }

    #[test]
    fn headers_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pending log in the current (higher sequence) header.
        let log = variant(d, "log.vhdx", |b| {
            for at in [64 << 10, 128 << 10] {
                b[at + 48] = 1;
                fix_checksum(b, at, 4096);
            }
        });
        assert!(matches!(refused(&log), InspectError::VhdxLog));
        // One damaged header: the other one is used.
        let one = variant(d, "one.vhdx", |b| b[(64 << 10) + 100] ^= 1);
        assert_eq!(
            inspect(&one, DiskFormat::Vhdx, LIMIT).unwrap().virtual_size,
            16 << 20
        );
        let none = variant(d, "none.vhdx", |b| {
            b[(64 << 10) + 100] ^= 1;
            b[(128 << 10) + 100] ^= 1;
        });
        assert_eq!(
            refused(&none).to_string(),
            "Malformed vhdx image: no valid header"
        );
        let v2 = variant(d, "v2.vhdx", |b| {
            for at in [64 << 10, 128 << 10] {
                b[at + 66] = 2;
                fix_checksum(b, at, 4096);
            }
        });
        assert!(matches!(refused(&v2), InspectError::Unsupported { .. }));
    }

    #[test]
    fn regions_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A damaged first region table falls back to the second.
        let first = variant(d, "rt1.vhdx", |b| b[(192 << 10) + 200] ^= 1);
        assert!(inspect(&first, DiskFormat::Vhdx, LIMIT).is_ok());
        let both = variant(d, "rt2.vhdx", |b| {
            b[(192 << 10) + 200] ^= 1;
            b[(256 << 10) + 200] ^= 1;
        });
        assert!(matches!(refused(&both), InspectError::Malformed { .. }));
        // An unknown region is ignored unless it is required (QEMU marks none required).
        let optional = variant(d, "optional.vhdx", |b| {
            for at in [192 << 10, 256 << 10] {
                b[at + 16] ^= 0xff;
                fix_checksum(b, at, 64 << 10);
            }
        });
        assert!(matches!(refused(&optional), InspectError::Malformed { .. }));
        let region = variant(d, "region.vhdx", |b| {
            for at in [192 << 10, 256 << 10] {
                b[at + 16] ^= 0xff;
                b[at + 16 + 28] = 1;
                fix_checksum(b, at, 64 << 10);
            }
        });
        let err = refused(&region);
        assert!(
            matches!(&err, InspectError::Unsupported { detail, .. } if detail.starts_with("unknown required region")),
            "{err:?}"
        );
        // An unknown required metadata item.
        let item = variant(d, "item.vhdx", |b| {
            let e = entry(b, ITEM_VIRTUAL_DISK_ID);
            b[e] ^= 0xff;
        });
        assert!(matches!(refused(&item), InspectError::Unsupported { .. }));
        // No virtual disk size.
        let nosize = variant(d, "nosize.vhdx", |b| {
            let e = entry(b, ITEM_VIRTUAL_DISK_SIZE);
            b[e] ^= 0xff;
            b[e + 24] = 0;
        });
        assert_eq!(
            refused(&nosize).to_string(),
            "Malformed vhdx image: no virtual disk size"
        );
        // An item pointing outside the region.
        let outside = variant(d, "outside.vhdx", |b| {
            let e = entry(b, ITEM_VIRTUAL_DISK_SIZE);
            b[e + 16..e + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        assert!(matches!(refused(&outside), InspectError::Malformed { .. }));
        // A huge virtual size.
        let huge = variant(d, "huge.vhdx", |b| {
            let e = entry(b, ITEM_VIRTUAL_DISK_SIZE);
            let off = META + le32(b, e + 16) as usize;
            b[off..off + 8].copy_from_slice(&(1u64 << 46).to_le_bytes());
        });
        assert!(matches!(
            refused(&huge),
            InspectError::TooLarge { virtual_size, .. } if virtual_size == 1 << 46
        ));
        // Truncated before the metadata region.
        let short = variant(d, "short.vhdx", |b| b.truncate(1 << 20));
        assert!(matches!(
            refused(&short),
            InspectError::Truncated {
                what: "the metadata table",
                ..
            }
        ));
        let tiny = variant(d, "tiny.vhdx", |b| b.truncate(4096));
        assert!(matches!(
            refused(&tiny),
            InspectError::Truncated {
                what: "the headers",
                ..
            }
        ));
    }
}
