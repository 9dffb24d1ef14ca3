//! Images: the node's glance cache.
//!
//! * `qcow2/` — the qcow2 format, split by structure: header parsing and validation, and
//!   native creation of copy-on-write overlays over a cached base image.
//! * `inspect.rs` — safety inspection of uploaded disk images of every accepted format before
//!   anything else (qemu-img included) reads them.

pub mod inspect;
pub mod qcow2;
