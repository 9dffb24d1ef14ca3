//! qcow2 uploads: a valid header, no backing file, no external data file, not corrupt.

use super::{DiskFormat, InspectError, Source};
use crate::image::qcow2::{read_header, Qcow2Error};

/// Checks a qcow2 upload; returns its virtual size.
pub(crate) fn inspect(src: &Source) -> Result<u64, InspectError> {
    let header = read_header(&mut &src.file).map_err(|e| match e {
        Qcow2Error::Read(source) => InspectError::Read {
            path: src.path.clone(),
            source,
        },
        e => InspectError::Qcow2(e),
    })?;
    if let Some(name) = header.backing_file {
        return Err(InspectError::BackingFile {
            format: DiskFormat::Qcow2,
            name,
        });
    }
    if header.has_external_data_file() {
        return Err(InspectError::ExternalDataFile {
            name: header.external_data_file.unwrap_or_default(),
        });
    }
    if header.is_corrupt() {
        return Err(InspectError::Corrupt {
            format: DiskFormat::Qcow2,
        });
    }
    Ok(header.virtual_size)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, LIMIT};
    use super::super::{inspect, DiskFormat, InspectError};
    use crate::image::qcow2::test_support::synthetic_image;
    use crate::image::qcow2::{Qcow2Error, INCOMPAT_CORRUPT, INCOMPAT_EXTERNAL_DATA_FILE};
    use std::error::Error as _;

    #[test]
    fn backing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for opts in [
            &["-b", "/etc/passwd", "-F", "raw"][..],
            &["-o", "compat=0.10", "-b", "/etc/passwd", "-F", "raw"],
        ] {
            let _ = std::fs::remove_file(d.join("evil.qcow2"));
            let evil = create(d, "evil.qcow2", "qcow2", opts, "1M");
            let err = inspect(&evil, DiskFormat::Qcow2, LIMIT).unwrap_err();
            assert_eq!(
                err.to_string(),
                "qcow2 image names a backing file \"/etc/passwd\"; uploads must be self-contained"
            );
        }
        // A relative name, and a json: pseudo-path, are refused just the same.
        let base = create(d, "base.qcow2", "qcow2", &[], "1M");
        let rel = create(
            d,
            "rel.qcow2",
            "qcow2",
            &["-b", "base.qcow2", "-F", "qcow2"],
            "",
        );
        assert!(matches!(
            inspect(&rel, DiskFormat::Qcow2, LIMIT),
            Err(InspectError::BackingFile { name, .. }) if name == "base.qcow2"
        ));
        let img = synthetic_image(Some("json:{\"file.filename\":\"/etc/shadow\"}"), 1 << 20);
        let json = d.join("json.qcow2");
        std::fs::write(&json, img).unwrap();
        assert!(matches!(
            inspect(&json, DiskFormat::Qcow2, LIMIT),
            Err(InspectError::BackingFile { name, .. }) if name.starts_with("json:")
        ));
        assert!(base.exists());
    }

    #[test]
    fn external_data_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let opt = format!("data_file={}", d.join("data.raw").display());
        let evil = create(d, "evil.qcow2", "qcow2", &["-o", &opt], "1M");
        let err = inspect(&evil, DiskFormat::Qcow2, LIMIT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "qcow2 image uses an external data file \"{}\"; uploads must be self-contained",
                d.join("data.raw").display()
            )
        );
        // The feature bit alone (the name can be given on the command line) is enough.
        let mut img = synthetic_image(None, 1 << 20);
        img[79] |= INCOMPAT_EXTERNAL_DATA_FILE as u8;
        let bit = d.join("bit.qcow2");
        std::fs::write(&bit, img).unwrap();
        assert!(matches!(
            inspect(&bit, DiskFormat::Qcow2, LIMIT),
            Err(InspectError::ExternalDataFile { name }) if name.is_empty()
        ));
    }

    #[test]
    fn corrupt_and_encrypted_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = synthetic_image(None, 1 << 20);
        img[79] |= INCOMPAT_CORRUPT as u8;
        let corrupt = dir.path().join("corrupt.qcow2");
        std::fs::write(&corrupt, &img).unwrap();
        assert!(matches!(
            inspect(&corrupt, DiskFormat::Qcow2, LIMIT),
            Err(InspectError::Corrupt {
                format: DiskFormat::Qcow2
            })
        ));
        let mut img = synthetic_image(None, 1 << 20);
        img[35] = 1;
        let enc = dir.path().join("enc.qcow2");
        std::fs::write(&enc, &img).unwrap();
        let err = inspect(&enc, DiskFormat::Qcow2, LIMIT).unwrap_err();
        assert!(
            matches!(
                &err,
                InspectError::Qcow2(Qcow2Error::Encrypted { crypt_method: 1 })
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "Invalid qcow2 image");
        assert_eq!(
            err.source().unwrap().to_string(),
            "Encrypted qcow2 image (crypt_method 1) is not supported"
        );
    }

    #[test]
    fn truncated_and_malformed_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = synthetic_image(None, 1 << 20);
        for cut in [4, 50, 100, 0x30000] {
            let path = dir.path().join(format!("cut{cut}.qcow2"));
            std::fs::write(&path, &img[..cut]).unwrap();
            let err = inspect(&path, DiskFormat::Qcow2, LIMIT).unwrap_err();
            assert!(
                matches!(
                    err,
                    InspectError::Qcow2(
                        Qcow2Error::Truncated { .. } | Qcow2Error::OutOfBounds { .. }
                    )
                ),
                "cut at {cut}: {err:?}"
            );
        }
        // An absurd virtual size.
        let mut big = img.clone();
        big[24..32].copy_from_slice(&(1u64 << 63).to_be_bytes());
        let path = dir.path().join("big.qcow2");
        std::fs::write(&path, &big).unwrap();
        assert!(matches!(
            inspect(&path, DiskFormat::Qcow2, u64::MAX),
            Err(InspectError::Qcow2(Qcow2Error::VirtualSizeTooLarge { .. }))
        ));
    }

    #[test]
    fn oversized_virtual_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A 100 TiB disk in a 200 KiB file: valid qcow2, but over the limit.
        let huge = create(dir.path(), "huge.qcow2", "qcow2", &[], "100T");
        let err = inspect(&huge, DiskFormat::Qcow2, 1 << 40).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Virtual size 109951162777600 bytes exceeds the limit of 1099511627776 bytes"
        );
    }
}
