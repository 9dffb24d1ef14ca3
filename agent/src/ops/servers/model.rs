//! Server request and response types, statuses and validation.

use crate::ops::OpError;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use utoipa::ToSchema;

/// Server statuses, as nova names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    /// Being created.
    Build,
    /// Running.
    Active,
    /// Stopped.
    Shutoff,
    /// vCPUs paused, memory kept.
    Paused,
    /// Memory saved to disk, not running.
    Suspended,
    /// Rebooting.
    Reboot,
    /// Being rebuilt from an image.
    Rebuild,
    /// Being resized.
    Resize,
    /// Resized, waiting for confirm or revert.
    VerifyResize,
    /// Failed; see `fault`.
    Error,
    /// Being deleted.
    Deleted,
}

impl ServerStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "BUILD",
            Self::Active => "ACTIVE",
            Self::Shutoff => "SHUTOFF",
            Self::Paused => "PAUSED",
            Self::Suspended => "SUSPENDED",
            Self::Reboot => "REBOOT",
            Self::Rebuild => "REBUILD",
            Self::Resize => "RESIZE",
            Self::VerifyResize => "VERIFY_RESIZE",
            Self::Error => "ERROR",
            Self::Deleted => "DELETED",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }

    /// Whether an operation is running on the server (no other action may start).
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            Self::Build | Self::Reboot | Self::Rebuild | Self::Resize | Self::Deleted
        )
    }
}

/// Resources of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// Virtual CPUs (1–256).
    #[schema(minimum = 1, maximum = 256)]
    pub vcpus: u32,
    /// Memory, MiB (64 – 4 TiB).
    #[schema(minimum = 64, maximum = 4_194_304)]
    pub ram_mb: u64,
    /// Root disk, GiB; 0 means the image's virtual size.
    #[schema(minimum = 0, maximum = 65_536)]
    pub disk_gb: u64,
    /// Ephemeral disk, GiB (attached as the second disk).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 65_536)]
    pub ephemeral_gb: u64,
    /// Swap disk, MiB (attached after the ephemeral disk).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_048_576)]
    pub swap_mb: u64,
}

impl Flavor {
    /// Checks the numbers.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the bad field.
    pub fn validate(&self) -> Result<(), OpError> {
        let bad = |m: String| Err(OpError::InvalidInput(m));
        if !(1..=256).contains(&self.vcpus) {
            return bad(format!("flavor.vcpus must be 1 to 256, not {}", self.vcpus));
        }
        if !(64..=4 * 1024 * 1024).contains(&self.ram_mb) {
            return bad(format!(
                "flavor.ram_mb must be 64 to 4194304, not {}",
                self.ram_mb
            ));
        }
        if self.disk_gb > 64 * 1024 {
            return bad(format!(
                "flavor.disk_gb must be at most 65536, not {}",
                self.disk_gb
            ));
        }
        if self.ephemeral_gb > 64 * 1024 {
            return bad(format!(
                "flavor.ephemeral_gb must be at most 65536, not {}",
                self.ephemeral_gb
            ));
        }
        if self.swap_mb > 1024 * 1024 {
            return bad(format!(
                "flavor.swap_mb must be at most 1048576, not {}",
                self.swap_mb
            ));
        }
        Ok(())
    }
}

/// `POST /v1/servers` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerCreate {
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// Name: 1–255 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$"
    )]
    pub name: String,
    /// Resources.
    pub flavor: Flavor,
    /// Root image id (an active image with container_format bare); empty with
    /// `boot_volume_id`.
    #[serde(default)]
    pub image_id: String,
    /// Boot from this available, bootable volume (made from an image) instead of an image
    /// overlay; the volume's image gives the kernel, ramdisk and command line.
    #[serde(default)]
    pub boot_volume_id: Option<String>,
    /// Name of the key pair (shown in metadata).
    pub key_name: Option<String>,
    /// Public keys by name (OpenSSH format), as in meta_data.json.
    #[serde(default)]
    pub public_keys: BTreeMap<String, String>,
    /// User data, base64 (at most 65535 bytes decoded).
    pub user_data: Option<String>,
    /// Free-form metadata (at most 128 entries; keys 1–255 characters, values at most 255).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Availability zone; must be this node's when given.
    pub availability_zone: Option<String>,
    /// NICs: `{network_id}`, `{network_id, fixed_ip}` or `{port_id}`, in guest order.
    #[serde(default)]
    pub networks: Vec<crate::ops::networks::ports::NetworkRequest>,
    /// Security groups of the ports created for `networks` entries, by name or id, as nova's
    /// `[{"name": "web"}]` [default: `default`]. Ports given by `port_id` keep their own.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub security_groups: Option<Vec<SecurityGroupRef>>,
}

/// A security group named in a server request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRef {
    /// The group's name or id.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
}

/// Longest decoded user data, as nova.
pub const MAX_USER_DATA: usize = 65_535;

/// Checks a server name.
///
/// # Errors
/// [`OpError::InvalidInput`] for a bad name.
pub fn validate_name(name: &str) -> Result<(), OpError> {
    let len = name.chars().count();
    if len == 0 || len > 255 {
        return Err(OpError::InvalidInput(format!(
            "name must have 1 to 255 characters, not {len}"
        )));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(OpError::InvalidInput(
            "name must not contain control characters or leading/trailing spaces".into(),
        ));
    }
    Ok(())
}

impl ServerCreate {
    /// Checks everything that needs no lookup.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the first problem.
    pub fn validate(&self) -> Result<(), OpError> {
        validate_name(&self.name)?;
        self.flavor.validate()?;
        if let Some(volume) = &self.boot_volume_id {
            if !self.image_id.is_empty() {
                return Err(OpError::InvalidInput(
                    "give image_id or boot_volume_id, not both".into(),
                ));
            }
            if uuid::Uuid::parse_str(volume).is_err() {
                return Err(OpError::unknown("boot_volume_id", volume, "volume"));
            }
        } else if self.image_id.is_empty() {
            return Err(OpError::InvalidInput(
                "give image_id (an image to boot) or boot_volume_id (a volume to boot)".into(),
            ));
        } else if uuid::Uuid::parse_str(&self.image_id).is_err() {
            return Err(OpError::unknown("image_id", &self.image_id, "image"));
        }
        if let Some(data) = &self.user_data {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| {
                    OpError::InvalidInput(format!("user_data is not valid base64: {e}"))
                })?;
            if decoded.len() > MAX_USER_DATA {
                return Err(OpError::InvalidInput(format!(
                    "user_data is {} bytes decoded; at most {MAX_USER_DATA} are allowed",
                    decoded.len()
                )));
            }
        }
        if self.metadata.len() > 128 {
            return Err(OpError::InvalidInput(
                "metadata has more than 128 entries".into(),
            ));
        }
        for (k, v) in &self.metadata {
            if k.is_empty() || k.chars().count() > 255 || v.chars().count() > 255 {
                return Err(OpError::InvalidInput(format!(
                    "metadata {k:?}: keys need 1 to 255 characters, values at most 255"
                )));
            }
        }
        for (name, key) in &self.public_keys {
            if name.is_empty() || name.chars().count() > 255 {
                return Err(OpError::InvalidInput(
                    "public key names need 1 to 255 characters".into(),
                ));
            }
            if !["ssh-", "ecdsa-", "sk-"].iter().any(|p| key.starts_with(p)) {
                return Err(OpError::InvalidInput(format!(
                    "public key {name:?} is not an OpenSSH public key"
                )));
            }
        }
        if self.networks.len() > 16 {
            return Err(OpError::InvalidInput(
                "at most 16 networks per server".into(),
            ));
        }
        if let Some(groups) = &self.security_groups {
            if groups.len() > crate::net::security::MAX_GROUPS_PER_PORT {
                return Err(OpError::InvalidInput(format!(
                    "security_groups: at most {} per server",
                    crate::net::security::MAX_GROUPS_PER_PORT
                )));
            }
            if groups
                .iter()
                .any(|g| g.name.is_empty() || g.name.chars().count() > 255)
            {
                return Err(OpError::InvalidInput(
                    "security_groups: each name must have 1-255 characters".into(),
                ));
            }
        }
        for nic in &self.networks {
            nic.validate()?;
        }
        if let Some(key_name) = &self.key_name {
            if key_name.is_empty() || key_name.chars().count() > 255 {
                return Err(OpError::InvalidInput(
                    "key_name needs 1 to 255 characters".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What the agent keeps about a server beyond its row (stored as JSON, and — without its
/// secrets, see [`ServerSpec::without_secrets`] — in the domain XML so a lost record can be
/// adopted back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// Resources.
    pub flavor: Flavor,
    /// Flavor before an unconfirmed resize.
    #[serde(default)]
    pub previous_flavor: Option<Flavor>,
    /// Root image.
    pub image_id: String,
    /// Kernel image for direct kernel boot.
    pub kernel_image_id: Option<String>,
    /// Ramdisk image for direct kernel boot.
    pub ramdisk_image_id: Option<String>,
    /// Kernel command line for direct kernel boot.
    pub os_command_line: Option<String>,
    /// Key pair name.
    pub key_name: Option<String>,
    /// Public keys by name.
    pub public_keys: BTreeMap<String, String>,
    /// User data (base64).
    pub user_data: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Availability zone.
    pub availability_zone: String,
    /// libvirt domain name.
    pub domain_name: String,
    /// Directory with the root overlay and console log.
    pub dir: PathBuf,
    /// Network interfaces, in guest order.
    #[serde(default)]
    pub nics: Vec<crate::ops::networks::ports::ServerNic>,
    /// The volume the server boots from (its `vda`), instead of a root overlay.
    #[serde(default)]
    pub boot_volume: Option<crate::ops::volumes::attach::AttachedVolume>,
    /// Attached volumes.
    #[serde(default)]
    pub volumes: Vec<crate::ops::volumes::attach::AttachedVolume>,
    /// Where an unconfirmed cold migration brought the server from (it is VERIFY_RESIZE here;
    /// `confirm_resize` lets the old node drop its copy, `revert_resize` moves it back).
    #[serde(default)]
    pub migrated_from: Option<MigratedFrom>,
}

/// The node a cold-migrated server came from, kept until the move is confirmed or reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratedFrom {
    /// Its fleet name.
    pub node: String,
    /// Its API URL.
    pub api_url: String,
    /// The server ran there before the move (a revert starts it again).
    pub power_on: bool,
    /// The move's secret, which that node asks for on confirm and revert.
    #[serde(default)]
    pub secret: String,
}

impl ServerSpec {
    /// The spec as the domain XML may carry it: without `user_data` and `public_keys`, which
    /// only the agent's store keeps (the XML is readable over read-only libvirt connections).
    pub fn without_secrets(&self) -> Self {
        Self {
            public_keys: BTreeMap::new(),
            user_data: None,
            migrated_from: self.migrated_from.clone().map(|m| MigratedFrom {
                secret: String::new(),
                ..m
            }),
            ..self.clone()
        }
    }

    /// The root overlay.
    pub fn root_disk(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }
    /// The ephemeral disk.
    pub fn ephemeral_disk(&self) -> PathBuf {
        self.dir.join("ephemeral.qcow2")
    }
    /// The swap disk.
    pub fn swap_disk(&self) -> PathBuf {
        self.dir.join("swap.raw")
    }
    /// The serial console log.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The root overlay's copy kept during an unconfirmed resize.
    pub fn resize_backup(&self) -> PathBuf {
        self.dir.join("root.qcow2.pre-resize")
    }
}

/// A server as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Server {
    /// Server id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: ServerStatus,
    /// Task in progress, if any.
    pub task_state: Option<String>,
    /// Resources.
    pub flavor: Flavor,
    /// Root image.
    pub image_id: String,
    /// Key pair name.
    pub key_name: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Availability zone.
    pub availability_zone: String,
    /// libvirt domain name.
    pub domain_name: String,
    /// Why the server is in ERROR.
    pub fault: Option<String>,
    /// Network interfaces, in guest order.
    pub nics: Vec<crate::ops::networks::ports::ServerNic>,
    /// The volume it boots from.
    pub boot_volume_id: Option<String>,
    /// Attached volumes.
    pub volumes: Vec<crate::ops::volumes::attach::AttachedVolume>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// A running live migration's figures (only while one runs from this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::compute::MigrationProgress>,
}
