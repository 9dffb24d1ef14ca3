//! The configured plugins, their load status, and hot reload.

use super::engine::PluginEngine;
use super::instance::LoadedPlugin;
use super::PluginError;
use crate::config::{FilesGrant, LvmGrant, NetlinkGrant, PluginConfig, PluginKind};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Whether a plugin is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginStatus {
    /// Loaded and called by the chain.
    Loaded,
    /// Not loaded; `error` says why. The chain skips it.
    Failed,
}

/// A plugin as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginView {
    /// Configured name.
    pub name: String,
    /// filter, weigher, network-backend or volume-driver.
    pub kind: PluginKind,
    /// Component file.
    pub path: String,
    /// Loaded or failed.
    pub status: PluginStatus,
    /// Why it is not loaded (or why the last reload was refused).
    pub error: Option<String>,
    /// Version of the world it implements.
    pub version: Option<String>,
    /// SHA-256 of the loaded file.
    pub sha256: Option<String>,
    /// Granted capabilities.
    pub grants: Vec<String>,
    /// Network backends granted `netlink`: what the grant covers.
    pub netlink: Option<NetlinkGrant>,
    /// Volume drivers granted `lvm`: the volume groups.
    pub lvm: Option<LvmGrant>,
    /// Volume drivers granted `files` or `qemu-img`: the shares.
    pub files: Option<FilesGrant>,
    /// Capabilities its imports need.
    pub needs: Vec<String>,
    /// Its imports.
    pub imports: Vec<String>,
    /// Weighers: the multiplier.
    pub multiplier: f64,
    /// Memory cap, MiB.
    pub memory_limit_mb: u64,
    /// Call deadline, ms.
    pub call_timeout_ms: u64,
    /// When the serving version was loaded.
    pub loaded_at: Option<String>,
    /// Calls made to the serving version.
    pub calls: u64,
    /// Failed calls of the serving version.
    pub failures: u64,
}

struct Slot {
    config: PluginConfig,
    loaded: RwLock<Option<(Arc<LoadedPlugin>, String)>>,
    error: Mutex<Option<String>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

/// A plugin in the chain: the serving version, or why there is none.
pub type ChainEntry = (String, Result<Arc<LoadedPlugin>, String>);

/// Every configured plugin. Cheap to share (`Arc`).
pub struct PluginRegistry {
    engine: PluginEngine,
    cache_dir: PathBuf,
    log_lines_per_minute: u32,
    slots: Vec<Slot>,
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl PluginRegistry {
    /// Loads every configured plugin (compiling on blocking threads; `configure` under each
    /// plugin's call deadline). Failures are recorded, not fatal.
    pub async fn load(
        engine: PluginEngine,
        cache_dir: PathBuf,
        configs: &[PluginConfig],
        log_lines_per_minute: u32,
    ) -> Self {
        let registry = Self {
            engine,
            cache_dir,
            log_lines_per_minute,
            slots: configs
                .iter()
                .map(|c| Slot {
                    config: c.clone(),
                    loaded: RwLock::new(None),
                    error: Mutex::new(None),
                    stamp: Mutex::new(None),
                })
                .collect(),
        };
        for slot in &registry.slots {
            registry.load_slot(slot).await;
        }
        registry
    }

    async fn load_slot(&self, slot: &Slot) -> bool {
        let before = stamp(&slot.config.path);
        *slot.stamp.lock().unwrap_or_else(|p| p.into_inner()) = before;
        match LoadedPlugin::load(
            &self.engine,
            &self.cache_dir,
            &slot.config,
            self.log_lines_per_minute,
        )
        .await
        {
            Ok(plugin) => {
                tracing::info!(
                    plugin = %slot.config.name,
                    version = plugin.info.version.as_deref().unwrap_or("?"),
                    sha256 = %plugin.sha256,
                    "plugin loaded"
                );
                *slot.loaded.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((Arc::new(plugin), crate::state::now_rfc3339()));
                *slot.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                true
            }
            Err(e) => {
                let reason = match e {
                    PluginError::NotLoaded { reason, .. } => reason,
                    other => other.to_string(),
                };
                let serving = slot
                    .loaded
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some();
                tracing::error!(
                    plugin = %slot.config.name,
                    %reason,
                    keeps_serving_old_version = serving,
                    "plugin not loaded"
                );
                *slot.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                false
            }
        }
    }

    /// The chain of one kind, in config order.
    pub fn chain(&self, kind: PluginKind) -> Vec<ChainEntry> {
        self.slots
            .iter()
            .filter(|s| s.config.kind == kind)
            .map(|s| {
                let loaded = s.loaded.read().unwrap_or_else(|p| p.into_inner());
                let entry = match &*loaded {
                    Some((plugin, _)) => Ok(plugin.clone()),
                    None => Err(s
                        .error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_else(|| "not loaded".into())),
                };
                (s.config.name.clone(), entry)
            })
            .collect()
    }

    /// The serving version of the network backend configured as `name`.
    ///
    /// # Errors
    /// [`PluginError::NotLoaded`] when no plugin has that name, it is not a network backend, or
    /// it failed to load (with the reason).
    pub fn network_backend(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.serving(name, PluginKind::NetworkBackend, "network backend", || {
            self.network_backend_names()
        })
    }

    /// The serving version of the volume driver configured as `name`.
    ///
    /// # Errors
    /// [`PluginError::NotLoaded`] when no plugin has that name, it is not a volume driver, or
    /// it failed to load (with the reason).
    pub fn volume_driver(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.serving(name, PluginKind::VolumeDriver, "volume driver", || {
            self.volume_driver_names()
        })
    }

    /// The names of the configured volume drivers (loaded or not), in config order.
    pub fn volume_driver_names(&self) -> Vec<String> {
        self.names_of(PluginKind::VolumeDriver)
    }

    fn names_of(&self, kind: PluginKind) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.config.kind == kind)
            .map(|s| s.config.name.clone())
            .collect()
    }

    /// The serving version of plugin `name` of `kind`.
    fn serving(
        &self,
        name: &str,
        kind: PluginKind,
        what: &str,
        names: impl FnOnce() -> Vec<String>,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let not_loaded = |reason: String| PluginError::NotLoaded {
            plugin: name.to_string(),
            reason,
        };
        let Some(slot) = self.slots.iter().find(|s| s.config.name == name) else {
            let names = names();
            return Err(not_loaded(format!(
                "no plugin of that name is configured ({what}s: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if slot.config.kind != kind {
            return Err(not_loaded(format!(
                "it is a {} plugin, not a {what}",
                slot.config.kind.as_str()
            )));
        }
        let loaded = slot.loaded.read().unwrap_or_else(|p| p.into_inner());
        match &*loaded {
            Some((plugin, _)) => Ok(plugin.clone()),
            None => Err(not_loaded(
                slot.error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "not loaded".into()),
            )),
        }
    }

    /// The names of the configured network backends (loaded or not), in config order.
    pub fn network_backend_names(&self) -> Vec<String> {
        self.names_of(PluginKind::NetworkBackend)
    }

    /// Every plugin with its status.
    pub fn views(&self) -> Vec<PluginView> {
        self.slots
            .iter()
            .map(|s| {
                let loaded = s.loaded.read().unwrap_or_else(|p| p.into_inner()).clone();
                let error = s.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let (calls, failures) = loaded.as_ref().map_or((0, 0), |(p, _)| p.counters());
                PluginView {
                    name: s.config.name.clone(),
                    kind: s.config.kind,
                    path: s.config.path.display().to_string(),
                    status: if loaded.is_some() {
                        PluginStatus::Loaded
                    } else {
                        PluginStatus::Failed
                    },
                    error,
                    version: loaded.as_ref().and_then(|(p, _)| p.info.version.clone()),
                    sha256: loaded.as_ref().map(|(p, _)| p.sha256.clone()),
                    grants: s.config.grants.clone(),
                    netlink: s
                        .config
                        .grants
                        .iter()
                        .any(|g| g == "netlink")
                        .then(|| s.config.netlink.clone().unwrap_or_default()),
                    lvm: s.config.lvm.clone(),
                    files: s.config.files.clone(),
                    needs: loaded
                        .as_ref()
                        .map(|(p, _)| p.info.needs.clone())
                        .unwrap_or_default(),
                    imports: loaded
                        .as_ref()
                        .map(|(p, _)| p.info.imports.clone())
                        .unwrap_or_default(),
                    multiplier: s.config.multiplier,
                    memory_limit_mb: s.config.memory_limit_mb,
                    call_timeout_ms: s.config.call_timeout_ms,
                    loaded_at: loaded.map(|(_, at)| at),
                    calls,
                    failures,
                }
            })
            .collect()
    }

    /// Reloads plugins whose file changed; returns their names. New calls use the new version;
    /// calls in flight finish on the old one (they hold its `Arc`). A version that fails to
    /// load leaves the old one serving, with the error shown.
    pub async fn reload_changed(&self) -> Vec<String> {
        let mut reloaded = Vec::new();
        for slot in &self.slots {
            let now = stamp(&slot.config.path);
            let before = *slot.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_some() && now != before {
                tracing::info!(plugin = %slot.config.name, "plugin file changed; reloading");
                if self.load_slot(slot).await {
                    reloaded.push(slot.config.name.clone());
                }
            }
        }
        reloaded
    }

    /// Checks for changed files every `interval` until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.reload_changed().await;
        }
    }

    /// The engine.
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }
}
