//! CPU, memory, disk and hostname, read from the running system.

use super::HostError;
use std::path::Path;

/// Memory figures from `/proc/meminfo`, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    /// `MemTotal`.
    pub total_mb: u64,
    /// `MemAvailable`.
    pub available_mb: u64,
}

/// Size and use of the filesystem holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Total size.
    pub total_bytes: u64,
    /// Space free for unprivileged users.
    pub available_bytes: u64,
}

/// Number of online CPUs.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u32
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }
}

/// Reads `/proc/meminfo`.
///
/// # Errors
/// [`HostError`] when the file cannot be read or lacks `MemTotal`/`MemAvailable`.
pub fn memory() -> Result<MemoryInfo, HostError> {
    const PATH: &str = "/proc/meminfo";
    let text =
        std::fs::read_to_string(PATH).map_err(|source| HostError::Read { path: PATH, source })?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Result<MemoryInfo, HostError> {
    let field = |name: &str| -> Result<u64, HostError> {
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| HostError::Parse {
                path: "/proc/meminfo",
                detail: format!("no {name} line"),
            })
    };
    Ok(MemoryInfo {
        total_mb: field("MemTotal")? / 1024,
        available_mb: field("MemAvailable")? / 1024,
    })
}

/// Size and use of the filesystem holding `path`.
///
/// # Errors
/// [`HostError::Sys`] when `statvfs` fails (e.g. the path does not exist).
pub fn disk_usage(path: &Path) -> Result<DiskUsage, HostError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| HostError::Sys {
        call: "statvfs",
        target: path.display().to_string(),
        source,
    })?;
    let frag = st.fragment_size() as u64;
    Ok(DiskUsage {
        total_bytes: st.blocks() as u64 * frag,
        available_bytes: st.blocks_available() as u64 * frag,
    })
}

/// The machine's hostname.
///
/// # Errors
/// [`HostError::Sys`] when `gethostname` fails.
pub fn hostname() -> Result<String, HostError> {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .map_err(|source| HostError::Sys {
            call: "gethostname",
            target: "this host".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(
            parse_meminfo(text).unwrap(),
            MemoryInfo {
                total_mb: 24000,
                available_mb: 12000
            }
        );
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_err());
    }

    #[test]
    fn real_figures_are_plausible() {
        assert!(online_cpus() >= 1);
        let mem = memory().unwrap();
        assert!(mem.total_mb > 0 && mem.available_mb <= mem.total_mb);
        let disk = disk_usage(Path::new("/")).unwrap();
        assert!(disk.total_bytes > 0 && disk.available_bytes <= disk.total_bytes);
        assert!(!hostname().unwrap().is_empty());
    }
}
