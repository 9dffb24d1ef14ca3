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
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_i64)]
    pub vcpus: u32,
    /// Memory, MiB.
    #[serde(default)]
    pub ram_mb: u64,
    /// Root + ephemeral disk, GiB.
    #[serde(default)]
    pub disk_gb: u64,
    /// Volume capacity, GiB.
    #[serde(default)]
    pub volume_gb: u64,
    /// Availability zone asked for.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Image properties (architecture, hypervisor_type, vm_mode, …).
    #[serde(default)]
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
    /// Host name (returned in the result).
    pub name: String,
    /// Takes new servers.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds since the host last reported.
    #[serde(default)]
    pub heartbeat_age_s: u32,
    /// Physical CPUs.
    #[serde(default)]
    pub vcpus_total: u32,
    /// vCPUs allocated.
    #[serde(default)]
    pub vcpus_used: u32,
    /// Physical memory, MiB.
    #[serde(default)]
    pub ram_total_mb: u64,
    /// Memory allocated, MiB.
    #[serde(default)]
    pub ram_used_mb: u64,
    /// Memory free right now, MiB.
    #[serde(default)]
    pub ram_free_mb: u64,
    /// Disk for servers, GiB.
    #[serde(default)]
    pub disk_total_gb: u64,
    /// Disk allocated, GiB.
    #[serde(default)]
    pub disk_used_gb: u64,
    /// Volume capacity free, GiB.
    #[serde(default)]
    pub volume_free_gb: u64,
    /// vCPU allocation ratio.
    #[serde(default = "default_ratio")]
    pub cpu_allocation_ratio: f32,
    /// RAM allocation ratio.
    #[serde(default = "default_ratio")]
    pub ram_allocation_ratio: f32,
    /// Disk allocation ratio.
    #[serde(default = "default_ratio")]
    pub disk_allocation_ratio: f32,
    /// Availability zone.
    #[serde(default = "default_az")]
    pub availability_zone: String,
    /// Hypervisor type (`qemu`).
    #[serde(default = "default_hv")]
    pub hypervisor_type: String,
    /// CPU architecture (`x86_64`).
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// VM mode (`hvm`).
    #[serde(default = "default_mode")]
    pub vm_mode: String,
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
