//! Safety inspection of uploaded disk images, before anything else reads them.
//!
//! A disk image can point outside itself: a qcow2 backing file or external data file, a VMDK
//! descriptor's extents or parent, a VDI or VHDX parent. Handing such an upload to `qemu-img`
//! (or to a guest) makes QEMU open that host file — `/etc/shadow`, another tenant's disk, a
//! device — and copy it into an image the uploader can read back. A raw upload whose content
//! is really qcow2 is the classic variant: harmless while everyone passes `-f raw`, but the
//! first tool that probes the format follows its backing file.
//!
//! [`inspect`] reads only the upload's own bytes, with positional reads bounded by the file
//! length, and accepts it only when:
//!
//! * its content matches the declared [`DiskFormat`] (magic numbers of raw, qcow2, VMDK, VDI,
//!   VHDX, and of other formats QEMU would probe: QED, VHD, LUKS, Parallels, Bochs, cloop);
//! * **qcow2**: the header is valid ([`crate::image::qcow2::read_header`]) and names no backing
//!   file, no external data file, is not encrypted and not marked corrupt;
//! * **VMDK**: a single sparse file (`KDMV`) with an embedded descriptor whose `createType` is
//!   `monolithicSparse` or `streamOptimized`, with no parent (`parentCID` `ffffffff`, no
//!   `parentFileNameHint`) and exactly one `SPARSE` extent naming a bare file name (the image
//!   itself). Text descriptor files are refused: their extents are other files;
//! * **VDI**: version 1.1, a normal or fixed image (not differencing or undo), no parent or
//!   link UUID;
//! * **VHDX**: a valid current header (CRC-32C), no log to replay, a valid region table, no
//!   unknown required region or metadata item, no parent (neither the `HasParent` file
//!   parameter nor a parent locator);
//! * **raw**: anything without a known signature; its virtual size is the file length;
//!
//! and its virtual size is at most the caller's limit.
//!
//! # How the agent must call `qemu-img` afterwards
//!
//! Inspection only protects the calls made on its terms:
//!
//! * inspect first, on the complete upload, in a directory only the agent can write (so the
//!   bytes cannot change between inspection and use);
//! * always pass the inspected format explicitly, `-f <format>` (and `-F` for a backing
//!   format): never let `qemu-img` probe;
//! * always pass an absolute plain path (starting with `/`): never a `json:` pseudo-path or a
//!   `protocol:` prefix, which `qemu-img` would interpret;
//! * for example `qemu-img convert -f vmdk -O qcow2 /var/lib/hyperlet/uploads/u1 /…/base.qcow2`;
//! * and run it with a timeout and memory limits, since a valid image can still be expensive
//!   to parse.
//!
//! ```no_run
//! use hyperlet::image::inspect::{inspect, DiskFormat};
//! use std::path::Path;
//!
//! let upload = Path::new("/var/lib/hyperlet/uploads/3f2a.part");
//! match inspect(upload, DiskFormat::Qcow2, 2 << 40) {
//!     Ok(found) => println!("{} image of {} bytes", found.format, found.virtual_size),
//!     Err(refused) => eprintln!("{refused}"),
//! }
//! ```

mod detect;
mod qcow2;
mod vdi;
mod vhdx;
mod vmdk;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::image::qcow2::Qcow2Error;
use detect::Content;

/// The disk image formats the agent accepts for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw bytes, as the guest sees them.
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
    /// VMware sparse (monolithicSparse or streamOptimized).
    Vmdk,
    /// VirtualBox.
    Vdi,
    /// Hyper-V.
    Vhdx,
}

impl DiskFormat {
    /// Every accepted format.
    pub const ALL: [DiskFormat; 5] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Vdi,
        DiskFormat::Vhdx,
    ];

    /// The name, as in the API and as `qemu-img -f` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhdx => "vhdx",
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DiskFormat {
    type Err = InspectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| InspectError::UnknownFormat { name: s.to_owned() })
    }
}

/// What inspection found in an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    /// The format (always the declared one: a mismatch is refused).
    pub format: DiskFormat,
    /// The size of the disk the guest would see, in bytes.
    pub virtual_size: u64,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be opened.
    #[error("Cannot open {path}")]
    Open {
        /// The upload.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the file failed.
    #[error("Cannot read {path}")]
    Read {
        /// The upload.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A symlink, device, FIFO or directory.
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A zero-length upload.
    #[error("{path} is empty")]
    Empty {
        /// The upload.
        path: PathBuf,
    },
    /// A format name that is not one of [`DiskFormat::ALL`].
    #[error("Unknown disk format \"{name}\", expected raw, qcow2, vmdk, vdi or vhdx")]
    UnknownFormat {
        /// The name given.
        name: String,
    },
    /// The content is not of the declared format.
    #[error("Image declared {declared} but its content is {detected}; declare its real format")]
    FormatMismatch {
        /// The declared format.
        declared: DiskFormat,
        /// What the content is.
        detected: &'static str,
    },
    /// The file ends before a structure it declares.
    #[error("Truncated {format} image: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        /// The format.
        format: DiskFormat,
        /// The structure.
        what: &'static str,
        /// Bytes needed from the start of the file.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// A structure with invalid values.
    #[error("Malformed {format} image: {detail}")]
    Malformed {
        /// The format.
        format: DiskFormat,
        /// What is wrong.
        detail: String,
    },
    /// A valid image using a variant the agent does not accept.
    #[error("Unsupported {format} image: {detail}")]
    Unsupported {
        /// The format.
        format: DiskFormat,
        /// What is not supported.
        detail: String,
    },
    /// The qcow2 header was refused.
    #[error("Invalid qcow2 image")]
    Qcow2(#[source] Qcow2Error),
    /// The image names a backing (parent) file.
    #[error("{format} image names a backing file \"{name}\"; uploads must be self-contained")]
    BackingFile {
        /// The format.
        format: DiskFormat,
        /// The name it gives.
        name: String,
    },
    /// A qcow2 image whose data lives in another file.
    #[error("qcow2 image uses an external data file \"{name}\"; uploads must be self-contained")]
    ExternalDataFile {
        /// The name it gives (empty when only the feature bit is set).
        name: String,
    },
    /// The image is marked corrupt.
    #[error("{format} image is marked corrupt; repair it (qemu-img check -r all) before upload")]
    Corrupt {
        /// The format.
        format: DiskFormat,
    },
    /// A differencing (delta) image, whatever names its parent.
    #[error("{format} image is a differencing image ({detail}); uploads must be self-contained")]
    Differencing {
        /// The format.
        format: DiskFormat,
        /// What shows it.
        detail: String,
    },
    /// A VMDK text descriptor, whose extents are other files.
    #[error(
        "VMDK is a text descriptor naming separate extent files; upload a monolithicSparse or streamOptimized VMDK"
    )]
    VmdkDescriptorFile,
    /// A VMDK sparse extent without an embedded descriptor (one piece of a split image).
    #[error(
        "VMDK sparse file has no embedded descriptor; upload a monolithicSparse or streamOptimized VMDK"
    )]
    VmdkNoDescriptor,
    /// A VMDK of another create type.
    #[error(
        "VMDK createType \"{create_type}\" is not accepted; upload a monolithicSparse or streamOptimized VMDK"
    )]
    VmdkCreateType {
        /// The create type found (empty when missing).
        create_type: String,
    },
    /// A VMDK extent that is not the image itself.
    #[error("VMDK extent \"{extent}\" is not the image itself; uploads must be self-contained")]
    VmdkExtent {
        /// The extent line.
        extent: String,
    },
    /// A VHDX log must be replayed, which would rewrite metadata after inspection.
    #[error("VHDX image has a log to replay; open and close it read-write (Hyper-V or qemu-img check -r all) before upload")]
    VhdxLog,
    /// The virtual size exceeds the limit.
    #[error("Virtual size {virtual_size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The image's virtual size.
        virtual_size: u64,
        /// The limit.
        max: u64,
    },
}

/// Inspects the image at `path`, declared as `declared`, and returns its virtual size.
///
/// The file is opened read-only without following symlinks and must be a regular file. Only
/// its own bytes are read. See the module documentation for what each format must satisfy.
///
/// # Errors
///
/// [`InspectError::Open`], [`InspectError::Read`], [`InspectError::NotRegularFile`] or
/// [`InspectError::Empty`] for the file itself; [`InspectError::FormatMismatch`] when the
/// content is not the declared format; [`InspectError::BackingFile`],
/// [`InspectError::ExternalDataFile`], [`InspectError::Differencing`],
/// [`InspectError::VmdkDescriptorFile`], [`InspectError::VmdkExtent`] and the other variants
/// when the image points outside itself or is invalid; [`InspectError::TooLarge`] when its
/// virtual size exceeds `max_virtual_size`.
pub fn inspect(
    path: &Path,
    declared: DiskFormat,
    max_virtual_size: u64,
) -> Result<Inspection, InspectError> {
    let src = Source::open(path)?;
    let head = src.read(declared, "the format signature", 0, src.len.min(512))?;
    let content = detect::detect(&head);
    let virtual_size = match (declared, content) {
        (DiskFormat::Raw, Content::Raw) => src.len,
        (DiskFormat::Qcow2, Content::Qcow2) => qcow2::inspect(&src)?,
        (DiskFormat::Vmdk, Content::VmdkSparse) => vmdk::inspect(&src)?,
        (DiskFormat::Vmdk, Content::VmdkDescriptor) => {
            return Err(InspectError::VmdkDescriptorFile)
        }
        (DiskFormat::Vdi, Content::Vdi) => vdi::inspect(&src)?,
        (DiskFormat::Vhdx, Content::Vhdx) => vhdx::inspect(&src)?,
        (declared, content) => {
            return Err(InspectError::FormatMismatch {
                declared,
                detected: content.describe(),
            });
        }
    };
    if virtual_size > max_virtual_size {
        return Err(InspectError::TooLarge {
            virtual_size,
            max: max_virtual_size,
        });
    }
    Ok(Inspection {
        format: declared,
        virtual_size,
    })
}

/// Reads of one upload, bounded by its length.
pub(crate) struct Source {
    file: File,
    len: u64,
    path: PathBuf,
}

/// The most any single structure read may take (the largest is a 1 MiB VMDK descriptor).
const MAX_READ: u64 = 4 << 20;

impl Source {
    fn open(path: &Path) -> Result<Self, InspectError> {
        let file = OpenOptions::new()
            .read(true)
            // No symlinks; never block opening a FIFO (refused below).
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::ELOOP) {
                    InspectError::NotRegularFile {
                        path: path.to_path_buf(),
                    }
                } else {
                    InspectError::Open {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        let meta = file.metadata().map_err(|source| InspectError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(InspectError::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() == 0 {
            return Err(InspectError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    /// Reads `size` bytes at `offset`, which must lie within the file.
    fn read(
        &self,
        format: DiskFormat,
        what: &'static str,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>, InspectError> {
        let end = offset.saturating_add(size);
        if end > self.len {
            return Err(InspectError::Truncated {
                format,
                what,
                needed: end,
                len: self.len,
            });
        }
        if size > MAX_READ {
            return Err(InspectError::Malformed {
                format,
                detail: format!("{what} of {size} bytes is larger than {MAX_READ}"),
            });
        }
        // Bounded by MAX_READ above.
        let mut buf = vec![0; size as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| InspectError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }
}

/// Little-endian field readers for the Intel-born formats (callers check lengths).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// See [`le16`].
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// See [`le16`].
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::qcow2::test_support::{qemu_img, qemu_io};

    pub(crate) const LIMIT: u64 = 1 << 40;

    /// Creates `name` in `dir` with `qemu-img create -f <format> [opts] <path> <size>`.
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        format: &str,
        opts: &[&str],
        size: &str,
    ) -> PathBuf {
        let path = dir.join(name);
        let mut args = vec!["create", "-f", format];
        args.extend_from_slice(opts);
        args.push(path.to_str().unwrap());
        if !size.is_empty() {
            args.push(size);
        }
        qemu_img(&args);
        path
    }

    /// Converts a raw image with data in it to `format` (with `-o opts`).
    pub(crate) fn convert(dir: &Path, name: &str, format: &str, opts: &str) -> PathBuf {
        let raw = dir.join(format!("{name}.src.raw"));
        qemu_img(&["create", "-f", "raw", raw.to_str().unwrap(), "24M"]);
        qemu_io(&[
            "-f",
            "raw",
            "-c",
            "write -P 0x42 1M 2M",
            raw.to_str().unwrap(),
        ]);
        let out = dir.join(name);
        let mut args = vec!["convert", "-f", "raw", "-O", format];
        if !opts.is_empty() {
            args.extend_from_slice(&["-o", opts]);
        }
        args.extend_from_slice(&[raw.to_str().unwrap(), out.to_str().unwrap()]);
        qemu_img(&args);
        out
    }

    #[test]
    fn format_names() {
        for f in DiskFormat::ALL {
            assert_eq!(f.as_str().parse::<DiskFormat>().unwrap(), f);
            assert_eq!(f.to_string(), f.as_str());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<DiskFormat>(&json).unwrap(), f);
        }
        let err = "qed".parse::<DiskFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unknown disk format \"qed\", expected raw, qcow2, vmdk, vdi or vhdx"
        );
        assert!("QCOW2".parse::<DiskFormat>().is_err());
    }

    #[test]
    fn every_format_is_accepted_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases = [
            (
                create(d, "a.raw", "raw", &[], "10M"),
                DiskFormat::Raw,
                10u64 << 20,
            ),
            (
                create(d, "v3.qcow2", "qcow2", &[], "1G"),
                DiskFormat::Qcow2,
                1 << 30,
            ),
            (
                create(d, "v2.qcow2", "qcow2", &["-o", "compat=0.10"], "20M"),
                DiskFormat::Qcow2,
                20 << 20,
            ),
            (
                convert(d, "c.qcow2", "qcow2", ""),
                DiskFormat::Qcow2,
                24 << 20,
            ),
            (
                create(
                    d,
                    "s.vmdk",
                    "vmdk",
                    &["-o", "subformat=monolithicSparse"],
                    "30M",
                ),
                DiskFormat::Vmdk,
                30 << 20,
            ),
            (
                create(
                    d,
                    "so.vmdk",
                    "vmdk",
                    &["-o", "subformat=streamOptimized"],
                    "40M",
                ),
                DiskFormat::Vmdk,
                40 << 20,
            ),
            (
                convert(d, "cso.vmdk", "vmdk", "subformat=streamOptimized"),
                DiskFormat::Vmdk,
                24 << 20,
            ),
            (
                convert(d, "cs.vmdk", "vmdk", ""),
                DiskFormat::Vmdk,
                24 << 20,
            ),
            (
                create(d, "a.vdi", "vdi", &[], "50M"),
                DiskFormat::Vdi,
                50 << 20,
            ),
            (
                create(d, "static.vdi", "vdi", &["-o", "static=on"], "8M"),
                DiskFormat::Vdi,
                8 << 20,
            ),
            (convert(d, "c.vdi", "vdi", ""), DiskFormat::Vdi, 24 << 20),
            (
                create(d, "a.vhdx", "vhdx", &[], "60M"),
                DiskFormat::Vhdx,
                60 << 20,
            ),
            (
                create(d, "fixed.vhdx", "vhdx", &["-o", "subformat=fixed"], "8M"),
                DiskFormat::Vhdx,
                8 << 20,
            ),
            (convert(d, "c.vhdx", "vhdx", ""), DiskFormat::Vhdx, 24 << 20),
        ];
        for (path, format, size) in cases {
            let found = inspect(&path, format, LIMIT)
                .unwrap_or_else(|e| panic!("{}: {e} ({e:?})", path.display()));
            assert_eq!(
                found,
                Inspection {
                    format,
                    virtual_size: size
                },
                "{}",
                path.display()
            );
            // Exactly at the limit is fine; one byte less is refused.
            inspect(&path, format, size).unwrap();
            let err = inspect(&path, format, size - 1).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "Virtual size {size} bytes exceeds the limit of {} bytes",
                    size - 1
                )
            );
        }
    }

    #[test]
    fn declared_format_must_match_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let qcow2 = create(d, "x.qcow2", "qcow2", &[], "1M");
        let raw = create(d, "x.raw", "raw", &[], "1M");
        let vmdk = create(d, "x.vmdk", "vmdk", &[], "1M");
        let vdi = create(d, "x.vdi", "vdi", &[], "1M");
        let vhdx = create(d, "x.vhdx", "vhdx", &[], "1M");
        // The classic: a qcow2 uploaded as raw.
        let err = inspect(&qcow2, DiskFormat::Raw, LIMIT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Image declared raw but its content is qcow2; declare its real format"
        );
        let err = inspect(&raw, DiskFormat::Qcow2, LIMIT).unwrap_err();
        assert!(
            matches!(
                err,
                InspectError::FormatMismatch {
                    declared: DiskFormat::Qcow2,
                    detected: "raw data"
                }
            ),
            "{err:?}"
        );
        for (path, content) in [
            (&qcow2, "qcow2"),
            (&vmdk, "VMDK (sparse)"),
            (&vdi, "VDI"),
            (&vhdx, "VHDX"),
        ] {
            for declared in DiskFormat::ALL {
                let Err(err) = inspect(path, declared, LIMIT) else {
                    continue;
                };
                assert!(
                    matches!(err, InspectError::FormatMismatch { declared: d, detected } if d == declared && detected == content),
                    "{} as {declared}: {err:?}",
                    path.display()
                );
            }
        }
        for declared in [
            DiskFormat::Qcow2,
            DiskFormat::Vmdk,
            DiskFormat::Vdi,
            DiskFormat::Vhdx,
        ] {
            assert!(matches!(
                inspect(&raw, declared, LIMIT),
                Err(InspectError::FormatMismatch { .. })
            ));
        }
    }

    #[test]
    fn other_formats_declared_raw_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (format, opts, detected) in [
            ("qed", vec![], "QED"),
            ("vpc", vec![], "VHD"),
            ("parallels", vec![], "Parallels"),
            ("qcow", vec![], "qcow (version 1)"),
        ] {
            let path = create(d, &format!("x.{format}"), format, &opts, "4M");
            let err = inspect(&path, DiskFormat::Raw, LIMIT).unwrap_err();
            assert!(
                matches!(err, InspectError::FormatMismatch { detected: found, .. } if found == detected),
                "{format}: {err:?}"
            );
        }
        let luks = d.join("x.luks");
        std::fs::write(&luks, b"LUKS\xba\xbe\0\x02 and more").unwrap();
        assert!(matches!(
            inspect(&luks, DiskFormat::Raw, LIMIT),
            Err(InspectError::FormatMismatch {
                detected: "LUKS",
                ..
            })
        ));
    }

    #[test]
    fn the_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let missing = d.join("missing");
        assert!(matches!(
            inspect(&missing, DiskFormat::Raw, LIMIT),
            Err(InspectError::Open { .. })
        ));
        let empty = d.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            inspect(&empty, DiskFormat::Raw, LIMIT),
            Err(InspectError::Empty { .. })
        ));
        assert!(matches!(
            inspect(d, DiskFormat::Raw, LIMIT),
            Err(InspectError::NotRegularFile { .. })
        ));
        let target = create(d, "t.raw", "raw", &[], "1M");
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = inspect(&link, DiskFormat::Raw, LIMIT).unwrap_err();
        assert!(
            matches!(err, InspectError::NotRegularFile { .. }),
            "{err:?}"
        );
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            inspect(&fifo, DiskFormat::Raw, LIMIT),
            Err(InspectError::NotRegularFile { .. })
        ));
        // A short raw file is fine.
        let tiny = d.join("tiny");
        std::fs::write(&tiny, b"x").unwrap();
        assert_eq!(
            inspect(&tiny, DiskFormat::Raw, LIMIT).unwrap().virtual_size,
            1
        );
    }
}
