//! The agent's real plugin registry for tests and benches: loaded from a config's
//! `[[plugins]]` as the daemon loads it, and called on a runtime as the agent's async code
//! calls it.

use crate::{plugin_wasm, shared_plugin_cache};
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
    let registry = runtime.block_on(PluginRegistry::load(
        PluginEngine::new().expect("plugin engine"),
        shared_plugin_cache(),
        &plugins,
        120,
    ));
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

/// Runs the plugin call `f` on `runtime`, as the agent's async code does.
pub fn call<T, F>(
    runtime: &tokio::runtime::Runtime,
    plugin: &Arc<LoadedPlugin>,
    f: impl FnOnce(Arc<LoadedPlugin>) -> F,
) -> Result<T, PluginError>
where
    F: std::future::Future<Output = Result<T, PluginError>>,
{
    runtime.block_on(f(plugin.clone()))
}

/// The code and message of an error the plugin reported itself; panics on any other error.
pub fn reported(e: PluginError) -> (String, String) {
    match e {
        PluginError::Reported { code, message, .. } => (code, message),
        other => panic!("expected the plugin to report an error, got {other}"),
    }
}

/// A `[[plugins]]` stanza for the first-party plugin built from crate `krate`: `grants` as a
/// TOML array, `settings` as the inside of an inline table, `tables` (grant tables) appended.
pub fn stanza(
    kind: &str,
    call_timeout_ms: u64,
    name: &str,
    krate: &str,
    grants: &str,
    settings: &str,
    tables: &str,
) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\n\
         grants = {grants}\ncall_timeout_ms = {call_timeout_ms}\nsettings = {{ {settings} }}\n{tables}\n",
        plugin_wasm(krate).display()
    )
}

/// The first-party scheduler filters the benches chain, as (name, crate).
pub const SCHEDULER_FILTERS: [(&str, &str); 8] = [
    ("compute-status", "hyperlet-filter-compute-status"),
    ("ram", "hyperlet-filter-ram"),
    ("disk", "hyperlet-filter-disk"),
    ("vcpu", "hyperlet-filter-vcpu"),
    ("availability-zone", "hyperlet-filter-availability-zone"),
    ("image-properties", "hyperlet-filter-image-properties"),
    ("traits", "hyperlet-filter-traits"),
    ("aggregate-metadata", "hyperlet-filter-aggregate-metadata"),
];
/// The first-party scheduler weighers the benches chain, as (name, crate).
pub const SCHEDULER_WEIGHERS: [(&str, &str); 2] = [
    ("ram-weigher", "hyperlet-weigher-ram"),
    ("capacity-weigher", "hyperlet-weigher-capacity"),
];

/// A component under `target/wasm32-wasip2/release` found from this crate's directory (for
/// benches, which run without the agent binary next to them).
pub fn release_wasm(krate: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    assert!(
        path.exists(),
        "{} missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

/// The configs of [`SCHEDULER_FILTERS`] then [`SCHEDULER_WEIGHERS`] (`log` granted, 256 MiB,
/// 10 s per call).
pub fn scheduler_configs() -> Vec<hyperlet::config::PluginConfig> {
    use hyperlet::config::{PluginConfig, PluginKind};
    let config = |(name, krate): &(&str, &str), kind| PluginConfig {
        name: (*name).into(),
        kind,
        path: release_wasm(krate),
        grants: vec!["log".into()],
        netlink: None,
        lvm: None,
        files: None,
        http: None,
        settings: std::collections::BTreeMap::new(),
        multiplier: 1.0,
        memory_limit_mb: 256,
        call_timeout_ms: 10_000,
    };
    SCHEDULER_FILTERS
        .iter()
        .map(|p| config(p, PluginKind::Filter))
        .chain(
            SCHEDULER_WEIGHERS
                .iter()
                .map(|p| config(p, PluginKind::Weigher)),
        )
        .collect()
}
