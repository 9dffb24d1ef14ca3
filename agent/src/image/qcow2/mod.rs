//! qcow2, natively: header parsing with validation, and copy-on-write overlay creation.
//!
//! qcow2 is QEMU's native image format (spec: `docs/interop/qcow2.txt` in QEMU). All numbers
//! on disk are big-endian. A file is a sequence of clusters (`1 << cluster_bits` bytes):
//!
//! ```text
//! cluster 0   header (72 bytes for v2, `header_length` for v3), header extensions,
//!             the backing file name
//! cluster 1   refcount table: one 64-bit offset per refcount block
//! cluster 2   refcount block: one 2^refcount_order-bit count per cluster of the file
//! cluster 3.. L1 table: one 64-bit offset per L2 table (0 = unallocated: read the backing)
//! ```
//!
//! This module is split by structure:
//!
//! * `header.rs` — the fixed header: [`read_header`] parses and validates it, and a v3 encoder
//!   serves overlay creation;
//! * `extension.rs` — the header extensions (backing format, external data file, feature
//!   name table);
//! * `table.rs` — L1/L2 geometry and the refcount table and block;
//! * `overlay.rs` — [`create_overlay`], which writes a new, empty overlay over a cached base
//!   image without forking `qemu-img`.
//!
//! # Example
//!
//! ```no_run
//! use hyperlet::image::qcow2::{create_overlay, read_header};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let base = Path::new("/var/lib/hyperlet/images/ubuntu.qcow2");
//! let disk = Path::new("/var/lib/hyperlet/disks/vm-1.qcow2");
//! create_overlay(disk, base, "qcow2", 20 << 30)?;
//! let header = read_header(&mut std::fs::File::open(disk)?)?;
//! assert_eq!(header.backing_file.as_deref(), base.to_str());
//! # Ok(())
//! # }
//! ```

mod error;
mod extension;
mod header;
mod overlay;
mod table;

#[cfg(test)]
pub(crate) mod test_support;

pub use error::Qcow2Error;
pub use extension::{FeatureKind, FeatureName};
pub use header::{read_header, Qcow2Header};
pub use overlay::create_overlay;

/// The magic at offset 0 of every qcow2 file: `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bit 0: the refcounts may be stale (lazy refcounts in use).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: QEMU found corruption; the image must not be written.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_EXTERNAL_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// Incompatible feature bit 4: L2 entries are 128 bits (subclusters).
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible feature bit this module understands.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_EXTERNAL_DATA_FILE
    | INCOMPAT_COMPRESSION_TYPE
    | INCOMPAT_EXTENDED_L2;

/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Header extension type: end of the extension area.
pub const EXT_END: u32 = 0;
/// Header extension type: backing file format name (`qcow2`, `raw`, ...).
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension type: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension type: full disk encryption header pointer.
pub const EXT_CRYPTO_HEADER: u32 = 0x0537_be77;
/// Header extension type: external data file name (`DATA`).
pub const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;

/// The longest backing file name QEMU accepts, in bytes.
pub const MAX_BACKING_FILE_NAME: u32 = 1023;
/// The largest virtual size [`read_header`] accepts (2^62 bytes).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;
/// The largest L1 table QEMU opens, in bytes (32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The largest refcount table QEMU opens, in bytes (8 MiB).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
