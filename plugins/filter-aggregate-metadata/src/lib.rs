//! Aggregate metadata filter: a host passes when its metadata (`[host] metadata`, as host
//! aggregates' metadata in nova) match what the request asks, as nova's
//! `AggregateInstanceExtraSpecsFilter` and `AggregateImagePropertiesIsolation` do.
//!
//! * **Scoped requests** — every request property `aggregate_instance_extra_specs:<key>` =
//!   `<wanted>` (the scope nova uses in flavor extra specs; a controller passes them with the
//!   image properties) needs the host's metadata `<key>`, and one of its comma-separated
//!   values must equal `<wanted>`; `<or> a <or> b` accepts any of `a`, `b`. A host without the
//!   key fails.
//! * **Isolation** (setting `isolate = true`) — every other image property whose key is also
//!   a metadata key of the host must match it the same way (hosts set aside for, say,
//!   `os_distro = windows` take only such images); keys the host does not carry are ignored.
//!
//! Values compare exactly after trimming. Of nova's extra-spec operators only `<or>` is
//! understood; the others (`s==`, `<in>`, `>=`, `<all-in>`, …) are not, and such a value is
//! compared as plain text (so it matches only metadata spelled the same way). The reason names
//! every mismatch.
//!
//! Settings: `isolate` (`true`/`false`, default `false`).

use hyperlet_plugin_sdk::prelude::*;

/// The request-property scope of metadata requirements.
const SCOPE: &str = "aggregate_instance_extra_specs:";

/// The filter.
pub struct AggregateMetadataFilter {
    isolate: bool,
}

/// Whether the host's `values` (comma-separated) hold what `wanted` asks (a value, or
/// `<or> a <or> b`).
fn matches(wanted: &str, values: &str) -> bool {
    let has = |w: &str| values.split(',').any(|v| v.trim() == w.trim());
    match wanted.trim().strip_prefix("<or>") {
        Some(choices) => choices.split("<or>").any(has),
        None => has(wanted),
    }
}

impl Filter for AggregateMetadataFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&["isolate"])?;
        Ok(Self {
            isolate: settings.get_bool("isolate", false)?,
        })
    }

    fn filter_all(&self, spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Verdicts, PluginError> {
        let scoped: Vec<(&str, &str)> = spec
            .image_properties
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(SCOPE)?, v.as_str())))
            .collect();
        let others: Vec<(&str, &str)> = spec
            .image_properties
            .iter()
            .filter(|(k, _)| !k.starts_with(SCOPE))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut verdicts = Verdicts::with_capacity(hosts.len());
        if scoped.is_empty() && (!self.isolate || others.is_empty()) {
            // Nothing to match: no host identity is fetched.
            hosts.iter().for_each(|_| verdicts.push_pass());
            return Ok(verdicts);
        }
        for host in hosts.iter() {
            let mut why = Vec::new();
            for &(key, wanted) in &scoped {
                match host.metadata(key) {
                    None => why.push(format!("has no metadata {key} (wanted {wanted})")),
                    Some(values) if !matches(wanted, values) => {
                        why.push(format!("has {key}={values}, wanted {wanted}"));
                    }
                    Some(_) => {}
                }
            }
            if self.isolate {
                for &(key, wanted) in &others {
                    if let Some(values) = host.metadata(key) {
                        if !matches(wanted, values) {
                            why.push(format!(
                                "is set aside for {key}={values}, the image has {wanted}"
                            ));
                        }
                    }
                }
            }
            if why.is_empty() {
                verdicts.push_pass();
            } else {
                verdicts.push_fail(format!("host {} {}", host.name(), why.join("; ")));
            }
        }
        Ok(verdicts)
    }

    fn filter(&self, _spec: &RequestSpec, _host: &Host<'_>) -> Verdict {
        // `filter_all` answers for the whole batch (the request is read once).
        Verdict::Pass
    }
}

hyperlet_plugin_sdk::export_filter!(AggregateMetadataFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    fn hosts() -> [HostBuilder; 3] {
        [
            HostBuilder::new()
                .name("fast")
                .metadata("ssd", "true")
                .metadata("tier", "gold,silver"),
            HostBuilder::new().name("slow").metadata("ssd", "false"),
            HostBuilder::new()
                .name("win")
                .metadata("os_distro", "windows"),
        ]
    }

    fn run(settings: &[(&str, &str)], props: &[(&str, &str)]) -> Vec<Verdict> {
        let spec = props
            .iter()
            .fold(RequestBuilder::new(), |b, (k, v)| b.image_property(k, v))
            .build();
        run_filter::<AggregateMetadataFilter>(settings, &spec, &hosts()).unwrap()
    }

    #[test]
    fn nothing_scoped_passes_every_host() {
        assert!(run(&[], &[("os_distro", "debian")])
            .iter()
            .all(Verdict::is_pass));
    }

    #[test]
    fn scoped_properties_need_a_matching_value() {
        let v = run(&[], &[("aggregate_instance_extra_specs:ssd", "true")]);
        assert!(v[0].is_pass());
        assert_eq!(v[1], Verdict::fail("host slow has ssd=false, wanted true"));
        assert_eq!(
            v[2],
            Verdict::fail("host win has no metadata ssd (wanted true)")
        );
        let v = run(&[], &[("aggregate_instance_extra_specs:tier", "silver")]);
        assert!(v[0].is_pass());
        let v = run(
            &[],
            &[(
                "aggregate_instance_extra_specs:ssd",
                "<or> maybe <or> false",
            )],
        );
        assert_eq!((v[0].is_pass(), v[1].is_pass()), (false, true));
    }

    #[test]
    fn isolation_keeps_set_aside_hosts_for_their_images() {
        let props = [("os_distro", "debian")];
        assert!(run(&[], &props)[2].is_pass());
        let v = run(&[("isolate", "true")], &props);
        assert!(v[0].is_pass() && v[1].is_pass());
        assert_eq!(
            v[2],
            Verdict::fail("host win is set aside for os_distro=windows, the image has debian")
        );
        assert!(run(&[("isolate", "true")], &[("os_distro", "windows")])[2].is_pass());
        let spec = RequestBuilder::new().build();
        assert!(
            run_filter::<AggregateMetadataFilter>(&[("isolate", "maybe")], &spec, &[]).is_err()
        );
    }
}
