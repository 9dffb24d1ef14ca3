//! Agent settings.
//!
//! Settings come from three places, later ones winning: the embedded defaults, an optional TOML
//! file (`--config FILE`), then flags and environment variables (`--state-dir` /
//! `HYPERLET_STATE_DIR`, `--listen` / `HYPERLET_LISTEN`, …). With no file and no flags the agent
//! runs on the embedded defaults: state in `/var/lib/hyperlet`, API on `127.0.0.1:8787`.
//!
//! ```toml
//! listen = "127.0.0.1:8787"
//! state_dir = "/var/lib/hyperlet"
//!
//! [tls]
//! cert = "/etc/hyperlet/tls/server.crt"
//! key = "/etc/hyperlet/tls/server.key"
//! client_ca = "/etc/hyperlet/tls/controller-ca.crt"
//!
//! [hypervisor]
//! domain_type = "auto"   # auto | kvm | qemu
//! ```
//!
//! Every file is checked by [`Config::validate`] before the agent touches anything.

mod consoles;
mod http_grant;
mod migration;
pub use consoles::ConsolesConfig;
pub use http_grant::{HttpGrant, Origin};
pub use migration::MigrationConfig;

use crate::net::model::TAP_PREFIX;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default API address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hyperlet";

/// Errors in the agent's settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("Cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("Invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A setting has a value the agent cannot use.
    #[error("Invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name as written in the file.
        setting: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Which libvirt domain type to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSetting {
    /// Probe for usable KVM and fall back to QEMU/TCG.
    #[default]
    Auto,
    /// Require KVM: refuse to start when the probe fails.
    Kvm,
    /// Always use QEMU/TCG (software emulation).
    Qemu,
}

/// All settings of the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port of the REST API.
    pub listen: SocketAddr,
    /// Directory holding the store, the admin token and (later) images and disks.
    pub state_dir: PathBuf,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure: bool,
    /// Availability zone this node reports.
    pub availability_zone: String,
    /// Who this node is to scheduler plugins: its traits and aggregate metadata.
    pub host: HostIdentityConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// TLS for the API.
    pub tls: TlsConfig,
    /// Limits of the REST layer.
    pub api: ApiConfig,
    /// The event stream.
    pub events: EventsConfig,
    /// The hypervisor connection.
    pub hypervisor: HypervisorConfig,
    /// Capacity reporting.
    pub capacity: CapacityConfig,
    /// The image cache.
    pub images: ImagesConfig,
    /// The 169.254.169.254 metadata service of each network.
    pub metadata: MetadataConfig,
    /// Security groups and port security (nftables).
    pub firewall: FirewallConfig,
    /// WebAssembly plugins (scheduler filters and weighers, network backends), in chain order.
    pub plugins: Vec<PluginConfig>,
    /// Where plugins run.
    pub plugin_runtime: PluginRuntimeConfig,
    /// Membership of a fleet through etcd; absent = a standalone node.
    pub fleet: Option<FleetConfig>,
    /// Moving servers between the fleet's nodes.
    pub migration: MigrationConfig,
    /// Interactive consoles over WebSocket.
    pub consoles: ConsolesConfig,
}

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// A scheduler filter (`hyperlet:scheduler/filter-plugin`).
    Filter,
    /// A scheduler weigher (`hyperlet:scheduler/weigher-plugin`).
    Weigher,
    /// A network backend (`hyperlet:network/network-backend`), `kind = "network-backend"`.
    NetworkBackend,
    /// A volume driver (`hyperlet:volume/volume-driver`), `kind = "volume-driver"`.
    VolumeDriver,
}

impl PluginKind {
    /// The name as the config spells it (`filter`, `weigher`, `network-backend`,
    /// `volume-driver`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Weigher => "weigher",
            Self::NetworkBackend => "network-backend",
            Self::VolumeDriver => "volume-driver",
        }
    }

    /// The call deadline a plugin of this kind gets when `call_timeout_ms` is not set:
    /// 2 s, and 120 s for volume drivers (a call may copy an image with `qemu-img convert`).
    pub fn default_call_timeout_ms(self) -> u64 {
        match self {
            Self::VolumeDriver => 120_000,
            _ => 2000,
        }
    }
}

/// One configured plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name (used in logs, reasons and the API).
    pub name: String,
    /// filter, weigher, network-backend or volume-driver.
    pub kind: PluginKind,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Capabilities the plugin may import (`log`, `clocks`, `random`, `netlink`, `lvm`,
    /// `files`, `qemu-img`, `http`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// The parameters of the `netlink` grant (network backends): which links the plugin may
    /// touch. Defaults apply when the grant is given without this table.
    #[serde(default)]
    pub netlink: Option<NetlinkGrant>,
    /// The parameters of the `lvm` grant (volume drivers): which volume groups. Required with
    /// the grant.
    #[serde(default)]
    pub lvm: Option<LvmGrant>,
    /// The parameters of the `files` and `qemu-img` grants (volume drivers): which NFS shares
    /// and how they are reached. Required with either grant.
    #[serde(default)]
    pub files: Option<FilesGrant>,
    /// The parameters of the `http` grant (any kind): which origins and methods outgoing
    /// `wasi:http` requests may use, their deadline and size caps. Required with the grant.
    #[serde(default)]
    pub http: Option<HttpGrant>,
    /// Settings passed to the plugin's `configure`.
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Weighers: the normalised weight is multiplied by this (negative stacks).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Memory cap of one instance, MiB: its linear memories (three quarters) and what the
    /// host spends copying its answers (an eighth, counted twice) together.
    #[serde(default = "default_plugin_memory")]
    pub memory_limit_mb: u64,
    /// Deadline of one call, milliseconds [default: 2000; 120000 for volume drivers].
    #[serde(default = "default_plugin_timeout")]
    pub call_timeout_ms: u64,
}

fn default_multiplier() -> f64 {
    1.0
}
fn default_plugin_memory() -> u64 {
    64
}
/// What `call_timeout_ms` holds until [`Config::from_toml`] replaces it with the kind's default.
const UNSET_TIMEOUT: u64 = u64::MAX;

fn default_plugin_timeout() -> u64 {
    UNSET_TIMEOUT
}

/// Longest call deadline a plugin may have, milliseconds (one hour).
pub const MAX_PLUGIN_TIMEOUT_MS: u64 = 3_600_000;

/// Capabilities a plugin can be granted.
pub const PLUGIN_GRANTS: [&str; 8] = [
    "log", "clocks", "random", "netlink", "lvm", "files", "qemu-img", "http",
];

/// The grants only volume drivers may have.
const VOLUME_GRANTS: [&str; 3] = ["lvm", "files", "qemu-img"];

/// The parameters of the `lvm` grant (`[plugins.lvm]`): the volume groups a volume driver may
/// manage. Every name and size of every `lvm` call is checked against it before an LVM tool
/// runs.
///
/// ```toml
/// [plugins.lvm]
/// volume_groups = ["cinder-volumes"]   # required, at least one
/// lvm_system_dir = "/etc/lvm"          # LVM_SYSTEM_DIR of the tools (default: unset)
/// command_timeout_secs = 30            # deadline of one LVM command
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LvmGrant {
    /// Volume groups the driver may use.
    pub volume_groups: Vec<String>,
    /// The directory of the `lvm.conf` the tools use (`LVM_SYSTEM_DIR`); unset: LVM's default.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub lvm_system_dir: Option<PathBuf>,
    /// Deadline of one LVM command, seconds.
    #[serde(default = "default_lvm_timeout")]
    pub command_timeout_secs: u64,
}

fn default_lvm_timeout() -> u64 {
    30
}

impl LvmGrant {
    /// Checks the grant's parameters; the reason names the key at fault.
    ///
    /// # Errors
    /// A message an operator can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.volume_groups.is_empty() {
            return Err("lvm.volume_groups must list at least one volume group".into());
        }
        crate::volume::Lvm::new(self.volume_groups.iter().cloned())
            .map_err(|e| format!("lvm.volume_groups: {e}"))?;
        if let Some(dir) = &self.lvm_system_dir {
            if !dir.is_absolute() {
                return Err(format!(
                    "lvm.lvm_system_dir = {:?} must be an absolute path",
                    dir.display()
                ));
            }
        }
        if self.command_timeout_secs == 0 {
            return Err("lvm.command_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// How the host reaches the granted NFS shares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ShareAccess {
    /// A kernel NFS mount of each share under `mount_root` (production).
    #[default]
    Mount,
    /// NFS from userspace, no mount: the agent's own NFSv3 client for files and QEMU's libnfs
    /// driver (`nfs://`) for images (hosts without a kernel NFS client).
    Libnfs,
}

/// The parameters of the `files` and `qemu-img` grants (`[plugins.files]`): the NFS shares a
/// volume driver may keep files on. Every share and file name of every call is checked
/// against it before anything runs.
///
/// ```toml
/// [plugins.files]
/// shares = ["127.0.0.1:/srv/nfs/abc"]   # required, at least one
/// access = "mount"                      # mount | libnfs
/// mount_root = "/var/lib/hyperlet/mnt"  # mount points (access = "mount")
/// mount_options = "vers=4.1"            # `mount -o` (access = "mount"), default none
/// file_mode = "0660"                    # permissions of the files created (never world-writable)
/// file_owner = "libvirt-qemu"           # default: `user` of /etc/libvirt/qemu.conf, else libvirt-qemu
/// file_group = "kvm"                    # default: `group` of qemu.conf, else the owner's primary group
/// command_timeout_secs = 3600           # deadline of one qemu-img, mount or NFS operation
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesGrant {
    /// Exports the driver may use, `host:/path`.
    pub shares: Vec<String>,
    /// How they are reached.
    #[serde(default)]
    pub access: ShareAccess,
    /// Where shares are mounted: `<mount_root>/<32 hex digits of the share's SHA-256>` (cinder
    /// names its mount points by a hash of the share too).
    #[serde(default = "default_mount_root")]
    #[schema(value_type = String)]
    pub mount_root: PathBuf,
    /// Options of the kernel mount (`mount -t nfs -o …`).
    #[serde(default)]
    pub mount_options: Option<String>,
    /// Permissions of files the host creates, octal; never world-writable.
    #[serde(default = "default_file_mode")]
    pub file_mode: String,
    /// Owner of files the host creates (a user name or uid): the user QEMU runs as. Default:
    /// `user` in /etc/libvirt/qemu.conf, else `libvirt-qemu`.
    #[serde(default)]
    pub file_owner: Option<String>,
    /// Group of files the host creates (a name or gid). Default: `group` in qemu.conf when the
    /// owner is not set, else the owner's primary group.
    #[serde(default)]
    pub file_group: Option<String>,
    /// Deadline of one command or NFS operation, seconds.
    #[serde(default = "default_files_timeout")]
    pub command_timeout_secs: u64,
}

fn default_mount_root() -> PathBuf {
    PathBuf::from("/var/lib/hyperlet/mnt")
}
fn default_file_mode() -> String {
    "0660".into()
}
fn default_files_timeout() -> u64 {
    3600
}

impl FilesGrant {
    /// The file mode as a number.
    ///
    /// # Errors
    /// A message naming `files.file_mode`.
    pub fn mode(&self) -> Result<u32, String> {
        u32::from_str_radix(self.file_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777 && m & 0o002 == 0)
            .ok_or_else(|| {
                format!(
                    "files.file_mode = {:?} must be octal permissions such as \"0660\", not \
                     world-writable (files are owned by the QEMU user instead)",
                    self.file_mode
                )
            })
    }

    /// Checks the grant's parameters; the reason names the key at fault.
    ///
    /// # Errors
    /// A message an operator can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.shares.is_empty() {
            return Err("files.shares must list at least one share (host:/path)".into());
        }
        for share in &self.shares {
            crate::volume::Share::parse(share).map_err(|e| format!("files.shares: {e}"))?;
        }
        if !self.mount_root.is_absolute() {
            return Err(format!(
                "files.mount_root = {:?} must be an absolute path",
                self.mount_root.display()
            ));
        }
        if let Some(options) = &self.mount_options {
            if options.is_empty() || options.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "files.mount_options = {options:?} must be one comma-separated word"
                ));
            }
        }
        self.mode()?;
        if self.command_timeout_secs == 0 {
            return Err("files.command_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// The parameters of the `netlink` grant (`[plugins.netlink]`): what a network backend may do
/// to the host's links. Every argument of every `netlink` call is checked against it before
/// any netlink request is sent.
///
/// ```toml
/// [plugins.netlink]
/// name_prefixes = ["brq", "vxlan-"]   # links it may create, delete, set down, give an MTU
/// physical_interfaces = ["eth1"]      # may be read, set up, enslaved and carry eth1.<vid>
/// vlan_ids = [1, 4094]                # inclusive range of VLAN ids
/// vnis = [1, 16777215]                # inclusive range of VXLAN VNIs
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetlinkGrant {
    /// Name prefixes of the links the plugin owns (bridges, VXLAN links).
    pub name_prefixes: Vec<String>,
    /// Physical interfaces the plugin may read, set up and enslave, and create VLAN
    /// sub-interfaces (`<phys>.<vid>`) on; never delete, set down or change the MTU of.
    pub physical_interfaces: Vec<String>,
    /// Inclusive range of VLAN ids.
    pub vlan_ids: [u32; 2],
    /// Inclusive range of VXLAN network identifiers.
    pub vnis: [u32; 2],
}

impl Default for NetlinkGrant {
    fn default() -> Self {
        Self {
            name_prefixes: vec!["brq".into(), "vxlan-".into()],
            physical_interfaces: Vec::new(),
            vlan_ids: [1, 4094],
            vnis: [1, 16_777_215],
        }
    }
}

impl NetlinkGrant {
    /// Checks the grant's parameters; the reason names the key at fault.
    ///
    /// # Errors
    /// A message an operator can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.name_prefixes.is_empty() {
            return Err("netlink.name_prefixes must list at least one prefix".into());
        }
        for prefix in &self.name_prefixes {
            if prefix.len() > 14 {
                return Err(format!(
                    "netlink.name_prefixes: {prefix:?} is longer than 14 bytes, so no interface \
                     name (at most 15 bytes) could carry it and a suffix"
                ));
            }
            crate::net::validate_ifname(prefix)
                .map_err(|e| format!("netlink.name_prefixes: {e}"))?;
            if prefix.starts_with(TAP_PREFIX) || TAP_PREFIX.starts_with(prefix.as_str()) {
                return Err(format!(
                    "netlink.name_prefixes: {prefix:?} overlaps \"{TAP_PREFIX}\", which names \
                     the agent's guest ports: the plugin could create or delete devices the \
                     firewall treats as guests'; use a prefix that does not"
                ));
            }
        }
        for phys in &self.physical_interfaces {
            crate::net::validate_ifname(phys)
                .map_err(|e| format!("netlink.physical_interfaces: {e}"))?;
            if phys.starts_with(TAP_PREFIX) {
                return Err(format!(
                    "netlink.physical_interfaces: {phys:?} starts with \"{TAP_PREFIX}\", which names the \
                     agent's guest ports (the firewall treats such a device as a guest's); \
                     rename the interface"
                ));
            }
            if let Some(prefix) = self
                .name_prefixes
                .iter()
                .find(|p| phys.starts_with(p.as_str()))
            {
                return Err(format!(
                    "netlink.physical_interfaces: {phys:?} starts with the granted prefix \
                     {prefix:?}, which would let the plugin delete it; use a narrower prefix"
                ));
            }
        }
        let range = |key: &str, [lo, hi]: [u32; 2], max: u32| {
            if (1..=max).contains(&lo) && (lo..=max).contains(&hi) {
                Ok(())
            } else {
                Err(format!(
                    "netlink.{key} = [{lo}, {hi}] must be an inclusive range [low, high] with \
                     1 <= low <= high <= {max}"
                ))
            }
        };
        range("vlan_ids", self.vlan_ids, 4094)?;
        range("vnis", self.vnis, 16_777_215)
    }
}
impl PluginConfig {
    /// Checks the volume grants (`lvm`, `files`, `qemu-img`) and their tables.
    fn validate_volume_grants(&self) -> Result<(), String> {
        let granted = |g: &str| self.grants.iter().any(|x| x == g);
        if let Some(grant) = VOLUME_GRANTS.iter().find(|g| granted(g)) {
            if self.kind != PluginKind::VolumeDriver {
                return Err(format!(
                    "the {grant} grant is for volume-driver plugins only (kind = \"volume-driver\")"
                ));
            }
        }
        match (&self.lvm, granted("lvm")) {
            (Some(lvm), true) => lvm.validate()?,
            (Some(_), false) => {
                return Err(
                    "[plugins.lvm] is set but \"lvm\" is not in grants; add it to grants \
                            or remove the table"
                        .into(),
                )
            }
            (None, true) => {
                return Err(
                    "the lvm grant needs a [plugins.lvm] table naming its volume_groups".into(),
                )
            }
            (None, false) => {}
        }
        let files_used = granted("files") || granted("qemu-img");
        match (&self.files, files_used) {
            (Some(files), true) => files.validate()?,
            (Some(_), false) => {
                return Err(
                    "[plugins.files] is set but neither \"files\" nor \"qemu-img\" is \
                            in grants; add them to grants or remove the table"
                        .into(),
                )
            }
            (None, true) => {
                return Err(
                    "the files and qemu-img grants need a [plugins.files] table naming \
                            its shares"
                        .into(),
                )
            }
            (None, false) => {}
        }
        Ok(())
    }
}

/// Largest memory cap a plugin may have, MiB (the pooling allocator's slot size).
pub const MAX_PLUGIN_MEMORY_MB: u64 = 512;

/// Plugin runtime settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginRuntimeConfig {
    /// How often plugin files are checked for changes (hot reload), milliseconds; 0 disables.
    pub reload_interval_ms: u64,
    /// Most log lines one plugin may write per minute (guest stderr and the `log` import).
    pub log_lines_per_minute: u32,
    /// Directory of precompiled plugins [default: `<state_dir>/plugin-cache`]; agents on one
    /// host may share it (entries are keyed by content hash and engine).
    pub cache_dir: Option<PathBuf>,
}

impl Default for PluginRuntimeConfig {
    fn default() -> Self {
        Self {
            reload_interval_ms: 1000,
            log_lines_per_minute: 120,
            cache_dir: None,
        }
    }
}

/// Image cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Largest accepted upload, GiB.
    pub max_upload_gb: u64,
    /// Largest accepted virtual disk size of an image, GiB.
    pub max_virtual_size_gb: u64,
    /// Deadline of a format conversion with qemu-img, seconds.
    pub convert_timeout_secs: u64,
    /// Address space of `qemu-img` converting an upload, MiB (`RLIMIT_AS`).
    pub qemu_img_memory_mb: u64,
    /// CPU time of `qemu-img` converting an upload, seconds (`RLIMIT_CPU`).
    pub qemu_img_cpu_secs: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            max_upload_gb: 256,
            max_virtual_size_gb: 2048,
            convert_timeout_secs: 3600,
            qemu_img_memory_mb: 1024,
            qemu_img_cpu_secs: 30,
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A fixed admin token. When neither this nor `token_file` is set, the agent generates one
    /// into `<state_dir>/admin.token` on first start.
    pub token: Option<String>,
    /// A file holding the admin token (first line).
    pub token_file: Option<PathBuf>,
}

/// TLS settings. Both `cert` and `key` enable TLS; `client_ca` adds client-certificate checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of the server.
    pub key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

/// Limits of the REST layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest accepted request body for JSON requests, in bytes.
    pub body_limit_bytes: usize,
    /// Time a request may take before it is answered with a timeout error, in seconds.
    pub request_timeout_secs: u64,
    /// Time in-flight requests get to finish on shutdown, in seconds.
    pub shutdown_grace_secs: u64,
    /// Connections served at once; a connection over the limit is closed as soon as it is
    /// accepted (counted in `hyperlet_http_connections_refused_total`).
    pub max_connections: usize,
    /// Time a client gets to send a request's headers, in seconds: from the accept (so the TLS
    /// handshake counts) or, on a kept-alive HTTP/1 connection, from the end of the previous
    /// answer. The connection is closed when it runs out.
    pub header_read_timeout_secs: u64,
    /// Time a connection may stay open without any request in flight, in seconds (bytes that
    /// never complete a request do not keep it open).
    pub idle_timeout_secs: u64,
    /// Serve the node page at `/ui/` (its files only: every call it makes needs the admin
    /// token). `false` leaves `/ui/` unrouted.
    pub node_page: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            node_page: true,
        }
    }
}

impl ApiConfig {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The idle connection timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// Event stream settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How many past events the store keeps for `Last-Event-ID` resumption.
    pub backlog: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { backlog: 10_000 }
    }
}

/// Security group enforcement settings (`[firewall]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// The agent's nftables tables are `<table_prefix>_l2` (bridge family) and
    /// `<table_prefix>_sg` (inet family); it never touches any other table. Two agents on one
    /// host need different prefixes.
    pub table_prefix: String,
    /// Deadline of one `nft -f` run.
    pub nft_timeout_secs: u64,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            table_prefix: crate::net::firewall::PREFIX.to_string(),
            nft_timeout_secs: 10,
        }
    }
}

/// Fleet membership through etcd (`[fleet]`). Without this section the node is standalone.
///
/// ```toml
/// [fleet]
/// endpoints = ["https://10.0.0.5:2379"]
/// node_name = "compute-7"
/// advertise_url = "https://10.0.0.17:8787"
/// ca_cert = "/etc/hyperlet/etcd/ca.crt"
/// client_cert = "/etc/hyperlet/etcd/client.crt"
/// client_key = "/etc/hyperlet/etcd/client.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// etcd client URLs (`http://host:2379` or `https://…`).
    pub endpoints: Vec<String>,
    /// Every key the fleet uses starts with this (default `/hyperlet`).
    pub prefix: String,
    /// This node's name in the fleet (default: the hostname).
    pub node_name: Option<String>,
    /// Region reported in the node record.
    pub region: String,
    /// Availability zone; the same as the top-level `availability_zone` (set either).
    pub availability_zone: Option<String>,
    /// The agent's API URL for controllers and peers (default: `http(s)://<tunnel_ip or listen
    /// address>:<port>`).
    pub advertise_url: Option<String>,
    /// VXLAN source address (default: the local address of the route to the first endpoint).
    pub tunnel_ip: Option<std::net::IpAddr>,
    /// Lifetime of the agent's lease without a keep-alive, seconds (5–600).
    pub lease_ttl_secs: u64,
    /// Deadline of one etcd call, seconds (1–60).
    pub call_timeout_secs: u64,
    /// PEM CA bundle that signed etcd's server certificate (for `https://` endpoints).
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for etcd (mutual TLS), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// etcd user (with `password_file`).
    pub user: Option<String>,
    /// File holding the etcd user's password (never on the command line).
    pub password_file: Option<PathBuf>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/hyperlet".into(),
            node_name: None,
            region: "RegionOne".into(),
            availability_zone: None,
            advertise_url: None,
            tunnel_ip: None,
            lease_ttl_secs: 15,
            call_timeout_secs: 5,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            user: None,
            password_file: None,
        }
    }
}

impl FleetConfig {
    /// Checks the section on its own.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first setting that cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        if self.endpoints.is_empty() {
            return invalid("fleet.endpoints", "give at least one etcd URL".into());
        }
        for endpoint in &self.endpoints {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            match rest {
                Some(hostport)
                    if !hostport.is_empty() && !hostport.contains(['/', '?', '#', '@', ' ']) => {}
                _ => {
                    return invalid(
                        "fleet.endpoints",
                        format!("{endpoint:?} is not http://host:port or https://host:port"),
                    )
                }
            }
        }
        if crate::fleet::keys::check_prefix(&self.prefix).is_err() {
            return invalid(
                "fleet.prefix",
                "must start with / and hold only letters, digits, / . _ - (no trailing /, at most 64)"
                    .into(),
            );
        }
        if let Some(name) = &self.node_name {
            if let Err(reason) = crate::fleet::keys::check_node_name(name) {
                return invalid("fleet.node_name", reason);
            }
        }
        if let Some(zone) = &self.availability_zone {
            if zone.is_empty() || zone.len() > 255 {
                return invalid("fleet.availability_zone", "must be 1-255 characters".into());
            }
        }
        if self.region.is_empty() || self.region.len() > 255 {
            return invalid("fleet.region", "must be 1-255 characters".into());
        }
        if let Some(url) = &self.advertise_url {
            let ok = url
                .parse::<axum::http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if ok.is_none() {
                return invalid(
                    "fleet.advertise_url",
                    format!("{url:?} is not an http:// or https:// URL with a host"),
                );
            }
        }
        if !(5..=600).contains(&self.lease_ttl_secs) {
            return invalid("fleet.lease_ttl_secs", "must be 5-600".into());
        }
        if !(1..=60).contains(&self.call_timeout_secs) {
            return invalid("fleet.call_timeout_secs", "must be 1-60".into());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return invalid(
                "fleet.client_cert",
                "client_cert and client_key must be given together".into(),
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return invalid(
                "fleet.user",
                "user and password_file must be given together".into(),
            );
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !tls && (self.ca_cert.is_some() || self.client_cert.is_some()) {
            return invalid(
                "fleet.ca_cert",
                "TLS files are given but no endpoint is https://".into(),
            );
        }
        if tls && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return invalid(
                "fleet.endpoints",
                "mixes http:// and https:// endpoints".into(),
            );
        }
        Ok(())
    }

    /// The etcd call deadline as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }
}

/// Metadata service settings (`[metadata]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// Require IMDSv2-style session tokens on the EC2 tree (401 without one).
    pub require_tokens: bool,
    /// Steady requests per second allowed per server.
    pub requests_per_second: u32,
    /// Requests a server may make at once above the steady rate (cloud-init reads both trees at
    /// boot, about 60 requests).
    pub burst: u32,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            require_tokens: false,
            requests_per_second: 20,
            burst: 200,
        }
    }
}

/// Hypervisor connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HypervisorConfig {
    /// libvirt connection URI.
    pub uri: String,
    /// Domain type: auto (probe KVM), kvm or qemu.
    pub domain_type: DomainTypeSetting,
    /// Deadline of libvirt queries, QMP and QGA calls, in seconds.
    pub call_timeout_secs: u64,
    /// Deadline of libvirt lifecycle calls (define, start, destroy, managed save), in seconds.
    pub lifecycle_timeout_secs: u64,
    /// Deadline of the hypervisor version query, which may make libvirt probe QEMU, in seconds.
    pub version_timeout_secs: u64,
    /// How long a stop or soft reboot waits for the guest to power off before forcing it.
    pub clean_shutdown_timeout_secs: u64,
    /// How often the agent compares its servers with libvirt, in milliseconds.
    pub sync_interval_ms: u64,
    /// libvirt worker threads (1–32), each with its own libvirt connection: how many libvirt
    /// calls run at once. A call stuck in libvirtd keeps its worker; the agent never starts
    /// more, and calls fail as busy (503) while every worker is stuck.
    pub workers: usize,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            domain_type: DomainTypeSetting::Auto,
            call_timeout_secs: 10,
            lifecycle_timeout_secs: 120,
            version_timeout_secs: 120,
            clean_shutdown_timeout_secs: 60,
            sync_interval_ms: 2000,
            workers: 4,
        }
    }
}

impl HypervisorConfig {
    /// The libvirt call deadline as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }

    /// The lifecycle call deadline as a duration.
    pub fn lifecycle_timeout(&self) -> Duration {
        Duration::from_secs(self.lifecycle_timeout_secs)
    }

    /// The version query deadline as a duration.
    pub fn version_timeout(&self) -> Duration {
        Duration::from_secs(self.version_timeout_secs)
    }
}

/// `[host]`: what this node reports about itself besides capacity — to scheduler plugins
/// (WIT scheduler 1.1 `hosts.identity`), in `/v1/host` and in its fleet record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostIdentityConfig {
    /// Traits, as placement names them: `["HW_CPU_X86_AVX2", "CUSTOM_GPU"]` (upper-case
    /// letters, digits, `_`; at most 256; traits and metadata at most 16 KiB together).
    /// Default: none.
    pub traits: Vec<String>,
    /// Metadata, as host aggregates carry it: `{ ssd = "true", tenant = "t1" }` (at most 128
    /// entries, keys and values up to 255 bytes). Default: none.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Capacity reporting, with nova's allocation ratios.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// Virtual CPUs per physical CPU.
    pub cpu_allocation_ratio: f64,
    /// Virtual RAM per physical RAM.
    pub ram_allocation_ratio: f64,
    /// Virtual disk per physical disk.
    pub disk_allocation_ratio: f64,
    /// Memory kept for the host, in MiB.
    pub reserved_host_memory_mb: u64,
    /// Disk kept for the host, in GiB.
    pub reserved_host_disk_gb: u64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            reserved_host_memory_mb: 512,
            reserved_host_disk_gb: 0,
        }
    }
}

/// A TOML error in words an operator can act on: the message, the line and the table it is in
/// (`unknown field `colour`, expected `traits` or `metadata` (line 3, in [host])`).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().to_string();
    let Some(span) = e.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'));
    match table {
        Some(table) => format!("{message} (line {line}, in {table})"),
        None => format!("{message} (line {line})"),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            insecure: false,
            availability_zone: "nova".into(),
            host: HostIdentityConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            api: ApiConfig::default(),
            events: EventsConfig::default(),
            firewall: FirewallConfig::default(),
            hypervisor: HypervisorConfig::default(),
            capacity: CapacityConfig::default(),
            images: ImagesConfig::default(),
            plugins: Vec::new(),
            plugin_runtime: PluginRuntimeConfig::default(),
            metadata: MetadataConfig::default(),
            fleet: None,
            migration: MigrationConfig::default(),
            consoles: ConsolesConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML config file. Unknown keys are errors.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Parse`] when it is not
    /// valid.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses settings from TOML text. A plugin without `call_timeout_ms` gets its kind's
    /// default ([`PluginKind::default_call_timeout_ms`]).
    ///
    /// # Errors
    /// The parser's message when the text is not valid.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut config: Self = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if let Some(zone) = config
            .fleet
            .as_ref()
            .and_then(|f| f.availability_zone.clone())
        {
            if config.availability_zone != "nova" && config.availability_zone != zone {
                return Err(format!(
                    "fleet.availability_zone {zone:?} differs from availability_zone {:?}; set only one",
                    config.availability_zone
                ));
            }
            config.availability_zone = zone;
        }
        for plugin in &mut config.plugins {
            if plugin.call_timeout_ms == UNSET_TIMEOUT {
                plugin.call_timeout_ms = plugin.kind.default_call_timeout_ms();
            }
        }
        Ok(config)
    }

    /// Checks that the settings can work together. Called before any side effect.
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
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls", "cert and key must be given together");
        }
        let md = &self.metadata;
        let max = crate::metadata::MetadataOptions::MAX_RATE;
        if md.requests_per_second == 0 || md.requests_per_second > max {
            return invalid(
                "metadata.requests_per_second",
                &format!("must be 1 to {max}"),
            );
        }
        if md.burst < md.requests_per_second || md.burst > max {
            return invalid(
                "metadata.burst",
                &format!("must be at least requests_per_second and at most {max}"),
            );
        }
        if self.tls.client_ca.is_some() && !self.tls.enabled() {
            return invalid(
                "tls.client_ca",
                "client certificates need tls.cert and tls.key",
            );
        }
        if !self.listen.ip().is_loopback() && !self.tls.enabled() && !self.insecure {
            return Err(ConfigError::Invalid {
                setting: "listen",
                reason: format!(
                    "{} is not a loopback address and TLS is not configured; give --tls-cert and \
                     --tls-key, or --insecure to serve plain HTTP on the network anyway",
                    self.listen
                ),
            });
        }
        if self.auth.token.is_some() && self.auth.token_file.is_some() {
            return invalid("auth", "set either token or token_file, not both");
        }
        if let Some(token) = &self.auth.token {
            if token.len() < 16 {
                return invalid("auth.token", "a token needs at least 16 characters");
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return invalid("state_dir", "must not be empty");
        }
        if self.api.body_limit_bytes < 1024 {
            return invalid("api.body_limit_bytes", "must be at least 1024");
        }
        if self.api.request_timeout_secs == 0 {
            return invalid("api.request_timeout_secs", "must be at least 1");
        }
        if self.api.max_connections == 0 {
            return invalid("api.max_connections", "must be at least 1");
        }
        if self.api.header_read_timeout_secs == 0 {
            return invalid("api.header_read_timeout_secs", "must be at least 1");
        }
        if self.api.idle_timeout_secs == 0 {
            return invalid("api.idle_timeout_secs", "must be at least 1");
        }
        let prefix = &self.firewall.table_prefix;
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return invalid(
                "firewall.table_prefix",
                "must be 1-32 ASCII letters, digits or _, starting with a letter",
            );
        }
        if !(1..=300).contains(&self.firewall.nft_timeout_secs) {
            return invalid("firewall.nft_timeout_secs", "must be 1-300");
        }
        if let Some(fleet) = &self.fleet {
            fleet.validate()?;
        }
        self.migration.validate()?;
        self.consoles.validate()?;
        if self.migration.peer_token_file.is_some() && self.fleet.is_none() {
            return invalid(
                "migration.peer_token_file",
                "peers are the nodes of a fleet: add a [fleet] section",
            );
        }
        if self.events.backlog == 0 {
            return invalid("events.backlog", "must be at least 1");
        }
        if self.hypervisor.call_timeout_secs == 0 {
            return invalid("hypervisor.call_timeout_secs", "must be at least 1");
        }
        if self.hypervisor.lifecycle_timeout_secs == 0 {
            return invalid("hypervisor.lifecycle_timeout_secs", "must be at least 1");
        }
        if self.hypervisor.sync_interval_ms < 100 {
            return invalid("hypervisor.sync_interval_ms", "must be at least 100");
        }
        if !(1..=32).contains(&self.hypervisor.workers) {
            return invalid("hypervisor.workers", "must be 1 to 32");
        }
        if self.hypervisor.version_timeout_secs == 0 {
            return invalid("hypervisor.version_timeout_secs", "must be at least 1");
        }
        for (name, ratio) in [
            (
                "capacity.cpu_allocation_ratio",
                self.capacity.cpu_allocation_ratio,
            ),
            (
                "capacity.ram_allocation_ratio",
                self.capacity.ram_allocation_ratio,
            ),
            (
                "capacity.disk_allocation_ratio",
                self.capacity.disk_allocation_ratio,
            ),
        ] {
            if !(ratio.is_finite() && ratio > 0.0) {
                return invalid(name, "must be a positive number");
            }
        }
        if self.images.max_upload_gb == 0 || self.images.max_virtual_size_gb == 0 {
            return invalid(
                "images",
                "max_upload_gb and max_virtual_size_gb must be at least 1",
            );
        }
        if self.images.qemu_img_memory_mb < 16 {
            return invalid("images.qemu_img_memory_mb", "must be at least 16");
        }
        if self.images.qemu_img_cpu_secs == 0 {
            return invalid("images.qemu_img_cpu_secs", "must be at least 1");
        }
        if self.images.convert_timeout_secs == 0 {
            return invalid("images.convert_timeout_secs", "must be at least 1");
        }
        let mut names = std::collections::BTreeSet::new();
        for plugin in &self.plugins {
            let bad = |reason: String| {
                Err(ConfigError::Invalid {
                    setting: "plugins",
                    reason: format!("plugin {:?}: {reason}", plugin.name),
                })
            };
            if plugin.name.is_empty()
                || !plugin
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return bad("names use letters, digits, - and _".into());
            }
            if !names.insert(plugin.name.clone()) {
                return bad("the name is used twice".into());
            }
            for grant in &plugin.grants {
                if !PLUGIN_GRANTS.contains(&grant.as_str()) {
                    return bad(format!(
                        "unknown grant {grant:?}; grants are {}",
                        PLUGIN_GRANTS.join(", ")
                    ));
                }
            }
            if plugin.memory_limit_mb == 0 || plugin.memory_limit_mb > MAX_PLUGIN_MEMORY_MB {
                return bad(format!(
                    "memory_limit_mb must be 1 to {MAX_PLUGIN_MEMORY_MB}"
                ));
            }
            if plugin.call_timeout_ms == 0 || plugin.call_timeout_ms > MAX_PLUGIN_TIMEOUT_MS {
                return bad(format!(
                    "call_timeout_ms must be 1 to {MAX_PLUGIN_TIMEOUT_MS}"
                ));
            }
            if !plugin.multiplier.is_finite() {
                return bad("multiplier must be a number".into());
            }
            if plugin.kind != PluginKind::Weigher && plugin.multiplier != 1.0 {
                return bad("multiplier applies to weighers only".into());
            }
            let netlink_granted = plugin.grants.iter().any(|g| g == "netlink");
            if netlink_granted && plugin.kind != PluginKind::NetworkBackend {
                return bad(
                    "the netlink grant is for network-backend plugins only (kind = \"network-backend\")"
                        .into(),
                );
            }
            if let Some(netlink) = &plugin.netlink {
                if !netlink_granted {
                    return bad(
                        "[plugins.netlink] is set but \"netlink\" is not in grants; add it to grants \
                         or remove the table"
                            .into(),
                    );
                }
                if let Err(reason) = netlink.validate() {
                    return bad(reason);
                }
            }
            if let Err(reason) = plugin.validate_volume_grants() {
                return bad(reason);
            }
            let http_granted = plugin.grants.iter().any(|g| g == "http");
            match (&plugin.http, http_granted) {
                (Some(http), true) => {
                    if let Err(reason) = http.validate() {
                        return bad(reason);
                    }
                }
                (Some(_), false) => {
                    return bad(
                        "[plugins.http] is set but \"http\" is not in grants; add it \
                                to grants or remove the table"
                            .into(),
                    )
                }
                (None, true) => {
                    return bad("the http grant needs a [plugins.http] table listing its \
                                origins"
                        .into())
                }
                (None, false) => {}
            }
        }
        if self.availability_zone.is_empty() {
            return invalid("availability_zone", "must not be empty");
        }
        if let Some(e) =
            crate::sched::identity_error("this node", &self.host.traits, &self.host.metadata)
        {
            return invalid("host", &e);
        }
        Ok(())
    }

    /// Path of the SQLite store.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("hyperlet.db")
    }

    /// Directory of the image cache.
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    /// Directory of per-server files (root overlays, console logs).
    pub fn servers_dir(&self) -> PathBuf {
        self.state_dir.join("servers")
    }

    /// Directory of precompiled plugins.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugin_runtime
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("plugin-cache"))
    }

    /// Path of the generated admin token.
    pub fn admin_token_path(&self) -> PathBuf {
        self.state_dir.join("admin.token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn fleet_settings_are_checked() {
        let ok = "[fleet]\nendpoints = [\"http://10.0.0.5:2379\"]\n";
        let config = Config::from_toml(ok).unwrap();
        config.validate().unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(
            (fleet.prefix.as_str(), fleet.lease_ttl_secs),
            ("/hyperlet", 15)
        );
        assert!(Config::default().fleet.is_none(), "standalone by default");
        for (extra, setting) in [
            ("endpoints = []", "fleet.endpoints"),
            ("endpoints = [\"10.0.0.5:2379\"]", "fleet.endpoints"),
            ("endpoints = [\"http://a:1/x\"]", "fleet.endpoints"),
            (
                "endpoints = [\"http://a:1\", \"https://b:1\"]",
                "fleet.endpoints",
            ),
            ("prefix = \"hyperlet/\"", "fleet.prefix"),
            ("node_name = \"../etc\"", "fleet.node_name"),
            ("lease_ttl_secs = 1", "fleet.lease_ttl_secs"),
            ("call_timeout_secs = 0", "fleet.call_timeout_secs"),
            ("advertise_url = \"ftp://x\"", "fleet.advertise_url"),
            ("client_cert = \"/c\"", "fleet.client_cert"),
            ("user = \"root\"", "fleet.user"),
            ("ca_cert = \"/ca\"", "fleet.ca_cert"),
        ] {
            let text = if extra.starts_with("endpoints") {
                format!("[fleet]\n{extra}\n")
            } else {
                format!("{ok}{extra}\n")
            };
            let err = Config::from_toml(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(setting), "{extra}: {err}");
        }
        let err = Config::from_toml(&format!("{ok}password = \"x\"\n")).unwrap_err();
        assert!(err.contains("password"), "no password in the config: {err}");
    }

    #[test]
    fn the_fleet_zone_is_the_node_zone() {
        let config = Config::from_toml(
            "[fleet]\nendpoints = [\"http://e:1\"]\navailability_zone = \"az1\"\n",
        )
        .unwrap();
        assert_eq!(config.availability_zone, "az1");
        let err = Config::from_toml(
            "availability_zone = \"az2\"\n[fleet]\nendpoints = [\"http://e:1\"]\navailability_zone = \"az1\"\n",
        )
        .unwrap_err();
        assert!(err.contains("set only one"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn network_address_without_tls_needs_insecure() {
        let mut config = Config::from_toml("listen = \"0.0.0.0:8787\"").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--insecure"), "{err}");
        config.insecure = true;
        config.validate().unwrap();
    }

    #[test]
    fn libvirt_workers_are_bounded() {
        for bad in [0, 33] {
            let mut config = Config::default();
            config.hypervisor.workers = bad;
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("hypervisor.workers"), "{err}");
        }
    }

    #[test]
    fn example_config_in_contrib_is_valid() {
        let config = Config::from_toml(include_str!("../../contrib/hyperlet.toml")).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn single_node_config_of_run_sh_is_valid() {
        let config = Config::from_toml(include_str!("../../contrib/single-node.toml")).unwrap();
        config.validate().unwrap();
        assert!(config
            .plugins
            .iter()
            .any(|p| p.kind == PluginKind::NetworkBackend));
        // The paths must be the files scripts/build-plugins.sh writes.
        for plugin in &config.plugins {
            let file = plugin
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let krate = file.trim_end_matches(".wasm").replace('_', "-");
            let manifest = ["plugins"]
                .iter()
                .map(|d| {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("..")
                        .join(d)
                })
                .flat_map(|d| std::fs::read_dir(d).unwrap())
                .filter_map(Result::ok)
                .map(|e| e.path().join("Cargo.toml"))
                .filter(|m| m.exists())
                .find(|m| {
                    std::fs::read_to_string(m)
                        .unwrap()
                        .contains(&format!("name = \"{krate}\""))
                });
            assert!(manifest.is_some(), "no plugin crate {krate} for {file}");
        }
    }

    #[test]
    fn network_backend_with_netlink_grant() {
        let toml = r#"
            [[plugins]]
            name = "linuxbridge"
            kind = "network-backend"
            path = "/p/network_linux_bridge.wasm"
            grants = ["log", "netlink"]
            settings = { physical_interface_mappings = "physnet1:eth1" }
            [plugins.netlink]
            physical_interfaces = ["eth1"]
            vlan_ids = [100, 200]
        "#;
        let config = Config::from_toml(toml).unwrap();
        config.validate().unwrap();
        let plugin = &config.plugins[0];
        assert_eq!(plugin.kind, PluginKind::NetworkBackend);
        let grant = plugin.netlink.clone().unwrap();
        assert_eq!(grant.name_prefixes, ["brq", "vxlan-"]);
        assert_eq!(grant.vlan_ids, [100, 200]);
        assert_eq!(grant.vnis, [1, 16_777_215]);

        let refused = |extra: &str, grants: &str, kind: &str| {
            let text = format!(
                "[[plugins]]\nname = \"n\"\nkind = \"{kind}\"\npath = \"/p\"\ngrants = {grants}\n{extra}"
            );
            Config::from_toml(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let ok = r#"["netlink"]"#;
        let err = refused(
            "[plugins.netlink]\nvlan_ids = [0, 10]",
            ok,
            "network-backend",
        );
        assert!(err.contains("netlink.vlan_ids = [0, 10]"), "{err}");
        let err = refused("[plugins.netlink]\nvnis = [5, 4]", ok, "network-backend");
        assert!(err.contains("netlink.vnis"), "{err}");
        let err = refused(
            "[plugins.netlink]\nname_prefixes = []",
            ok,
            "network-backend",
        );
        assert!(err.contains("at least one prefix"), "{err}");
        let err = refused(
            "[plugins.netlink]\nphysical_interfaces = [\"brq-uplink\"]",
            ok,
            "network-backend",
        );
        assert!(err.contains("granted prefix \"brq\""), "{err}");
        let err = refused(
            "[plugins.netlink]\nphysical_interfaces = [\"tap0\"]",
            ok,
            "network-backend",
        );
        assert!(err.contains("guest ports"), "{err}");
        for prefix in ["t", "tap", "tapx"] {
            let err = refused(
                &format!("[plugins.netlink]\nname_prefixes = [\"{prefix}\"]"),
                ok,
                "network-backend",
            );
            assert!(err.contains("guest ports"), "{prefix}: {err}");
        }
        let err = refused(
            "[plugins.netlink]\nphysical_interfaces = [\"a/b\"]",
            ok,
            "network-backend",
        );
        assert!(err.contains("netlink.physical_interfaces"), "{err}");
        let err = refused("[plugins.netlink]\n", r#"["log"]"#, "network-backend");
        assert!(err.contains("not in grants"), "{err}");
        let err = refused("", ok, "filter");
        assert!(err.contains("network-backend plugins only"), "{err}");
    }

    #[test]
    fn example_fleet_in_contrib_is_valid() {
        let text = include_str!("../../contrib/hyperlet.toml");
        let start = text.find("# [fleet]").expect("the fleet example");
        let example: String = text[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let config = Config::from_toml(&example).unwrap();
        config.validate().unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.node_name.as_deref(), Some("compute-7"));
        assert_eq!(config.availability_zone, "az1");
        assert_eq!(
            config.migration.libvirt_uri.as_deref(),
            Some("qemu+tls://10.0.0.17/system")
        );
    }

    #[test]
    fn example_network_backend_in_contrib_is_valid() {
        let text = include_str!("../../contrib/hyperlet.toml");
        let start = text.find("# [[plugins]]").expect("the plugin example");
        let example: String = text[start..]
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let config = Config::from_toml(&example).unwrap();
        config.validate().unwrap();
        assert_eq!(config.plugins[0].kind, PluginKind::NetworkBackend);
        let maintenance = config.plugins.last().unwrap();
        assert_eq!(maintenance.name, "maintenance");
        assert_eq!(
            maintenance.http.as_ref().unwrap().origins,
            ["http://10.0.0.2:8080"]
        );
        assert_eq!(
            config.plugins[0].netlink.as_ref().unwrap(),
            &NetlinkGrant {
                physical_interfaces: vec!["eth1".into()],
                ..NetlinkGrant::default()
            }
        );
        let (lvm, nfs) = (&config.plugins[1], &config.plugins[2]);
        assert_eq!(lvm.kind, PluginKind::VolumeDriver);
        assert_eq!(lvm.lvm.as_ref().unwrap().volume_groups, ["cinder-volumes"]);
        assert_eq!(nfs.files.as_ref().unwrap().access, ShareAccess::Mount);
        assert_eq!(nfs.call_timeout_ms, 600_000);
    }

    #[test]
    fn volume_drivers_and_their_grants() {
        let toml = r#"
            [[plugins]]
            name = "lvm"
            kind = "volume-driver"
            path = "/p/volume_lvm.wasm"
            grants = ["log", "lvm"]
            [plugins.lvm]
            volume_groups = ["cinder-volumes"]
            lvm_system_dir = "/etc/lvm-test"

            [[plugins]]
            name = "nfs"
            kind = "volume-driver"
            path = "/p/volume_nfs.wasm"
            grants = ["files", "qemu-img"]
            call_timeout_ms = 600000
            [plugins.files]
            shares = ["127.0.0.1:/srv/nfs/abc"]
            access = "libnfs"
        "#;
        let config = Config::from_toml(toml).unwrap();
        config.validate().unwrap();
        let (lvm, nfs) = (&config.plugins[0], &config.plugins[1]);
        assert_eq!(lvm.kind, PluginKind::VolumeDriver);
        assert_eq!(
            lvm.call_timeout_ms, 120_000,
            "volume drivers default to 120 s"
        );
        assert_eq!(nfs.call_timeout_ms, 600_000);
        let grant = lvm.lvm.clone().unwrap();
        assert_eq!(grant.command_timeout_secs, 30);
        assert_eq!(
            grant.lvm_system_dir.as_deref(),
            Some(Path::new("/etc/lvm-test"))
        );
        let files = nfs.files.clone().unwrap();
        assert_eq!(files.access, ShareAccess::Libnfs);
        assert_eq!(files.mount_root, Path::new("/var/lib/hyperlet/mnt"));
        assert_eq!(files.mode(), Ok(0o660));
        // Other kinds keep the short default.
        let filter =
            Config::from_toml("[[plugins]]\nname = \"f\"\nkind = \"filter\"\npath = \"/p\"")
                .unwrap();
        assert_eq!(filter.plugins[0].call_timeout_ms, 2000);

        let refused = |kind: &str, grants: &str, tables: &str| {
            let text = format!(
                "[[plugins]]\nname = \"v\"\nkind = \"{kind}\"\npath = \"/p\"\ngrants = {grants}\n{tables}"
            );
            Config::from_toml(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let lvm_table = "[plugins.lvm]\nvolume_groups = [\"vg\"]\n";
        let files_table = "[plugins.files]\nshares = [\"h:/x\"]\n";
        let err = refused("filter", r#"["lvm"]"#, lvm_table);
        assert!(err.contains("volume-driver plugins only"), "{err}");
        let err = refused("volume-driver", r#"["lvm"]"#, "");
        assert!(err.contains("[plugins.lvm]"), "{err}");
        let err = refused("volume-driver", r#"["log"]"#, lvm_table);
        assert!(err.contains("not in grants"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["lvm"]"#,
            "[plugins.lvm]\nvolume_groups = []\n",
        );
        assert!(err.contains("at least one volume group"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["lvm"]"#,
            "[plugins.lvm]\nvolume_groups = [\"../vg\"]\n",
        );
        assert!(err.contains("lvm.volume_groups"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["lvm"]"#,
            "[plugins.lvm]\nvolume_groups = [\"vg\"]\nlvm_system_dir = \"etc\"\n",
        );
        assert!(err.contains("absolute"), "{err}");
        let err = refused("volume-driver", r#"["qemu-img"]"#, "");
        assert!(err.contains("[plugins.files]"), "{err}");
        let err = refused("volume-driver", r#"["log"]"#, files_table);
        assert!(err.contains("is set but neither"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["files"]"#,
            "[plugins.files]\nshares = [\"h:/a/../b\"]\n",
        );
        assert!(err.contains("files.shares"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["files"]"#,
            "[plugins.files]\nshares = [\"h:/x\"]\nfile_mode = \"0999\"\n",
        );
        assert!(err.contains("files.file_mode"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["files"]"#,
            "[plugins.files]\nshares = [\"h:/x\"]\nfile_mode = \"0666\"\n",
        );
        assert!(err.contains("world-writable"), "{err}");
        let err = refused(
            "volume-driver",
            r#"["files"]"#,
            "[plugins.files]\nshares = [\"h:/x\"]\nmount_options = \"a b\"\n",
        );
        assert!(err.contains("files.mount_options"), "{err}");
        let err = refused("volume-driver", r#"["files"]"#, "call_timeout_ms = 0\n");
        assert!(err.contains("call_timeout_ms"), "{err}");
    }

    #[test]
    fn tls_needs_cert_and_key() {
        let config = Config::from_toml("[tls]\ncert = \"/a\"").unwrap();
        assert!(config.validate().is_err());
    }
}
