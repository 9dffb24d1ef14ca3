//! Images: the node's glance cache.
//!
//! * `cache.rs` — the content-addressed store of uploaded bytes (single flight per checksum).
//! * `qcow2/` — the qcow2 format, split by structure: header parsing and validation, and
//!   native creation of copy-on-write overlays over a cached base image.
//! * `inspect.rs` — safety inspection of uploaded disk images of every accepted format before
//!   anything else (qemu-img included) reads them.

mod cache;
pub mod inspect;
pub mod qcow2;
pub mod qemu_img;

pub use cache::{Blob, CacheLimits, ImageCache, Received};

/// Errors of the image cache.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The upload is not a safe image of its declared format.
    #[error("The image was refused: {0}")]
    Unsafe(#[source] inspect::InspectError),
    /// The upload is larger than allowed.
    #[error("The upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// The client's upload stream failed.
    #[error("The upload failed: {0}")]
    Upload(String),
    /// Conversion with qemu-img failed.
    #[error("Conversion failed: {0}")]
    Convert(String),
    /// A root overlay could not be created.
    #[error("Cannot create the root overlay: {0}")]
    Overlay(String),
    /// A file operation failed.
    #[error("Image cache I/O failed: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
