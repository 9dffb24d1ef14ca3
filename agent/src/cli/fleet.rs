//! `hyperlet fleet …`: the controller's view, read from etcd directly (no agent needed).
//!
//! etcd is found from `--endpoints`, else `HYPERLET_FLEET_ENDPOINTS`, else the `[fleet]`
//! section of `--config` (which also gives the prefix, TLS files and user).

use super::table::{key_values, rows};
use super::{ApiClient, ClientArgs, ClientError};
use crate::config::{Config, FleetConfig, PluginKind};
use crate::fleet::place::{self, Placeable};
use crate::fleet::view::{Fleet, Node, NodeState};
use crate::fleet::FleetError;
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::sched::{Evaluation, RequestSpec};
use clap::{Args, Subcommand};
use reqwest::Method;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// An agent refused or failed.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// The scheduler chain failed.
    #[error(transparent)]
    Sched(#[from] crate::sched::SchedError),
    /// No chain to rank with.
    #[error("No scheduler plugins: give --config with filter/weigher [[plugins]], or --via an agent's URL")]
    NoChain,
    /// No node passed the filters.
    #[error("No node can take the server: {0}")]
    NoNode(String),
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

/// Where a ranking runs: the plugins of `--config` loaded here, or one agent's.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Rank through this agent's `POST /v1/scheduler/evaluate` (its plugins) instead of the
    /// plugins `--config` lists.
    #[arg(long)]
    pub via: Option<String>,
    /// API token of the agents.
    #[arg(long, env = "HYPERLET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA that signed the agents' TLS certificates.
    #[arg(long, env = "HYPERLET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl ChainArgs {
    /// A client of the agent at `url`.
    fn client(&self, url: &str) -> Result<ApiClient, FleetCliError> {
        Ok(ApiClient::from_args(&ClientArgs {
            url: Some(url.to_string()),
            token: self.token.clone(),
            state_dir: None,
            ca_cert: self.ca_cert.clone(),
            client_identity: None,
            json: false,
        })?)
    }
}

/// What is being placed.
#[derive(Debug, Args)]
pub struct FlavorArgs {
    /// vCPUs.
    #[arg(long)]
    pub vcpus: u32,
    /// RAM, MiB.
    #[arg(long)]
    pub ram: u64,
    /// Root disk, GiB.
    #[arg(long, default_value_t = 1)]
    pub disk: u64,
    /// Availability zone the node must be in.
    #[arg(long)]
    pub az: Option<String>,
    /// An image property the image-properties filter matches (`key=value`, repeatable).
    #[arg(long = "image-property", value_parser = parse_property)]
    pub image_properties: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

impl FlavorArgs {
    fn spec(&self) -> RequestSpec {
        RequestSpec {
            vcpus: self.vcpus,
            ram_mb: self.ram,
            disk_gb: self.disk,
            availability_zone: self.az.clone(),
            image_properties: self.image_properties.iter().cloned().collect(),
            ..RequestSpec::default()
        }
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
    /// Rank every node for a flavor with the nodes' scheduler plugins, with every refusal's
    /// reason.
    Place {
        /// What is being placed.
        #[command(flatten)]
        flavor: FlavorArgs,
        /// Where the ranking runs.
        #[command(flatten)]
        chain: ChainArgs,
        /// Where etcd is.
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Place a server, then create it on the best node; a node that answers 409 (it lost a
    /// race for its capacity) is skipped for the next one.
    ServerCreate {
        /// Server name.
        #[arg(long)]
        name: String,
        /// Image id (the same id on every node).
        #[arg(long)]
        image: String,
        /// Network ids (the same id on every node), in NIC order.
        #[arg(long = "network")]
        networks: Vec<String>,
        /// What is being placed.
        #[command(flatten)]
        flavor: FlavorArgs,
        /// Where the ranking runs.
        #[command(flatten)]
        chain: ChainArgs,
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
        FleetCommand::Place {
            flavor,
            chain,
            fleet,
        } => {
            let (_, evaluation) = rank(&fleet, &chain, &flavor).await?;
            if fleet.json {
                print_json(&evaluation);
            } else {
                print!("{}", render_ranking(&evaluation));
            }
        }
        FleetCommand::ServerCreate {
            name,
            image,
            networks,
            flavor,
            chain,
            fleet,
        } => {
            let (nodes, evaluation) = rank(&fleet, &chain, &flavor).await?;
            let candidates = place::candidates(&evaluation, &nodes);
            if candidates.is_empty() {
                return Err(FleetCliError::NoNode(
                    evaluation
                        .hosts
                        .iter()
                        .map(|h| {
                            format!("{} ({})", h.name, h.reason.as_deref().unwrap_or("refused"))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ));
            }
            // One id for every attempt: a retry on the same node is the same server.
            let mut body = serde_json::json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "name": name,
                "image_id": image,
                "flavor": {"vcpus": flavor.vcpus, "ram_mb": flavor.ram, "disk_gb": flavor.disk},
                "networks": networks.iter().map(|n| serde_json::json!({"network_id": n})).collect::<Vec<_>>(),
            });
            if let Some(az) = &flavor.az {
                body["availability_zone"] = serde_json::json!(az);
            }
            let mut refusals = Vec::new();
            for node in candidates {
                let client = chain.client(&node.api_url)?;
                match client
                    .request::<serde_json::Value, _>(Method::POST, "/v1/servers", Some(&body))
                    .await
                {
                    Ok(server) => {
                        if fleet.json {
                            print_json(
                                &serde_json::json!({"node": node.name, "api_url": node.api_url, "server": server}),
                            );
                        } else {
                            println!(
                                "created server {} on node {} ({})",
                                server["id"].as_str().unwrap_or("?"),
                                node.name,
                                node.api_url
                            );
                        }
                        return Ok(());
                    }
                    Err(ClientError::Api {
                        status, message, ..
                    }) if status == reqwest::StatusCode::CONFLICT => {
                        eprintln!("node {} refused: {message}; trying the next one", node.name);
                        refusals.push(format!("{}: {message}", node.name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Err(FleetCliError::NoNode(refusals.join("; ")));
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

/// Ranks the fleet's nodes for `flavor`.
async fn rank(
    fleet: &FleetArgs,
    chain: &ChainArgs,
    flavor: &FlavorArgs,
) -> Result<(Vec<Placeable>, Evaluation), FleetCliError> {
    let nodes = fleet.connect().await?.placement().await?;
    let spec = flavor.spec();
    if let Some(via) = &chain.via {
        let body = serde_json::json!({ "spec": spec, "hosts": place::hosts(&nodes) });
        let mut evaluation: Evaluation = chain
            .client(via)?
            .request(Method::POST, "/v1/scheduler/evaluate", Some(&body))
            .await?;
        place::add_absent(&mut evaluation, &nodes);
        return Ok((nodes, evaluation));
    }
    let config = match &fleet.config {
        Some(path) => Config::from_file(path)?,
        None => return Err(FleetCliError::NoChain),
    };
    let plugins: Vec<_> = config
        .plugins
        .iter()
        .filter(|p| matches!(p.kind, PluginKind::Filter | PluginKind::Weigher))
        .cloned()
        .collect();
    if plugins.is_empty() {
        return Err(FleetCliError::NoChain);
    }
    let engine = PluginEngine::new().map_err(|e| FleetCliError::NoNode(e.to_string()))?;
    let cache =
        std::env::temp_dir().join(format!("hyperlet-cli-plugins-{}", nix::unistd::getuid()));
    let registry = Arc::new(PluginRegistry::load(engine.clone(), cache, &plugins, 60).await);
    let evaluation = place::rank_with(registry, spec, &nodes).await;
    engine.shutdown();
    Ok((nodes, evaluation?))
}

fn render_ranking(evaluation: &Evaluation) -> String {
    let body: Vec<Vec<String>> = evaluation
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                if h.passed { "pass" } else { "refused" }.into(),
                if h.passed {
                    format!("{:.3}", h.weight)
                } else {
                    "-".into()
                },
                match (&h.failed_by, &h.reason) {
                    (Some(by), Some(reason)) => format!("{by}: {reason}"),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    rows(&["NODE", "RESULT", "WEIGHT", "REASON"], &body)
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
