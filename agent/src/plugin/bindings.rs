//! Host bindings of the plugin worlds, generated from `wit/` at build time.

/// `hyperlet:scheduler/filter-plugin`.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit/scheduler",
        world: "hyperlet:scheduler/filter-plugin",
    });
}

/// `hyperlet:scheduler/weigher-plugin`, sharing the common and scheduler types with
/// [`filter`].
pub mod weigher {
    wasmtime::component::bindgen!({
        path: "../wit/scheduler",
        world: "hyperlet:scheduler/weigher-plugin",
        with: {
            "hyperlet:common/types": super::filter::hyperlet::common::types,
            "hyperlet:common/log": super::filter::hyperlet::common::log,
            "hyperlet:scheduler/types": super::filter::hyperlet::scheduler::types,
        },
    });
}

pub use filter::hyperlet::common::log::Level as LogLevel;
pub use filter::hyperlet::scheduler::types::{
    HostBatch as WitHostBatch, RequestSpec as WitRequestSpec, Verdicts as WitVerdicts,
};

/// `hyperlet:network/network-backend`, sharing the common types and the `log` import with
/// [`filter`].
pub mod network {
    wasmtime::component::bindgen!({
        path: "../wit/network",
        world: "hyperlet:network/network-backend",
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
        with: {
            "hyperlet:common/types": super::filter::hyperlet::common::types,
            "hyperlet:common/log": super::filter::hyperlet::common::log,
        },
    });
}
