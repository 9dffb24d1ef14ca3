//! `[migration]`: moving servers between the nodes of a fleet.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Migration settings (`[migration]`). Migration needs a `[fleet]` (the destination is found
/// there) and `peer_token_file` on every node (agents call each other with it).
///
/// ```toml
/// [migration]
/// peer_token_file = "/etc/hyperlet/peer.token"
/// peer_ca_cert = "/etc/hyperlet/fleet-ca.crt"
/// libvirt_uri = "qemu+tls://10.0.0.17/system"
/// max_downtime_ms = 500
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    /// A file with the fleet's peer token (at least 32 characters, mode 0600 or stricter),
    /// the same on every node. Agents present it to each other on `/v1/peer/…`; it opens
    /// nothing else, and the admin token never opens `/v1/peer/…`. Absent: this node neither
    /// sends nor receives migrations.
    pub peer_token_file: Option<PathBuf>,
    /// PEM CA bundle that signed the other agents' API certificates (default: the system's
    /// roots).
    pub peer_ca_cert: Option<PathBuf>,
    /// How the other nodes' libvirtd reach this node's libvirtd; published in the node record.
    /// Default `qemu+tls://<tunnel_ip>/system` (libvirt's TLS; see docs/ARCHITECTURE.md).
    pub libvirt_uri: Option<String>,
    /// The longest pause of the guest a live migration may end with, ms (10–60,000). The
    /// allowed pause starts at a fifth of it and steps up while memory does not converge.
    pub max_downtime_ms: u64,
    /// Seconds allowed per GiB of guest memory and local disk before a live migration is
    /// aborted (and rolled back); at least 60 s in total (1–3,600).
    pub completion_secs_per_gib: u64,
    /// Switch to post-copy when `live_migrate_force_complete` is asked (else the guest is
    /// paused to finish).
    pub allow_post_copy: bool,
    /// Outgoing migrations running at once (1–16); more are refused with 409.
    pub max_concurrent: usize,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            peer_token_file: None,
            peer_ca_cert: None,
            libvirt_uri: None,
            max_downtime_ms: 500,
            completion_secs_per_gib: 120,
            allow_post_copy: false,
            max_concurrent: 2,
        }
    }
}

impl MigrationConfig {
    /// Checks the section on its own.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first setting that cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        if !(10..=60_000).contains(&self.max_downtime_ms) {
            return invalid("migration.max_downtime_ms", "must be 10-60000");
        }
        if !(1..=3_600).contains(&self.completion_secs_per_gib) {
            return invalid("migration.completion_secs_per_gib", "must be 1-3600");
        }
        if !(1..=16).contains(&self.max_concurrent) {
            return invalid("migration.max_concurrent", "must be 1-16");
        }
        if let Some(uri) = &self.libvirt_uri {
            let ok = uri.starts_with("qemu+")
                && uri.ends_with("/system")
                && uri.len() <= 255
                && !uri.contains(['?', '#', ' ', '@']);
            if !ok {
                return invalid(
                    "migration.libvirt_uri",
                    "must look like qemu+tls://HOST/system or qemu+tcp://HOST/system",
                );
            }
        }
        Ok(())
    }

    /// The longest pause as a duration.
    pub fn max_downtime(&self) -> Duration {
        Duration::from_millis(self.max_downtime_ms)
    }

    /// The libvirt URI peers use to reach this node, for a node whose tunnel address is
    /// `tunnel_ip`.
    pub fn advertised_libvirt_uri(&self, tunnel_ip: &str) -> String {
        self.libvirt_uri
            .clone()
            .unwrap_or_else(|| match tunnel_ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("qemu+tls://[{v6}]/system"),
                _ => format!("qemu+tls://{tunnel_ip}/system"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_setting() {
        MigrationConfig::default().validate().unwrap();
        let bad = MigrationConfig {
            libvirt_uri: Some("qemu+tcp://h/system?x=1".into()),
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("migration.libvirt_uri"), "{e}");
        let bad = MigrationConfig {
            max_downtime_ms: 5,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(
            MigrationConfig::default().advertised_libvirt_uri("10.0.0.2"),
            "qemu+tls://10.0.0.2/system"
        );
    }
}
