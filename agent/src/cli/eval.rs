//! `hyperlet plugin eval`: runs a filter or weigher — or a whole configured chain — over hosts
//! read from a file, offline: no agent, no token, no port. The plugins load through the
//! agent's own plugin host (same engine, limits, grants and config checks) and the chain runs
//! through the same scheduler code as `POST /v1/scheduler/evaluate`, so the answer is the
//! agent's. One difference, on purpose: a plugin the agent would not load (and skip, naming
//! it in `skipped_plugins`) makes eval fail with the reason, since trying it is the point.

use super::client::ClientError;
use super::table::rows;
use crate::config::{Config, PluginKind};
use crate::plugin::{inspect_component, PluginEngine, PluginRegistry, PluginStatus};
use crate::sched::{Evaluation, HostState, RequestSpec};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The chain's deadline, as the agent's evaluate.
const CHAIN_DEADLINE: Duration = Duration::from_secs(30);

/// `hyperlet plugin eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A filter or weigher component (`.wasm`); or give `--chain`.
    pub plugin: Option<PathBuf>,
    /// A setting of that plugin, `KEY=VALUE` (repeat).
    #[arg(long = "settings", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// The plugin's name in the result [default: the file's name].
    #[arg(long)]
    pub name: Option<String>,
    /// A weigher's multiplier, as `multiplier` in its `[[plugins]]` stanza [default: 1.0].
    #[arg(long, allow_negative_numbers = true)]
    pub multiplier: Option<f64>,
    /// A capability granted to that plugin, e.g. `log` (repeat) [default: none, as the agent].
    /// Grants that need a table (`netlink`, `lvm`, `files`, `http`) need `--chain`.
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// The request: a JSON file holding a `RequestSpec` (`-` for standard input).
    #[arg(long)]
    pub spec: PathBuf,
    /// The candidates: a JSON file holding an array of `HostState`.
    #[arg(long)]
    pub hosts: PathBuf,
    /// Run every filter and weigher an agent config (`[[plugins]]`) lists, as that agent would.
    #[arg(long, value_name = "CONFIG.toml", conflicts_with_all = ["plugin", "settings", "grants", "name", "multiplier"])]
    pub chain: Option<PathBuf>,
    /// Print the evaluation as JSON (what `POST /v1/scheduler/evaluate` answers).
    #[arg(long)]
    pub json: bool,
}

fn usage(message: String) -> ClientError {
    ClientError::Usage(message)
}

fn read(path: &Path) -> Result<String, ClientError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))
}

fn json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, ClientError> {
    serde_json::from_str(&read(path)?)
        .map_err(|e| usage(format!("{} is not {what}: {e}", path.display())))
}

/// The agent config that loads one component with the given settings and grants (checked as
/// the agent checks its own config).
fn single(args: &EvalArgs, file: &Path) -> Result<Config, ClientError> {
    let bytes =
        std::fs::read(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let engine = PluginEngine::new().map_err(|e| usage(e.to_string()))?;
    let kind = wasmtime::component::Component::new(engine.engine(), &bytes)
        .map(|c| inspect_component(engine.engine(), &c).kind)
        .map_err(|e| {
            usage(format!(
                "{} is not a WebAssembly component: {e:#}",
                file.display()
            ))
        });
    engine.shutdown();
    let kind = match kind? {
        Some(kind @ (PluginKind::Filter | PluginKind::Weigher)) => kind.as_str(),
        Some(other) => {
            return Err(usage(format!(
                "{} is a {} plugin; eval runs filters and weighers",
                file.display(),
                other.as_str()
            )))
        }
        None => {
            return Err(usage(format!(
                "{} exports no hyperlet plugin world",
                file.display()
            )))
        }
    };
    let name = args.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_else(|| "plugin".into())
    });
    let mut settings = toml::Table::new();
    for pair in &args.settings {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(usage(format!("--settings {pair:?}: use KEY=VALUE")));
        };
        settings.insert(key.to_string(), toml::Value::String(value.to_string()));
    }
    let mut plugin = toml::Table::new();
    plugin.insert("name".into(), toml::Value::String(name));
    plugin.insert("kind".into(), toml::Value::String(kind.into()));
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    plugin.insert(
        "path".into(),
        toml::Value::String(path.display().to_string()),
    );
    plugin.insert(
        "grants".into(),
        toml::Value::Array(
            args.grants
                .iter()
                .map(|g| toml::Value::String(g.clone()))
                .collect(),
        ),
    );
    plugin.insert("settings".into(), toml::Value::Table(settings));
    if let Some(multiplier) = args.multiplier {
        plugin.insert("multiplier".into(), toml::Value::Float(multiplier));
    }
    let mut root = toml::Table::new();
    root.insert(
        "plugins".into(),
        toml::Value::Array(vec![toml::Value::Table(plugin)]),
    );
    let text = toml::to_string(&root).map_err(|e| usage(e.to_string()))?;
    let config = Config::from_toml(&text).map_err(|e| usage(e.to_string()))?;
    config.validate().map_err(|e| usage(e.to_string()))?;
    Ok(config)
}

/// Runs `hyperlet plugin eval`.
///
/// # Errors
/// [`ClientError::Usage`] for unreadable or invalid files and settings;
/// [`ClientError::Failed`] when a plugin does not load or the chain fails.
pub async fn eval(args: EvalArgs) -> Result<(), ClientError> {
    let config = match (&args.plugin, &args.chain) {
        (Some(file), None) => single(&args, file)?,
        (None, Some(chain)) => {
            let config = Config::from_toml(&read(chain)?)
                .map_err(|e| usage(format!("{}: {e}", chain.display())))?;
            config
                .validate()
                .map_err(|e| usage(format!("{}: {e}", chain.display())))?;
            config
        }
        _ => {
            return Err(usage(
                "give a plugin component (PLUGIN.wasm) or --chain CONFIG.toml".into(),
            ))
        }
    };
    let stdin_readers = [Some(&args.spec), Some(&args.hosts), args.chain.as_ref()]
        .into_iter()
        .flatten()
        .filter(|p| p.as_path() == Path::new("-"))
        .count();
    if stdin_readers > 1 {
        return Err(usage(
            "only one of --spec, --hosts and --chain can read standard input (-)".into(),
        ));
    }
    let spec: RequestSpec = json(&args.spec, "a RequestSpec (JSON object)")?;
    let hosts: Vec<HostState> = json(&args.hosts, "an array of HostState")?;
    if hosts.len() > crate::ops::scheduler::MAX_HOSTS {
        return Err(usage(format!(
            "{} hosts; at most {} per evaluation",
            hosts.len(),
            crate::ops::scheduler::MAX_HOSTS
        )));
    }
    if let Some(e) = crate::sched::hosts_error(&hosts) {
        return Err(usage(format!("{}: {e}", args.hosts.display())));
    }
    let plugins: Vec<_> = config
        .plugins
        .iter()
        .filter(|p| matches!(p.kind, PluginKind::Filter | PluginKind::Weigher))
        .cloned()
        .collect();
    // A cache of its own, removed however eval ends: nothing of the node's is read or written.
    let cache = TempDir::new()?;
    let engine = PluginEngine::new().map_err(|e| usage(e.to_string()))?;
    let registry = Arc::new(
        PluginRegistry::load(
            engine.clone(),
            cache.0.clone(),
            &plugins,
            config.plugin_runtime.log_lines_per_minute,
        )
        .await,
    );
    let refused: Vec<String> = registry
        .views()
        .into_iter()
        .filter(|v| v.status != PluginStatus::Loaded)
        .map(|v| format!("{}: {}", v.name, v.error.unwrap_or_default()))
        .collect();
    let evaluation = if refused.is_empty() {
        crate::sched::evaluate_async(registry, spec, hosts, CHAIN_DEADLINE)
            .await
            .map_err(|e| ClientError::Failed(e.to_string()))
    } else {
        Err(ClientError::Failed(format!(
            "not loaded (as the agent would refuse them): {}",
            refused.join("; ")
        )))
    };
    engine.shutdown();
    drop(cache);
    let evaluation = evaluation?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&evaluation).map_err(|e| usage(e.to_string()))?
        );
    } else {
        print!("{}", table(&evaluation));
    }
    Ok(())
}

/// A private temporary directory, removed when dropped (also on an error or a panic).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, ClientError> {
        let path = std::env::temp_dir().join(format!("hyperlet-eval-{}", uuid::Uuid::new_v4()));
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&path)
            .map_err(|e| usage(format!("cannot make {}: {e}", path.display())))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ranking: passed hosts first, best first, with each weigher's weight; refused hosts with
/// the filter and its reason.
fn table(e: &Evaluation) -> String {
    let body: Vec<Vec<String>> = e
        .hosts
        .iter()
        .map(|h| {
            let weights: Vec<String> = h
                .weights
                .iter()
                .map(|(name, w)| format!("{name}={w:.3}"))
                .collect();
            vec![
                h.name.clone(),
                if h.passed { "passed" } else { "refused" }.into(),
                if h.passed {
                    format!("{:.3}", h.weight)
                } else {
                    "-".into()
                },
                if h.passed {
                    weights.join(" ")
                } else {
                    format!(
                        "{}: {}",
                        h.failed_by.as_deref().unwrap_or("?"),
                        h.reason.as_deref().unwrap_or("")
                    )
                },
            ]
        })
        .collect();
    let mut out = rows(&["HOST", "RESULT", "WEIGHT", "WEIGHTS / REASON"], &body);
    out.push_str(&format!(
        "{} of {} hosts passed ({} µs)\n",
        e.passed,
        e.hosts.len(),
        e.elapsed_us
    ));
    out
}
