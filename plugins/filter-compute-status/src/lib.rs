//! Compute status filter: a host passes when it is enabled and has reported within
//! `service_down_time` seconds (nova's `ComputeFilter` with its `service_down_time`).
//!
//! Like nova, it logs (at debug level) when hosts fail — one line per call with the count —
//! so it imports `hyperlet:common/log` and needs `grants = ["log"]`.
//!
//! Settings: `service_down_time` — seconds (a number ≥ 0, default 60).

use hyperlet_plugin_sdk::prelude::*;

/// The filter.
pub struct ComputeStatusFilter {
    /// A host whose last heartbeat is older than this is down.
    service_down_time: f64,
}

impl Filter for ComputeStatusFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&["service_down_time"])?;
        let service_down_time = settings.get_f64("service_down_time", 60.0)?;
        if service_down_time < 0.0 {
            return Err(PluginError::bad_setting(format!(
                "Setting service_down_time = {service_down_time} is negative"
            )));
        }
        Ok(Self { service_down_time })
    }

    fn filter(&self, _spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        let age = host.heartbeat_age_s();
        let down = f64::from(age) > self.service_down_time;
        match (host.enabled(), down) {
            (true, false) => Verdict::Pass,
            (false, false) => Verdict::fail("disabled"),
            (enabled, true) => Verdict::fail(format!(
                "{}down: last heartbeat {age} s ago, service_down_time is {} s",
                if enabled { "" } else { "disabled and " },
                self.service_down_time
            )),
        }
    }

    fn filter_all(&self, spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Verdicts, PluginError> {
        let verdicts: Verdicts = hosts.iter().map(|host| self.filter(spec, &host)).collect();
        let failed = verdicts.reasons.len();
        if failed > 0 {
            log::debug!(
                "{failed} of {} hosts disabled or not heard from within {} s",
                hosts.len(),
                self.service_down_time
            );
        }
        Ok(verdicts)
    }
}

hyperlet_plugin_sdk::export_filter!(ComputeStatusFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{log_messages, run_filter, HostBuilder, RequestBuilder};

    fn run(settings: &[(&str, &str)], hosts: &[HostBuilder]) -> Result<Vec<Verdict>, PluginError> {
        run_filter::<ComputeStatusFilter>(settings, &RequestBuilder::new().build(), hosts)
    }

    #[test]
    fn enabled_and_fresh_passes() {
        let hosts = [
            HostBuilder::new().heartbeat_age(0),
            HostBuilder::new().heartbeat_age(60),
        ];
        assert_eq!(run(&[], &hosts).unwrap(), [Verdict::Pass, Verdict::Pass]);
        assert!(log_messages().is_empty(), "nothing to report");
    }

    #[test]
    fn disabled_or_down_fails_with_the_reason() {
        let hosts = [
            HostBuilder::new().enabled(false),
            HostBuilder::new().heartbeat_age(61),
            HostBuilder::new().enabled(false).heartbeat_age(3600),
        ];
        assert_eq!(
            run(&[], &hosts).unwrap(),
            [
                Verdict::fail("disabled"),
                Verdict::fail("down: last heartbeat 61 s ago, service_down_time is 60 s"),
                Verdict::fail(
                    "disabled and down: last heartbeat 3600 s ago, service_down_time is 60 s"
                ),
            ]
        );
        assert_eq!(
            log_messages(),
            ["3 of 3 hosts disabled or not heard from within 60 s"]
        );
    }

    #[test]
    fn service_down_time_is_configurable() {
        let hosts = [
            HostBuilder::new().heartbeat_age(100),
            HostBuilder::new().heartbeat_age(121),
        ];
        let verdicts = run(&[("service_down_time", "120")], &hosts).unwrap();
        assert!(verdicts[0].is_pass());
        assert_eq!(
            verdicts[1].reason(),
            Some("down: last heartbeat 121 s ago, service_down_time is 120 s")
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for (settings, message) in [
            (
                &[("service_down_time", "soon")][..],
                r#"Setting service_down_time = "soon" is not a number"#,
            ),
            (
                &[("service_down_time", "-1")][..],
                "Setting service_down_time = -1 is negative",
            ),
            (
                &[("service_downtime", "5")][..],
                "Unknown setting service_downtime (known: service_down_time)",
            ),
        ] {
            let err = run(settings, &[]).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.message.as_str()),
                ("bad-setting", message)
            );
        }
    }
}
