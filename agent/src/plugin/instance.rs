//! A loaded plugin: its pre-linked component, a few ready instances, and calls under limits.
//!
//! A call takes an idle instance (or instantiates and configures one) and runs the export with
//! `call_async` under `tokio::time::timeout(call_timeout_ms)`. Whatever the guest does, the
//! call ends at its deadline: a guest computing is trapped by the epoch callback (it yields to
//! the runtime every [`SLICE_TICKS`] ticks meanwhile), and a guest waiting in a host import (a
//! WASI clock sleep, a netlink request, an LVM tool) is dropped with its future — the instance
//! is discarded and no thread stays behind. The answer is copied out within the instance's
//! answer budget (`memory.rs`) and then checked and cut (`answer.rs`): a trap or an unusable
//! answer discards the instance as well; an answer (even a reported error) keeps it for the
//! next call.

use super::answer::{self, cap};
use super::bindings::volume::hyperlet::volume::types as volume_wit;
use super::bindings::{
    filter, network, volume, weigher, WitHostBatch, WitNetwork, WitNetworkType, WitPluginError,
    WitRequestSpec, WitVerdicts,
};
use super::engine::{PluginEngine, SLICE_TICKS};
use super::host::{HostIdentitySource, HostState, LogBudget};
use super::http::HttpHost;
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
use wasmtime::component::{ComponentNamedList, Func, HasSelf, Lift, Linker, Lower};
use wasmtime::{Store, UpdateDeadline};

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
    /// Budget of the agent's own warnings about this plugin's failed calls.
    failure_log: LogBudget,
    netlink: Option<Arc<NetlinkHost>>,
    volume: Option<Arc<VolumeHost>>,
    http: Option<Arc<HttpHost>>,
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

/// What wasmtime says when a copy from the guest runs out of hostcall fuel (its error type is
/// private; `answers_over_the_budget_are_refused` checks the words).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

fn timed_out(plugin: &str, timeout: Duration) -> PluginError {
    PluginError::Timeout {
        plugin: plugin.to_string(),
        ms: timeout.as_millis() as u64,
    }
}

impl Bound {
    /// The instance's `configure` export.
    fn configure(&self) -> Func {
        match self {
            Self::Filter(b) => *b.hyperlet_scheduler_filter().func_configure().func(),
            Self::Weigher(b) => *b.hyperlet_scheduler_weigher().func_configure().func(),
            Self::Network(b) => *b.hyperlet_network_backend().func_configure().func(),
            Self::Volume(b) => *b.hyperlet_volume_driver().func_configure().func(),
        }
    }
}

/// Reads an answer that carries nothing.
fn nothing(_: ()) -> Result<(), String> {
    Ok(())
}

impl LoadedPlugin {
    /// Reads, compiles (or loads from the cache), inspects, links and configures a plugin.
    /// Compiling runs on a blocking thread; instantiating and `configure` run under the call
    /// deadline, so a plugin that hangs there is refused instead of holding up the agent.
    ///
    /// # Errors
    /// [`PluginError::NotLoaded`] with the exact reason.
    pub async fn load(
        engine: &PluginEngine,
        cache_dir: &Path,
        config: &PluginConfig,
        log_lines_per_minute: u32,
    ) -> Result<Self, PluginError> {
        let not_loaded = |reason: String| PluginError::NotLoaded {
            plugin: config.name.clone(),
            reason,
        };
        let compiled = {
            let (wasm, path, dir) = (
                engine.engine().clone(),
                config.path.clone(),
                cache_dir.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || {
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                cache::load(&wasm, &dir, &bytes).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| not_loaded(format!("compiling failed: {e}")))?
        };
        let (component, sha256) = compiled.map_err(not_loaded)?;
        let info = inspect_component(engine.engine(), &component);
        if let Compatibility::Incompatible(reason) = info.check(config.kind, &config.grants) {
            return Err(not_loaded(reason));
        }
        let mut linker = Linker::<HostState>::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| not_loaded(format!("cannot link WASI: {e:#}")))?;
        let name: Arc<str> = Arc::from(config.name.as_str());
        let budget = Arc::new(LogBudget::new(log_lines_per_minute));
        // Only a plugin granted `http` links `wasi:http` (inspect refused the others).
        let http = match (&config.http, config.grants.iter().any(|g| g == "http")) {
            (Some(grant), true) => {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                    .map_err(|e| not_loaded(format!("cannot link wasi:http: {e:#}")))?;
                Some(Arc::new(
                    HttpHost::new(name.clone(), grant, budget.clone()).map_err(not_loaded)?,
                ))
            }
            _ => None,
        };
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
        // Only a backend granted `netlink` gets it.
        let netlink = (config.kind == PluginKind::NetworkBackend
            && config.grants.iter().any(|g| g == "netlink"))
        .then(|| {
            Arc::new(NetlinkHost::new(
                name.clone(),
                NetGrant::new(config.netlink.clone().unwrap_or_default()),
            ))
        });
        // A volume driver gets the lvm/files/qemu-img access its grants give.
        let volume = if config.kind == PluginKind::VolumeDriver {
            Some(Arc::new(
                VolumeHost::new(name.clone(), config).map_err(not_loaded)?,
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
            budget,
            http,
            failure_log: LogBudget::new(log_lines_per_minute),
            netlink,
            volume,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        // One configured instance proves the plugin works and is kept for the first call.
        let ready = plugin
            .instantiate()
            .await
            .map_err(|e| not_loaded(e.to_string()))?;
        plugin.give_back(ready);
        Ok(plugin)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.call_timeout_ms)
    }

    /// A store for a new instance: the memory budget (linear memories, and the answer budget
    /// as hostcall fuel), the host capabilities, and the epoch callback that yields every
    /// [`SLICE_TICKS`] and traps once the call's deadline passed.
    fn store(&self) -> Store<HostState> {
        let memory = (self.config.memory_limit_mb * 1024 * 1024) as usize;
        let mut state = HostState::new(self.name.clone(), self.budget.clone(), memory);
        state.netlink = self.netlink.clone();
        state.volume = self.volume.clone();
        if self.http.is_some() {
            state.http.host = self.http.clone();
            state.table.set_max_capacity(super::http::MAX_RESOURCES);
            state
                .http_ctx
                .set_field_size_limit(super::http::FIELD_SIZE_LIMIT);
        }
        state.begin_call(Instant::now() + self.timeout());
        let answers = state.memory.answers();
        let mut store = Store::new(self.pre_engine(), state);
        store.limiter(|s| &mut s.memory);
        store.set_hostcall_fuel(answers);
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().call_deadline {
                Some(deadline) if Instant::now() >= deadline => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Yield(SLICE_TICKS),
            })
        });
        store.set_epoch_deadline(SLICE_TICKS);
        store
    }

    /// A new instance, configured with the plugin's settings, within the call deadline.
    async fn instantiate(&self) -> Result<Ready, PluginError> {
        let mut store = self.store();
        let settings: Vec<(String, String)> = self
            .config
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let work = async {
            let bound = match &self.pre {
                Pre::Filter(pre) => Bound::Filter(pre.instantiate_async(&mut store).await?),
                Pre::Weigher(pre) => Bound::Weigher(pre.instantiate_async(&mut store).await?),
                Pre::Network(pre) => Bound::Network(pre.instantiate_async(&mut store).await?),
                Pre::Volume(pre) => Bound::Volume(pre.instantiate_async(&mut store).await?),
            };
            let configure = bound
                .configure()
                .typed::<(&Vec<(String, String)>,), (Result<(), WitPluginError>,)>(&store)?;
            let (answer,) = configure.call_async(&mut store, (&settings,)).await?;
            wasmtime::Result::Ok((bound, answer))
        };
        let outcome = tokio::time::timeout(self.timeout(), work).await;
        store.data().flush_output();
        let (bound, answer) = match outcome {
            Err(_) => return Err(timed_out(&self.name, self.timeout())),
            Ok(Err(e)) => return Err(self.failed(&e)),
            Ok(Ok(done)) => done,
        };
        if let Err(e) = answer {
            let (code, message) = answer::error(&e);
            return Err(PluginError::Reported {
                plugin: self.name.to_string(),
                code,
                message,
            });
        }
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

    async fn take(&self) -> Result<Ready, PluginError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(ready) => Ok(ready),
            None => self.instantiate().await,
        }
    }

    fn give_back(&self, ready: Ready) {
        if ready.store.data().http.requests_total > 0 {
            // Whatever it left in flight or unread goes with it.
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_INSTANCES {
            idle.push(ready);
        }
    }

    /// An unusable answer; the reason is cut ([`cap`]), as it may quote the plugin.
    fn bad(&self, reason: String) -> PluginError {
        PluginError::BadAnswer {
            plugin: self.name.to_string(),
            reason: cap(&reason),
        }
    }

    /// Why a call failed in wasmtime: the deadline, a copy over the answer budget, or a trap.
    fn failed(&self, e: &wasmtime::Error) -> PluginError {
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return timed_out(&self.name, self.timeout());
        }
        if e.chain()
            .any(|c| c.to_string().contains(HOSTCALL_FUEL_EXHAUSTED))
        {
            let budget = (self.config.memory_limit_mb << 20) / 8;
            return self.bad(format!(
                "it passed the host more than {budget} bytes of strings and lists at once \
                 (its answer budget, an eighth of memory_limit_mb)"
            ));
        }
        PluginError::Trap {
            plugin: self.name.to_string(),
            reason: cap(&format!("{e:#}")),
        }
    }

    /// Logs a failed call, within the plugin's budget of lines.
    fn warn_failed(&self, e: &PluginError) {
        if let Some(dropped) = self.failure_log.take() {
            tracing::warn!(plugin = %self.name, error = %e, dropped, "plugin call failed");
        }
    }

    fn record<T>(&self, result: Result<T, PluginError>) -> Result<T, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.warn_failed(e);
        }
        result
    }

    /// One call of the export `pick` selects, with `params`, under the call deadline; the
    /// answer `L` (copied within the answer budget) is checked by `read`. A reported error or
    /// a good answer keeps the instance; a trap, timeout or unusable answer discards it.
    async fn call<P, L, T>(
        &self,
        what: &str,
        pick: impl FnOnce(&Bound) -> Option<Func>,
        params: P,
        read: impl FnOnce(L) -> Result<T, String>,
    ) -> Result<T, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        L: Lift + Send + Sync + 'static,
    {
        self.call_with(what, pick, params, None, read).await
    }

    /// [`LoadedPlugin::call`] of a scheduler export, whose `hosts` import answers from
    /// `call_hosts` during the call.
    async fn call_with<P, L, T>(
        &self,
        what: &str,
        pick: impl FnOnce(&Bound) -> Option<Func>,
        params: P,
        call_hosts: Option<Arc<dyn HostIdentitySource>>,
        read: impl FnOnce(L) -> Result<T, String>,
    ) -> Result<T, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        L: Lift + Send + Sync + 'static,
    {
        let result = async {
            let mut ready = self.take().await?;
            let Some(func) = pick(&ready.bound) else {
                return Err(PluginError::NotLoaded {
                    plugin: self.name.to_string(),
                    reason: format!("it is a {} plugin, not {what}", self.config.kind.as_str()),
                });
            };
            let typed = func
                .typed::<P, (Result<L, WitPluginError>,)>(&ready.store)
                .map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
            ready
                .store
                .data_mut()
                .begin_call(Instant::now() + self.timeout());
            ready.store.data_mut().call_hosts = call_hosts;
            ready.store.set_epoch_deadline(SLICE_TICKS);
            let outcome =
                tokio::time::timeout(self.timeout(), typed.call_async(&mut ready.store, params))
                    .await;
            ready.store.data_mut().call_hosts = None;
            ready.store.data().flush_output();
            // A timeout or a trap drops `ready` here: the instance is discarded.
            let (answer,) = match outcome {
                Err(_) => return Err(timed_out(&self.name, self.timeout())),
                Ok(Err(e)) => return Err(self.failed(&e)),
                Ok(Ok(answer)) => answer,
            };
            let read = match answer {
                Ok(value) => read(value).map(Ok),
                Err(e) => Ok(Err(answer::error(&e))),
            };
            match read {
                Err(reason) => Err(self.bad(reason)),
                Ok(Ok(value)) => {
                    self.give_back(ready);
                    Ok(value)
                }
                Ok(Err((code, message))) => {
                    self.give_back(ready);
                    Err(PluginError::Reported {
                        plugin: self.name.to_string(),
                        code,
                        message,
                    })
                }
            }
        }
        .await;
        self.record(result)
    }

    /// Runs the filter over a batch. Returns one `None` (pass) or `Some(reason)` (fail) per
    /// host.
    ///
    /// # Errors
    /// [`PluginError`] for traps, timeouts, reported errors and unusable answers.
    pub async fn filter(
        &self,
        spec: &WitRequestSpec,
        batch: &WitHostBatch,
        call_hosts: Option<Arc<dyn HostIdentitySource>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        let hosts = batch.enabled.len();
        self.call_with(
            "a filter",
            |b| match b {
                Bound::Filter(f) => Some(*f.hyperlet_scheduler_filter().func_filter_hosts().func()),
                _ => None,
            },
            (spec, batch),
            call_hosts,
            |v: WitVerdicts| answer::verdicts(v, hosts),
        )
        .await
    }

    /// Runs the weigher over a batch.
    ///
    /// # Errors
    /// [`PluginError`] for traps, timeouts, reported errors and unusable answers.
    pub async fn weigh(
        &self,
        spec: &WitRequestSpec,
        batch: &WitHostBatch,
        call_hosts: Option<Arc<dyn HostIdentitySource>>,
    ) -> Result<Vec<f64>, PluginError> {
        let hosts = batch.enabled.len();
        self.call_with(
            "a weigher",
            |b| match b {
                Bound::Weigher(w) => {
                    Some(*w.hyperlet_scheduler_weigher().func_weigh_hosts().func())
                }
                _ => None,
            },
            (spec, batch),
            call_hosts,
            |w: Vec<f64>| answer::weights(w, hosts),
        )
        .await
    }

    /// Runs one call of the `backend` interface: the export `pick` selects, read by `read`.
    async fn call_backend<P, L, T>(
        &self,
        pick: impl FnOnce(&network::exports::hyperlet::network::backend::Guest) -> Func,
        params: P,
        read: impl FnOnce(L) -> Result<T, String>,
    ) -> Result<T, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        L: Lift + Send + Sync + 'static,
    {
        self.call(
            "a network backend",
            |b| match b {
                Bound::Network(n) => Some(pick(n.hyperlet_network_backend())),
                _ => None,
            },
            params,
            read,
        )
        .await
    }

    /// Asks a network backend whether it can serve `net`, without touching the host. Call it
    /// before storing a network: a [`PluginError::Reported`] message is meant for the user.
    ///
    /// # Errors
    /// [`PluginError::Reported`] with the backend's reason, or a trap, timeout or
    /// [`PluginError::NotLoaded`] when this plugin is not a network backend.
    pub async fn validate_network(&self, net: &BackendNetwork) -> Result<(), PluginError> {
        let net = wit_network(net);
        self.call_backend(|b| *b.func_validate_network().func(), (&net,), nothing)
            .await
    }

    /// Makes a network backend create whatever of `net`'s plumbing is missing. Returns the
    /// bridge's name. Idempotent.
    ///
    /// # Errors
    /// As [`LoadedPlugin::validate_network`]; host failures come back as the backend reports
    /// them (codes `denied`, `unsupported`, `exists`, `not-found`, `failed`, …).
    pub async fn ensure_network(&self, net: &BackendNetwork) -> Result<String, PluginError> {
        let wit = wit_network(net);
        let bridge = self
            .call_backend(
                |b| *b.func_ensure_network().func(),
                (&wit,),
                |name: String| answer::name("bridge name", name),
            )
            .await?;
        if crate::net::validate_ifname(&bridge).is_err() {
            // The call itself was counted as a success by `call_backend`.
            return Err(self.refuse_answer(format!(
                "the bridge name {bridge:?} is not an interface name"
            )));
        }
        let checked = match &self.netlink {
            Some(host) => host.check_bridge_answer(&bridge).await,
            None => Err(format!(
                "bridge {bridge:?}: the plugin has no netlink grant"
            )),
        };
        checked.map_err(|reason| self.refuse_answer(reason))?;
        Ok(bridge)
    }

    /// Makes a network backend remove `net`'s bridge and the VLAN/VXLAN link it created.
    /// Idempotent.
    ///
    /// # Errors
    /// As [`LoadedPlugin::ensure_network`].
    pub async fn delete_network(&self, net: &BackendNetwork) -> Result<(), PluginError> {
        let net = wit_network(net);
        self.call_backend(|b| *b.func_delete_network().func(), (&net,), nothing)
            .await
    }

    /// Runs one call of a volume driver's `driver` interface: the export `pick` selects, read
    /// by `read`, under the call deadline, which also bounds the host work the call asks for.
    pub(super) async fn call_driver<P, L, T>(
        &self,
        pick: impl FnOnce(&volume::exports::hyperlet::volume::driver::Guest) -> Func,
        params: P,
        read: impl FnOnce(L) -> Result<T, String>,
    ) -> Result<T, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        L: Lift + Send + Sync + 'static,
    {
        self.call(
            "a volume driver",
            |b| match b {
                Bound::Volume(v) => Some(pick(v.hyperlet_volume_driver())),
                _ => None,
            },
            params,
            read,
        )
        .await
    }

    /// A driver call whose answer carries nothing.
    pub(super) async fn call_driver_unit<P>(
        &self,
        pick: impl FnOnce(&volume::exports::hyperlet::volume::driver::Guest) -> Func,
        params: P,
    ) -> Result<(), PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
    {
        self.call_driver(pick, params, nothing).await
    }

    /// A driver's connection info, its strings read within bounds.
    pub(super) async fn call_driver_connection<P>(
        &self,
        pick: impl FnOnce(&volume::exports::hyperlet::volume::driver::Guest) -> Func,
        params: P,
    ) -> Result<volume_wit::ConnectionInfo, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
    {
        self.call_driver(pick, params, answer::connection).await
    }

    /// A driver's capacity report, its backend name read within bounds.
    pub(super) async fn call_driver_capacity(
        &self,
    ) -> Result<volume_wit::CapacityStats, PluginError> {
        self.call_driver(|d| *d.func_capacity_stats().func(), (), answer::capacity)
            .await
    }

    /// The host access of a volume driver (its grants), to check its answers against.
    pub(super) fn volume_host(&self) -> Option<&Arc<VolumeHost>> {
        self.volume.as_ref()
    }

    /// Counts a call that answered but whose answer was refused.
    pub(super) fn refuse_answer(&self, reason: String) -> PluginError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let e = self.bad(reason);
        self.warn_failed(&e);
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
    pub async fn instantiate_once(&self) -> Result<(), PluginError> {
        self.instantiate().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The hostile fixture, built by `scripts/build-plugins.sh` next to this test's target dir.
    fn hostile(
        settings: &[(&str, &str)],
        memory_limit_mb: u64,
        call_timeout_ms: u64,
    ) -> PluginConfig {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/hyperlet-<hash> → target/wasm32-wasip2/release/
        let target = exe.ancestors().nth(3).unwrap();
        let path = target.join("wasm32-wasip2/release/hyperlet_fixture_hostile.wasm");
        assert!(
            path.exists(),
            "{} is missing: build the plugins with scripts/build-plugins.sh",
            path.display()
        );
        PluginConfig {
            name: "hostile".into(),
            kind: PluginKind::Filter,
            path,
            grants: vec!["log".into(), "clocks".into()],
            netlink: None,
            lvm: None,
            files: None,
            http: None,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            multiplier: 1.0,
            memory_limit_mb,
            call_timeout_ms,
        }
    }

    async fn load(config: &PluginConfig) -> Result<LoadedPlugin, PluginError> {
        // Shared by the tests: the fixture is compiled once.
        let cache = std::env::temp_dir().join("hyperlet-unit-plugin-cache");
        LoadedPlugin::load(&PluginEngine::new().unwrap(), &cache, config, 60).await
    }

    fn one_host() -> WitHostBatch {
        WitHostBatch {
            strings: vec!["nova".into()],
            enabled: vec![true],
            heartbeat_age_s: vec![0],
            vcpus_total: vec![8],
            vcpus_used: vec![0],
            ram_total_mb: vec![1024],
            ram_used_mb: vec![0],
            ram_free_mb: vec![1024],
            disk_total_gb: vec![10],
            disk_used_gb: vec![0],
            volume_free_gb: vec![0],
            cpu_allocation_ratio: vec![1.0],
            ram_allocation_ratio: vec![1.0],
            disk_allocation_ratio: vec![1.0],
            availability_zone_idx: vec![0],
            hypervisor_type_idx: vec![0],
            architecture_idx: vec![0],
            vm_mode_idx: vec![0],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_sleeping_in_a_clock_ends_at_its_deadline() {
        let plugin = load(&hostile(&[("mode", "sleep"), ("ms", "60000")], 64, 300))
            .await
            .unwrap();
        let started = Instant::now();
        let e = plugin
            .filter(
                &crate::sched::RequestSpec::default().to_wit(),
                &one_host(),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, PluginError::Timeout { ms: 300, .. }), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // The instance was discarded; the next call gets a fresh one and ends the same way.
        assert!(plugin.idle.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn configure_runs_under_the_call_deadline() {
        let started = Instant::now();
        let Err(e) = load(&hostile(
            &[("mode", "sleep-configure"), ("ms", "60000")],
            64,
            300,
        ))
        .await
        else {
            panic!("a plugin sleeping in configure was loaded");
        };
        assert!(
            e.to_string().contains("did not answer within 300 ms"),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_over_the_budget_are_refused() {
        // 64 MiB: an 8 MiB answer budget. A 16 MiB message and a million reasons exceed it.
        for settings in [
            [("mode", "error"), ("mb", "16")],
            [("mode", "many"), ("count", "1000000")],
        ] {
            let plugin = load(&hostile(&settings, 64, 10_000)).await.unwrap();
            let e = plugin
                .filter(
                    &crate::sched::RequestSpec::default().to_wit(),
                    &one_host(),
                    None,
                )
                .await
                .unwrap_err();
            assert!(
                matches!(&e, PluginError::BadAnswer { reason, .. }
                    if reason.contains("passed the host more than 8388608 bytes")),
                "{settings:?}: {e}"
            );
        }
        // 4 MiB fits the budget; the agent keeps 1 KiB of it.
        let plugin = load(&hostile(&[("mode", "error"), ("mb", "4")], 64, 10_000))
            .await
            .unwrap();
        let e = plugin
            .filter(
                &crate::sched::RequestSpec::default().to_wit(),
                &one_host(),
                None,
            )
            .await
            .unwrap_err();
        let PluginError::Reported { code, message, .. } = e else {
            panic!("{e}");
        };
        assert_eq!(code, "hostile");
        assert!(message.len() < 1100, "{}", message.len());
        assert!(
            message.ends_with("(4193280 bytes cut)"),
            "{}",
            &message[1000..]
        );
    }
}
