//! A mock host for unit tests, meant to run natively (`cargo test`).
//!
//! Build a request and some hosts, run the plugin through the same glue the component export
//! uses (settings → `new` → batch check → per-host calls → answer check), and look at the
//! verdicts (turned back from the columnar [`Verdicts`](crate::Verdicts) into one
//! [`Verdict`] per host), weights and log lines (captured only off wasm; on wasm they go to the real
//! host's `log` import):
//!
//! ```
//! use hyperlet_plugin_sdk::prelude::*;
//! use hyperlet_plugin_sdk::testing::{run_filter, take_logs, HostBuilder, RequestBuilder};
//!
//! struct ZoneOnly(String);
//!
//! impl Filter for ZoneOnly {
//!     fn new(settings: &Settings) -> Result<Self, PluginError> {
//!         Ok(Self(settings.require("zone")?.to_owned()))
//!     }
//!     fn filter(&self, _spec: &RequestSpec, host: &Host<'_>) -> Verdict {
//!         log::debug!("host {} is in {}", host.index(), host.availability_zone());
//!         Verdict::pass_if(host.availability_zone() == self.0, || format!("not in {}", self.0))
//!     }
//! }
//!
//! let spec = RequestBuilder::new().ram_mb(2048).build();
//! let hosts = [HostBuilder::new().az("a"), HostBuilder::new().az("b")];
//! let verdicts = run_filter::<ZoneOnly>(&[("zone", "b")], &spec, &hosts).unwrap();
//! assert_eq!(verdicts, [Verdict::fail("not in b"), Verdict::Pass]);
//! assert_eq!(take_logs().len(), 2);
//!
//! let err = run_filter::<ZoneOnly>(&[], &spec, &hosts).unwrap_err();
//! assert_eq!(err.code, "bad-setting");
//! ```

use std::cell::RefCell;

pub mod files;
pub mod http;
pub mod lvm;
pub mod netlink;
pub mod qemu_img;

use crate::log::Level;
use crate::network::{Network, NetworkBackend, NetworkType};
use crate::plugin::{run_filter_batch, run_weigher_batch};
use crate::volume::{Snapshot, Volume, VolumeDriver};
use crate::{
    Filter, HostBatch, HostIdentity, PluginError, RequestSpec, Settings, Verdict, Weigher,
};

/// Builds a [`RequestSpec`]. Defaults: 1 vCPU, 512 MiB, 1 GiB disk, no volume, no zone, no
/// image properties.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    spec: RequestSpec,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuilder {
    /// A request with the defaults.
    pub fn new() -> Self {
        Self {
            spec: RequestSpec {
                vcpus: 1,
                ram_mb: 512,
                disk_gb: 1,
                volume_gb: 0,
                availability_zone: None,
                image_properties: Vec::new(),
            },
        }
    }

    /// Virtual CPUs.
    #[must_use]
    pub fn vcpus(mut self, vcpus: u32) -> Self {
        self.spec.vcpus = vcpus;
        self
    }

    /// Memory, MiB.
    #[must_use]
    pub fn ram_mb(mut self, ram_mb: u64) -> Self {
        self.spec.ram_mb = ram_mb;
        self
    }

    /// Root + ephemeral disk, GiB.
    #[must_use]
    pub fn disk_gb(mut self, disk_gb: u64) -> Self {
        self.spec.disk_gb = disk_gb;
        self
    }

    /// Volume capacity, GiB.
    #[must_use]
    pub fn volume_gb(mut self, volume_gb: u64) -> Self {
        self.spec.volume_gb = volume_gb;
        self
    }

    /// The availability zone asked for.
    #[must_use]
    pub fn az(mut self, zone: &str) -> Self {
        self.spec.availability_zone = Some(zone.to_owned());
        self
    }

    /// Adds an image property.
    #[must_use]
    pub fn image_property(mut self, key: &str, value: &str) -> Self {
        self.spec
            .image_properties
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// The request.
    pub fn build(self) -> RequestSpec {
        self.spec
    }
}

/// Builds one candidate host. Defaults: enabled, heartbeat 0 s ago, 8 CPUs, 16384 MiB,
/// 100 GiB disk, nothing used, no volume capacity, all allocation ratios 1.0, zone `nova`,
/// hypervisor `qemu`, architecture `x86_64`, VM mode `hvm`.
#[derive(Clone, Debug)]
pub struct HostBuilder {
    state: State,
    ram_free: Option<u64>,
    name: Option<String>,
    traits: Vec<String>,
    metadata: std::collections::BTreeMap<String, String>,
    availability_zone: String,
    hypervisor_type: String,
    architecture: String,
    vm_mode: String,
}

/// One host's numbers (the batch's columns hold them host by host).
#[derive(Clone, Copy, Debug)]
struct State {
    enabled: bool,
    heartbeat_age_s: u32,
    vcpus_total: u32,
    vcpus_used: u32,
    ram_total_mb: u64,
    ram_used_mb: u64,
    disk_total_gb: u64,
    disk_used_gb: u64,
    volume_free_gb: u64,
    cpu_allocation_ratio: f32,
    ram_allocation_ratio: f32,
    disk_allocation_ratio: f32,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBuilder {
    /// A host with the defaults.
    pub fn new() -> Self {
        Self {
            state: State {
                enabled: true,
                heartbeat_age_s: 0,
                vcpus_total: 8,
                vcpus_used: 0,
                ram_total_mb: 16384,
                ram_used_mb: 0,
                disk_total_gb: 100,
                disk_used_gb: 0,
                volume_free_gb: 0,
                cpu_allocation_ratio: 1.0,
                ram_allocation_ratio: 1.0,
                disk_allocation_ratio: 1.0,
            },
            ram_free: None,
            name: None,
            traits: Vec::new(),
            metadata: std::collections::BTreeMap::new(),
            availability_zone: "nova".to_owned(),
            hypervisor_type: "qemu".to_owned(),
            architecture: "x86_64".to_owned(),
            vm_mode: "hvm".to_owned(),
        }
    }

    /// Whether the node takes new servers.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.state.enabled = enabled;
        self
    }

    /// Seconds since the node last reported.
    #[must_use]
    pub fn heartbeat_age(mut self, seconds: u32) -> Self {
        self.state.heartbeat_age_s = seconds;
        self
    }

    /// `vcpus(total, used)`: physical CPUs, and vCPUs allocated.
    #[must_use]
    pub fn vcpus(mut self, total: u32, used: u32) -> Self {
        self.state.vcpus_total = total;
        self.state.vcpus_used = used;
        self
    }

    /// `ram(total_mb, used_mb)`: physical memory, and memory allocated, MiB. Unless [`HostBuilder::ram_free`] is given,
    /// the free memory is `total − used`.
    #[must_use]
    pub fn ram(mut self, total_mb: u64, used_mb: u64) -> Self {
        self.state.ram_total_mb = total_mb;
        self.state.ram_used_mb = used_mb;
        self
    }

    /// Memory free on the host right now, MiB.
    #[must_use]
    pub fn ram_free(mut self, free_mb: u64) -> Self {
        self.ram_free = Some(free_mb);
        self
    }

    /// `disk(total_gb, used_gb)`: disk for servers, and disk allocated, GiB.
    #[must_use]
    pub fn disk(mut self, total_gb: u64, used_gb: u64) -> Self {
        self.state.disk_total_gb = total_gb;
        self.state.disk_used_gb = used_gb;
        self
    }

    /// Volume capacity free, GiB.
    #[must_use]
    pub fn volume_free(mut self, free_gb: u64) -> Self {
        self.state.volume_free_gb = free_gb;
        self
    }

    /// vCPU allocation ratio.
    #[must_use]
    pub fn cpu_ratio(mut self, ratio: f32) -> Self {
        self.state.cpu_allocation_ratio = ratio;
        self
    }

    /// RAM allocation ratio.
    #[must_use]
    pub fn ram_ratio(mut self, ratio: f32) -> Self {
        self.state.ram_allocation_ratio = ratio;
        self
    }

    /// Disk allocation ratio.
    #[must_use]
    pub fn disk_ratio(mut self, ratio: f32) -> Self {
        self.state.disk_allocation_ratio = ratio;
        self
    }

    /// Availability zone.
    #[must_use]
    pub fn az(mut self, zone: &str) -> Self {
        zone.clone_into(&mut self.availability_zone);
        self
    }

    /// Hypervisor type.
    #[must_use]
    pub fn hypervisor_type(mut self, hypervisor_type: &str) -> Self {
        hypervisor_type.clone_into(&mut self.hypervisor_type);
        self
    }

    /// CPU architecture.
    #[must_use]
    pub fn architecture(mut self, architecture: &str) -> Self {
        architecture.clone_into(&mut self.architecture);
        self
    }

    /// Supported VM mode.
    #[must_use]
    pub fn vm_mode(mut self, vm_mode: &str) -> Self {
        vm_mode.clone_into(&mut self.vm_mode);
        self
    }

    /// The host's name [default: `host-<i>`, `i` its position in the batch].
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Adds trait `name` (e.g. `CUSTOM_GPU`) [default: no traits].
    #[must_use]
    pub fn with_trait(mut self, name: &str) -> Self {
        self.traits.push(name.to_owned());
        self
    }

    /// `metadata(key, value)`: sets a metadata entry, as a host aggregate's [default: none].
    #[must_use]
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// The [`HostIdentity`] the agent would answer `hosts.identity` with for `hosts`: names
/// (`host-<i>` unless given), traits sorted without repeats, metadata by key, each distinct
/// trait, key and value once in `strings`.
pub fn identity(hosts: &[HostBuilder]) -> HostIdentity {
    let mut strings: Vec<String> = Vec::new();
    let mut intern = |s: &str| -> u32 {
        let idx = strings
            .iter()
            .position(|known| known == s)
            .unwrap_or_else(|| {
                strings.push(s.to_owned());
                strings.len() - 1
            });
        u32::try_from(idx).expect("fewer than 2^32 strings")
    };
    let mut id = HostIdentity {
        strings: Vec::new(),
        names: Vec::new(),
        trait_start: Vec::new(),
        trait_idx: Vec::new(),
        metadata_start: Vec::new(),
        metadata_key_idx: Vec::new(),
        metadata_value_idx: Vec::new(),
    };
    let offset = |len: usize| u32::try_from(len).expect("fewer than 2^32 entries");
    for (i, h) in hosts.iter().enumerate() {
        id.names
            .push(h.name.clone().unwrap_or_else(|| format!("host-{i}")));
        id.trait_start.push(offset(id.trait_idx.len()));
        let mut traits = h.traits.clone();
        traits.sort();
        traits.dedup();
        for t in &traits {
            id.trait_idx.push(intern(t));
        }
        id.metadata_start.push(offset(id.metadata_key_idx.len()));
        for (k, v) in &h.metadata {
            id.metadata_key_idx.push(intern(k));
            id.metadata_value_idx.push(intern(v));
        }
    }
    id.trait_start.push(offset(id.trait_idx.len()));
    id.metadata_start.push(offset(id.metadata_key_idx.len()));
    id.strings = strings;
    id
}

thread_local! {
    static CURRENT_IDENTITY: std::cell::RefCell<Option<HostIdentity>> =
        const { std::cell::RefCell::new(None) };
}

/// What the mock host answers `hosts.identity` with: the identity of the hosts of the
/// [`run_filter`] / [`run_weigher`] call in progress (no hosts outside one).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn current_identity() -> HostIdentity {
    CURRENT_IDENTITY.with(|current| current.borrow().clone().unwrap_or_else(|| identity(&[])))
}

/// Runs `f` while the mock host's `hosts.identity` answers for `hosts`.
fn with_identity<T>(hosts: &[HostBuilder], f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT_IDENTITY.with(|current| current.borrow_mut().take());
        }
    }
    CURRENT_IDENTITY.with(|current| *current.borrow_mut() = Some(identity(hosts)));
    let _reset = Reset;
    f()
}

/// The [`HostBatch`] the agent would send for `hosts`: one column per field, each distinct
/// string once, referenced by index.
pub fn batch(hosts: &[HostBuilder]) -> HostBatch {
    let mut strings: Vec<String> = Vec::new();
    let mut intern = |s: &str| -> u32 {
        let idx = strings
            .iter()
            .position(|known| known == s)
            .unwrap_or_else(|| {
                strings.push(s.to_owned());
                strings.len() - 1
            });
        u32::try_from(idx).expect("fewer than 2^32 strings")
    };
    let n = hosts.len();
    let mut b = HostBatch {
        strings: Vec::new(),
        enabled: Vec::with_capacity(n),
        heartbeat_age_s: Vec::with_capacity(n),
        vcpus_total: Vec::with_capacity(n),
        vcpus_used: Vec::with_capacity(n),
        ram_total_mb: Vec::with_capacity(n),
        ram_used_mb: Vec::with_capacity(n),
        ram_free_mb: Vec::with_capacity(n),
        disk_total_gb: Vec::with_capacity(n),
        disk_used_gb: Vec::with_capacity(n),
        volume_free_gb: Vec::with_capacity(n),
        cpu_allocation_ratio: Vec::with_capacity(n),
        ram_allocation_ratio: Vec::with_capacity(n),
        disk_allocation_ratio: Vec::with_capacity(n),
        availability_zone_idx: Vec::with_capacity(n),
        hypervisor_type_idx: Vec::with_capacity(n),
        architecture_idx: Vec::with_capacity(n),
        vm_mode_idx: Vec::with_capacity(n),
    };
    for h in hosts {
        let s = &h.state;
        b.enabled.push(s.enabled);
        b.heartbeat_age_s.push(s.heartbeat_age_s);
        b.vcpus_total.push(s.vcpus_total);
        b.vcpus_used.push(s.vcpus_used);
        b.ram_total_mb.push(s.ram_total_mb);
        b.ram_used_mb.push(s.ram_used_mb);
        b.ram_free_mb.push(
            h.ram_free
                .unwrap_or(s.ram_total_mb.saturating_sub(s.ram_used_mb)),
        );
        b.disk_total_gb.push(s.disk_total_gb);
        b.disk_used_gb.push(s.disk_used_gb);
        b.volume_free_gb.push(s.volume_free_gb);
        b.cpu_allocation_ratio.push(s.cpu_allocation_ratio);
        b.ram_allocation_ratio.push(s.ram_allocation_ratio);
        b.disk_allocation_ratio.push(s.disk_allocation_ratio);
        b.availability_zone_idx.push(intern(&h.availability_zone));
        b.hypervisor_type_idx.push(intern(&h.hypervisor_type));
        b.architecture_idx.push(intern(&h.architecture));
        b.vm_mode_idx.push(intern(&h.vm_mode));
    }
    b.strings = strings;
    b
}

/// Configures filter `F` with `settings` and runs it over `hosts`, as the agent would: one
/// `configure`, one `filter-hosts` call with the whole batch. The answer, checked like the
/// component's, comes back as one [`Verdict`] per host.
///
/// # Errors
///
/// The `configure` error (e.g. `bad-setting`), or the call's error.
pub fn run_filter<F: Filter>(
    settings: &[(&str, &str)],
    spec: &RequestSpec,
    hosts: &[HostBuilder],
) -> Result<Vec<Verdict>, PluginError> {
    let filter = F::new(&Settings::from_pairs(settings.iter().copied()))?;
    with_identity(hosts, || run_filter_batch(&filter, spec, &batch(hosts)))
        .map(crate::Verdicts::into_vec)
}

/// Configures weigher `W` with `settings` and runs it over `hosts` (the raw weights, before
/// the agent normalises them).
///
/// # Errors
///
/// The `configure` error (e.g. `bad-setting`), or the call's error.
pub fn run_weigher<W: Weigher>(
    settings: &[(&str, &str)],
    spec: &RequestSpec,
    hosts: &[HostBuilder],
) -> Result<Vec<f64>, PluginError> {
    let weigher = W::new(&Settings::from_pairs(settings.iter().copied()))?;
    with_identity(hosts, || run_weigher_batch(&weigher, spec, &batch(hosts)))
}

/// One captured log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// Lines kept per thread; older ones are dropped beyond this.
const MAX_CAPTURED: usize = 10_000;

thread_local! {
    static LOGS: RefCell<Vec<LogLine>> = const { RefCell::new(Vec::new()) };
}

#[cfg_attr(
    target_arch = "wasm32",
    allow(dead_code, reason = "wasm logs go to the host")
)]
pub(crate) fn capture_log(level: Level, message: &str) {
    LOGS.with(|logs| {
        let mut logs = logs.borrow_mut();
        if logs.len() >= MAX_CAPTURED {
            logs.remove(0);
        }
        logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    });
}

/// The lines logged so far on this thread (each test runs on its own thread), oldest first,
/// and forgets them.
pub fn take_logs() -> Vec<LogLine> {
    LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
}

/// The messages logged so far on this thread, without forgetting them.
pub fn log_messages() -> Vec<String> {
    LOGS.with(|logs| {
        logs.borrow()
            .iter()
            .map(|line| line.message.clone())
            .collect()
    })
}

/// Builds a network backend from `settings` through the same glue `configure` uses, for
/// native tests (pair it with [`netlink`], the simulated host).
///
/// # Errors
///
/// Whatever [`NetworkBackend::new`] returns.
pub fn backend<B: NetworkBackend>(settings: &[(&str, &str)]) -> Result<B, PluginError> {
    let slot = RefCell::new(None);
    let pairs = settings
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    crate::network::configure::<B>(&slot, pairs)?;
    Ok(slot.into_inner().expect("configured"))
}

/// Builds a volume driver from `settings` through the same glue `configure` uses, for native
/// tests (pair it with [`lvm`], [`files`] and [`qemu_img`], the simulated host).
///
/// # Errors
///
/// Whatever [`VolumeDriver::new`] returns.
pub fn driver<D: VolumeDriver>(settings: &[(&str, &str)]) -> Result<D, PluginError> {
    let slot = RefCell::new(None);
    let pairs = settings
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    crate::volume::configure::<D>(&slot, pairs)?;
    Ok(slot.into_inner().expect("configured"))
}

/// A [`Volume`] named as cinder names it, `volume-<id>`.
pub fn volume(id: &str, size_gb: u64) -> Volume {
    Volume {
        id: id.to_owned(),
        name: format!("volume-{id}"),
        size_gb,
    }
}

/// A [`Snapshot`] of `volume` named as cinder names it, `snapshot-<id>`.
pub fn snapshot(id: &str, volume: &Volume) -> Snapshot {
    Snapshot {
        id: id.to_owned(),
        name: format!("snapshot-{id}"),
        volume: volume.clone(),
    }
}

/// Builds a [`Network`] record. Defaults: MTU 1500, no physical network, no segmentation id.
///
/// ```
/// use hyperlet_plugin_sdk::network::NetworkType;
/// use hyperlet_plugin_sdk::testing::NetworkBuilder;
///
/// let net = NetworkBuilder::vlan("4e1b0a9c-1234-4000-8000-000000000001", "physnet1", 100)
///     .mtu(1450)
///     .build();
/// assert_eq!(net.network_type, NetworkType::Vlan);
/// assert_eq!(net.segmentation_id, Some(100));
/// ```
#[derive(Clone, Debug)]
pub struct NetworkBuilder {
    network: Network,
}

impl NetworkBuilder {
    fn new(id: &str, network_type: NetworkType) -> Self {
        Self {
            network: Network {
                id: id.to_owned(),
                network_type,
                physical_network: None,
                segmentation_id: None,
                mtu: 1500,
            },
        }
    }

    /// A flat network on `physnet`.
    pub fn flat(id: &str, physnet: &str) -> Self {
        Self::new(id, NetworkType::Flat).physical_network(physnet)
    }

    /// A VLAN network on `physnet` with id `vid`.
    pub fn vlan(id: &str, physnet: &str, vid: u32) -> Self {
        Self::new(id, NetworkType::Vlan)
            .physical_network(physnet)
            .segmentation_id(vid)
    }

    /// A VXLAN network with VNI `vni`.
    pub fn vxlan(id: &str, vni: u32) -> Self {
        Self::new(id, NetworkType::Vxlan).segmentation_id(vni)
    }

    /// A local network.
    pub fn local(id: &str) -> Self {
        Self::new(id, NetworkType::Local)
    }

    /// Sets the physical network label.
    pub fn physical_network(mut self, physnet: &str) -> Self {
        self.network.physical_network = Some(physnet.to_owned());
        self
    }

    /// Sets (or clears) the segmentation id.
    pub fn segmentation_id(mut self, id: impl Into<Option<u32>>) -> Self {
        self.network.segmentation_id = id.into();
        self
    }

    /// Sets the MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.network.mtu = mtu;
        self
    }

    /// The network.
    pub fn build(self) -> Network {
        self.network
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    struct Big;
    impl Filter for Big {
        fn new(settings: &Settings) -> Result<Self, PluginError> {
            settings.check_known(&[])?;
            Ok(Self)
        }
        fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
            log::info!("host {}", host.index());
            Verdict::pass_if(host.usable_ram_mb() >= spec.ram_mb as f64, || {
                "small".into()
            })
        }
    }

    struct Short;
    impl Filter for Short {
        fn new(_: &Settings) -> Result<Self, PluginError> {
            Ok(Self)
        }
        fn filter(&self, _: &RequestSpec, _: &Host<'_>) -> Verdict {
            Verdict::Pass
        }
        fn filter_all(&self, _: &RequestSpec, _: &Hosts<'_>) -> Result<Verdicts, PluginError> {
            Ok(Verdicts::with_capacity(0))
        }
    }

    /// Answers with the `Verdicts` it was built with, whatever the batch.
    struct Canned(Verdicts);
    impl Filter for Canned {
        fn new(_: &Settings) -> Result<Self, PluginError> {
            unreachable!()
        }
        fn filter(&self, _: &RequestSpec, _: &Host<'_>) -> Verdict {
            unreachable!()
        }
        fn filter_all(&self, _: &RequestSpec, _: &Hosts<'_>) -> Result<Verdicts, PluginError> {
            Ok(self.0.clone())
        }
    }

    struct Nan;
    impl Weigher for Nan {
        fn new(_: &Settings) -> Result<Self, PluginError> {
            Ok(Self)
        }
        fn weigh(&self, _: &RequestSpec, host: &Host<'_>) -> f64 {
            if host.index() == 1 {
                f64::NAN
            } else {
                1.0
            }
        }
    }

    #[test]
    fn batch_interns_strings() {
        let b = batch(&[
            HostBuilder::new().az("a"),
            HostBuilder::new().az("b").ram(100, 30),
        ]);
        assert_eq!(b.strings, ["a", "qemu", "x86_64", "hvm", "b"]);
        assert_eq!(b.availability_zone_idx, [0, 4]);
        assert_eq!(b.architecture_idx, [2, 2]);
        assert_eq!(b.ram_total_mb, [16384, 100]);
        assert_eq!(b.ram_free_mb, [16384, 70]);
        assert_eq!(b.enabled, [true, true]);
        let b = batch(&[HostBuilder::new().ram(100, 30).ram_free(5)]);
        assert_eq!(b.ram_free_mb, [5]);
    }

    #[test]
    fn runs_filter_and_captures_logs() {
        let spec = RequestBuilder::new().ram_mb(1024).build();
        let hosts = [HostBuilder::new().ram(512, 0), HostBuilder::new()];
        let verdicts = run_filter::<Big>(&[], &spec, &hosts).unwrap();
        assert_eq!(verdicts, [Verdict::fail("small"), Verdict::Pass]);
        assert_eq!(log_messages(), ["host 0", "host 1"]);
        let logs = take_logs();
        assert_eq!(
            logs[0],
            LogLine {
                level: Level::Info,
                message: "host 0".into()
            }
        );
        assert!(take_logs().is_empty());
        assert_eq!(
            run_filter::<Big>(&[("x", "1")], &spec, &hosts)
                .unwrap_err()
                .code,
            "bad-setting"
        );
    }

    #[test]
    fn checks_answers() {
        let spec = RequestBuilder::new().build();
        let hosts = [HostBuilder::new(), HostBuilder::new()];
        let err = run_filter::<Short>(&[], &spec, &hosts).unwrap_err();
        assert_eq!(
            err,
            PluginError::new("bad-answer", "The plugin returned 0 verdicts for 2 hosts")
        );
        let err = run_weigher::<Nan>(&[], &spec, &hosts).unwrap_err();
        assert_eq!(
            err,
            PluginError::new("bad-answer", "Weight of host 1 is NaN, not a finite number")
        );
        assert_eq!(run_weigher::<Nan>(&[], &spec, &hosts[..1]).unwrap(), [1.0]);
    }

    #[test]
    fn checks_reasons() {
        let spec = RequestBuilder::new().build();
        let b = batch(&[HostBuilder::new(), HostBuilder::new(), HostBuilder::new()]);
        let run = |pass: &[bool], reasons: &[(u32, &str)]| {
            let canned = Canned(Verdicts {
                pass: pass.to_vec(),
                reasons: reasons.iter().map(|&(i, r)| (i, r.to_owned())).collect(),
            });
            run_filter_batch(&canned, &spec, &b).map_err(|e| {
                assert_eq!(e.code, "bad-answer");
                e.message
            })
        };
        let ok = run(&[false, true, false], &[(2, "b"), (0, "a")]).unwrap();
        assert_eq!(
            ok.into_vec(),
            [Verdict::fail("a"), Verdict::Pass, Verdict::fail("b")]
        );
        assert_eq!(
            run(&[true; 4], &[]).unwrap_err(),
            "The plugin returned 4 verdicts for 3 hosts"
        );
        assert_eq!(
            run(&[false, true, true], &[(0, "a"), (3, "x")]).unwrap_err(),
            "Reason for host 3, but there are 3 hosts"
        );
        assert_eq!(
            run(&[false, true, true], &[(0, "a"), (1, "x")]).unwrap_err(),
            "Reason for host 1, which passed"
        );
        assert_eq!(
            run(&[false, true, false], &[(0, "a")]).unwrap_err(),
            "Host 2 failed without a reason"
        );
        assert_eq!(
            run(&[false, true, false], &[(2, "a"), (2, "b")]).unwrap_err(),
            "More than one reason for host 2"
        );
        assert_eq!(
            run(&[false, false, true], &[(1, "a"), (1, "b")]).unwrap_err(),
            "More than one reason for host 1"
        );
    }

    #[test]
    fn export_glue_needs_configure() {
        use crate::__private::{configure, filter_hosts};
        let slot = RefCell::new(None::<Big>);
        let spec = RequestBuilder::new().build();
        let b = batch(&[HostBuilder::new()]);
        assert_eq!(
            filter_hosts(&slot, &spec, &b).unwrap_err().code,
            "not-configured"
        );
        configure(&slot, vec![]).unwrap();
        let verdicts = filter_hosts(&slot, &spec, &b).unwrap();
        assert_eq!(verdicts.pass, [true]);
        assert!(verdicts.reasons.is_empty());
        assert!(configure(&slot, vec![("bogus".into(), "1".into())]).is_err());
        assert_eq!(
            filter_hosts(&slot, &spec, &b).unwrap_err().code,
            "not-configured"
        );
    }
}
