//! Image properties filter: a host passes when it matches what the image asks for (nova's
//! `ImagePropertiesFilter`). Each of these image properties, when present and not empty, must
//! equal the host's value, case-insensitively and after canonicalising both sides as nova
//! does:
//!
//! | what | image property (first one present wins) | host field | canonical names |
//! |---|---|---|---|
//! | CPU architecture | `hw_architecture`, `architecture` | `architecture` | `amd64` → `x86_64`; `i386`, `i486`, `i586`, `x86_32` → `i686`; `arm64` → `aarch64` |
//! | hypervisor type | `img_hv_type`, `hypervisor_type` | `hypervisor-type` | `xapi` → `xen` |
//! | VM mode | `hw_vm_mode`, `vm_mode` | `vm-mode` | `pv` → `xen`; `hv`, `baremetal` → `hvm` |
//!
//! An image without these properties passes every host. Every mismatch is named in the
//! reason.
//!
//! Settings: none.

use hyperlet_plugin_sdk::prelude::*;

/// One property the filter checks.
struct Check {
    /// What it is, for reasons.
    what: &'static str,
    /// Image property keys, the preferred one first.
    keys: &'static [&'static str],
    /// Which host field it compares with.
    field: Field,
    /// Lower-cased name → canonical name.
    canonical: fn(&str) -> &str,
}

/// A host field.
#[derive(Clone, Copy)]
enum Field {
    Architecture,
    HypervisorType,
    VmMode,
}

impl Field {
    fn of<'a>(self, host: &Host<'a>) -> &'a str {
        match self {
            Self::Architecture => host.architecture(),
            Self::HypervisorType => host.hypervisor_type(),
            Self::VmMode => host.vm_mode(),
        }
    }
}

const CHECKS: [Check; 3] = [
    Check {
        what: "architecture",
        keys: &["hw_architecture", "architecture"],
        field: Field::Architecture,
        canonical: canonical_architecture,
    },
    Check {
        what: "hypervisor type",
        keys: &["img_hv_type", "hypervisor_type"],
        field: Field::HypervisorType,
        canonical: canonical_hypervisor_type,
    },
    Check {
        what: "VM mode",
        keys: &["hw_vm_mode", "vm_mode"],
        field: Field::VmMode,
        canonical: canonical_vm_mode,
    },
];

fn canonical_architecture(lower: &str) -> &str {
    match lower {
        "amd64" => "x86_64",
        "i386" | "i486" | "i586" | "x86_32" => "i686",
        "arm64" => "aarch64",
        other => other,
    }
}

fn canonical_hypervisor_type(lower: &str) -> &str {
    match lower {
        "xapi" => "xen",
        other => other,
    }
}

fn canonical_vm_mode(lower: &str) -> &str {
    match lower {
        "pv" => "xen",
        "hv" | "baremetal" => "hvm",
        other => other,
    }
}

/// Whether `a` and `b` name the same thing after lower-casing and `canonical`.
fn same(a: &str, b: &str, canonical: fn(&str) -> &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    canonical(&a) == canonical(&b)
}

/// The filter. It keeps no state.
pub struct ImagePropertiesFilter;

impl Filter for ImagePropertiesFilter {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        settings.check_known(&[])?;
        Ok(Self)
    }

    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict {
        let mismatches: Vec<String> = CHECKS
            .iter()
            .filter_map(|check| {
                let (key, wanted) = check.keys.iter().find_map(|key| {
                    spec.image_property(key)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (*key, v))
                })?;
                let has = check.field.of(host);
                (!same(wanted, has, check.canonical)).then(|| {
                    format!(
                        "image needs {} {wanted} ({key}), host has {has:?}",
                        check.what
                    )
                })
            })
            .collect();
        if mismatches.is_empty() {
            Verdict::Pass
        } else {
            Verdict::fail(mismatches.join("; "))
        }
    }
}

hyperlet_plugin_sdk::export_filter!(ImagePropertiesFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hyperlet_plugin_sdk::testing::{run_filter, HostBuilder, RequestBuilder};

    fn host() -> HostBuilder {
        HostBuilder::new()
            .architecture("x86_64")
            .hypervisor_type("qemu")
            .vm_mode("hvm")
    }

    fn verdict(props: &[(&str, &str)], host: HostBuilder) -> Verdict {
        let spec = props
            .iter()
            .fold(RequestBuilder::new(), |b, (k, v)| b.image_property(k, v))
            .build();
        run_filter::<ImagePropertiesFilter>(&[], &spec, &[host])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn no_properties_pass() {
        assert!(verdict(&[], host()).is_pass());
        assert!(verdict(&[("os_distro", "debian"), ("architecture", "")], host()).is_pass());
    }

    #[test]
    fn matching_properties_pass_case_insensitively_and_canonically() {
        let props = [
            ("architecture", "AMD64"),
            ("hypervisor_type", "QEMU"),
            ("vm_mode", "HV"),
        ];
        assert!(verdict(&props, host()).is_pass());
        assert!(verdict(&[("hw_architecture", "i386")], host().architecture("i686")).is_pass());
        assert!(verdict(&[("architecture", "arm64")], host().architecture("aarch64")).is_pass());
        assert!(verdict(
            &[("img_hv_type", "xapi"), ("vm_mode", "pv")],
            host().hypervisor_type("xen").vm_mode("xen")
        )
        .is_pass());
    }

    #[test]
    fn every_mismatch_is_named() {
        let props = [
            ("architecture", "aarch64"),
            ("img_hv_type", "xen"),
            ("vm_mode", "hvm"),
        ];
        assert_eq!(
            verdict(&props, host()),
            Verdict::fail(
                "image needs architecture aarch64 (architecture), host has \"x86_64\"; \
                 image needs hypervisor type xen (img_hv_type), host has \"qemu\""
            )
        );
    }

    #[test]
    fn the_preferred_key_wins() {
        let props = [
            ("architecture", "aarch64"),
            ("hw_architecture", "x86_64"),
            ("hypervisor_type", "xen"),
            ("img_hv_type", "kvm"),
        ];
        assert_eq!(
            verdict(&props, host()),
            Verdict::fail("image needs hypervisor type kvm (img_hv_type), host has \"qemu\"")
        );
    }
}
