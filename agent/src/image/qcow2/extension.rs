//! Header extensions: `(type: u32, length: u32, data padded to 8 bytes)` records that follow
//! the fixed header in cluster 0 and end at a record of type 0 (or at the backing file name, or
//! at the end of the cluster).

use super::{Qcow2Error, EXT_BACKING_FORMAT, EXT_END, EXT_EXTERNAL_DATA_FILE, EXT_FEATURE_TABLE};

/// Which feature bitmap a feature name table entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// `incompatible_features`.
    Incompatible,
    /// `compatible_features`.
    Compatible,
    /// `autoclear_features`.
    Autoclear,
    /// A kind this module does not know.
    Other(u8),
}

/// One entry of the feature name table extension (for error messages about unknown bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// The bitmap the bit belongs to.
    pub kind: FeatureKind,
    /// The bit number.
    pub bit: u8,
    /// Its human-readable name.
    pub name: String,
}

/// Size of one feature name table entry.
const FEATURE_ENTRY: usize = 48;
/// QEMU keeps the backing format in a 16-byte buffer with a terminating NUL.
const MAX_BACKING_FORMAT: u32 = 15;

/// What the extension area holds.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    pub(crate) backing_format: Option<String>,
    pub(crate) external_data_file: Option<String>,
    pub(crate) feature_names: Vec<FeatureName>,
    /// Every extension type seen, in order (the end marker excluded).
    pub(crate) types: Vec<u32>,
}

/// Rounds up to a multiple of 8.
pub(crate) fn pad8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, Qcow2Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Qcow2Error::NotUtf8 { what })
}

/// Parses the extensions in `area`, whose first byte is at file offset `base`.
pub(crate) fn parse(area: &[u8], base: u64) -> Result<Extensions, Qcow2Error> {
    let mut ext = Extensions::default();
    let mut at = 0usize;
    while at + 8 <= area.len() {
        let ty = u32::from_be_bytes(area[at..at + 4].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(area[at + 4..at + 8].try_into().unwrap_or_default());
        if ty == EXT_END {
            break;
        }
        let start = at + 8;
        let end = start as u64 + u64::from(len);
        if end > area.len() as u64 {
            return Err(Qcow2Error::OutOfBounds {
                what: "header extension",
                offset: base + at as u64,
                size: 8 + u64::from(len),
                limit: base + area.len() as u64,
            });
        }
        let data = &area[start..end as usize];
        match ty {
            EXT_BACKING_FORMAT => {
                if len > MAX_BACKING_FORMAT {
                    return Err(Qcow2Error::BackingFormatTooLong { len });
                }
                ext.backing_format = Some(utf8(data, "backing format")?);
            }
            EXT_EXTERNAL_DATA_FILE => {
                ext.external_data_file = Some(utf8(data, "external data file name")?);
            }
            EXT_FEATURE_TABLE => {
                for entry in data.chunks_exact(FEATURE_ENTRY) {
                    let kind = match entry[0] {
                        0 => FeatureKind::Incompatible,
                        1 => FeatureKind::Compatible,
                        2 => FeatureKind::Autoclear,
                        n => FeatureKind::Other(n),
                    };
                    let name = &entry[2..];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    ext.feature_names.push(FeatureName {
                        kind,
                        bit: entry[1],
                        name: String::from_utf8_lossy(name).into_owned(),
                    });
                }
            }
            // Unknown extensions are ignored, as the spec asks.
            _ => {}
        }
        ext.types.push(ty);
        // `end` fits in usize (it is within `area`); padding may run past the area's end,
        // which simply ends the loop.
        at = usize::try_from(pad8(end)).unwrap_or(usize::MAX);
    }
    Ok(ext)
}

/// Appends one extension record, padded to 8 bytes.
pub(crate) fn encode(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    // Callers only pass names bounded far below 4 GiB (backing format, data file name).
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(
        usize::try_from(pad8(out.len() as u64)).unwrap_or(out.len()),
        0,
    );
}

/// Appends the end marker.
pub(crate) fn encode_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 8]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_backing_format_and_data_file() {
        let mut area = Vec::new();
        encode(&mut area, EXT_BACKING_FORMAT, b"qcow2");
        encode(&mut area, EXT_EXTERNAL_DATA_FILE, b"/data/x.raw");
        encode(&mut area, 0x1234_5678, b"ignored");
        encode_end(&mut area);
        assert_eq!(area.len() % 8, 0);
        let ext = parse(&area, 112).unwrap();
        assert_eq!(ext.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(ext.external_data_file.as_deref(), Some("/data/x.raw"));
        assert_eq!(
            ext.types,
            vec![EXT_BACKING_FORMAT, EXT_EXTERNAL_DATA_FILE, 0x1234_5678]
        );
    }

    #[test]
    fn extension_running_past_the_area_is_refused() {
        let mut area = Vec::new();
        area.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        area.extend_from_slice(&1000u32.to_be_bytes());
        area.extend_from_slice(b"qcow2\0\0\0");
        let err = parse(&area, 112).unwrap_err();
        assert!(
            matches!(
                err,
                Qcow2Error::OutOfBounds {
                    offset: 112,
                    size: 1008,
                    limit: 128,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("header extension"), "{err}");
    }

    #[test]
    fn overlong_backing_format_is_refused() {
        let mut area = Vec::new();
        encode(&mut area, EXT_BACKING_FORMAT, &[b'q'; 40]);
        assert!(matches!(
            parse(&area, 72),
            Err(Qcow2Error::BackingFormatTooLong { len: 40 })
        ));
    }

    #[test]
    fn feature_table_is_read() {
        let mut data = vec![0u8; 2 * FEATURE_ENTRY];
        data[0] = 0;
        data[1] = 1;
        data[2..13].copy_from_slice(b"corrupt bit");
        data[FEATURE_ENTRY] = 1;
        data[FEATURE_ENTRY + 1] = 0;
        data[FEATURE_ENTRY + 2..FEATURE_ENTRY + 15].copy_from_slice(b"lazy refcount");
        let mut area = Vec::new();
        encode(&mut area, EXT_FEATURE_TABLE, &data);
        let ext = parse(&area, 72).unwrap();
        assert_eq!(
            ext.feature_names,
            vec![
                FeatureName {
                    kind: FeatureKind::Incompatible,
                    bit: 1,
                    name: "corrupt bit".into()
                },
                FeatureName {
                    kind: FeatureKind::Compatible,
                    bit: 0,
                    name: "lazy refcount".into()
                },
            ]
        );
    }
}
