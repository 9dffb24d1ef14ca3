//! RAM filter: a host passes when its allocatable memory covers the request (nova's
//! `RamFilter`): `ram_total_mb × ram_allocation_ratio − ram_used_mb ≥ ram_mb`.
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// The filter. It keeps no state.
pub struct RamFilter;

impl Filter for RamFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        let usable = host.usable_ram_mb();
        Verdict::pass_if(usable >= spec.ram_mb as f64, || {
            format!(
                "needs {} MiB RAM, {} usable ({} × {:?} − {} used)",
                spec.ram_mb,
                usable.floor(),
                host.ram_total_mb(),
                host.ram_allocation_ratio(),
                host.ram_used_mb()
            )
        })
    }
}

hyperlet_plugin_sdk::export_filter!(RamFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    #[test]
    fn passes_hosts_with_room_and_explains_the_others() {
        let spec = RequestBuilder::new().ram_mb(2048).build();
        let hosts = [
            HostBuilder::new().ram(8192, 7168),
            HostBuilder::new().ram(8192, 6144),
            HostBuilder::new().ram(8192, 7168).ram_ratio(1.5),
        ];
        let verdicts = run_filter::<RamFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [
                Verdict::fail("needs 2048 MiB RAM, 1024 usable (8192 × 1.0 − 7168 used)"),
                Verdict::Pass,
                Verdict::Pass,
            ]
        );
    }

    #[test]
    fn over_committed_host_fails_even_a_tiny_request() {
        let spec = RequestBuilder::new().ram_mb(1).build();
        let hosts = [HostBuilder::new().ram(1000, 1500).ram_ratio(1.2)];
        let verdicts = run_filter::<RamFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [Verdict::fail(
                "needs 1 MiB RAM, -300 usable (1000 × 1.2 − 1500 used)"
            )]
        );
    }

    #[test]
    fn free_memory_right_now_does_not_matter() {
        let spec = RequestBuilder::new().ram_mb(4096).build();
        let hosts = [HostBuilder::new().ram(8192, 0).ram_free(100)];
        assert_eq!(
            run_filter::<RamFilter>(&[], &spec, &hosts).unwrap(),
            [Verdict::Pass]
        );
    }
}
