//! Names the host accepts from a driver: NFS shares (`host:/export`) and file names inside a
//! share (one path component).

use super::VolumeError;

/// The longest file name accepted (NFS and Linux file systems allow 255 bytes).
const MAX_FILE_NAME: usize = 255;

/// An NFS export, `host:/path`, as written in a grant or asked for by a driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Share {
    text: String,
    host: String,
    export: String,
}

impl Share {
    /// Parses `host:/path`: a host name, IPv4 address or `[IPv6]` address, and an absolute
    /// export path without `..`, empty components, whitespace or control characters. A
    /// trailing `/` is dropped.
    ///
    /// # Errors
    /// [`VolumeError::InvalidShare`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, VolumeError> {
        let bad = |reason: &'static str| VolumeError::InvalidShare {
            share: text.to_owned(),
            reason,
        };
        let (host, export) = if let Some(rest) = text.strip_prefix('[') {
            let (addr, rest) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let export = rest
                .strip_prefix(':')
                .ok_or_else(|| bad("must be host:/path"))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("the bracketed host is not an IPv6 address"))?;
            (addr.to_owned(), export)
        } else {
            let (host, export) = text
                .split_once(':')
                .ok_or_else(|| bad("must be host:/path"))?;
            if host.is_empty()
                || host.len() > 253
                || host.starts_with('-')
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(bad("the host must be a host name or an IP address"));
            }
            (host.to_owned(), export)
        };
        if !export.starts_with('/') {
            return Err(bad("the export path must be absolute"));
        }
        let export = if export.len() > 1 {
            export.trim_end_matches('/')
        } else {
            export
        };
        if export.len() > 1024 {
            return Err(bad("the export path is too long"));
        }
        if export
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '\\')
        {
            return Err(bad(
                "the export path must not contain whitespace, control characters, ',' or '\\'",
            ));
        }
        if export.len() > 1
            && export[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(
                "the export path must not contain empty, '.' or '..' components",
            ));
        }
        let host_text = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Self {
            text: format!("{host_text}:{export}"),
            host,
            export: export.to_owned(),
        })
    }

    /// `host:/path`, normalised.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The server (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The export path, absolute.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The exported path of file `name` in this share.
    pub fn file_path(&self, name: &str) -> String {
        if self.export == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.export)
        }
    }

    /// The `nfs://` URL of file `name` in this share (QEMU's libnfs driver).
    pub fn url(&self, name: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("nfs://{host}{}", self.file_path(name))
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks a file name inside a share: one path component of `[A-Za-z0-9_+.-]`, at most 255
/// bytes, not starting with `.`.
///
/// # Errors
/// [`VolumeError::Escape`] for a name with `/` or `..` (it would leave the share),
/// [`VolumeError::InvalidName`] for any other malformed name.
pub fn check_file_name(name: &str) -> Result<(), VolumeError> {
    if name.contains('/') || name.contains("..") {
        return Err(VolumeError::Escape {
            what: "file",
            name: name.to_owned(),
            within: "its share",
        });
    }
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_FILE_NAME {
        Some("must be at most 255 bytes")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("must not start with '.' or '-'")
    } else if !has_portable_chars(name) {
        Some("only letters, digits and _ + . - are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(VolumeError::InvalidName {
            what: "file",
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Whether `name` uses only `[A-Za-z0-9_+.-]`, the characters file and LVM names share.
pub(crate) fn has_portable_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_normalise() {
        let s = Share::parse("127.0.0.1:/srv/nfs/abc/").unwrap();
        assert_eq!(s.as_str(), "127.0.0.1:/srv/nfs/abc");
        assert_eq!((s.host(), s.export()), ("127.0.0.1", "/srv/nfs/abc"));
        assert_eq!(s.file_path("volume-1"), "/srv/nfs/abc/volume-1");
        assert_eq!(s.url("volume-1"), "nfs://127.0.0.1/srv/nfs/abc/volume-1");
        let s = Share::parse("nfs-1.example:/").unwrap();
        assert_eq!(s.file_path("v"), "/v");
        let s = Share::parse("[fd00::1]:/x").unwrap();
        assert_eq!(s.host(), "fd00::1");
        assert_eq!(s.as_str(), "[fd00::1]:/x");
        assert_eq!(s.url("v"), "nfs://[fd00::1]/x/v");
        for bad in [
            "",
            "host",
            "host:relative",
            ":/x",
            "-h:/x",
            "a b:/x",
            "h:/x/../y",
            "h:/x//y",
            "h:/x/./y",
            "h:/x y",
            "h:/x,ro",
            "[zz]:/x",
            "[::1]/x",
        ] {
            assert!(
                matches!(Share::parse(bad), Err(VolumeError::InvalidShare { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_names() {
        for ok in [
            "volume-4e1b0a9c-0000-4000-8000-000000000001",
            "volume-4e1b0a9c-0000-4000-8000-000000000001.info",
            "volume-a.4e1b0a9c-0000-4000-8000-000000000002",
        ] {
            check_file_name(ok).expect(ok);
        }
        for escape in ["../x", "..", "a/b", "/etc/passwd", "x..y"] {
            assert!(
                matches!(check_file_name(escape), Err(VolumeError::Escape { .. })),
                "{escape:?}"
            );
        }
        for bad in ["", ".hidden", "-x", "a b", "a;b", &"a".repeat(256)] {
            assert!(
                matches!(check_file_name(bad), Err(VolumeError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
