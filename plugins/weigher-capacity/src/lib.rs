//! Capacity weigher: hosts with more free volume capacity rank higher (cinder's
//! `CapacityWeigher` on free capacity; a negative multiplier stacks volumes instead).
//!
//! The weight is `volume-free-gb`.
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// The weigher. It keeps no state.
pub struct CapacityWeigher;

impl Weigher for CapacityWeigher {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn weigh(&self, _spec: &RequestSpec, host: &Host<'_>) -> f64 {
        host.volume_free_gb() as f64
    }
}

hyperlet_plugin_sdk::export_weigher!(CapacityWeigher);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_weigher, HostBuilder, RequestBuilder};

    #[test]
    fn weighs_free_volume_capacity() {
        let spec = RequestBuilder::new().volume_gb(10).build();
        let hosts = [
            HostBuilder::new().volume_free(500),
            HostBuilder::new(),
            HostBuilder::new().volume_free(2048),
        ];
        assert_eq!(
            run_weigher::<CapacityWeigher>(&[], &spec, &hosts).unwrap(),
            [500.0, 0.0, 2048.0]
        );
    }
}
