//! RAM weigher: hosts with more memory left rank higher (nova's `RAMWeigher`; with the
//! default positive multiplier the scheduler spreads, with a negative one it stacks).
//!
//! The weight is the host's allocatable RAM in MiB, `ram_total_mb × ram_allocation_ratio −
//! ram_used_mb` — what nova's weigher ranks by (allocation, not the memory the kernel reports
//! free) and the same quantity the RAM filter checks, so the roomiest host by the filter's
//! measure wins. It is negative on an over-committed host.
//!
//! Settings: `basis` — `allocation` (the default, as above) or `free`, which weighs by
//! `ram-free-mb`, the memory free on the host right now.

use hyperlet_plugin_sdk::prelude::*;

/// The weigher.
pub struct RamWeigher {
    /// Weigh by `ram-free-mb` instead of allocatable RAM.
    by_free: bool,
}

impl Weigher for RamWeigher {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&["basis"])?;
        let basis = settings.get_choice("basis", &["allocation", "free"], "allocation")?;
        Ok(Self {
            by_free: basis == "free",
        })
    }

    fn weigh(&self, _spec: &RequestSpec, host: &Host<'_>) -> f64 {
        if self.by_free {
            host.ram_free_mb() as f64
        } else {
            host.usable_ram_mb()
        }
    }
}

hyperlet_plugin_sdk::export_weigher!(RamWeigher);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_weigher, HostBuilder, RequestBuilder};

    fn hosts() -> [HostBuilder; 3] {
        [
            HostBuilder::new().ram(8192, 7168).ram_free(6000),
            HostBuilder::new().ram(8192, 1024).ram_free(1000),
            HostBuilder::new()
                .ram(8192, 9000)
                .ram_ratio(1.5)
                .ram_free(500),
        ]
    }

    #[test]
    fn weighs_allocatable_ram_by_default() {
        let spec = RequestBuilder::new().build();
        let weights = run_weigher::<RamWeigher>(&[], &spec, &hosts()).unwrap();
        assert_eq!(weights, [1024.0, 7168.0, 8192.0 * 1.5 - 9000.0]);
    }

    #[test]
    fn weighs_free_ram_when_asked() {
        let spec = RequestBuilder::new().build();
        let weights = run_weigher::<RamWeigher>(&[("basis", "free")], &spec, &hosts()).unwrap();
        assert_eq!(weights, [6000.0, 1000.0, 500.0]);
    }

    #[test]
    fn unknown_basis_is_refused() {
        let spec = RequestBuilder::new().build();
        let err = run_weigher::<RamWeigher>(&[("basis", "used")], &spec, &[]).unwrap_err();
        assert_eq!(
            err.message,
            r#"Setting basis = "used" is not one of allocation, free"#
        );
    }
}
