//! The KVM probe: is hardware virtualisation really usable here?
//!
//! libvirt advertises `<domain type='kvm'/>` whenever `/dev/kvm` exists, even on machines
//! whose CPU has no `vmx`/`svm` flag, where a KVM guest then hangs at boot. So the agent checks
//! for itself: the CPU flag, read/write access to `/dev/kvm`, the KVM API version, and that a
//! VM can actually be created. Any failure means QEMU/TCG.

use serde::Serialize;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Result of the KVM probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KvmProbe {
    /// Whether KVM can be used.
    pub usable: bool,
    /// Why not (or what was checked, when usable).
    pub reason: String,
}

/// The KVM API version every current kernel reports.
const KVM_API_VERSION: libc::c_int = 12;
/// `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// `_IO(KVMIO, 0x01)`.
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;

/// Probes the running machine.
pub fn probe_kvm() -> KvmProbe {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    probe_with(&cpuinfo, Path::new("/dev/kvm"))
}

fn cpu_has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

fn probe_with(cpuinfo: &str, dev: &Path) -> KvmProbe {
    let no = |reason: String| KvmProbe {
        usable: false,
        reason,
    };
    if !cpu_has_virt_flag(cpuinfo) {
        return no(
            "the CPU exposes no vmx/svm flag (hardware virtualisation is unavailable)".into(),
        );
    }
    let file = match OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => return no(format!("cannot open {} read/write: {e}", dev.display())),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version != KVM_API_VERSION {
        return no(format!(
            "KVM API version is {version}, expected {KVM_API_VERSION}"
        ));
    }
    // SAFETY: KVM_CREATE_VM takes the machine type (0) and returns a new fd we close below.
    let vm = unsafe { libc::ioctl(file.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return no(format!(
            "KVM_CREATE_VM failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: vm is a file descriptor the kernel just gave us and nothing else owns.
    unsafe { libc::close(vm) };
    KvmProbe {
        usable: true,
        reason: "vmx/svm present, /dev/kvm usable, a test VM was created".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cpu_flag_means_tcg() {
        let probe = probe_with("flags : fpu sse2 hypervisor\n", Path::new("/dev/kvm"));
        assert!(!probe.usable);
        assert!(probe.reason.contains("vmx/svm"));
    }

    #[test]
    fn missing_device_means_tcg() {
        let probe = probe_with("flags : fpu vmx\n", Path::new("/nonexistent/kvm"));
        assert!(!probe.usable);
        assert!(
            probe.reason.contains("/nonexistent/kvm"),
            "{}",
            probe.reason
        );
    }
}
