//! The wasmtime engine shared by every plugin: component model, Cranelift, the pooling
//! allocator, and epoch interruption driven by a ticker thread. Calls run on fibers
//! (`call_async`): a guest that computes yields to the tokio runtime every [`SLICE_TICKS`]
//! ticks, so one plugin never holds an executor thread for long.

use super::PluginError;
use crate::config::MAX_PLUGIN_MEMORY_MB;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick. Deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Epoch ticks a guest may compute before it yields to the async runtime (about 10 ms).
pub const SLICE_TICKS: u64 = 5;

/// Instances the pool can hold at once, across all plugins.
const POOL_INSTANCES: u32 = 256;

/// The engine plus its epoch ticker. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    stop: Arc<AtomicBool>,
}

impl PluginEngine {
    /// Builds the engine and starts the epoch ticker.
    ///
    /// # Errors
    /// [`PluginError::Runtime`] when wasmtime refuses the configuration.
    pub fn new() -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size((MAX_PLUGIN_MEMORY_MB * 1024 * 1024) as usize)
            .max_memories_per_component(4)
            .max_core_instances_per_component(16)
            .max_tables_per_component(8)
            .total_stacks(POOL_INSTANCES);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| PluginError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self { engine, stop })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks for a deadline (at least one).
    pub fn ticks(deadline: Duration) -> u64 {
        (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// Stops the ticker (the engine stays usable, without deadlines).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
