//! A loaded plugin: its pre-linked component, a few ready instances, and calls under limits.

use super::bindings::{
    filter, network, volume, weigher, WitHostBatch, WitNetwork, WitNetworkType, WitPluginError,
    WitRequestSpec, WitVerdicts,
};
use super::engine::PluginEngine;
use super::host::{HostState, LogBudget};
use super::inspect::{inspect_component, Compatibility, ComponentInfo};
use super::net_grant::NetGrant;
use super::netlink::NetlinkHost;
use super::volume_host::VolumeHost;
use super::{cache, PluginError};
use crate::config::{PluginConfig, PluginKind};
use crate::net::{BackendNetwork, NetworkType};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Store;

/// Largest total size of the reason strings one filter call may return.
pub const MAX_REASON_BYTES: usize = 4 * 1024 * 1024;
/// Ready instances kept per plugin.
const IDLE_INSTANCES: usize = 4;

enum Pre {
    Filter(filter::FilterPluginPre<HostState>),
    Weigher(weigher::WeigherPluginPre<HostState>),
    Network(network::NetworkBackendPre<HostState>),
    Volume(volume::VolumeDriverPre<HostState>),
}

enum Bound {
    Filter(filter::FilterPlugin),
    Weigher(weigher::WeigherPlugin),
    Network(network::NetworkBackend),
    Volume(volume::VolumeDriver),
}

struct Ready {
    store: Store<HostState>,
    bound: Bound,
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    /// Its configuration.
    pub config: PluginConfig,
    /// What the component is.
    pub info: ComponentInfo,
    /// SHA-256 of the component file.
    pub sha256: String,
    name: Arc<str>,
    pre: Pre,
    idle: Mutex<Vec<Ready>>,
    budget: Arc<LogBudget>,
    netlink: Option<Arc<NetlinkHost>>,
    volume: Option<Arc<VolumeHost>>,
    calls: AtomicU64,
    failures: AtomicU64,
}

/// The WIT record of a network.
fn wit_network(net: &BackendNetwork) -> WitNetwork {
    WitNetwork {
        id: net.id.clone(),
        network_type: match net.network_type {
            NetworkType::Flat => WitNetworkType::Flat,
            NetworkType::Vlan => WitNetworkType::Vlan,
            NetworkType::Vxlan => WitNetworkType::Vxlan,
            NetworkType::Local => WitNetworkType::Local,
        },
        physical_network: net.physical_network.clone(),
        segmentation_id: net.segmentation_id,
        mtu: net.mtu,
    }
}

fn trap_error(plugin: &str, timeout: Duration, e: &wasmtime::Error) -> PluginError {
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return PluginError::Timeout {
            plugin: plugin.to_string(),
            ms: timeout.as_millis() as u64,
        };
    }
    let mut reason = format!("{e:#}");
    if let Some(cut) = reason.char_indices().nth(1000).map(|(i, _)| i) {
        reason.truncate(cut);
    }
    PluginError::Trap {
        plugin: plugin.to_string(),
        reason,
    }
}

/// Checks a filter's answer and turns it into one optional reason per host.
fn check_verdicts(
    plugin: &str,
    verdicts: WitVerdicts,
    hosts: usize,
) -> Result<Vec<Option<String>>, PluginError> {
    let bad = |reason: String| PluginError::BadAnswer {
        plugin: plugin.to_string(),
        reason,
    };
    if verdicts.pass.len() != hosts {
        return Err(bad(format!(
            "{} verdicts for {hosts} hosts",
            verdicts.pass.len()
        )));
    }
    let bytes: usize = verdicts.reasons.iter().map(|(_, r)| r.len()).sum();
    if bytes > MAX_REASON_BYTES {
        return Err(bad(format!(
            "{bytes} bytes of reasons (the limit is {MAX_REASON_BYTES})"
        )));
    }
    let mut out: Vec<Option<String>> = vec![None; hosts];
    for (index, reason) in verdicts.reasons {
        let i = index as usize;
        if i >= hosts || verdicts.pass[i] {
            return Err(bad(format!(
                "a reason for host {index}, which did not fail"
            )));
        }
        out[i] = Some(reason);
    }
    for (i, pass) in verdicts.pass.iter().enumerate() {
        if !pass && out[i].is_none() {
            out[i] = Some("no reason given".into());
        }
    }
    Ok(out)
}

impl LoadedPlugin {
    /// Reads, compiles (or loads from the cache), inspects, links and configures a plugin.
    ///
    /// # Errors
    /// [`PluginError::NotLoaded`] with the exact reason.
    pub fn load(
        engine: &PluginEngine,
        cache_dir: &Path,
        config: &PluginConfig,
        log_lines_per_minute: u32,
    ) -> Result<Self, PluginError> {
        let not_loaded = |reason: String| PluginError::NotLoaded {
            plugin: config.name.clone(),
            reason,
        };
        let bytes = std::fs::read(&config.path)
            .map_err(|e| not_loaded(format!("cannot read {}: {e}", config.path.display())))?;
        let (component, sha256) = cache::load(engine.engine(), cache_dir, &bytes)
            .map_err(|e| not_loaded(e.to_string()))?;
        let info = inspect_component(engine.engine(), &component);
        if let Compatibility::Incompatible(reason) = info.check(config.kind, &config.grants) {
            return Err(not_loaded(reason));
        }
        let mut linker = Linker::<HostState>::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| not_loaded(format!("cannot link WASI: {e:#}")))?;
        let link_err = |e: wasmtime::Error| not_loaded(format!("cannot link: {e:#}"));
        let pre = match config.kind {
            PluginKind::Filter => {
                filter::FilterPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(link_err)?;
                let pre = linker.instantiate_pre(&component).map_err(link_err)?;
                Pre::Filter(filter::FilterPluginPre::new(pre).map_err(link_err)?)
            }
            PluginKind::Weigher => {
                weigher::WeigherPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(link_err)?;
                let pre = linker.instantiate_pre(&component).map_err(link_err)?;
                Pre::Weigher(weigher::WeigherPluginPre::new(pre).map_err(link_err)?)
            }
            PluginKind::NetworkBackend => {
                network::NetworkBackend::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(link_err)?;
                let pre = linker.instantiate_pre(&component).map_err(link_err)?;
                Pre::Network(network::NetworkBackendPre::new(pre).map_err(link_err)?)
            }
            PluginKind::VolumeDriver => {
                volume::VolumeDriver::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                    .map_err(link_err)?;
                let pre = linker.instantiate_pre(&component).map_err(link_err)?;
                Pre::Volume(volume::VolumeDriverPre::new(pre).map_err(link_err)?)
            }
        };
        let name: Arc<str> = Arc::from(config.name.as_str());
        // Only a backend granted `netlink` gets it; the runtime that loads the plugin runs its
        // netlink requests when a call comes from outside any runtime.
        let netlink = (config.kind == PluginKind::NetworkBackend
            && config.grants.iter().any(|g| g == "netlink"))
        .then(|| {
            Arc::new(NetlinkHost::new(
                name.clone(),
                NetGrant::new(config.netlink.clone().unwrap_or_default()),
                tokio::runtime::Handle::try_current().ok(),
            ))
        });
        // A volume driver gets the lvm/files/qemu-img access its grants give.
        let volume = if config.kind == PluginKind::VolumeDriver {
            Some(Arc::new(
                VolumeHost::new(
                    name.clone(),
                    config,
                    tokio::runtime::Handle::try_current().ok(),
                )
                .map_err(not_loaded)?,
            ))
        } else {
            None
        };
        let plugin = Self {
            config: config.clone(),
            info,
            sha256,
            name,
            pre,
            idle: Mutex::new(Vec::new()),
            budget: Arc::new(LogBudget::new(log_lines_per_minute)),
            netlink,
            volume,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        // One configured instance proves the plugin works and is kept for the first call.
        let ready = plugin
            .instantiate()
            .map_err(|e| not_loaded(e.to_string()))?;
        plugin
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ready);
        Ok(plugin)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.call_timeout_ms)
    }

    /// A new instance, configured with the plugin's settings.
    fn instantiate(&self) -> Result<Ready, PluginError> {
        let memory = (self.config.memory_limit_mb * 1024 * 1024) as usize;
        let mut state = HostState::new(self.name.clone(), self.budget.clone(), memory);
        state.netlink = self.netlink.clone();
        state.volume = self.volume.clone();
        state.call_deadline = Some(Instant::now() + self.timeout());
        let mut store = Store::new(self.pre_engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(PluginEngine::ticks(self.timeout()));
        let settings: Vec<(String, String)> = self
            .config
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let trap = |e: wasmtime::Error| trap_error(&self.name, self.timeout(), &e);
        let (bound, configured) = match &self.pre {
            Pre::Filter(pre) => {
                let b = pre.instantiate(&mut store).map_err(trap)?;
                let r = b
                    .hyperlet_scheduler_filter()
                    .call_configure(&mut store, &settings)
                    .map_err(trap)?;
                (Bound::Filter(b), r)
            }
            Pre::Weigher(pre) => {
                let b = pre.instantiate(&mut store).map_err(trap)?;
                let r = b
                    .hyperlet_scheduler_weigher()
                    .call_configure(&mut store, &settings)
                    .map_err(trap)?;
                (Bound::Weigher(b), r)
            }
            Pre::Network(pre) => {
                let b = pre.instantiate(&mut store).map_err(trap)?;
                let r = b
                    .hyperlet_network_backend()
                    .call_configure(&mut store, &settings)
                    .map_err(trap)?;
                (Bound::Network(b), r)
            }
            Pre::Volume(pre) => {
                let b = pre.instantiate(&mut store).map_err(trap)?;
                let r = b
                    .hyperlet_volume_driver()
                    .call_configure(&mut store, &settings)
                    .map_err(trap)?;
                (Bound::Volume(b), r)
            }
        };
        store.data().flush_output();
        configured.map_err(|e| PluginError::Reported {
            plugin: self.name.to_string(),
            code: e.code,
            message: e.message,
        })?;
        Ok(Ready { store, bound })
    }

    fn pre_engine(&self) -> &wasmtime::Engine {
        match &self.pre {
            Pre::Filter(p) => p.engine(),
            Pre::Weigher(p) => p.engine(),
            Pre::Network(p) => p.engine(),
            Pre::Volume(p) => p.engine(),
        }
    }

    fn take(&self) -> Result<Ready, PluginError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(ready) => Ok(ready),
            None => self.instantiate(),
        }
    }

    fn give_back(&self, ready: Ready) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_INSTANCES {
            idle.push(ready);
        }
    }

    fn record<T>(&self, result: Result<T, PluginError>) -> Result<T, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, error = %e, "plugin call failed");
        }
        result
    }

    /// Runs the filter over a batch (blocking; run it on a blocking thread). Returns one
    /// `None` (pass) or `Some(reason)` (fail) per host.
    ///
    /// # Errors
    /// [`PluginError`] for traps, timeouts, reported errors and unusable answers.
    pub fn filter(
        &self,
        spec: &WitRequestSpec,
        batch: &WitHostBatch,
    ) -> Result<Vec<Option<String>>, PluginError> {
        let result = (|| {
            let mut ready = self.take()?;
            ready
                .store
                .set_epoch_deadline(PluginEngine::ticks(self.timeout()));
            let Bound::Filter(b) = &ready.bound else {
                return Err(PluginError::Runtime("not a filter".into()));
            };
            let answer =
                b.hyperlet_scheduler_filter()
                    .call_filter_hosts(&mut ready.store, spec, batch);
            ready.store.data().flush_output();
            // A trap drops `ready` here: the instance is discarded.
            let answer = answer.map_err(|e| trap_error(&self.name, self.timeout(), &e))?;
            let verdicts = match answer {
                Ok(v) => v,
                Err(e) => {
                    self.give_back(ready);
                    return Err(PluginError::Reported {
                        plugin: self.name.to_string(),
                        code: e.code,
                        message: e.message,
                    });
                }
            };
            let verdicts = check_verdicts(&self.name, verdicts, batch.enabled.len())?;
            self.give_back(ready);
            Ok(verdicts)
        })();
        self.record(result)
    }

    /// Runs the weigher over a batch (blocking; run it on a blocking thread).
    ///
    /// # Errors
    /// [`PluginError`] for traps, timeouts, reported errors and unusable answers.
    pub fn weigh(
        &self,
        spec: &WitRequestSpec,
        batch: &WitHostBatch,
    ) -> Result<Vec<f64>, PluginError> {
        let result = (|| {
            let mut ready = self.take()?;
            ready
                .store
                .set_epoch_deadline(PluginEngine::ticks(self.timeout()));
            let Bound::Weigher(b) = &ready.bound else {
                return Err(PluginError::Runtime("not a weigher".into()));
            };
            let answer =
                b.hyperlet_scheduler_weigher()
                    .call_weigh_hosts(&mut ready.store, spec, batch);
            ready.store.data().flush_output();
            let answer = answer.map_err(|e| trap_error(&self.name, self.timeout(), &e))?;
            let weights = match answer {
                Ok(w) => w,
                Err(e) => {
                    self.give_back(ready);
                    return Err(PluginError::Reported {
                        plugin: self.name.to_string(),
                        code: e.code,
                        message: e.message,
                    });
                }
            };
            if weights.len() != batch.enabled.len() {
                return Err(PluginError::BadAnswer {
                    plugin: self.name.to_string(),
                    reason: format!(
                        "{} weights for {} hosts",
                        weights.len(),
                        batch.enabled.len()
                    ),
                });
            }
            if let Some(bad) = weights.iter().find(|w| !w.is_finite()) {
                return Err(PluginError::BadAnswer {
                    plugin: self.name.to_string(),
                    reason: format!("weight {bad} is not a finite number"),
                });
            }
            self.give_back(ready);
            Ok(weights)
        })();
        self.record(result)
    }

    /// Runs one call of the `backend` interface (blocking): an idle instance under the call
    /// deadline; a trap discards it, an answer (even an error) keeps it.
    fn call_backend<T>(
        &self,
        call: impl FnOnce(
            &network::NetworkBackend,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<T, WitPluginError>>,
    ) -> Result<T, PluginError> {
        self.call_world(
            "a network backend",
            |b| match b {
                Bound::Network(n) => Some(n),
                _ => None,
            },
            call,
        )
    }

    /// Asks a network backend whether it can serve `net`, without touching the host (blocking;
    /// run it on a blocking thread). Call it before storing a network: a
    /// [`PluginError::Reported`] message is meant for the user.
    ///
    /// # Errors
    /// [`PluginError::Reported`] with the backend's reason, or a trap, timeout or
    /// [`PluginError::NotLoaded`] when this plugin is not a network backend.
    pub fn validate_network(&self, net: &BackendNetwork) -> Result<(), PluginError> {
        let net = wit_network(net);
        self.call_backend(|b, store| {
            b.hyperlet_network_backend()
                .call_validate_network(store, &net)
        })
    }

    /// Makes a network backend create whatever of `net`'s plumbing is missing (blocking; run it
    /// on a blocking thread). Returns the bridge's name. Idempotent.
    ///
    /// # Errors
    /// As [`LoadedPlugin::validate_network`]; host failures come back as the backend reports
    /// them (codes `denied`, `unsupported`, `exists`, `not-found`, `failed`, …).
    pub fn ensure_network(&self, net: &BackendNetwork) -> Result<String, PluginError> {
        let wit = wit_network(net);
        let bridge = self.call_backend(|b, store| {
            b.hyperlet_network_backend()
                .call_ensure_network(store, &wit)
        })?;
        if crate::net::validate_ifname(&bridge).is_err() {
            // The call itself was counted as a success by `call_backend`.
            return Err(self.refuse_answer(format!(
                "the bridge name {bridge:?} is not an interface name"
            )));
        }
        let checked = match &self.netlink {
            Some(host) => host.check_bridge_answer(&bridge),
            None => Err(format!(
                "bridge {bridge:?}: the plugin has no netlink grant"
            )),
        };
        checked.map_err(|reason| self.refuse_answer(reason))?;
        Ok(bridge)
    }

    /// Makes a network backend remove `net`'s bridge and the VLAN/VXLAN link it created
    /// (blocking; run it on a blocking thread). Idempotent.
    ///
    /// # Errors
    /// As [`LoadedPlugin::ensure_network`].
    pub fn delete_network(&self, net: &BackendNetwork) -> Result<(), PluginError> {
        let net = wit_network(net);
        self.call_backend(|b, store| {
            b.hyperlet_network_backend()
                .call_delete_network(store, &net)
        })
    }

    /// Runs one call of a volume driver's `driver` interface (blocking): an idle instance
    /// under the call deadline, which also bounds the host work the call asks for; a trap
    /// discards the instance, an answer (even an error) keeps it.
    pub(super) fn call_driver<T>(
        &self,
        call: impl FnOnce(
            &volume::VolumeDriver,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<T, WitPluginError>>,
    ) -> Result<T, PluginError> {
        self.call_world(
            "a volume driver",
            |b| match b {
                Bound::Volume(v) => Some(v),
                _ => None,
            },
            call,
        )
    }

    /// One call into the world `pick` selects: an idle instance under the call deadline (which
    /// also bounds the host work the call asks for); a trap discards the instance, an answer
    /// (even an error) keeps it.
    fn call_world<W, T>(
        &self,
        what: &str,
        pick: impl Fn(&Bound) -> Option<&W>,
        call: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<Result<T, WitPluginError>>,
    ) -> Result<T, PluginError> {
        let result = (|| {
            let mut ready = self.take()?;
            ready
                .store
                .set_epoch_deadline(PluginEngine::ticks(self.timeout()));
            ready.store.data_mut().call_deadline = Some(Instant::now() + self.timeout());
            let Some(bound) = pick(&ready.bound) else {
                return Err(PluginError::NotLoaded {
                    plugin: self.name.to_string(),
                    reason: format!("it is a {} plugin, not {what}", self.config.kind.as_str()),
                });
            };
            let answer = call(bound, &mut ready.store);
            ready.store.data().flush_output();
            // A trap drops `ready` here: the instance is discarded.
            let answer = answer.map_err(|e| trap_error(&self.name, self.timeout(), &e))?;
            self.give_back(ready);
            answer.map_err(|e| PluginError::Reported {
                plugin: self.name.to_string(),
                code: e.code,
                message: e.message,
            })
        })();
        self.record(result)
    }

    /// The host access of a volume driver (its grants), to check its answers against.
    pub(super) fn volume_host(&self) -> Option<&Arc<VolumeHost>> {
        self.volume.as_ref()
    }

    /// Counts a call that answered but whose answer was refused.
    pub(super) fn refuse_answer(&self, reason: String) -> PluginError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let e = PluginError::BadAnswer {
            plugin: self.name.to_string(),
            reason,
        };
        tracing::warn!(plugin = %self.name, error = %e, "plugin call failed");
        e
    }

    /// Calls made and calls failed.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Instantiates and configures a fresh instance without keeping it (benchmarks).
    ///
    /// # Errors
    /// As a call.
    pub fn instantiate_once(&self) -> Result<(), PluginError> {
        self.instantiate().map(drop)
    }
}
