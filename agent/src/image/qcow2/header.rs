//! The fixed header at offset 0: parsing with validation ([`read_header`]) and a v3 encoder.
//!
//! ```text
//!  0  magic "QFI\xfb"            40  l1_table_offset: u64        v3 only:
//!  4  version: u32 (2 or 3)      48  refcount_table_offset: u64  72  incompatible_features: u64
//!  8  backing_file_offset: u64   56  refcount_table_clusters     80  compatible_features: u64
//! 16  backing_file_size: u32     60  nb_snapshots: u32           88  autoclear_features: u64
//! 20  cluster_bits: u32          64  snapshots_offset: u64       96  refcount_order: u32
//! 24  size: u64                                                 100  header_length: u32
//! 32  crypt_method: u32                                         104  compression_type: u8
//! 36  l1_size: u32
//! ```

use std::io::{Read, Seek, SeekFrom};

use super::extension::{self, FeatureName};
use super::table::l1_entries_for;
use super::{
    Qcow2Error, EXT_BACKING_FORMAT, EXT_EXTERNAL_DATA_FILE, INCOMPAT_CORRUPT, INCOMPAT_DIRTY,
    INCOMPAT_EXTENDED_L2, INCOMPAT_EXTERNAL_DATA_FILE, INCOMPAT_KNOWN, MAGIC,
    MAX_BACKING_FILE_NAME, MAX_L1_BYTES, MAX_REFCOUNT_TABLE_BYTES, MAX_VIRTUAL_SIZE,
};

/// Length of a v2 header (and of the part common to v2 and v3).
const V2_HEADER_LEN: u32 = 72;
/// The shortest v3 header.
const V3_MIN_HEADER_LEN: u32 = 104;
/// The v3 header this module writes: with the compression type byte, padded to 8.
const V3_HEADER_LEN: u32 = 112;

/// A parsed and validated qcow2 header, extensions included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size (9..=21).
    pub cluster_bits: u32,
    /// The virtual disk size in bytes.
    pub virtual_size: u64,
    /// The backing file name, as stored (QEMU resolves a relative name against the image's
    /// directory).
    pub backing_file: Option<String>,
    /// The backing file's format, from the backing format extension.
    pub backing_format: Option<String>,
    /// Incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// Compatible feature bits (0 for v2).
    pub compatible_features: u64,
    /// Auto-clear feature bits (0 for v2).
    pub autoclear_features: u64,
    /// The external data file name, from its header extension.
    pub external_data_file: Option<String>,
    /// 0 = none, 1 = AES, 2 = LUKS (always 0 once parsed: encryption is refused).
    pub crypt_method: u32,
    /// Refcount width is `1 << refcount_order` bits (always 4 for v2).
    pub refcount_order: u32,
    /// Length of the fixed header (72 for v2).
    pub header_length: u32,
    /// 0 = zlib, 1 = zstd.
    pub compression_type: u8,
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// Offset of the L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Length of the refcount table in clusters.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// The feature name table extension, if any.
    pub feature_names: Vec<FeatureName>,
    /// The type of every header extension present, in order.
    pub extensions: Vec<u32>,
}

impl Qcow2Header {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether guest data lives in an external data file (the feature bit or the name).
    pub fn has_external_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTERNAL_DATA_FILE != 0
            || self.external_data_file.is_some()
    }

    /// Whether QEMU marked the image corrupt.
    pub fn is_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// Whether the refcounts may be stale (lazy refcounts, not cleanly closed).
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }
}

/// Reads and validates the header of a qcow2 image.
///
/// Only the first cluster is read. Everything the rest of the agent relies on is checked:
/// magic, version, cluster size, header length, feature bits, encryption, the virtual size,
/// the L1 and refcount tables' alignment and bounds, the backing file name's bounds and the
/// header extensions' bounds.
///
/// # Errors
///
/// [`Qcow2Error::Read`] when reading fails; otherwise the variant naming the first invalid
/// field ([`Qcow2Error::BadMagic`], [`Qcow2Error::Truncated`], [`Qcow2Error::Encrypted`], ...).
pub fn read_header<R: Read + Seek>(reader: &mut R) -> Result<Qcow2Header, Qcow2Error> {
    let file_len = reader.seek(SeekFrom::End(0)).map_err(Qcow2Error::Read)?;
    reader.seek(SeekFrom::Start(0)).map_err(Qcow2Error::Read)?;
    let first = file_len.min(u64::from(V3_HEADER_LEN));
    let mut head = vec![0; usize::try_from(first).unwrap_or(0)];
    reader.read_exact(&mut head).map_err(Qcow2Error::Read)?;
    let cluster_bits = check_prefix(&head, file_len)?;
    // Read the rest of the first cluster (or of the file, if shorter).
    let whole = file_len.min(1 << cluster_bits);
    if whole > first {
        head.resize(usize::try_from(whole).unwrap_or(0), 0);
        reader
            .read_exact(&mut head[usize::try_from(first).unwrap_or(0)..])
            .map_err(Qcow2Error::Read)?;
    }
    parse(&head, file_len)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn need(head: &[u8], needed: u32, what: &'static str, len: u64) -> Result<(), Qcow2Error> {
    if (head.len() as u64) < u64::from(needed) {
        return Err(Qcow2Error::Truncated {
            what,
            needed: u64::from(needed),
            len,
        });
    }
    Ok(())
}

/// Checks magic, version and cluster bits; returns the cluster bits.
fn check_prefix(head: &[u8], len: u64) -> Result<u32, Qcow2Error> {
    need(head, 4, "the magic", len)?;
    if head[..4] != MAGIC {
        return Err(Qcow2Error::BadMagic {
            found: hex::encode(&head[..4]),
        });
    }
    need(head, V2_HEADER_LEN, "the header", len)?;
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(Qcow2Error::UnsupportedVersion { version });
    }
    let cluster_bits = be32(head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(Qcow2Error::BadClusterBits { cluster_bits });
    }
    Ok(cluster_bits)
}

/// Parses the first cluster of an image (`head`, shorter when the file is) of `len` bytes.
pub(crate) fn parse(head: &[u8], len: u64) -> Result<Qcow2Header, Qcow2Error> {
    let cluster_bits = check_prefix(head, len)?;
    let cluster_size = 1u64 << cluster_bits;
    let version = be32(head, 4);
    let backing_file_offset = be64(head, 8);
    let backing_file_size = be32(head, 16);
    let virtual_size = be64(head, 24);
    let crypt_method = be32(head, 32);
    let l1_size = be32(head, 36);
    let l1_table_offset = be64(head, 40);
    let refcount_table_offset = be64(head, 48);
    let refcount_table_clusters = be32(head, 56);
    let nb_snapshots = be32(head, 60);
    let snapshots_offset = be64(head, 64);

    let (incompatible_features, compatible_features, autoclear_features);
    let (refcount_order, header_length, compression_type);
    if version == 3 {
        need(head, V3_MIN_HEADER_LEN, "the v3 header", len)?;
        incompatible_features = be64(head, 72);
        compatible_features = be64(head, 80);
        autoclear_features = be64(head, 88);
        refcount_order = be32(head, 96);
        header_length = be32(head, 100);
        if header_length < V3_MIN_HEADER_LEN {
            return Err(Qcow2Error::HeaderTooShort { header_length });
        }
        if u64::from(header_length) > cluster_size {
            return Err(Qcow2Error::HeaderTooLong {
                header_length,
                cluster_size,
            });
        }
        need(head, header_length, "the header", len)?;
        compression_type = if header_length > V3_MIN_HEADER_LEN {
            head[104]
        } else {
            0
        };
        if refcount_order > 6 {
            return Err(Qcow2Error::BadRefcountOrder { refcount_order });
        }
    } else {
        (
            incompatible_features,
            compatible_features,
            autoclear_features,
        ) = (0, 0, 0);
        (refcount_order, header_length, compression_type) = (4, V2_HEADER_LEN, 0);
    }

    let unknown = incompatible_features & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(Qcow2Error::UnknownIncompatibleFeatures { bits: unknown });
    }
    if crypt_method != 0 {
        return Err(Qcow2Error::Encrypted { crypt_method });
    }
    if virtual_size == 0 {
        return Err(Qcow2Error::ZeroVirtualSize);
    }
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(Qcow2Error::VirtualSizeTooLarge {
            size: virtual_size,
            max: MAX_VIRTUAL_SIZE,
        });
    }

    // L1 table.
    let l1_bytes = u64::from(l1_size) * 8;
    if l1_bytes > MAX_L1_BYTES {
        return Err(Qcow2Error::TableTooLarge {
            table: "L1 table",
            bytes: l1_bytes,
            max: MAX_L1_BYTES,
        });
    }
    check_aligned("L1 table", l1_table_offset, cluster_size)?;
    let extended_l2 = incompatible_features & INCOMPAT_EXTENDED_L2 != 0;
    let needed = l1_entries_for(virtual_size, cluster_bits, extended_l2);
    if u64::from(l1_size) < needed {
        return Err(Qcow2Error::L1TooSmall {
            l1_size,
            needed,
            virtual_size,
        });
    }
    check_in_file("L1 table", l1_table_offset, l1_bytes, len)?;

    // Refcount table.
    let refcount_bytes = u64::from(refcount_table_clusters) * cluster_size;
    if refcount_bytes > MAX_REFCOUNT_TABLE_BYTES {
        return Err(Qcow2Error::TableTooLarge {
            table: "Refcount table",
            bytes: refcount_bytes,
            max: MAX_REFCOUNT_TABLE_BYTES,
        });
    }
    check_aligned("Refcount table", refcount_table_offset, cluster_size)?;
    check_in_file("Refcount table", refcount_table_offset, refcount_bytes, len)?;
    if nb_snapshots > 0 {
        check_aligned("Snapshot table", snapshots_offset, cluster_size)?;
    }

    // Backing file name: within the first cluster, at most 1023 bytes.
    let backing_file = if backing_file_offset != 0 {
        if backing_file_size > MAX_BACKING_FILE_NAME {
            return Err(Qcow2Error::BackingNameTooLong {
                size: u64::from(backing_file_size),
            });
        }
        let end = backing_file_offset.saturating_add(u64::from(backing_file_size));
        if end > head.len() as u64 {
            return Err(Qcow2Error::OutOfBounds {
                what: "Backing file name",
                offset: backing_file_offset,
                size: u64::from(backing_file_size),
                limit: head.len() as u64,
            });
        }
        let name = &head[usize::try_from(backing_file_offset).unwrap_or(0)..end as usize];
        Some(
            String::from_utf8(name.to_vec()).map_err(|_| Qcow2Error::NotUtf8 {
                what: "backing file name",
            })?,
        )
    } else {
        None
    };

    // Extensions: from the end of the header to the backing file name or the cluster's end.
    let ext_start = header_length as usize;
    let ext_end = if backing_file_offset != 0 {
        usize::try_from(backing_file_offset).map_or(head.len(), |o| o.min(head.len()))
    } else {
        head.len()
    };
    let ext = if ext_start < ext_end {
        extension::parse(&head[ext_start..ext_end], ext_start as u64)?
    } else {
        extension::Extensions::default()
    };

    Ok(Qcow2Header {
        version,
        cluster_bits,
        virtual_size,
        backing_file,
        backing_format: ext.backing_format,
        incompatible_features,
        compatible_features,
        autoclear_features,
        external_data_file: ext.external_data_file,
        crypt_method,
        refcount_order,
        header_length,
        compression_type,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
        feature_names: ext.feature_names,
        extensions: ext.types,
    })
}

fn check_aligned(table: &'static str, offset: u64, cluster_size: u64) -> Result<(), Qcow2Error> {
    if !offset.is_multiple_of(cluster_size) {
        return Err(Qcow2Error::Misaligned {
            table,
            offset,
            cluster_size,
        });
    }
    Ok(())
}

fn check_in_file(what: &'static str, offset: u64, size: u64, len: u64) -> Result<(), Qcow2Error> {
    if size > 0 && offset.checked_add(size).is_none_or(|end| end > len) {
        return Err(Qcow2Error::OutOfBounds {
            what,
            offset,
            size,
            limit: len,
        });
    }
    Ok(())
}

/// Serialises `h` as a v3 header of 112 bytes followed by its extensions (backing format,
/// external data file name, end marker) and the backing file name. The offsets and sizes of
/// the backing file name and the header length are computed; `extensions` and
/// `feature_names` are ignored.
pub(crate) fn encode_v3(h: &Qcow2Header) -> Result<Vec<u8>, Qcow2Error> {
    let mut out = vec![0u8; V3_HEADER_LEN as usize];
    let put32 = |out: &mut Vec<u8>, at: usize, v: u32| {
        out[at..at + 4].copy_from_slice(&v.to_be_bytes());
    };
    out[..4].copy_from_slice(&MAGIC);
    put32(&mut out, 4, 3);
    put32(&mut out, 20, h.cluster_bits);
    put32(&mut out, 32, h.crypt_method);
    put32(&mut out, 36, h.l1_size);
    put32(&mut out, 56, h.refcount_table_clusters);
    put32(&mut out, 60, h.nb_snapshots);
    put32(&mut out, 96, h.refcount_order);
    put32(&mut out, 100, V3_HEADER_LEN);
    for (at, v) in [
        (24, h.virtual_size),
        (40, h.l1_table_offset),
        (48, h.refcount_table_offset),
        (64, h.snapshots_offset),
        (72, h.incompatible_features),
        (80, h.compatible_features),
        (88, h.autoclear_features),
    ] {
        out[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }
    out[104] = h.compression_type;

    if let Some(format) = &h.backing_format {
        extension::encode(&mut out, EXT_BACKING_FORMAT, format.as_bytes());
    }
    if let Some(data_file) = &h.external_data_file {
        extension::encode(&mut out, EXT_EXTERNAL_DATA_FILE, data_file.as_bytes());
    }
    extension::encode_end(&mut out);

    if let Some(name) = &h.backing_file {
        let size = name.len() as u64;
        if size > u64::from(MAX_BACKING_FILE_NAME) {
            return Err(Qcow2Error::BackingNameTooLong { size });
        }
        let offset = out.len() as u64;
        out[8..16].copy_from_slice(&offset.to_be_bytes());
        // At most 1023, checked above.
        put32(&mut out, 16, size as u32);
        out.extend_from_slice(name.as_bytes());
    }
    let cluster_size = 1u64 << h.cluster_bits;
    if out.len() as u64 > cluster_size {
        return Err(Qcow2Error::OutOfBounds {
            what: "Header and extensions",
            offset: 0,
            size: out.len() as u64,
            limit: cluster_size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{qemu_img, synthetic_image};
    use super::super::{FeatureKind, EXT_FEATURE_TABLE};
    use super::*;
    use std::fs::File;
    use std::io::Cursor;

    fn parse_bytes(bytes: &[u8]) -> Result<Qcow2Header, Qcow2Error> {
        read_header(&mut Cursor::new(bytes))
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    fn open(path: &std::path::Path) -> Qcow2Header {
        read_header(&mut File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn qemu_v3_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v3.qcow2");
        qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "1G"]);
        let h = open(&img);
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.virtual_size, 1 << 30);
        assert_eq!(h.backing_file, None);
        assert_eq!(h.backing_format, None);
        assert_eq!(h.external_data_file, None);
        assert!(!h.has_external_data_file() && !h.is_corrupt() && !h.is_dirty());
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.header_length, 112);
        assert_eq!(h.l1_size, 2);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!(h.refcount_table_offset, 0x10000);
        assert_eq!(h.refcount_table_clusters, 1);
        assert!(h.extensions.contains(&EXT_FEATURE_TABLE));
        assert!(
            h.feature_names
                .iter()
                .any(|f| f.kind == FeatureKind::Incompatible
                    && f.bit == 1
                    && f.name == "corrupt bit"),
            "{:?}",
            h.feature_names
        );
    }

    #[test]
    fn qemu_v2_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v2.qcow2");
        let path = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", "-o", "compat=0.10", path, "10M"]);
        let h = open(&img);
        assert_eq!(h.version, 2);
        assert_eq!(h.header_length, 72);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.virtual_size, 10 << 20);
        assert_eq!(h.incompatible_features, 0);
        assert_eq!(h.backing_file, None);
    }

    #[test]
    fn qemu_v2_image_with_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let img = dir.path().join("v2.qcow2");
        qemu_img(&["create", "-f", "raw", base.to_str().unwrap(), "4M"]);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "raw",
            img.to_str().unwrap(),
        ]);
        let h = open(&img);
        assert_eq!(h.version, 2);
        assert_eq!(h.backing_file.as_deref(), base.to_str());
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        assert_eq!(h.virtual_size, 4 << 20);
    }

    #[test]
    fn qemu_v3_image_with_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let img = dir.path().join("top.qcow2");
        qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
        // A relative name, stored as given.
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            img.to_str().unwrap(),
            "128M",
        ]);
        let h = open(&img);
        assert_eq!(h.backing_file.as_deref(), Some("base.qcow2"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.virtual_size, 128 << 20);
        assert!(h.extensions.contains(&EXT_BACKING_FORMAT));
    }

    #[test]
    fn qemu_image_with_external_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.raw");
        let img = dir.path().join("meta.qcow2");
        let opt = format!("data_file={}", data.display());
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            &opt,
            img.to_str().unwrap(),
            "8M",
        ]);
        let h = open(&img);
        assert!(h.has_external_data_file());
        assert_ne!(h.incompatible_features & INCOMPAT_EXTERNAL_DATA_FILE, 0);
        assert_eq!(h.external_data_file.as_deref(), data.to_str());
        assert!(h.extensions.contains(&EXT_EXTERNAL_DATA_FILE));
    }

    #[test]
    fn small_clusters_and_extended_l2() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.qcow2");
        let path = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=16384,extended_l2=on",
            path,
            "100M",
        ]);
        let h = open(&img);
        assert_eq!(h.cluster_bits, 14);
        assert_ne!(h.incompatible_features & INCOMPAT_EXTENDED_L2, 0);
        assert_eq!(h.virtual_size, 100 << 20);
    }

    #[test]
    fn encode_then_parse_roundtrips() {
        let img = synthetic_image(Some("/base/ubuntu.qcow2"), 3 << 30);
        let h = parse_bytes(&img).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.virtual_size, 3 << 30);
        assert_eq!(h.backing_file.as_deref(), Some("/base/ubuntu.qcow2"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.l1_size, 6);
        assert_eq!(h.extensions, vec![EXT_BACKING_FORMAT]);
        let again = encode_v3(&h).unwrap();
        assert_eq!(again[..], img[..again.len()]);
    }

    #[test]
    fn truncated_files_are_refused() {
        let img = synthetic_image(None, 1 << 20);
        for (cut, needed) in [(0, 4), (3, 4), (4, 72), (71, 72), (72, 104), (103, 104)] {
            match parse_bytes(&img[..cut]) {
                Err(Qcow2Error::Truncated { needed: n, len, .. }) => {
                    assert_eq!((n, len), (needed, cut as u64), "cut at {cut}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // The header is whole but the L1 table is cut off.
        let err = parse_bytes(&img[..0x30000]).unwrap_err();
        assert!(
            matches!(
                err,
                Qcow2Error::OutOfBounds {
                    what: "L1 table",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "L1 table at 0x30000+8 lies outside the 196608 bytes available"
        );
    }

    #[test]
    fn bad_magic() {
        let mut img = synthetic_image(None, 1 << 20);
        img[..4].copy_from_slice(b"KDMV");
        let err = parse_bytes(&img).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Bad qcow2 magic 4b444d56, expected 514649fb"
        );
    }

    #[test]
    fn bad_version() {
        let mut img = synthetic_image(None, 1 << 20);
        for v in [0, 1, 4] {
            put32(&mut img, 4, v);
            let err = parse_bytes(&img).unwrap_err();
            assert!(matches!(err, Qcow2Error::UnsupportedVersion { version } if version == v));
        }
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Unsupported qcow2 version 4, expected 2 or 3"
        );
    }

    #[test]
    fn bad_cluster_bits() {
        let mut img = synthetic_image(None, 1 << 20);
        for bits in [0, 8, 22, 64] {
            put32(&mut img, 20, bits);
            let err = parse_bytes(&img).unwrap_err();
            assert!(
                matches!(err, Qcow2Error::BadClusterBits { cluster_bits } if cluster_bits == bits)
            );
        }
    }

    #[test]
    fn bad_header_length() {
        let mut img = synthetic_image(None, 1 << 20);
        put32(&mut img, 100, 96);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Header length 96 is too small, the minimum is 104"
        );
        put32(&mut img, 100, 65537);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Header length 65537 exceeds the cluster size 65536"
        );
    }

    #[test]
    fn minimal_v3_header_of_104_bytes() {
        // header_length 104: no compression type byte; extensions start right after.
        let mut img = synthetic_image(None, 1 << 20);
        put32(&mut img, 100, 104);
        let mut ext = Vec::new();
        extension::encode(&mut ext, EXT_BACKING_FORMAT, b"raw");
        extension::encode_end(&mut ext);
        img[104..104 + ext.len()].copy_from_slice(&ext);
        let h = parse_bytes(&img).unwrap();
        assert_eq!((h.header_length, h.compression_type), (104, 0));
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        assert_eq!(h.extensions, vec![EXT_BACKING_FORMAT]);
    }

    #[test]
    fn bad_refcount_order() {
        let mut img = synthetic_image(None, 1 << 20);
        put32(&mut img, 96, 7);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::BadRefcountOrder { refcount_order: 7 })
        ));
    }

    #[test]
    fn huge_backing_file_size() {
        let mut img = synthetic_image(Some("/b"), 1 << 20);
        put32(&mut img, 16, 0x7fff_ffff);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Backing file name of 2147483647 bytes exceeds the maximum of 1023"
        );
        put32(&mut img, 16, 1024);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::BackingNameTooLong { size: 1024 })
        ));
    }

    #[test]
    fn backing_file_outside_the_file() {
        let mut img = synthetic_image(Some("/b"), 1 << 20);
        // Past the first cluster.
        put64(&mut img, 8, 0x10000 - 1);
        put32(&mut img, 16, 2);
        let err = parse_bytes(&img).unwrap_err();
        assert!(
            matches!(
                err,
                Qcow2Error::OutOfBounds {
                    what: "Backing file name",
                    limit: 65536,
                    ..
                }
            ),
            "{err:?}"
        );
        // Past the end of the file.
        put64(&mut img, 8, u64::MAX - 1);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::OutOfBounds {
                what: "Backing file name",
                ..
            })
        ));
        // A short file: the name must lie within it, not just within the cluster.
        let mut short = synthetic_image(None, 1 << 20);
        short.truncate(0x30000 + 8);
        put64(&mut short, 8, 0x40000);
        put32(&mut short, 16, 10);
        assert!(matches!(
            parse_bytes(&short),
            Err(Qcow2Error::OutOfBounds {
                what: "Backing file name",
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_backing_file_name() {
        let mut img = synthetic_image(Some("/b"), 1 << 20);
        let at = usize::try_from(be64(&img, 8)).unwrap();
        img[at + 1] = 0xff;
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::NotUtf8 {
                what: "backing file name"
            })
        ));
    }

    #[test]
    fn unknown_incompatible_features() {
        let mut img = synthetic_image(None, 1 << 20);
        put64(&mut img, 72, INCOMPAT_DIRTY | 1 << 5 | 1 << 63);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Unknown incompatible feature bits 0x8000000000000020"
        );
        // Known bits parse.
        put64(&mut img, 72, INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
        let h = parse_bytes(&img).unwrap();
        assert!(h.is_dirty() && h.is_corrupt());
    }

    #[test]
    fn encrypted() {
        let mut img = synthetic_image(None, 1 << 20);
        put32(&mut img, 32, 2);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Encrypted qcow2 image (crypt_method 2) is not supported"
        );
    }

    #[test]
    fn virtual_size_zero_or_absurd() {
        let mut img = synthetic_image(None, 1 << 20);
        put64(&mut img, 24, 0);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::ZeroVirtualSize)
        ));
        put64(&mut img, 24, (1 << 62) + 1);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "Virtual size 4611686018427387905 exceeds the maximum 4611686018427387904"
        );
    }

    #[test]
    fn l1_table_checks() {
        let base = synthetic_image(None, 1 << 20);
        let mut img = base.clone();
        put64(&mut img, 40, 0x30200);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "L1 table offset 0x30200 is not aligned to the cluster size 65536"
        );
        let mut img = base.clone();
        put32(&mut img, 36, 0x0400_0001);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::TableTooLarge {
                table: "L1 table",
                ..
            })
        ));
        let mut img = base.clone();
        put64(&mut img, 24, 2 << 30);
        assert_eq!(
            parse_bytes(&img).unwrap_err().to_string(),
            "L1 table has 1 entries, 4 are needed for virtual size 2147483648"
        );
        let mut img = base.clone();
        put64(&mut img, 40, 1 << 62);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::OutOfBounds {
                what: "L1 table",
                ..
            })
        ));
        let mut img = base;
        put64(&mut img, 40, !0xffff);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::OutOfBounds {
                what: "L1 table",
                ..
            })
        ));
    }

    #[test]
    fn refcount_table_checks() {
        let base = synthetic_image(None, 1 << 20);
        let mut img = base.clone();
        put64(&mut img, 48, 0x10008);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::Misaligned {
                table: "Refcount table",
                ..
            })
        ));
        let mut img = base;
        put32(&mut img, 56, 1000);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::TableTooLarge {
                table: "Refcount table",
                ..
            })
        ));
    }

    #[test]
    fn extension_past_the_backing_name_is_refused() {
        let mut img = synthetic_image(Some("/base.qcow2"), 1 << 20);
        // The backing format extension claims 200 bytes, running into the backing name.
        put32(&mut img, 112 + 4, 200);
        assert!(matches!(
            parse_bytes(&img),
            Err(Qcow2Error::OutOfBounds {
                what: "header extension",
                ..
            })
        ));
    }
}
