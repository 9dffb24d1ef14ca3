//! What two agents send each other during a migration (`/v1/peer/…`).

use crate::ops::servers::{ServerSpec, ServerStatus};
use serde::{Deserialize, Serialize};

/// `POST /v1/peer/migrations`: the source asks the destination to prepare for a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    /// The server's id (kept on the destination).
    pub server_id: String,
    /// Its name.
    pub name: String,
    /// The image it was created from (`image_id` of the server).
    pub image_id: String,
    /// Its spec on the source (the destination puts its own paths in).
    pub spec: ServerSpec,
    /// Its status now (ACTIVE or PAUSED): what it will be on the destination.
    pub status: ServerStatus,
    /// The source node.
    pub source: PeerNode,
    /// The images the server's disks and boot need (root, kernel, ramdisk).
    pub images: Vec<ImageOffer>,
    /// The server's ports, recreated on the destination with the same id, MAC and addresses.
    #[serde(default)]
    pub ports: Vec<PortOffer>,
    /// The server's volumes (boot volume first, then data volumes in the spec's order), all on
    /// shared storage: the destination adopts their records.
    #[serde(default)]
    pub volumes: Vec<VolumeOffer>,
    /// Where the running guest sees its disks and NICs on the PCI bus (hot-plugged ones
    /// included): the destination's definition keeps them.
    #[serde(default)]
    pub pci_addresses: crate::compute::PciAddresses,
    /// Set for a cold migration (the server is shut off; its disk files are fetched, or kept
    /// ones reused); absent for a live one.
    #[serde(default)]
    pub cold: Option<ColdOffer>,
}

/// What a cold migration (or the revert of one) adds to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdOffer {
    /// The server's disk files (in its directory on the source), fetched from
    /// `GET /v1/peer/migrations/{id}/disks/{file}`; empty for a revert.
    pub disks: Vec<DiskOffer>,
    /// A revert: the destination is the node the server came from, which kept its disks.
    pub revert: bool,
    /// Start the server once it is there (it ran before the migration).
    pub power_on: bool,
    /// This move's secret (made by the node the server leaves first): the disk downloads,
    /// the confirm and the revert present it, so no other node of the fleet can.
    pub secret: String,
}

/// One disk file of a cold migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskOffer {
    /// Its file name in the server's directory (`root.qcow2`, `ephemeral.qcow2`, `swap.raw`).
    pub file: String,
    /// SHA-256 (hex) of its contents.
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
}

/// A volume on shared storage that follows its server: its record and its snapshots'.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOffer {
    /// The volume as the source has it (in use by the server).
    pub volume: crate::state::Volume,
    /// Its snapshots.
    #[serde(default)]
    pub snapshots: Vec<crate::state::Snapshot>,
}

/// A port that moves with its server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortOffer {
    /// The port as the source has it.
    pub port: crate::net::model::Port,
    /// Made for the server (deleted with it) rather than given by the caller.
    pub created: bool,
    /// Names of its security groups (the destination uses its groups of the same id, else
    /// of the same name).
    pub security_group_names: Vec<String>,
}

/// A node as its peers address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerNode {
    /// Its fleet name.
    pub name: String,
    /// Its API URL.
    pub api_url: String,
}

/// An image the destination may fetch from the source: the source's cached copy (raw or
/// qcow2), registered on the destination under the same id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOffer {
    /// The image's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The format of the file sent (`raw` or `qcow2`; kernels and ramdisks are raw).
    pub disk_format: String,
    /// `bare`, `ami`, `aki` or `ari`.
    pub container_format: String,
    /// Its properties (`kernel_id`, `ramdisk_id`, `os_command_line`, …).
    pub properties: std::collections::BTreeMap<String, String>,
    /// SHA-256 (hex) of the file the source will send.
    pub blob_sha256: String,
    /// Its size in bytes.
    pub blob_size: u64,
}

/// The destination's answer: ready for the domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingAnswer {
    /// The domain's definition on the destination (its own paths, its node id).
    pub dest_xml: String,
    /// The disk targets whose contents must be copied (local files).
    pub copy_disks: Vec<String>,
}

/// `POST /v1/peer/migrations/{id}/confirm`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The move's secret ([`ColdOffer::secret`]).
    pub secret: String,
}

/// `POST /v1/peer/migrations/{id}/finish`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    /// The source paused the guest to finish: resume it.
    #[serde(default)]
    pub resume: bool,
}
