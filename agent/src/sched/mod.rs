//! The scheduler chain: filters, then weighers, all plugins.
//!
//! [`evaluate`] runs the configured chain for one request over a list of hosts: each filter
//! (in config order) sees the hosts still standing, in one batched call; each weigher then
//! gives every remaining host a raw weight, normalised to 0..1 across the hosts (min–max, as
//! nova and cinder do) and multiplied by the weigher's multiplier; the sum ranks the hosts.
//! A negative multiplier turns spreading into stacking. Plugins that are not loaded are skipped
//! and reported.

mod identity;
mod model;

pub use identity::Identities;
pub use model::{
    hosts_error, identity_error, trait_error, Evaluation, HostResult, HostState, RequestSpec,
    SkippedPlugin, MAX_IDENTITY_LEN, MAX_METADATA, MAX_TRAITS,
};

use crate::config::PluginKind;
use crate::plugin::{PluginError, PluginRegistry, WitHostBatch};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// A plugin failed (trap, timeout, bad answer); the evaluation is void.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The request or hosts are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Runs the chain. Each plugin call runs under its own deadline; a plugin asking who the hosts
/// of its call are (`hosts.identity`) gets their names, traits and metadata.
///
/// # Errors
/// [`SchedError::Plugin`] when a plugin fails, naming it.
pub async fn evaluate(
    registry: &PluginRegistry,
    spec: &RequestSpec,
    hosts: Arc<Vec<HostState>>,
) -> Result<Evaluation, SchedError> {
    let started = Instant::now();
    let identities = Identities::new(hosts.clone());
    let wit_spec = spec.to_wit();
    let mut results: Vec<HostResult> = hosts
        .iter()
        .map(|h| HostResult {
            name: h.name.clone(),
            passed: true,
            failed_by: None,
            reason: None,
            weight: 0.0,
            weights: BTreeMap::new(),
        })
        .collect();
    let mut skipped = Vec::new();
    let mut standing: Vec<usize> = (0..hosts.len()).collect();
    // Interned once; later calls send subsets of the same records and strings.
    let full = batch_of(&hosts, &standing);
    for (name, plugin) in registry.chain(PluginKind::Filter) {
        let plugin = match plugin {
            Ok(p) => p,
            Err(reason) => {
                skipped.push(SkippedPlugin { name, reason });
                continue;
            }
        };
        if standing.is_empty() {
            break;
        }
        let batch = subset(&full, &standing);
        let verdicts = plugin
            .filter(&wit_spec, &batch, Some(identities.for_call(&standing)))
            .await?;
        let mut still = Vec::with_capacity(standing.len());
        for (index, verdict) in standing.iter().zip(verdicts) {
            match verdict {
                None => still.push(*index),
                Some(reason) => {
                    let r = &mut results[*index];
                    r.passed = false;
                    r.failed_by = Some(name.clone());
                    r.reason = Some(reason);
                }
            }
        }
        standing = still;
    }
    if !standing.is_empty() {
        let batch = subset(&full, &standing);
        for (name, plugin) in registry.chain(PluginKind::Weigher) {
            let plugin = match plugin {
                Ok(p) => p,
                Err(reason) => {
                    skipped.push(SkippedPlugin { name, reason });
                    continue;
                }
            };
            let raw = plugin
                .weigh(&wit_spec, &batch, Some(identities.for_call(&standing)))
                .await?;
            let normalised = normalise(&raw);
            for (index, w) in standing.iter().zip(normalised) {
                let weighted = bounded(w * plugin.config.multiplier);
                results[*index].weight = bounded(results[*index].weight + weighted);
                results[*index].weights.insert(name.clone(), weighted);
            }
        }
    }
    let passed = standing.len();
    results.sort_by(|a, b| {
        b.passed.cmp(&a.passed).then(
            b.weight
                .partial_cmp(&a.weight)
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    Ok(Evaluation {
        passed,
        hosts: results,
        skipped_plugins: skipped,
        elapsed_us: started.elapsed().as_micros() as u64,
    })
}

/// Runs [`evaluate`] with an overall deadline.
///
/// # Errors
/// As [`evaluate`].
pub async fn evaluate_async(
    registry: Arc<PluginRegistry>,
    spec: RequestSpec,
    hosts: Vec<HostState>,
    deadline: Duration,
) -> Result<Evaluation, SchedError> {
    let hosts = Arc::new(hosts);
    match tokio::time::timeout(deadline, evaluate(&registry, &spec, hosts)).await {
        Ok(result) => result,
        Err(_) => Err(SchedError::Plugin(PluginError::Timeout {
            plugin: "scheduler chain".into(),
            ms: deadline.as_millis() as u64,
        })),
    }
}

/// Min–max normalisation to 0..1; all-equal weights become 0. Defined for every finite
/// input, extremes included: when `max - min` overflows (weights near ±`f64::MAX`), the
/// halves are subtracted instead, so no weight becomes infinite or NaN.
pub fn normalise(raw: &[f64]) -> Vec<f64> {
    let min = raw.iter().copied().fold(f64::INFINITY, f64::min);
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater)
        || !min.is_finite()
        || !max.is_finite()
    {
        return vec![0.0; raw.len()];
    }
    let span = max - min;
    raw.iter()
        .map(|w| {
            let x = if span.is_finite() {
                (w - min) / span
            } else {
                (w / 2.0 - min / 2.0) / (max / 2.0 - min / 2.0)
            };
            if x.is_nan() {
                0.0
            } else {
                x.clamp(0.0, 1.0)
            }
        })
        .collect()
}

/// A weight kept finite: sums of weights × multipliers saturate at ±`f64::MAX` instead of
/// becoming infinite (which JSON cannot carry).
fn bounded(w: f64) -> f64 {
    if w.is_nan() {
        0.0
    } else {
        w.clamp(-f64::MAX, f64::MAX)
    }
}

/// The hosts of `full` at `indexes` (a copy of every column; all of it when all stand).
pub fn subset(full: &WitHostBatch, indexes: &[usize]) -> WitHostBatch {
    if indexes.len() == full.enabled.len() {
        return full.clone();
    }
    fn pick<T: Copy>(column: &[T], indexes: &[usize]) -> Vec<T> {
        indexes.iter().map(|&i| column[i]).collect()
    }
    WitHostBatch {
        strings: full.strings.clone(),
        enabled: pick(&full.enabled, indexes),
        heartbeat_age_s: pick(&full.heartbeat_age_s, indexes),
        vcpus_total: pick(&full.vcpus_total, indexes),
        vcpus_used: pick(&full.vcpus_used, indexes),
        ram_total_mb: pick(&full.ram_total_mb, indexes),
        ram_used_mb: pick(&full.ram_used_mb, indexes),
        ram_free_mb: pick(&full.ram_free_mb, indexes),
        disk_total_gb: pick(&full.disk_total_gb, indexes),
        disk_used_gb: pick(&full.disk_used_gb, indexes),
        volume_free_gb: pick(&full.volume_free_gb, indexes),
        cpu_allocation_ratio: pick(&full.cpu_allocation_ratio, indexes),
        ram_allocation_ratio: pick(&full.ram_allocation_ratio, indexes),
        disk_allocation_ratio: pick(&full.disk_allocation_ratio, indexes),
        availability_zone_idx: pick(&full.availability_zone_idx, indexes),
        hypervisor_type_idx: pick(&full.hypervisor_type_idx, indexes),
        architecture_idx: pick(&full.architecture_idx, indexes),
        vm_mode_idx: pick(&full.vm_mode_idx, indexes),
    }
}

fn intern<'a>(lookup: &mut HashMap<&'a str, u32>, strings: &mut Vec<String>, s: &'a str) -> u32 {
    *lookup.entry(s).or_insert_with(|| {
        strings.push(s.to_string());
        (strings.len() - 1) as u32
    })
}

/// The columnar WIT batch of the hosts at `indexes`, with shared strings sent once.
pub fn batch_of(hosts: &[HostState], indexes: &[usize]) -> WitHostBatch {
    let n = indexes.len();
    let mut strings = Vec::new();
    let mut lookup = HashMap::new();
    let mut b = WitHostBatch {
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
    for &i in indexes {
        let h = &hosts[i];
        b.enabled.push(h.enabled);
        b.heartbeat_age_s.push(h.heartbeat_age_s);
        b.vcpus_total.push(h.vcpus_total);
        b.vcpus_used.push(h.vcpus_used);
        b.ram_total_mb.push(h.ram_total_mb);
        b.ram_used_mb.push(h.ram_used_mb);
        b.ram_free_mb.push(h.ram_free_mb);
        b.disk_total_gb.push(h.disk_total_gb);
        b.disk_used_gb.push(h.disk_used_gb);
        b.volume_free_gb.push(h.volume_free_gb);
        b.cpu_allocation_ratio.push(h.cpu_allocation_ratio);
        b.ram_allocation_ratio.push(h.ram_allocation_ratio);
        b.disk_allocation_ratio.push(h.disk_allocation_ratio);
        b.availability_zone_idx
            .push(intern(&mut lookup, &mut strings, &h.availability_zone));
        b.hypervisor_type_idx
            .push(intern(&mut lookup, &mut strings, &h.hypervisor_type));
        b.architecture_idx
            .push(intern(&mut lookup, &mut strings, &h.architecture));
        b.vm_mode_idx
            .push(intern(&mut lookup, &mut strings, &h.vm_mode));
    }
    b.strings = strings;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_min_max() {
        assert_eq!(normalise(&[1.0, 3.0, 2.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalise(&[5.0, 5.0]), vec![0.0, 0.0]);
        assert!(normalise(&[]).is_empty());
    }

    #[test]
    fn extreme_weights_stay_defined() {
        let m = f64::MAX;
        assert_eq!(normalise(&[-m, m, 0.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalise(&[-m, m]), vec![0.0, 1.0]);
        assert_eq!(normalise(&[m, m]), vec![0.0, 0.0]);
        let tiny = f64::from_bits(1);
        assert_eq!(normalise(&[0.0, tiny]), vec![0.0, 1.0]);
        for w in normalise(&[-m, 1.0, m, -1.0, 1e300, -1e-300]) {
            assert!(w.is_finite() && (0.0..=1.0).contains(&w), "{w}");
        }
        assert_eq!(bounded(m + m), m);
        assert_eq!(bounded(-m - m), -m);
        assert_eq!(bounded(f64::NAN), 0.0);
        // A weight × multiplier is serialised as a number, never null.
        let json = serde_json::to_string(&bounded(m * 2.0)).unwrap();
        assert_ne!(json, "null");
    }
}
