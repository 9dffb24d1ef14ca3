//! WebAssembly plugins: the wasmtime component host.
//!
//! Plugins are components implementing a world from `wit/`: the scheduler's `filter-plugin`
//! and `weigher-plugin`, `network-backend` (neutron's L2 agents) and `volume-driver`
//! (cinder-volume's drivers). The agent config lists them with their grants; at start and
//! whenever a file changes, each is loaded:
//!
//! 1. **compile** — once per content hash and engine, cached precompiled under
//!    `<state-dir>/plugin-cache/` (`cache.rs`);
//! 2. **inspect** — which world it exports and at which version, which capabilities its
//!    imports need (`inspect.rs`); a wrong world, an incompatible version or an import that is
//!    not granted means the plugin is not loaded, and `/v1/plugins` says exactly why;
//! 3. **link** — the `log` capability, for network backends the `netlink` capability checked
//!    against the grant's parameters (`net_grant.rs`, `netlink.rs`), for volume drivers the
//!    `lvm`, `files` and `qemu-img` capabilities checked against theirs by [`crate::volume`]
//!    (`volume_host.rs`; the driver calls are in `volume_driver.rs`), and a deny-all WASI (no
//!    files, sockets, env or args; stdout/stderr captured into the agent's log, rate-limited)
//!    (`host.rs`), pre-instantiated once (`InstancePre`);
//! 4. **configure** — one instance is created and its `configure(settings)` must succeed
//!    within the call deadline (a plugin that hangs there is refused; the agent starts).
//!
//! Calls are `async` (`instance.rs`): the export runs on a fiber under
//! `tokio::time::timeout(call_timeout_ms)`, yielding to the runtime every few milliseconds of
//! computing and trapped by the epoch callback at its deadline; a guest waiting in a host
//! import (a clock sleep, a netlink request, a tool) is dropped at the deadline with its
//! instance, and no thread stays behind. Host imports are `async` too (no thread blocks on
//! them). One budget per instance (`memory.rs`) covers its linear memories and what the host
//! keeps of its answers, which are read lazily and within bounds (`answer.rs`): a message is
//! cut to 1 KiB, a list longer than what was asked is refused before it is copied. A trap,
//! timeout, panic or unusable answer discards that instance and returns a [`PluginError`]
//! naming the plugin; the agent keeps serving and other plugins are untouched. Instances that
//! answered well are kept for the next call. A reload swaps the plugin atomically: calls in
//! flight finish on the old version (`registry.rs`).

mod answer;
mod bindings;
mod cache;
mod engine;
mod host;
mod http;
mod inspect;
mod instance;
mod memory;
mod net_grant;
mod netlink;
mod registry;
mod volume_driver;
mod volume_host;

pub use answer::{cap, MAX_REASONS_BYTES, MAX_TEXT_BYTES};
pub use bindings::{
    WitHostBatch, WitHostIdentity, WitLinkInfo, WitNetwork, WitNetworkType, WitPluginError,
    WitRequestSpec, WitVerdicts,
};
pub use engine::PluginEngine;
pub use host::{no_hosts, HostIdentitySource};
pub use inspect::{inspect_component, Compatibility, ComponentInfo};
pub use instance::LoadedPlugin;
pub use net_grant::{NetGrant, NetGrantError, NetlinkOp};
pub use netlink::{net_error, NetlinkHost, NetlinkReply};
pub use registry::{PluginRegistry, PluginStatus, PluginView};
pub use volume_host::VolumeHost;

/// Errors of plugin loading and calls. Every message names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin could not be loaded.
    #[error("Plugin {plugin} is not loaded: {reason}")]
    NotLoaded {
        /// Plugin name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The call ran out of time.
    #[error("Plugin {plugin} did not answer within {ms} ms; its instance was discarded")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The deadline.
        ms: u64,
    },
    /// The plugin trapped (panic, out of memory, bad code).
    #[error("Plugin {plugin} trapped: {reason}; its instance was discarded")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// The trap.
        reason: String,
    },
    /// The plugin answered something unusable.
    #[error("Plugin {plugin} gave an unusable answer: {reason}")]
    BadAnswer {
        /// Plugin name.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
    /// The plugin reported an error itself.
    #[error("Plugin {plugin} failed: {code}: {message}")]
    Reported {
        /// Plugin name.
        plugin: String,
        /// The plugin's error code.
        code: String,
        /// The plugin's message.
        message: String,
    },
    /// The engine or the cache failed.
    #[error("Plugin runtime failed: {0}")]
    Runtime(String),
}
