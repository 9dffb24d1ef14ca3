//! `hyperlet fleet …`: the controller's view, read from etcd directly (no agent needed).
//!
//! etcd is found from `--endpoints`, else `HYPERLET_FLEET_ENDPOINTS`, else the `[fleet]`
//! section of `--config` (which also gives the prefix, TLS files and user).

use super::table::{key_values, rows};
use crate::config::{Config, FleetConfig};
use crate::fleet::view::{Fleet, Node, NodeState};
use crate::fleet::FleetError;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where the fleet's etcd is.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "HYPERLET_FLEET_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Agent config file whose `[fleet]` section names etcd (and its TLS files and user).
    #[arg(long, env = "HYPERLET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Key prefix of the fleet [default: the config's, else /hyperlet].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `hyperlet fleet`.
#[derive(Debug, thiserror::Error)]
pub enum FleetCliError {
    /// No etcd endpoints were given anywhere.
    #[error("No etcd endpoints: give --endpoints, set HYPERLET_FLEET_ENDPOINTS, or --config with a [fleet] section")]
    NoEndpoints,
    /// The config file cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The fleet refused or failed.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl FleetArgs {
    /// The `[fleet]` settings these flags and the environment describe.
    ///
    /// # Errors
    /// [`FleetCliError`] when no endpoint is known or the settings are invalid.
    pub fn settings(&self) -> Result<FleetConfig, FleetCliError> {
        let mut fleet = match &self.config {
            Some(path) => Config::from_file(path)?.fleet.unwrap_or_default(),
            None => FleetConfig::default(),
        };
        if !self.endpoints.is_empty() {
            fleet.endpoints = self
                .endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if let Some(prefix) = &self.prefix {
            fleet.prefix = prefix.clone();
        }
        if fleet.endpoints.is_empty() {
            return Err(FleetCliError::NoEndpoints);
        }
        fleet.validate()?;
        Ok(fleet)
    }

    async fn connect(&self) -> Result<Fleet, FleetCliError> {
        Ok(Fleet::connect(&self.settings()?).await?)
    }
}

/// `hyperlet fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every node, up or down (like `openstack compute service list`).
    Nodes {
        /// Where etcd is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Totals and usage over the fleet (like `openstack hypervisor stats show`).
    Stats {
        /// Where etcd is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Nodes coming up, going down, changing and being forgotten, live (Ctrl-C to stop).
    Watch {
        /// Stop after this many events (for scripts).
        #[arg(long)]
        count: Option<u64>,
        /// Where etcd is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Remove a down node's record from the fleet.
    Forget {
        /// The node's name.
        name: String,
        /// Remove it even while it is up (its agent writes it again within a minute).
        #[arg(long)]
        force: bool,
        /// Where etcd is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
}

/// Runs a `hyperlet fleet` command.
///
/// # Errors
/// [`FleetCliError`] when etcd cannot be reached or refuses.
pub async fn run(cmd: FleetCommand) -> Result<(), FleetCliError> {
    match cmd {
        FleetCommand::Nodes { fleet } => {
            let nodes = fleet.connect().await?.nodes(true).await?;
            if fleet.json {
                print_json(&nodes);
            } else {
                print!("{}", render_nodes(&nodes));
            }
        }
        FleetCommand::Stats { fleet } => {
            let stats = fleet.connect().await?.stats().await?;
            if fleet.json {
                print_json(&stats);
            } else {
                let value = serde_json::to_value(&stats).unwrap_or_default();
                let rows: Vec<(&str, String)> = value
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect())
                    .unwrap_or_default();
                print!("{}", key_values(&rows));
            }
        }
        FleetCommand::Watch { count, fleet } => {
            let connected = fleet.connect().await?;
            let stop = tokio_util::sync::CancellationToken::new();
            {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
            }
            let mut seen = 0u64;
            let json = fleet.json;
            connected
                .watch(
                    |event| {
                        if json {
                            println!("{}", serde_json::to_string(&event).unwrap_or_default());
                        } else {
                            println!(
                                "{}  {:<9} {}",
                                chrono::Utc::now().format("%H:%M:%S"),
                                event.event,
                                event.name
                            );
                        }
                        seen += 1;
                        count.is_none_or(|c| seen < c)
                    },
                    stop,
                )
                .await?;
        }
        FleetCommand::Forget { name, force, fleet } => {
            fleet.connect().await?.forget(&name, force).await?;
            if fleet.json {
                print_json(&serde_json::json!({ "forgotten": name }));
            } else {
                println!("forgot node {name}");
            }
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn render_nodes(nodes: &[Node]) -> String {
    let body: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.availability_zone.clone(),
                if n.enabled { "enabled" } else { "disabled" }.into(),
                match n.state {
                    NodeState::Up => "up",
                    NodeState::Down => "down",
                }
                .into(),
                n.heartbeat_age_s
                    .map_or_else(|| "-".into(), |age| format!("{age}s")),
                n.version.clone(),
                n.api_url.clone(),
            ]
        })
        .collect();
    rows(
        &[
            "NAME",
            "ZONE",
            "STATUS",
            "STATE",
            "HEARTBEAT",
            "VERSION",
            "API URL",
        ],
        &body,
    )
}
