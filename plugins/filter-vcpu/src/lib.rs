//! vCPU filter: a host passes when its allocatable vCPUs cover the request (nova's
//! `CoreFilter`): `vcpus_total × cpu_allocation_ratio − vcpus_used ≥ vcpus`. As in nova, a
//! server may not over-commit against itself: it never gets more vCPUs than the host has
//! CPUs, whatever the ratio.
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// The filter. It keeps no state.
pub struct VcpuFilter;

impl Filter for VcpuFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        if spec.vcpus > host.vcpus_total() {
            return Verdict::fail(format!(
                "needs {} vCPUs, more than the host's {} CPUs",
                spec.vcpus,
                host.vcpus_total()
            ));
        }
        let usable = host.usable_vcpus();
        Verdict::pass_if(usable >= f64::from(spec.vcpus), || {
            format!(
                "needs {} vCPUs, {} usable ({} × {:?} − {} used)",
                spec.vcpus,
                usable.floor(),
                host.vcpus_total(),
                host.cpu_allocation_ratio(),
                host.vcpus_used()
            )
        })
    }
}

hyperlet_plugin_sdk::export_filter!(VcpuFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    #[test]
    fn passes_hosts_with_room_and_explains_the_others() {
        let spec = RequestBuilder::new().vcpus(4).build();
        let hosts = [
            HostBuilder::new().vcpus(8, 6),
            HostBuilder::new().vcpus(8, 4),
            HostBuilder::new().vcpus(8, 14).cpu_ratio(2.25),
        ];
        let verdicts = run_filter::<VcpuFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [
                Verdict::fail("needs 4 vCPUs, 2 usable (8 × 1.0 − 6 used)"),
                Verdict::Pass,
                Verdict::Pass
            ]
        );
    }

    #[test]
    fn never_more_vcpus_than_cpus() {
        let spec = RequestBuilder::new().vcpus(16).build();
        let hosts = [HostBuilder::new().vcpus(8, 0).cpu_ratio(16.0)];
        let verdicts = run_filter::<VcpuFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [Verdict::fail("needs 16 vCPUs, more than the host's 8 CPUs")]
        );
    }
}
