//! Host bindings of the plugin worlds, generated from `wit/` at build time. Every import is an
//! `async` host function and every export is called with `call_async`: a call's deadline can
//! then end it wherever the guest is, even inside a host import (see `instance.rs`).

/// `hyperlet:scheduler/filter-plugin`.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit/scheduler",
        world: "hyperlet:scheduler/filter-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `hyperlet:scheduler/weigher-plugin`, sharing the common and scheduler types with
/// [`filter`].
pub mod weigher {
    wasmtime::component::bindgen!({
        path: "../wit/scheduler",
        world: "hyperlet:scheduler/weigher-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "hyperlet:common/types": super::filter::hyperlet::common::types,
            "hyperlet:common/log": super::filter::hyperlet::common::log,
            "hyperlet:scheduler/types": super::filter::hyperlet::scheduler::types,
            "hyperlet:scheduler/hosts": super::filter::hyperlet::scheduler::hosts,
        },
    });
}

pub use filter::hyperlet::common::log::Level as LogLevel;
pub use filter::hyperlet::scheduler::types::{
    HostBatch as WitHostBatch, HostIdentity as WitHostIdentity, RequestSpec as WitRequestSpec,
    Verdicts as WitVerdicts,
};

/// `hyperlet:network/network-backend`, sharing the common types and the `log` import with
/// [`filter`].
pub mod network {
    wasmtime::component::bindgen!({
        path: "../wit/network",
        world: "hyperlet:network/network-backend",
        imports: { default: async },
        exports: { default: async },
        with: {
            "hyperlet:common/types": super::filter::hyperlet::common::types,
            "hyperlet:common/log": super::filter::hyperlet::common::log,
        },
    });
}

pub use filter::hyperlet::common::types::PluginError as WitPluginError;
pub use network::hyperlet::network::types::{
    LinkInfo as WitLinkInfo, Network as WitNetwork, NetworkType as WitNetworkType,
};

/// `hyperlet:volume/volume-driver`, sharing the common types and the `log` import with
/// [`filter`].
pub mod volume {
    wasmtime::component::bindgen!({
        path: "../wit/volume",
        world: "hyperlet:volume/volume-driver",
        imports: { default: async },
        exports: { default: async },
        with: {
            "hyperlet:common/types": super::filter::hyperlet::common::types,
            "hyperlet:common/log": super::filter::hyperlet::common::log,
        },
    });
}
