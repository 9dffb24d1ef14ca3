//! Availability zone filter: a host passes when the request names no zone or the host is in
//! the zone it names (nova's `AvailabilityZoneFilter`; zone names compare exactly).
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// The filter. It keeps no state.
pub struct AvailabilityZoneFilter;

impl Filter for AvailabilityZoneFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        match spec.requested_zone() {
            None => Verdict::Pass,
            Some(wanted) => Verdict::pass_if(host.availability_zone() == wanted, || {
                format!(
                    "in zone {}, the request asks for {wanted}",
                    host.availability_zone()
                )
            }),
        }
    }
}

hyperlet_plugin_sdk::export_filter!(AvailabilityZoneFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    #[test]
    fn passes_the_requested_zone_only() {
        let hosts = [HostBuilder::new().az("az1"), HostBuilder::new().az("az2")];
        let spec = RequestBuilder::new().az("az2").build();
        let verdicts = run_filter::<AvailabilityZoneFilter>(&[], &spec, &hosts).unwrap();
        assert_eq!(
            verdicts,
            [
                Verdict::fail("in zone az1, the request asks for az2"),
                Verdict::Pass
            ]
        );
    }

    #[test]
    fn passes_every_host_without_a_requested_zone() {
        let hosts = [HostBuilder::new().az("az1"), HostBuilder::new().az("az2")];
        for spec in [
            RequestBuilder::new().build(),
            RequestBuilder::new().az("").build(),
        ] {
            let verdicts = run_filter::<AvailabilityZoneFilter>(&[], &spec, &hosts).unwrap();
            assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass]);
        }
    }

    #[test]
    fn takes_no_settings() {
        let spec = RequestBuilder::new().build();
        let err = run_filter::<AvailabilityZoneFilter>(&[("zone", "x")], &spec, &[]).unwrap_err();
        assert_eq!(err.code, "bad-setting");
    }
}
