//! `hyperlet plugin …`: list the agent's plugins, inspect a component, scaffold a new plugin.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::host::text;
use super::table::{key_values, rows};
use crate::plugin::{inspect_component, PluginEngine};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Kinds of plugin the scaffold can write.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScaffoldKind {
    /// A scheduler filter.
    Filter,
    /// A scheduler weigher.
    Weigher,
    /// A volume driver.
    VolumeDriver,
    /// A network backend.
    NetworkBackend,
}

impl ScaffoldKind {
    /// The template's files: (relative path, text).
    fn files(self) -> &'static [(&'static str, &'static str); 3] {
        match self {
            Self::Filter => &FILTER_TEMPLATE,
            Self::Weigher => &WEIGHER_TEMPLATE,
            Self::VolumeDriver => &VOLUME_DRIVER_TEMPLATE,
            Self::NetworkBackend => &NETWORK_BACKEND_TEMPLATE,
        }
    }
}

/// `hyperlet plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The agent's plugins and their status.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What a component is: world, version, imports and the grants they need (offline).
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a filter or weigher (or a configured chain) over hosts from a file, offline, as the
    /// agent would.
    Eval(super::eval::EvalArgs),
    /// Write a new plugin crate that builds (`cargo build --target wasm32-wasip2 --release`).
    New {
        /// What kind of plugin.
        kind: ScaffoldKind,
        /// Its name (kebab-case).
        name: String,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK to depend on: a path to plugin-sdk/ [default: this checkout's].
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

/// Runs a `hyperlet plugin` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached, a file cannot be read or written.
pub async fn run(cmd: PluginCommand) -> Result<(), ClientError> {
    match cmd {
        PluginCommand::List { client } => {
            let api = ApiClient::from_args(&client)?;
            let list: Value = api.request(Method::GET, "/v1/plugins", None::<&()>).await?;
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                let body: Vec<Vec<String>> = list["plugins"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        [
                            "name", "kind", "status", "version", "calls", "failures", "error",
                        ]
                        .iter()
                        .map(|k| text(&p[*k]))
                        .collect()
                    })
                    .collect();
                print!(
                    "{}",
                    rows(
                        &["NAME", "KIND", "STATUS", "VERSION", "CALLS", "FAILURES", "ERROR"],
                        &body
                    )
                );
            }
        }
        PluginCommand::Inspect { file, json } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let engine = PluginEngine::new().map_err(|e| ClientError::Usage(e.to_string()))?;
            let component =
                wasmtime::component::Component::new(engine.engine(), &bytes).map_err(|e| {
                    ClientError::Usage(format!(
                        "{} is not a WebAssembly component: {e:#}",
                        file.display()
                    ))
                })?;
            let info = inspect_component(engine.engine(), &component);
            engine.shutdown();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                let kind = info
                    .kind
                    .map_or("none (not a hyperlet plugin)".to_string(), |k| {
                        format!("{k:?}").to_lowercase()
                    });
                print!(
                    "{}",
                    key_values(&[
                        ("kind", kind),
                        (
                            "version",
                            info.version.clone().unwrap_or_else(|| "-".into())
                        ),
                        (
                            "needs grants",
                            if info.needs.is_empty() {
                                "-".into()
                            } else {
                                info.needs.join(", ")
                            }
                        ),
                        (
                            "unavailable",
                            if info.unavailable.is_empty() {
                                "-".into()
                            } else {
                                info.unavailable.join("; ")
                            }
                        ),
                        ("exports", info.exports.join(", ")),
                        ("imports", info.imports.join(", ")),
                    ])
                );
            }
        }
        PluginCommand::Eval(args) => super::eval::eval(args).await?,
        PluginCommand::New {
            kind,
            name,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = match sdk_path {
                Some(p) => p,
                None => default_sdk_path().ok_or_else(|| {
                    ClientError::Usage(
                        "cannot find plugin-sdk/ next to this binary's source; pass --sdk-path"
                            .into(),
                    )
                })?,
            };
            scaffold(kind, &name, &dir, &sdk)?;
            println!(
                "created {} — build it with: cd {} && cargo build --target wasm32-wasip2 --release",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn default_sdk_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    path.canonicalize().ok()
}

/// Files of the filter scaffold: (relative path, template).
const FILTER_TEMPLATE: [(&str, &str); 3] = [
    (
        "Cargo.toml",
        include_str!("../../templates/filter/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/filter/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/filter/README.md.tmpl"),
    ),
];

/// Files of the weigher scaffold.
const WEIGHER_TEMPLATE: [(&str, &str); 3] = [
    (
        "Cargo.toml",
        include_str!("../../templates/weigher/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/weigher/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/weigher/README.md.tmpl"),
    ),
];

/// Files of the volume driver scaffold.
const VOLUME_DRIVER_TEMPLATE: [(&str, &str); 3] = [
    (
        "Cargo.toml",
        include_str!("../../templates/volume-driver/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/volume-driver/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/volume-driver/README.md.tmpl"),
    ),
];

/// Files of the network backend scaffold.
const NETWORK_BACKEND_TEMPLATE: [(&str, &str); 3] = [
    (
        "Cargo.toml",
        include_str!("../../templates/network-backend/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/network-backend/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/network-backend/README.md.tmpl"),
    ),
];

/// Writes a plugin crate of `kind` named `name` into `dir` (which must not exist yet).
///
/// # Errors
/// [`ClientError::Usage`] for a bad name, an existing directory or a write failure.
pub fn scaffold(kind: ScaffoldKind, name: &str, dir: &Path, sdk: &Path) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok {
        return Err(ClientError::Usage(format!(
            "plugin name {name:?} must be kebab-case (a-z, 0-9, -), starting with a letter"
        )));
    }
    if dir.exists() {
        return Err(ClientError::Usage(format!(
            "{} already exists",
            dir.display()
        )));
    }
    let crate_name = name.replace('-', "_");
    for (rel, template) in kind.files() {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace(
                "{{sdk_path}}",
                &format!("path = {:?}", sdk.display().to_string()),
            );
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                ClientError::Usage(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        std::fs::write(&path, text)
            .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
