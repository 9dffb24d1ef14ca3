//! Compute: the hypervisor behind the agent.
//!
//! This module reaches libvirt with a deadline on every call, on a fixed pool of worker
//! threads over one long-lived connection ([`Libvirt`]); runs domain operations and reads
//! their statistics through libvirt's own APIs ([`DomainStats`]); renders domain XML
//! ([`DomainSpec`]); and knows which domain type the agent uses ([`DomainType`]), decided once
//! at startup from the config and the real KVM probe ([`crate::host::probe_kvm`]).

mod addresses;
mod connection;
mod domain;
mod domains;
mod libvirt;
mod migrate;
mod pool;
mod stats;
mod xml;

pub use addresses::{AddressError, PciAddress, PciAddresses};
pub use domain::{Boot, Disk, DiskSource, DomainMetadata, DomainSpec, Nic, Smbios, METADATA_NS};
pub use domains::{DomainStatus, PowerState};
pub use libvirt::{HypervisorInfo, Libvirt};
pub use migrate::{MigrationPlan, MigrationProgress};
pub use stats::{BlockStats, DomainStats, InterfaceStats};

use crate::config::DomainTypeSetting;
use crate::host::KvmProbe;
use serde::Serialize;

/// Errors of the compute layer.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// libvirt answered with an error.
    #[error("libvirt call {call} failed: {message}")]
    Libvirt {
        /// The call.
        call: &'static str,
        /// libvirt's message.
        message: String,
    },
    /// libvirt (or the QEMU behind it) did not answer in time.
    #[error("libvirt call {call} did not answer within {seconds} s")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The deadline.
        seconds: u64,
    },
    /// Every libvirt worker stayed busy (stuck in libvirt) for the whole deadline.
    #[error("No libvirt worker was free within {seconds} s for {call}: all {workers} are waiting on libvirtd")]
    Busy {
        /// The call.
        call: &'static str,
        /// The number of workers (`hypervisor.workers`).
        workers: usize,
        /// The deadline.
        seconds: u64,
    },
    /// The guest has no QEMU guest agent answering.
    #[error("The guest agent is not available in this server: {0}")]
    NoGuestAgent(String),
    /// The configured domain type cannot be used on this host.
    #[error("domain_type = \"kvm\" is configured but KVM is not usable here: {0}")]
    KvmUnavailable(String),
}

/// The libvirt domain type the agent puts into domain XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware-accelerated.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
}

impl DomainType {
    /// Chooses the domain type from the setting and the probe.
    ///
    /// # Errors
    /// [`ComputeError::KvmUnavailable`] when KVM is required but the probe failed.
    pub fn choose(setting: DomainTypeSetting, probe: &KvmProbe) -> Result<Self, ComputeError> {
        match setting {
            DomainTypeSetting::Qemu => Ok(Self::Qemu),
            DomainTypeSetting::Auto if probe.usable => Ok(Self::Kvm),
            DomainTypeSetting::Auto => Ok(Self::Qemu),
            DomainTypeSetting::Kvm if probe.usable => Ok(Self::Kvm),
            DomainTypeSetting::Kvm => Err(ComputeError::KvmUnavailable(probe.reason.clone())),
        }
    }

    /// The name as libvirt and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }

    /// The accelerator QEMU runs with.
    pub fn accelerator(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "tcg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_type_follows_probe() {
        let bad = KvmProbe {
            usable: false,
            reason: "no vmx".into(),
        };
        let good = KvmProbe {
            usable: true,
            reason: String::new(),
        };
        assert_eq!(
            DomainType::choose(DomainTypeSetting::Auto, &bad).unwrap(),
            DomainType::Qemu
        );
        assert_eq!(
            DomainType::choose(DomainTypeSetting::Auto, &good).unwrap(),
            DomainType::Kvm
        );
        assert_eq!(
            DomainType::choose(DomainTypeSetting::Qemu, &good).unwrap(),
            DomainType::Qemu
        );
        assert!(DomainType::choose(DomainTypeSetting::Kvm, &bad).is_err());
    }
}
