//! Scheduler benchmark: the full first-party chain (8 filters + 2 weighers) over 10,000 hosts
//! in one batched call per plugin — the traits and aggregate-metadata filters read every
//! host's name, traits and metadata (WIT scheduler 1.1's `hosts.identity`) — as WebAssembly components in the agent's plugin host vs the
//! same plugin code compiled natively (the baseline), measured side by side in one run; plus
//! the instantiation latency and per-call overhead of a component.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p hyperlet-tests --bench scheduler`.

use hyperlet::config::PluginKind;
use hyperlet::plugin::{PluginEngine, PluginRegistry};
use hyperlet::sched::{self, HostState, RequestSpec};
use hyperlet_plugin_sdk::{Filter, HostBatch, HostIdentity, Hosts, Identities, Settings, Weigher};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: usize = 10_000;
const ROUNDS: usize = 30;

use hyperlet_tests::plugins::scheduler_configs;

fn hosts() -> Vec<HostState> {
    (0..HOSTS)
        .map(|i| HostState {
            name: format!("node-{i:05}"),
            enabled: i % 50 != 0,
            heartbeat_age_s: (i % 90) as u32,
            vcpus_total: 32,
            vcpus_used: (i % 40) as u32,
            ram_total_mb: 131_072,
            ram_used_mb: ((i * 37) % 131_072) as u64,
            ram_free_mb: 131_072 - ((i * 37) % 131_072) as u64,
            disk_total_gb: 2000,
            disk_used_gb: ((i * 13) % 2000) as u64,
            volume_free_gb: ((i * 7) % 5000) as u64,
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            availability_zone: if i % 10 == 0 {
                "az2".into()
            } else {
                "nova".into()
            },
            hypervisor_type: "qemu".into(),
            architecture: if i % 25 == 0 {
                "aarch64".into()
            } else {
                "x86_64".into()
            },
            vm_mode: "hvm".into(),
            // Most hosts have AVX2, a third a GPU; racks and disks as aggregate metadata.
            traits: [
                (i % 20 != 0).then_some("HW_CPU_X86_AVX2"),
                (i % 3 == 0).then_some("CUSTOM_GPU"),
                Some("COMPUTE_STATUS_ENABLED"),
            ]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect(),
            metadata: BTreeMap::from([
                ("rack".to_string(), format!("r{:02}", i % 40)),
                ("ssd".to_string(), (i % 7 != 0).to_string()),
            ]),
        })
        .collect()
}

fn spec() -> RequestSpec {
    RequestSpec {
        vcpus: 4,
        ram_mb: 8192,
        disk_gb: 40,
        volume_gb: 0,
        availability_zone: Some("nova".into()),
        image_properties: BTreeMap::from([
            ("architecture".into(), "x86_64".into()),
            ("trait:HW_CPU_X86_AVX2".into(), "required".into()),
            ("aggregate_instance_extra_specs:ssd".into(), "true".into()),
        ]),
    }
}

fn registry(cache: &std::path::Path) -> PluginRegistry {
    let configs = scheduler_configs();
    let registry = block(PluginRegistry::load(
        PluginEngine::new().unwrap(),
        cache.to_path_buf(),
        &configs,
        10,
    ));
    for view in registry.views() {
        assert!(view.error.is_none(), "{}: {:?}", view.name, view.error);
    }
    registry
}

/// The SDK-side (columnar) batch for the native baseline, built as the agent builds its own.
fn sdk_batch(hosts: &[HostState], indexes: &[usize]) -> HostBatch {
    let mut strings: Vec<String> = Vec::new();
    let idx = |s: &str, strings: &mut Vec<String>| -> u32 {
        match strings.iter().position(|k| k == s) {
            Some(i) => i as u32,
            None => {
                strings.push(s.to_string());
                (strings.len() - 1) as u32
            }
        }
    };
    let pick =
        |f: &dyn Fn(&HostState) -> u64| indexes.iter().map(|&i| f(&hosts[i])).collect::<Vec<u64>>();
    let pick32 =
        |f: &dyn Fn(&HostState) -> u32| indexes.iter().map(|&i| f(&hosts[i])).collect::<Vec<u32>>();
    let pickf =
        |f: &dyn Fn(&HostState) -> f32| indexes.iter().map(|&i| f(&hosts[i])).collect::<Vec<f32>>();
    let mut az = Vec::with_capacity(indexes.len());
    let mut hv = Vec::with_capacity(indexes.len());
    let mut arch = Vec::with_capacity(indexes.len());
    let mut mode = Vec::with_capacity(indexes.len());
    for &i in indexes {
        let h = &hosts[i];
        az.push(idx(&h.availability_zone, &mut strings));
        hv.push(idx(&h.hypervisor_type, &mut strings));
        arch.push(idx(&h.architecture, &mut strings));
        mode.push(idx(&h.vm_mode, &mut strings));
    }
    HostBatch {
        strings,
        enabled: indexes.iter().map(|&i| hosts[i].enabled).collect(),
        heartbeat_age_s: pick32(&|h| h.heartbeat_age_s),
        vcpus_total: pick32(&|h| h.vcpus_total),
        vcpus_used: pick32(&|h| h.vcpus_used),
        ram_total_mb: pick(&|h| h.ram_total_mb),
        ram_used_mb: pick(&|h| h.ram_used_mb),
        ram_free_mb: pick(&|h| h.ram_free_mb),
        disk_total_gb: pick(&|h| h.disk_total_gb),
        disk_used_gb: pick(&|h| h.disk_used_gb),
        volume_free_gb: pick(&|h| h.volume_free_gb),
        cpu_allocation_ratio: pickf(&|h| h.cpu_allocation_ratio),
        ram_allocation_ratio: pickf(&|h| h.ram_allocation_ratio),
        disk_allocation_ratio: pickf(&|h| h.disk_allocation_ratio),
        availability_zone_idx: az,
        hypervisor_type_idx: hv,
        architecture_idx: arch,
        vm_mode_idx: mode,
    }
}

/// The SDK-side identity (names, traits, metadata) for the native baseline, built as the
/// agent builds its own.
fn sdk_identity(hosts: &[HostState], indexes: &[usize]) -> HostIdentity {
    let mut strings: Vec<String> = Vec::new();
    let mut lookup: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut idx = |s: &str| -> u32 {
        if let Some(&i) = lookup.get(s) {
            return i;
        }
        strings.push(s.to_string());
        let i = (strings.len() - 1) as u32;
        lookup.insert(s.to_string(), i);
        i
    };
    let mut id = HostIdentity {
        strings: Vec::new(),
        names: Vec::with_capacity(indexes.len()),
        trait_start: Vec::with_capacity(indexes.len() + 1),
        trait_idx: Vec::new(),
        metadata_start: Vec::with_capacity(indexes.len() + 1),
        metadata_key_idx: Vec::new(),
        metadata_value_idx: Vec::new(),
    };
    for &i in indexes {
        let h = &hosts[i];
        id.names.push(h.name.clone());
        id.trait_start.push(id.trait_idx.len() as u32);
        for t in &h.traits {
            id.trait_idx.push(idx(t));
        }
        id.metadata_start.push(id.metadata_key_idx.len() as u32);
        for (k, v) in &h.metadata {
            id.metadata_key_idx.push(idx(k));
            id.metadata_value_idx.push(idx(v));
        }
    }
    id.trait_start.push(id.trait_idx.len() as u32);
    id.metadata_start.push(id.metadata_key_idx.len() as u32);
    id.strings = strings;
    id
}

/// The identity of the hosts at `standing`, built (like the agent's) only when the plugin
/// asks for it.
fn lazy_identity(hosts: &Arc<Vec<HostState>>, standing: &[usize]) -> Identities {
    let (hosts, standing) = (hosts.clone(), standing.to_vec());
    Identities::from_fn(standing.len(), move || sdk_identity(&hosts, &standing))
}

fn native_filter<F: Filter>(
    spec: &hyperlet_plugin_sdk::RequestSpec,
    hosts: &Arc<Vec<HostState>>,
    standing: Vec<usize>,
) -> Vec<usize> {
    let filter = F::new(&Settings::new(Vec::new())).unwrap();
    let batch = sdk_batch(hosts, &standing);
    let identity = lazy_identity(hosts, &standing);
    let verdicts = filter
        .filter_all(spec, &Hosts::with_identity(&batch, &identity).unwrap())
        .unwrap();
    standing
        .into_iter()
        .zip(verdicts.pass)
        .filter(|(_, pass)| *pass)
        .map(|(i, _)| i)
        .collect()
}

fn native_weigh<W: Weigher>(
    spec: &hyperlet_plugin_sdk::RequestSpec,
    hosts: &Arc<Vec<HostState>>,
    standing: &[usize],
    total: &mut [f64],
) {
    let weigher = W::new(&Settings::new(Vec::new())).unwrap();
    let batch = sdk_batch(hosts, standing);
    let identity = lazy_identity(hosts, standing);
    let raw = weigher
        .weigh_all(spec, &Hosts::with_identity(&batch, &identity).unwrap())
        .unwrap();
    for (t, w) in total.iter_mut().zip(sched::normalise(&raw)) {
        *t += w;
    }
}

/// Runs a plugin call to completion on the bench's runtime (one thread, as a call runs in the
/// agent: on one executor thread).
fn block<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
        })
        .block_on(f)
}

/// The chain with the components, driven like [`native_chain`] (no result assembly).
fn wasm_chain(
    registry: &PluginRegistry,
    spec: &RequestSpec,
    hosts: &Arc<Vec<HostState>>,
) -> (usize, Vec<f64>) {
    let wit_spec = spec.to_wit();
    let identities = sched::Identities::new(hosts.clone());
    let full = sched::batch_of(hosts, &(0..hosts.len()).collect::<Vec<_>>());
    let mut standing: Vec<usize> = (0..hosts.len()).collect();
    for (_, plugin) in registry.chain(PluginKind::Filter) {
        let batch = sched::subset(&full, &standing);
        let call_hosts = Some(identities.for_call(&standing));
        let verdicts = block(plugin.unwrap().filter(&wit_spec, &batch, call_hosts)).unwrap();
        standing = standing
            .into_iter()
            .zip(verdicts)
            .filter(|(_, v)| v.is_none())
            .map(|(i, _)| i)
            .collect();
    }
    let batch = sched::subset(&full, &standing);
    let mut total = vec![0.0; standing.len()];
    for (_, plugin) in registry.chain(PluginKind::Weigher) {
        let call_hosts = Some(identities.for_call(&standing));
        let raw = block(plugin.unwrap().weigh(&wit_spec, &batch, call_hosts)).unwrap();
        for (t, w) in total.iter_mut().zip(sched::normalise(&raw)) {
            *t += w;
        }
    }
    (standing.len(), total)
}

/// The same chain as the agent's, natively.
fn native_chain(spec: &RequestSpec, hosts: &Arc<Vec<HostState>>) -> (usize, Vec<f64>) {
    let s = hyperlet_plugin_sdk::RequestSpec {
        vcpus: spec.vcpus,
        ram_mb: spec.ram_mb,
        disk_gb: spec.disk_gb,
        volume_gb: spec.volume_gb,
        availability_zone: spec.availability_zone.clone(),
        image_properties: spec
            .image_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut standing: Vec<usize> = (0..hosts.len()).collect();
    standing =
        native_filter::<hyperlet_filter_compute_status::ComputeStatusFilter>(&s, hosts, standing);
    standing = native_filter::<hyperlet_filter_ram::RamFilter>(&s, hosts, standing);
    standing = native_filter::<hyperlet_filter_disk::DiskFilter>(&s, hosts, standing);
    standing = native_filter::<hyperlet_filter_vcpu::VcpuFilter>(&s, hosts, standing);
    standing = native_filter::<hyperlet_filter_availability_zone::AvailabilityZoneFilter>(
        &s, hosts, standing,
    );
    standing = native_filter::<hyperlet_filter_image_properties::ImagePropertiesFilter>(
        &s, hosts, standing,
    );
    standing = native_filter::<hyperlet_filter_traits::TraitsFilter>(&s, hosts, standing);
    standing = native_filter::<hyperlet_filter_aggregate_metadata::AggregateMetadataFilter>(
        &s, hosts, standing,
    );
    let mut total = vec![0.0; standing.len()];
    native_weigh::<hyperlet_weigher_ram::RamWeigher>(&s, hosts, &standing, &mut total);
    native_weigh::<hyperlet_weigher_capacity::CapacityWeigher>(&s, hosts, &standing, &mut total);
    (standing.len(), total)
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.9), samples[0])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let registry = registry(cache.path());
    let hosts = Arc::new(hosts());
    let spec = spec();

    // Same answer both ways.
    let wasm = block(sched::evaluate(&registry, &spec, hosts.clone())).unwrap();
    let (native_passed, _) = native_chain(&spec, &hosts);
    assert_eq!(
        wasm.passed, native_passed,
        "wasm and native chains disagree"
    );

    let (mut wasm_t, mut native_t, mut api_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        // Alternate so all see the same machine load.
        let t = Instant::now();
        let (passed, _) = wasm_chain(&registry, &spec, &hosts);
        wasm_t.push(t.elapsed());
        assert_eq!(passed, native_passed);
        let t = Instant::now();
        let (passed, _) = native_chain(&spec, &hosts);
        native_t.push(t.elapsed());
        assert_eq!(passed, native_passed);
        let t = Instant::now();
        let r = block(sched::evaluate(&registry, &spec, hosts.clone())).unwrap();
        api_t.push(t.elapsed());
        assert_eq!(r.passed, native_passed);
    }
    let (w50, w90, wmin) = stats(wasm_t);
    let (n50, n90, nmin) = stats(native_t);
    let (a50, a90, amin) = stats(api_t);

    // Instantiation (pre-linked InstancePre + configure) and per-call overhead (one host).
    let ram = registry
        .chain(PluginKind::Filter)
        .into_iter()
        .find(|(n, _)| n == "ram")
        .unwrap()
        .1
        .unwrap();
    let mut inst = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        block(ram.instantiate_once()).unwrap();
        inst.push(t.elapsed());
    }
    let one = Arc::new(vec![hosts[1].clone()]);
    let mut call = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        block(sched::evaluate(
            &registry,
            &RequestSpec::default(),
            one.clone(),
        ))
        .unwrap();
        call.push(t.elapsed());
    }
    let (i50, i90, _) = stats(inst);
    let (c50, c90, _) = stats(call);

    println!("| full chain, {HOSTS} hosts, {native_passed} pass (n={ROUNDS}) | p50 | p90 | min |");
    println!("|---|---:|---:|---:|");
    println!(
        "| wasm components (hyperlet plugin host) | {} | {} | {} |",
        ms(w50),
        ms(w90),
        ms(wmin)
    );
    println!(
        "| same plugin code, native (baseline) | {} | {} | {} |",
        ms(n50),
        ms(n90),
        ms(nmin)
    );
    println!(
        "| **ratio (p50)** | **{:.2}×** | | |",
        w50.as_secs_f64() / n50.as_secs_f64()
    );
    println!(
        "| `sched::evaluate` end to end (wasm chain + sorted per-host results) | {} | {} | {} |",
        ms(a50),
        ms(a90),
        ms(amin)
    );
    println!();
    println!("| per component | p50 | p90 |");
    println!("|---|---:|---:|");
    println!(
        "| instantiate + configure (InstancePre, pooling) | {} | {} |",
        us(i50),
        us(i90)
    );
    println!(
        "| chain call, 8 plugins, 1 host (per-call overhead ×8) | {} | {} |",
        us(c50),
        us(c90)
    );
}
