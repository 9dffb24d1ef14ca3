//! The agent's real plugin registry for tests and benches: loaded from a config's
//! `[[plugins]]` as the daemon loads it, and called from a blocking thread as the agent's
//! async code calls it.

use crate::shared_plugin_cache;
use hyperlet::config::Config;
use hyperlet::plugin::{LoadedPlugin, PluginEngine, PluginError, PluginRegistry};
use std::sync::Arc;

/// A runtime, a registry loaded from `toml`'s `[[plugins]]`, and the parsed config.
///
/// # Panics
/// When the config is invalid.
pub fn registry_with_config(toml: &str) -> (tokio::runtime::Runtime, Arc<PluginRegistry>, Config) {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    config.validate().unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plugins = config.plugins.clone();
    let loading = runtime.spawn_blocking(move || {
        PluginRegistry::load(
            PluginEngine::new().expect("plugin engine"),
            shared_plugin_cache(),
            &plugins,
            120,
        )
    });
    let registry = runtime.block_on(loading).expect("registry loads");
    (runtime, Arc::new(registry), config)
}

/// A runtime and a registry loaded from `toml`'s `[[plugins]]`, as the agent builds them.
///
/// # Panics
/// When the config is invalid.
pub fn registry(toml: &str) -> (tokio::runtime::Runtime, Arc<PluginRegistry>) {
    let (runtime, registry, _) = registry_with_config(toml);
    (runtime, registry)
}

/// Calls the plugin on a blocking thread of `runtime`, as the agent's async code does.
///
/// # Panics
/// When the blocking task panics.
pub fn call<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    plugin: &Arc<LoadedPlugin>,
    f: impl FnOnce(&LoadedPlugin) -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    let plugin = plugin.clone();
    let task = runtime.spawn_blocking(move || f(&plugin));
    runtime.block_on(task).expect("plugin call task")
}
