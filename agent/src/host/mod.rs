//! Facts about this machine: CPUs, memory, the disk under the state directory, the hostname,
//! and whether KVM is really usable.
//!
//! Everything here is read from the running system (`/proc`, `statvfs`, `/dev/kvm`); nothing
//! is configured or assumed.

mod kvm;
mod system;

pub use kvm::{probe_kvm, KvmProbe};
pub use system::{disk_usage, hostname, memory, online_cpus, DiskUsage, MemoryInfo};

/// Errors reading host facts.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A `/proc` file could not be read.
    #[error("Cannot read {path}")]
    Read {
        /// The file.
        path: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected content.
    #[error("Unexpected content in {path}: {detail}")]
    Parse {
        /// The file.
        path: &'static str,
        /// What was missing.
        detail: String,
    },
    /// A system call failed.
    #[error("{call} failed for {target}")]
    Sys {
        /// The call.
        call: &'static str,
        /// What it was called on.
        target: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}
