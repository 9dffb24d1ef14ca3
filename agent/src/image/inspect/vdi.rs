//! VDI uploads: a version 1.1 normal or fixed image without a parent.
//!
//! The header (little-endian) follows a 64-byte text banner: `signature 0xbeda107f` at 0x40,
//! `version` at 0x44 (0x00010001), `header_size` at 0x48, `image_type` at 0x4c (1 normal,
//! 2 fixed, 3 undo, 4 differencing), `sector_size` at 0x168, `disk_size: u64` at 0x170, and
//! four UUIDs: image 0x188, last snapshot 0x198, link 0x1a8, parent 0x1b8.

use super::{le32, le64, DiskFormat, InspectError, Source};

const VERSION_1_1: u32 = 0x0001_0001;
const TYPE_NORMAL: u32 = 1;
const TYPE_FIXED: u32 = 2;
const TYPE_DIFFERENCING: u32 = 4;

/// Checks a VDI upload; returns its virtual size.
pub(crate) fn inspect(src: &Source) -> Result<u64, InspectError> {
    let fmt = DiskFormat::Vdi;
    let h = src.read(fmt, "the header", 0, 0x200)?;
    let version = le32(&h, 0x44);
    if version != VERSION_1_1 {
        return Err(InspectError::Unsupported {
            format: fmt,
            detail: format!("version {version:#010x}, only 1.1 is"),
        });
    }
    let image_type = le32(&h, 0x4c);
    if image_type == TYPE_DIFFERENCING {
        return Err(InspectError::Differencing {
            format: fmt,
            detail: "image type 4".into(),
        });
    }
    if image_type != TYPE_NORMAL && image_type != TYPE_FIXED {
        return Err(InspectError::Unsupported {
            format: fmt,
            detail: format!("image type {image_type}"),
        });
    }
    for (at, which) in [(0x1a8, "link"), (0x1b8, "parent")] {
        let uuid = &h[at..at + 16];
        if uuid.iter().any(|&b| b != 0) {
            return Err(InspectError::Differencing {
                format: fmt,
                detail: format!("{which} UUID {}", hex::encode(uuid)),
            });
        }
    }
    let sector_size = le32(&h, 0x168);
    if sector_size != 512 {
        return Err(InspectError::Unsupported {
            format: fmt,
            detail: format!("sector size {sector_size}"),
        });
    }
    Ok(le64(&h, 0x170))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, LIMIT};
    use super::super::{inspect, DiskFormat, InspectError};
    use std::path::PathBuf;

    fn variant(dir: &std::path::Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
        let base = dir.join("base.vdi");
        if !base.exists() {
            create(dir, "base.vdi", "vdi", &[], "16M");
        }
        let mut bytes = std::fs::read(&base).unwrap();
        edit(&mut bytes);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn refused(path: &std::path::Path) -> InspectError {
        inspect(path, DiskFormat::Vdi, LIMIT).unwrap_err()
    }

    #[test]
    fn differencing_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let diff = variant(d, "diff.vdi", |b| b[0x4c] = 4);
        assert_eq!(
            refused(&diff).to_string(),
            "vdi image is a differencing image (image type 4); uploads must be self-contained"
        );
        let parent = variant(d, "parent.vdi", |b| b[0x1b8] = 0xaa);
        let err = refused(&parent);
        assert!(
            matches!(&err, InspectError::Differencing { detail, .. } if detail.starts_with("parent UUID aa00")),
            "{err:?}"
        );
        let link = variant(d, "link.vdi", |b| b[0x1a8 + 15] = 1);
        assert!(matches!(refused(&link), InspectError::Differencing { .. }));
        let undo = variant(d, "undo.vdi", |b| b[0x4c] = 3);
        assert!(matches!(refused(&undo), InspectError::Unsupported { .. }));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let short = variant(d, "short.vdi", |b| b.truncate(0x100));
        assert!(matches!(
            refused(&short),
            InspectError::Truncated {
                needed: 0x200,
                len: 0x100,
                ..
            }
        ));
        let v = variant(d, "v.vdi", |b| b[0x44] = 0);
        assert_eq!(
            refused(&v).to_string(),
            "Unsupported vdi image: version 0x00010000, only 1.1 is"
        );
        let sector = variant(d, "sector.vdi", |b| b[0x169] = 0x10);
        assert!(matches!(refused(&sector), InspectError::Unsupported { .. }));
        let huge = variant(d, "huge.vdi", |b| b[0x177] = 0x10);
        assert!(matches!(
            refused(&huge),
            InspectError::TooLarge { virtual_size, .. } if virtual_size == (0x10 << 56) + (16 << 20)
        ));
    }
}
