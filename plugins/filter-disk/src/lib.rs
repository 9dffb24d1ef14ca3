//! Disk filter: a host passes when its allocatable disk covers the request's root + ephemeral
//! disk (nova's `DiskFilter`): `disk_total_gb × disk_allocation_ratio − disk_used_gb ≥ disk_gb`.
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// The filter. It keeps no state.
pub struct DiskFilter;

impl Filter for DiskFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        let usable = host.usable_disk_gb();
        Verdict::pass_if(usable >= spec.disk_gb as f64, || {
            format!(
                "needs {} GiB disk, {} usable ({} × {:?} − {} used)",
                spec.disk_gb,
                usable.floor(),
                host.disk_total_gb(),
                host.disk_allocation_ratio(),
                host.disk_used_gb()
            )
        })
    }
}

hyperlet_plugin_sdk::export_filter!(DiskFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    #[test]
    fn passes_hosts_with_room_and_explains_the_others() {
        let spec = RequestBuilder::new().disk_gb(20).build();
        let hosts = [
            HostBuilder::new().disk(100, 90),
            HostBuilder::new().disk(100, 80),
            HostBuilder::new().disk(100, 90).disk_ratio(1.1),
        ];
        let verdicts = run_filter::<DiskFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [
                Verdict::fail("needs 20 GiB disk, 10 usable (100 × 1.0 − 90 used)"),
                Verdict::Pass,
                Verdict::Pass,
            ]
        );
    }

    #[test]
    fn a_request_without_local_disk_passes_any_host_with_disk_left() {
        let spec = RequestBuilder::new().disk_gb(0).build();
        let hosts = [
            HostBuilder::new().disk(100, 100),
            HostBuilder::new().disk(100, 101),
        ];
        let verdicts = run_filter::<DiskFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [
                Verdict::Pass,
                Verdict::fail("needs 0 GiB disk, -1 usable (100 × 1.0 − 101 used)")
            ]
        );
    }
}
