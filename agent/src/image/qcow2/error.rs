//! The one error type of the qcow2 module.

use std::path::PathBuf;

/// Why a qcow2 header was refused or an overlay could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// Reading the image failed.
    #[error("Cannot read the qcow2 image")]
    Read(#[source] std::io::Error),
    /// The file ends before the structure being read.
    #[error("Truncated qcow2 image: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed from the start of the file.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// The first four bytes are not `QFI\xfb`.
    #[error("Bad qcow2 magic {found}, expected 514649fb")]
    BadMagic {
        /// The bytes found, in hex.
        found: String,
    },
    /// Only versions 2 and 3 exist.
    #[error("Unsupported qcow2 version {version}, expected 2 or 3")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// Clusters must be 512 B..2 MiB.
    #[error("Invalid cluster_bits {cluster_bits}, expected 9..=21")]
    BadClusterBits {
        /// The value found.
        cluster_bits: u32,
    },
    /// A v3 header is at least 104 bytes.
    #[error("Header length {header_length} is too small, the minimum is 104")]
    HeaderTooShort {
        /// The value found.
        header_length: u32,
    },
    /// The header must fit in the first cluster.
    #[error("Header length {header_length} exceeds the cluster size {cluster_size}")]
    HeaderTooLong {
        /// The value found.
        header_length: u32,
        /// The cluster size.
        cluster_size: u64,
    },
    /// Refcounts are 1..64 bits wide.
    #[error("Invalid refcount_order {refcount_order}, expected 0..=6 (4 for v2)")]
    BadRefcountOrder {
        /// The value found.
        refcount_order: u32,
    },
    /// Incompatible feature bits this module does not know: the image cannot be read safely.
    #[error("Unknown incompatible feature bits {bits:#x}")]
    UnknownIncompatibleFeatures {
        /// The unknown bits.
        bits: u64,
    },
    /// The image uses QEMU's built-in encryption.
    #[error("Encrypted qcow2 image (crypt_method {crypt_method}) is not supported")]
    Encrypted {
        /// 1 = AES, 2 = LUKS.
        crypt_method: u32,
    },
    /// A virtual size of zero.
    #[error("Virtual size is 0")]
    ZeroVirtualSize,
    /// A virtual size beyond what the agent handles.
    #[error("Virtual size {size} exceeds the maximum {max}")]
    VirtualSizeTooLarge {
        /// The size asked for or found.
        size: u64,
        /// The maximum.
        max: u64,
    },
    /// A table offset that is not a multiple of the cluster size.
    #[error("{table} offset {offset:#x} is not aligned to the cluster size {cluster_size}")]
    Misaligned {
        /// Which table.
        table: &'static str,
        /// The offset found.
        offset: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// A table larger than QEMU accepts.
    #[error("{table} of {bytes} bytes exceeds the limit of {max} bytes")]
    TableTooLarge {
        /// Which table.
        table: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The L1 table cannot map the whole virtual size.
    #[error("L1 table has {l1_size} entries, {needed} are needed for virtual size {virtual_size}")]
    L1TooSmall {
        /// Entries present.
        l1_size: u32,
        /// Entries needed.
        needed: u64,
        /// The virtual size.
        virtual_size: u64,
    },
    /// A structure that lies (partly) outside the file or the first cluster.
    #[error("{what} at {offset:#x}+{size} lies outside the {limit} bytes available")]
    OutOfBounds {
        /// What it is.
        what: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        size: u64,
        /// How far it could reach.
        limit: u64,
    },
    /// QEMU refuses backing file names over 1023 bytes.
    #[error("Backing file name of {size} bytes exceeds the maximum of 1023")]
    BackingNameTooLong {
        /// The length.
        size: u64,
    },
    /// The backing format extension is longer than any format name.
    #[error("Backing format name of {len} bytes is too long (at most 15)")]
    BackingFormatTooLong {
        /// The length.
        len: u32,
    },
    /// A name (backing file, format, data file) that is not UTF-8.
    #[error("The {what} is not valid UTF-8")]
    NotUtf8 {
        /// Which name.
        what: &'static str,
    },
    /// An overlay may only sit over the formats the image cache produces.
    #[error("Unsupported backing format \"{format}\", expected \"qcow2\" or \"raw\"")]
    UnsupportedBackingFormat {
        /// The format asked for.
        format: String,
    },
    /// Virtual sizes are whole 512-byte sectors.
    #[error("Virtual size {size} is not a multiple of 512")]
    UnalignedVirtualSize {
        /// The size asked for.
        size: u64,
    },
    /// An overlay must show all of its backing image.
    #[error("Overlay size {size} is smaller than the backing image size {backing_size}")]
    SmallerThanBacking {
        /// The size asked for.
        size: u64,
        /// The backing image's virtual size.
        backing_size: u64,
    },
    /// The backing image could not be opened or measured.
    #[error("Cannot open the backing image {path}")]
    BackingOpen {
        /// The backing path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backing image is not a valid qcow2 file.
    #[error("Invalid qcow2 backing image {path}")]
    BackingHeader {
        /// The backing path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<Qcow2Error>,
    },
    /// The overlay file already exists (it is never overwritten).
    #[error("{path} already exists")]
    AlreadyExists {
        /// The overlay path.
        path: PathBuf,
    },
    /// Creating, writing or syncing the overlay failed (the partial file is removed).
    #[error("Cannot write the overlay {path}")]
    Write {
        /// The overlay path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
