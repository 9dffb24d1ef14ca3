//! Request, host and result types of the scheduler API, and their WIT forms.

use crate::plugin::WitRequestSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What is being placed (`POST /v1/scheduler/evaluate` `spec`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Virtual CPUs.
    #[serde(default)]
    #[schema(default = 0)]
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_i64)]
    pub vcpus: u32,
    /// Memory, MiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub ram_mb: u64,
    /// Root + ephemeral disk, GiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub disk_gb: u64,
    /// Volume capacity, GiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub volume_gb: u64,
    /// Availability zone asked for (none: any zone).
    #[serde(default)]
    #[schema(default = json!(null))]
    pub availability_zone: Option<String>,
    /// Image properties (architecture, hypervisor_type, vm_mode, …).
    #[serde(default)]
    #[schema(default = json!({}))]
    pub image_properties: BTreeMap<String, String>,
}

impl RequestSpec {
    /// The WIT record.
    pub fn to_wit(&self) -> WitRequestSpec {
        WitRequestSpec {
            vcpus: self.vcpus,
            ram_mb: self.ram_mb,
            disk_gb: self.disk_gb,
            volume_gb: self.volume_gb,
            availability_zone: self.availability_zone.clone(),
            image_properties: self
                .image_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn default_ratio() -> f32 {
    1.0
}
fn default_hv() -> String {
    "qemu".into()
}
fn default_arch() -> String {
    "x86_64".into()
}
fn default_mode() -> String {
    "hvm".into()
}
fn default_az() -> String {
    "nova".into()
}
fn yes() -> bool {
    true
}

/// One candidate host (a controller sends many; without them the agent uses its own).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    /// Host name (returned in the result): 1 to 255 characters, unique among the hosts of
    /// one request.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// Takes new servers.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Seconds since the host last reported.
    #[serde(default)]
    #[schema(default = 0)]
    pub heartbeat_age_s: u32,
    /// Physical CPUs.
    #[serde(default)]
    #[schema(default = 0)]
    pub vcpus_total: u32,
    /// vCPUs allocated.
    #[serde(default)]
    #[schema(default = 0)]
    pub vcpus_used: u32,
    /// Physical memory, MiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub ram_total_mb: u64,
    /// Memory allocated, MiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub ram_used_mb: u64,
    /// Memory free right now, MiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub ram_free_mb: u64,
    /// Disk for servers, GiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub disk_total_gb: u64,
    /// Disk allocated, GiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub disk_used_gb: u64,
    /// Volume capacity free, GiB.
    #[serde(default)]
    #[schema(default = 0)]
    pub volume_free_gb: u64,
    /// vCPU allocation ratio.
    #[serde(default = "default_ratio")]
    #[schema(default = 1.0)]
    pub cpu_allocation_ratio: f32,
    /// RAM allocation ratio.
    #[serde(default = "default_ratio")]
    #[schema(default = 1.0)]
    pub ram_allocation_ratio: f32,
    /// Disk allocation ratio.
    #[serde(default = "default_ratio")]
    #[schema(default = 1.0)]
    pub disk_allocation_ratio: f32,
    /// Availability zone.
    #[serde(default = "default_az")]
    #[schema(default = "nova")]
    pub availability_zone: String,
    /// Hypervisor type (`qemu`).
    #[serde(default = "default_hv")]
    #[schema(default = "qemu")]
    pub hypervisor_type: String,
    /// CPU architecture (`x86_64`).
    #[serde(default = "default_arch")]
    #[schema(default = "x86_64")]
    pub architecture: String,
    /// VM mode (`hvm`).
    #[serde(default = "default_mode")]
    #[schema(default = "hvm")]
    pub vm_mode: String,
    /// Traits, as placement names them (`HW_CPU_X86_AVX2`, `CUSTOM_GPU`): upper-case
    /// letters, digits and `_`, at most 255 bytes, at most 256 per host, traits and metadata
    /// at most 16 KiB together. Default: none.
    #[serde(default)]
    #[schema(schema_with = traits_schema)]
    pub traits: Vec<String>,
    /// Metadata, as host aggregates carry it (`ssd = "true"`, `tenant = "t1"`): at most 128
    /// entries, keys of 1–255 bytes, values of at most 255 bytes. Default: none.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

/// Text without control characters (what metadata keys and values may hold).
const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";

/// `HostState.traits` in the OpenAPI document: the placement alphabet, the bounds, the default.
fn traits_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Z0-9_]{1,255}$"))
                .min_length(Some(1))
                .max_length(Some(MAX_IDENTITY_LEN)),
        )
        .max_items(Some(MAX_TRAITS))
        .default(Some(serde_json::json!([])))
        .description(Some(
            "Traits, as placement names them (HW_CPU_X86_AVX2, CUSTOM_GPU). Traits and metadata \
             hold at most 16 KiB together. Default: none.",
        ))
        .build()
}

/// `HostState.metadata` in the OpenAPI document: keys and values without control characters,
/// the bounds, the default.
fn metadata_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_IDENTITY_LEN))
                .pattern(Some(NO_CONTROL))
                .build(),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_IDENTITY_LEN))
                .pattern(Some(NO_CONTROL)),
        ))
        .max_properties(Some(MAX_METADATA))
        .default(Some(serde_json::json!({})))
        .description(Some(
            "Metadata, as host aggregates carry it (ssd = true, tenant = t1). Default: none.",
        ))
        .build()
}

/// Most traits one host carries.
pub const MAX_TRAITS: usize = 256;
/// Most metadata entries one host carries.
pub const MAX_METADATA: usize = 128;
/// Longest trait name, metadata key or value, host name, bytes.
pub const MAX_IDENTITY_LEN: usize = 255;
/// Most bytes one host's traits and metadata hold together (they travel in its fleet record,
/// which is at most 64 KiB).
pub const MAX_IDENTITY_BYTES: usize = 16 * 1024;

/// Why a trait name is not one: `None` when it is.
pub fn trait_error(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_IDENTITY_LEN {
        return Some(format!(
            "trait {name:?} must have 1 to {MAX_IDENTITY_LEN} bytes"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Some(format!(
            "trait {name:?} may hold only upper-case letters, digits and _ (as HW_CPU_X86_AVX2 or CUSTOM_GPU)"
        ));
    }
    None
}

/// Why a host's traits or metadata are unusable: `None` when they are fine. `who` names the
/// host in the message.
pub fn identity_error(
    who: &str,
    traits: &[String],
    metadata: &BTreeMap<String, String>,
) -> Option<String> {
    if traits.len() > MAX_TRAITS {
        return Some(format!(
            "{who} has {} traits; at most {MAX_TRAITS}",
            traits.len()
        ));
    }
    if let Some(e) = traits.iter().find_map(|t| trait_error(t)) {
        return Some(format!("{who}: {e}"));
    }
    if metadata.len() > MAX_METADATA {
        return Some(format!(
            "{who} has {} metadata entries; at most {MAX_METADATA}",
            metadata.len()
        ));
    }
    let bytes: usize = traits.iter().map(String::len).sum::<usize>()
        + metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if bytes > MAX_IDENTITY_BYTES {
        return Some(format!(
            "{who} has {bytes} bytes of traits and metadata; at most {MAX_IDENTITY_BYTES}"
        ));
    }
    for (key, value) in metadata {
        if key.is_empty()
            || key.chars().count() > MAX_IDENTITY_LEN
            || key.chars().any(char::is_control)
        {
            return Some(format!(
                "{who}: metadata key {key:?} must have 1 to {MAX_IDENTITY_LEN} characters, none a control character"
            ));
        }
        if value.chars().count() > MAX_IDENTITY_LEN || value.chars().any(char::is_control) {
            return Some(format!(
                "{who}: metadata {key:?} has a value of {} characters or a control character; at most {MAX_IDENTITY_LEN} characters",
                value.chars().count()
            ));
        }
    }
    None
}

/// Why a list of candidate hosts is unusable: a host without a name or with a name longer
/// than [`MAX_IDENTITY_LEN`], two hosts of one name (results are reported by name), bad
/// traits or metadata. `None` when it is usable.
pub fn hosts_error(hosts: &[HostState]) -> Option<String> {
    let mut seen = std::collections::HashSet::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        if host.name.is_empty() || host.name.chars().count() > MAX_IDENTITY_LEN {
            return Some(format!(
                "host {i} needs a name of 1 to {MAX_IDENTITY_LEN} characters"
            ));
        }
        if !seen.insert(host.name.as_str()) {
            return Some(format!(
                "host name {:?} appears twice; results are reported by name",
                host.name
            ));
        }
        if let Some(e) = identity_error(
            &format!("host {:?}", host.name),
            &host.traits,
            &host.metadata,
        ) {
            return Some(e);
        }
    }
    None
}

/// A plugin the chain skipped because it is not loaded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkippedPlugin {
    /// Plugin name.
    pub name: String,
    /// Why it is not loaded.
    pub reason: String,
}

/// The outcome for one host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostResult {
    /// Host name.
    pub name: String,
    /// Passed every filter.
    pub passed: bool,
    /// The filter that failed it.
    pub failed_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Sum of the weighted, normalised weights (passed hosts).
    pub weight: f64,
    /// Each weigher's contribution.
    pub weights: BTreeMap<String, f64>,
}

/// The outcome of the chain: hosts that passed first, best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    /// How many hosts passed.
    pub passed: usize,
    /// Every host, passed ones first, by weight.
    pub hosts: Vec<HostResult>,
    /// Plugins skipped because they are not loaded.
    pub skipped_plugins: Vec<SkippedPlugin>,
    /// Time the chain took, µs.
    pub elapsed_us: u64,
}
