//! What the first bytes of a file say it is.
//!
//! Besides the accepted formats, the signatures QEMU's own format probing recognises are
//! detected too, so that nothing QEMU would treat as a structured image passes as raw.

use super::le32;

/// The content kind found by [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// No known signature.
    Raw,
    /// `QFI\xfb`, version 2 or 3 (or anything newer: the header parser refuses it).
    Qcow2,
    /// `KDMV`: a VMDK sparse extent.
    VmdkSparse,
    /// A VMDK text descriptor.
    VmdkDescriptor,
    /// VirtualBox.
    Vdi,
    /// Hyper-V.
    Vhdx,
    /// Another format QEMU would probe: never accepted.
    Other(&'static str),
}

impl Content {
    /// For error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Content::Raw => "raw data",
            Content::Qcow2 => "qcow2",
            Content::VmdkSparse => "VMDK (sparse)",
            Content::VmdkDescriptor => "a VMDK descriptor file",
            Content::Vdi => "VDI",
            Content::Vhdx => "VHDX",
            Content::Other(name) => name,
        }
    }
}

/// The VDI signature, little-endian at offset 0x40.
pub(crate) const VDI_SIGNATURE: u32 = 0xbeda_107f;

/// Classifies `head`, the first (up to) 512 bytes of a file.
pub(crate) fn detect(head: &[u8]) -> Content {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"QFI\xfb") {
        // qcow (v1) shares the magic.
        return if head.len() >= 8 && head[4..8] == [0, 0, 0, 1] {
            Content::Other("qcow (version 1)")
        } else {
            Content::Qcow2
        };
    }
    if starts(b"KDMV") {
        return Content::VmdkSparse;
    }
    if starts(b"COWD") {
        return Content::Other("VMDK version 3 (COWD)");
    }
    if starts(b"vhdxfile") {
        return Content::Vhdx;
    }
    if head.len() >= 0x44 && le32(head, 0x40) == VDI_SIGNATURE {
        return Content::Vdi;
    }
    for (magic, name) in [
        (&b"QED\0"[..], "QED"),
        (b"conectix", "VHD"),
        (b"LUKS\xba\xbe", "LUKS"),
        (b"WithoutFreeSpace", "Parallels"),
        (b"WithouFreSpacExt", "Parallels"),
        (b"Bochs Virtual HD Image", "Bochs"),
        (b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
    ] {
        if starts(magic) {
            return Content::Other(name);
        }
    }
    if is_vmdk_descriptor(head) {
        return Content::VmdkDescriptor;
    }
    Content::Raw
}

/// A VMDK text descriptor: the usual first line, or (as QEMU probes it) a `version=N` line
/// after only comments and blank lines.
fn is_vmdk_descriptor(head: &[u8]) -> bool {
    if head.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    for line in head.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        return matches!(line, b"version=1" | b"version=2" | b"version=3");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), Content::Qcow2);
        assert_eq!(detect(b"QFI\xfb\0\0\0\x02"), Content::Qcow2);
        assert_eq!(detect(b"QFI\xfb"), Content::Qcow2);
        assert_eq!(
            detect(b"QFI\xfb\0\0\0\x01"),
            Content::Other("qcow (version 1)")
        );
        assert_eq!(detect(b"KDMV\x01\0\0\0"), Content::VmdkSparse);
        assert_eq!(detect(b"vhdxfile\0\0"), Content::Vhdx);
        let mut vdi = vec![0u8; 0x200];
        vdi[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        assert_eq!(detect(&vdi), Content::Vdi);
        assert_eq!(detect(&vdi[..0x43]), Content::Raw);
        assert_eq!(detect(b"QED\0...."), Content::Other("QED"));
        assert_eq!(detect(b""), Content::Raw);
        assert_eq!(detect(&[0u8; 512]), Content::Raw);
        assert_eq!(detect(b"\xeb\x63\x90 boot sector"), Content::Raw);
    }

    #[test]
    fn vmdk_descriptors() {
        assert_eq!(
            detect(b"# Disk DescriptorFile\nversion=1\n"),
            Content::VmdkDescriptor
        );
        assert_eq!(
            detect(b"# some comment\n\n   \r\nversion=2\r\nCID=fffffffe\n"),
            Content::VmdkDescriptor
        );
        assert_eq!(detect(b"version=3\n"), Content::VmdkDescriptor);
        assert_eq!(detect(b"# comment\nhello\nversion=1\n"), Content::Raw);
        assert_eq!(detect(b"version=4\n"), Content::Raw);
    }
}
