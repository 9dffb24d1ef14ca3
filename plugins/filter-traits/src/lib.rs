//! Traits filter: a host passes when it has every trait the request requires and none it
//! forbids, as placement's required and forbidden traits.
//!
//! What is required or forbidden comes from two places, both optional:
//!
//! * the image properties `trait:<NAME>` = `required` | `forbidden`, as nova reads them from
//!   images and flavors (`trait:HW_CPU_X86_AVX2=required`, `trait:CUSTOM_WINDOWS=forbidden`);
//!   other values are ignored, as nova does;
//! * the settings `required` and `forbidden`: comma-separated trait names every request gets
//!   (e.g. `required = "CUSTOM_PRODUCTION"` on a fleet's production chain).
//!
//! Trait names are compared exactly (case-sensitive, as placement does). A request that names
//! one trait both required and forbidden passes no host, saying so. The reason lists every
//! missing and every present forbidden trait.
//!
//! Settings: `required`, `forbidden` (default: none).

use hyperlet_plugin_sdk::prelude::*;

/// Image property prefix of a trait requirement.
const PREFIX: &str = "trait:";

/// The filter: the traits its settings require and forbid.
pub struct TraitsFilter {
    required: Vec<String>,
    forbidden: Vec<String>,
}

/// Checks a trait name from the settings: placement's alphabet (upper-case letters, digits,
/// `_`).
fn trait_name(setting: &str, name: &str) -> Result<String, PluginError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(PluginError::bad_setting(format!(
            "{setting}: {name:?} is not a trait name (upper-case letters, digits and _, as CUSTOM_GPU)"
        )));
    }
    Ok(name.to_owned())
}

impl Filter for TraitsFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&["required", "forbidden"])?;
        let list = |key: &str| -> Result<Vec<String>, PluginError> {
            settings
                .get_list(key)
                .into_iter()
                .map(|name| trait_name(key, name))
                .collect()
        };
        Ok(Self {
            required: list("required")?,
            forbidden: list("forbidden")?,
        })
    }

    fn filter_all(&self, spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Verdicts, PluginError> {
        let mut required: Vec<&str> = self.required.iter().map(String::as_str).collect();
        let mut forbidden: Vec<&str> = self.forbidden.iter().map(String::as_str).collect();
        for (key, value) in &spec.image_properties {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            match value.trim() {
                "required" => required.push(name),
                "forbidden" => forbidden.push(name),
                _ => {}
            }
        }
        required.sort_unstable();
        required.dedup();
        forbidden.sort_unstable();
        forbidden.dedup();
        let mut verdicts = Verdicts::with_capacity(hosts.len());
        if required.is_empty() && forbidden.is_empty() {
            // Nothing asked: every host passes, and no host identity is fetched.
            hosts.iter().for_each(|_| verdicts.push_pass());
            return Ok(verdicts);
        }
        if let Some(both) = required.iter().find(|r| forbidden.contains(r)) {
            let reason = format!("the request both requires and forbids trait {both}");
            hosts
                .iter()
                .for_each(|_| verdicts.push_fail(reason.clone()));
            return Ok(verdicts);
        }
        for host in hosts.iter() {
            let missing: Vec<&str> = required
                .iter()
                .copied()
                .filter(|t| !host.has_trait(t))
                .collect();
            let present: Vec<&str> = forbidden
                .iter()
                .copied()
                .filter(|t| host.has_trait(t))
                .collect();
            let mut why = Vec::new();
            if !missing.is_empty() {
                why.push(format!("lacks required trait {}", missing.join(", ")));
            }
            if !present.is_empty() {
                why.push(format!("has forbidden trait {}", present.join(", ")));
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

hyperlet_plugin_sdk::export_filter!(TraitsFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    fn hosts() -> [HostBuilder; 3] {
        [
            HostBuilder::new()
                .name("gpu")
                .with_trait("CUSTOM_GPU")
                .with_trait("HW_CPU_X86_AVX2"),
            HostBuilder::new()
                .name("plain")
                .with_trait("HW_CPU_X86_AVX2"),
            HostBuilder::new().name("win").with_trait("CUSTOM_WINDOWS"),
        ]
    }

    fn run(settings: &[(&str, &str)], props: &[(&str, &str)]) -> Vec<Verdict> {
        let spec = props
            .iter()
            .fold(RequestBuilder::new(), |b, (k, v)| b.image_property(k, v))
            .build();
        run_filter::<TraitsFilter>(settings, &spec, &hosts()).unwrap()
    }

    #[test]
    fn nothing_asked_passes_every_host() {
        assert!(run(&[], &[("os_distro", "debian")])
            .iter()
            .all(Verdict::is_pass));
        assert!(run(&[], &[("trait:CUSTOM_GPU", "preferred")])
            .iter()
            .all(Verdict::is_pass));
    }

    #[test]
    fn required_traits_from_the_image() {
        let v = run(&[], &[("trait:CUSTOM_GPU", "required")]);
        assert!(v[0].is_pass());
        assert_eq!(
            v[1],
            Verdict::fail("host plain lacks required trait CUSTOM_GPU")
        );
        assert!(!v[2].is_pass());
    }

    #[test]
    fn forbidden_traits_and_settings_combine() {
        let v = run(
            &[("required", "HW_CPU_X86_AVX2")],
            &[("trait:CUSTOM_GPU", "forbidden")],
        );
        assert_eq!(
            v[0],
            Verdict::fail("host gpu has forbidden trait CUSTOM_GPU")
        );
        assert!(v[1].is_pass());
        assert_eq!(
            v[2],
            Verdict::fail("host win lacks required trait HW_CPU_X86_AVX2")
        );
        let v = run(&[("forbidden", "CUSTOM_WINDOWS")], &[]);
        assert_eq!(v.iter().filter(|v| v.is_pass()).count(), 2);
    }

    #[test]
    fn a_trait_both_required_and_forbidden_passes_nothing() {
        let v = run(
            &[("forbidden", "CUSTOM_GPU")],
            &[("trait:CUSTOM_GPU", "required")],
        );
        assert!(v
            .iter()
            .all(|v| v.reason() == Some("the request both requires and forbids trait CUSTOM_GPU")));
    }

    #[test]
    fn bad_settings_are_refused() {
        let spec = RequestBuilder::new().build();
        let err =
            run_filter::<TraitsFilter>(&[("required", "custom_gpu")], &spec, &[]).unwrap_err();
        assert_eq!(err.code, "bad-setting");
        assert!(err.message.contains("not a trait name"), "{}", err.message);
        assert!(run_filter::<TraitsFilter>(&[("preferred", "X")], &spec, &[]).is_err());
    }
}
