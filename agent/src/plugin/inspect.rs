//! What a component is: the world it exports, at which version, and the capabilities its
//! imports need — checked against the kind and grants the config gives it.

use crate::config::PluginKind;
use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The scheduler package version this agent speaks.
pub const SCHEDULER_VERSION: (u64, u64, u64) = (1, 1, 0);
/// The network package version this agent speaks.
pub const NETWORK_VERSION: (u64, u64, u64) = (1, 0, 0);
/// The volume package version this agent speaks.
pub const VOLUME_VERSION: (u64, u64, u64) = (1, 0, 0);
/// The common package version this agent speaks.
pub const COMMON_VERSION: (u64, u64, u64) = (1, 0, 0);

/// A component's interface, as far as the agent cares.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ComponentInfo {
    /// The plugin kind its exports make it, if any.
    pub kind: Option<PluginKind>,
    /// The version of the exported interface (`1.0.0`).
    pub version: Option<String>,
    /// Everything it exports.
    pub exports: Vec<String>,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// Capabilities (grants) its imports need.
    pub needs: Vec<String>,
    /// Imports no grant can satisfy, with the reason.
    pub unavailable: Vec<String>,
}

/// Whether a component can be loaded as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// It can.
    Compatible,
    /// It cannot; the reason says why, in words an operator can act on.
    Incompatible(String),
}

fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    }
}

fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Semver compatibility: same major (same minor for 0.x), and not newer than the host's.
fn compatible(plugin: (u64, u64, u64), host: (u64, u64, u64)) -> bool {
    if plugin.0 != host.0 {
        return false;
    }
    if host.0 == 0 {
        return plugin.1 == host.1 && plugin.2 <= host.2;
    }
    (plugin.1, plugin.2) <= (host.1, host.2)
}

/// The grant an import needs: `Ok(None)` for imports every plugin gets (deny-all WASI
/// plumbing), `Ok(Some(grant))` for capabilities, `Err(reason)` for imports that cannot be had.
fn capability_of(import: &str) -> Result<Option<&'static str>, String> {
    let (base, _) = split_version(import);
    Ok(match base {
        "hyperlet:common/log" => Some("log"),
        "hyperlet:common/types"
        | "hyperlet:scheduler/types"
        | "hyperlet:scheduler/hosts"
        | "hyperlet:network/types"
        | "hyperlet:volume/types" => None,
        "hyperlet:network/netlink" => Some("netlink"),
        "hyperlet:volume/lvm" => Some("lvm"),
        "hyperlet:volume/files" => Some("files"),
        "hyperlet:volume/qemu-img" => Some("qemu-img"),
        b if b.starts_with("wasi:io/") => None,
        "wasi:cli/environment"
        | "wasi:cli/exit"
        | "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr" => None,
        b if b.starts_with("wasi:cli/terminal-") => None,
        "wasi:random/insecure-seed" => None,
        "wasi:random/random" | "wasi:random/insecure" => Some("random"),
        b if b.starts_with("wasi:clocks/") => Some("clocks"),
        b if b.starts_with("wasi:http/") => Some("http"),
        b if b.starts_with("wasi:filesystem/") => {
            return Err(format!(
                "it imports {import}: plugins get no filesystem access (no grant allows it)"
            ))
        }
        b if b.starts_with("wasi:sockets/") => {
            return Err(format!(
                "it imports {import}: plugins get no network access (no grant allows it)"
            ))
        }
        _ => {
            return Err(format!(
                "it imports {import}, which this agent does not provide"
            ))
        }
    })
}

/// Reads a component's imports and exports.
pub fn inspect_component(engine: &Engine, component: &Component) -> ComponentInfo {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let mut kind = None;
    let mut version = None;
    for export in &exports {
        let (base, v) = split_version(export);
        let k = match base {
            "hyperlet:scheduler/filter" => Some(PluginKind::Filter),
            "hyperlet:scheduler/weigher" => Some(PluginKind::Weigher),
            "hyperlet:network/backend" => Some(PluginKind::NetworkBackend),
            "hyperlet:volume/driver" => Some(PluginKind::VolumeDriver),
            _ => None,
        };
        if k.is_some() {
            kind = k;
            version = v.map(str::to_string);
        }
    }
    let mut needs = Vec::new();
    let mut unavailable = Vec::new();
    for import in &imports {
        match capability_of(import) {
            Ok(Some(grant)) if !needs.contains(&grant.to_string()) => needs.push(grant.to_string()),
            Ok(_) => {}
            Err(reason) => unavailable.push(reason),
        }
    }
    ComponentInfo {
        kind,
        version,
        exports,
        imports,
        needs,
        unavailable,
    }
}

impl ComponentInfo {
    /// Whether the component can be loaded as a `kind` plugin with `grants`.
    pub fn check(&self, kind: PluginKind, grants: &[String]) -> Compatibility {
        let no = |reason: String| Compatibility::Incompatible(reason);
        let Some(actual) = self.kind else {
            return no(format!(
                "it exports no hyperlet plugin world (exports: {}); build it against \
                 wit/scheduler (world filter-plugin or weigher-plugin), wit/network (world \
                 network-backend) or wit/volume (world volume-driver)",
                if self.exports.is_empty() {
                    "nothing".to_string()
                } else {
                    self.exports.join(", ")
                }
            ));
        };
        if actual != kind {
            return no(format!(
                "it is a {actual:?} plugin (exports {}) but is configured as kind = \"{}\"",
                export_name(actual),
                kind.as_str()
            ));
        }
        let (package, host) = package_of(kind);
        match self.version.as_deref().and_then(parse_version) {
            Some(v) if compatible(v, host) => {}
            Some(v) => {
                return no(format!(
                    "it was built against {package}@{}.{}.{}, which this agent \
                     ({package}@{}.{}.{}) cannot serve; rebuild it with the plugin SDK \
                     of this agent",
                    v.0, v.1, v.2, host.0, host.1, host.2
                ))
            }
            None => return no(format!("its {package} export carries no version")),
        }
        for import in &self.imports {
            if let (base, Some(v)) = split_version(import) {
                if base.starts_with("hyperlet:common/") {
                    match parse_version(v) {
                        Some(v) if compatible(v, COMMON_VERSION) => {}
                        _ => {
                            return no(format!(
                            "it imports {import}, but this agent provides hyperlet:common@{}.{}.{}",
                            COMMON_VERSION.0, COMMON_VERSION.1, COMMON_VERSION.2
                        ))
                        }
                    }
                }
            }
        }
        if let Some(reason) = self.unavailable.first() {
            return no(reason.clone());
        }
        let missing: Vec<&String> = self.needs.iter().filter(|n| !grants.contains(n)).collect();
        if !missing.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return no(format!(
                "it imports capabilities that are not granted: {} (add them to `grants` if you trust it)",
                list.join(", ")
            ));
        }
        Compatibility::Compatible
    }
}

/// The interface a plugin of `kind` exports.
fn export_name(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Filter => "hyperlet:scheduler/filter",
        PluginKind::Weigher => "hyperlet:scheduler/weigher",
        PluginKind::NetworkBackend => "hyperlet:network/backend",
        PluginKind::VolumeDriver => "hyperlet:volume/driver",
    }
}

/// The WIT package of `kind` and the version of it this agent speaks.
fn package_of(kind: PluginKind) -> (&'static str, (u64, u64, u64)) {
    match kind {
        PluginKind::Filter | PluginKind::Weigher => ("hyperlet:scheduler", SCHEDULER_VERSION),
        PluginKind::NetworkBackend => ("hyperlet:network", NETWORK_VERSION),
        PluginKind::VolumeDriver => ("hyperlet:volume", VOLUME_VERSION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_semver() {
        assert!(compatible((1, 0, 0), (1, 0, 0)));
        assert!(compatible((1, 0, 0), (1, 2, 0)));
        assert!(!compatible((1, 3, 0), (1, 2, 0)));
        assert!(!compatible((2, 0, 0), (1, 0, 0)));
        assert!(!compatible((0, 9, 0), (1, 0, 0)));
        assert!(compatible((0, 9, 1), (0, 9, 3)));
        assert!(!compatible((0, 8, 0), (0, 9, 0)));
        assert_eq!(parse_version("1.2.3"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2.3-rc1"), Some((1, 2, 3)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn imports_map_to_grants() {
        assert_eq!(capability_of("hyperlet:common/log@1.0.0"), Ok(Some("log")));
        assert_eq!(capability_of("wasi:io/streams@0.2.6"), Ok(None));
        assert_eq!(
            capability_of("wasi:clocks/monotonic-clock@0.2.6"),
            Ok(Some("clocks"))
        );
        assert_eq!(
            capability_of("hyperlet:network/netlink@1.0.0"),
            Ok(Some("netlink"))
        );
        assert_eq!(capability_of("hyperlet:network/types@1.0.0"), Ok(None));
        assert_eq!(capability_of("hyperlet:volume/lvm@1.0.0"), Ok(Some("lvm")));
        assert_eq!(
            capability_of("hyperlet:volume/files@1.0.0"),
            Ok(Some("files"))
        );
        assert_eq!(
            capability_of("hyperlet:volume/qemu-img@1.0.0"),
            Ok(Some("qemu-img"))
        );
        assert_eq!(capability_of("hyperlet:volume/types@1.0.0"), Ok(None));
        assert!(capability_of("wasi:filesystem/types@0.2.6").is_err());
        assert!(capability_of("wasi:sockets/tcp@0.2.6").is_err());
        assert!(capability_of("acme:evil/thing").is_err());
    }
}
