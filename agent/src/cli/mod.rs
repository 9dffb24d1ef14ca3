//! The command line: `hyperlet serve` runs the agent; every other command is a client that
//! speaks REST to a running agent.
//!
//! ```text
//! hyperlet serve [--config FILE] [--state-dir DIR] [--listen ADDR] [--tls-cert F --tls-key F]
//! hyperlet host show [--json]
//! hyperlet host disable --reason "kernel update"
//! hyperlet fleet nodes --endpoints http://10.0.0.5:2379
//! hyperlet openapi > docs/openapi.json
//! ```
//!
//! Clients find the agent at `HYPERLET_URL` (default `http://127.0.0.1:8787`) and take the token
//! from `HYPERLET_TOKEN`, or else from `<state-dir>/admin.token`.

mod client;
mod console;
mod eval;
mod fleet;
mod host;
mod image;
mod migrate;
mod network;
mod plugin;
mod security_group;
mod server;
mod table;
mod volume;
mod wait;

pub use client::{ApiClient, ClientArgs, ClientError};

use crate::config::{Config, DEFAULT_LISTEN, DEFAULT_STATE_DIR};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// hyperlet — the per-node agent of a KVM cloud.
#[derive(Debug, Parser)]
#[command(name = "hyperlet", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Serve(ServeArgs),
    /// This node: show it, enable or disable it for new servers.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// The image cache: import, list, show, delete.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Servers: create, list, show, delete and their actions.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Networks: create, list, show, delete.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Subnets (IPv4, DHCP and metadata): create, list, show, delete.
    #[command(subcommand)]
    Subnet(network::SubnetCommand),
    /// Ports: create, list, show, set (security groups, port security, address pairs), delete.
    #[command(subcommand)]
    Port(network::PortCommand),
    /// Security groups: create, list, show, set, delete.
    #[command(subcommand, name = "security-group")]
    SecurityGroup(security_group::GroupCommand),
    /// Security group rules: create, list, show, delete.
    #[command(subcommand, name = "security-group-rule")]
    SecurityGroupRule(security_group::RuleCommand),
    /// Volume types: create, list, delete.
    #[command(subcommand, name = "volume-type")]
    VolumeType(volume::VolumeTypeCommand),
    /// Volumes: create, list, show, extend, delete.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Volume snapshots: create, list, show, delete.
    #[command(subcommand)]
    Snapshot(volume::SnapshotCommand),
    /// Volume backends and their capacity.
    Backends {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The fleet, read from etcd: nodes, stats, watch, forget.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Plugins: list the agent's, inspect a component, scaffold a new one.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Print the OpenAPI document of the REST API.
    Openapi,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `hyperlet serve`. Each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (optional; embedded defaults otherwise).
    #[arg(long, env = "HYPERLET_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory [default: /var/lib/hyperlet].
    #[arg(long, env = "HYPERLET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// API address [default: 127.0.0.1:8787].
    #[arg(long, env = "HYPERLET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "HYPERLET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "HYPERLET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "HYPERLET_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Prefix of the agent's nftables tables [default: hyperlet] (two agents on one host
    /// need different ones).
    #[arg(long, env = "HYPERLET_FIREWALL_TABLE_PREFIX")]
    pub firewall_table_prefix: Option<String>,
    /// Log format.
    #[arg(long, env = "HYPERLET_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The effective settings: embedded defaults, then the file, then flags and environment.
    ///
    /// # Errors
    /// [`crate::config::ConfigError`] when the file cannot be read or parsed.
    pub fn to_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(prefix) = &self.firewall_table_prefix {
            config.firewall.table_prefix = prefix.clone();
        }
        if let Some(cert) = &self.tls_cert {
            config.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.tls.key = Some(key.clone());
        }
        if let Some(ca) = &self.tls_client_ca {
            config.tls.client_ca = Some(ca.clone());
        }
        if self.insecure {
            config.insecure = true;
        }
        Ok(config)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPERLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            match args.to_config() {
                Ok(config) => runtime
                    .block_on(crate::daemon::run(config))
                    .map_err(|e| crate::api::error::chain(&e)),
                Err(e) => Err(crate::api::error::chain(&e)),
            }
        }
        Command::Host(cmd) => runtime
            .block_on(host::run(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Image(cmd) => runtime
            .block_on(image::run(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Server(cmd) => runtime
            .block_on(server::run(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Network(cmd) => runtime
            .block_on(network::run_network(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Subnet(cmd) => runtime
            .block_on(network::run_subnet(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Port(cmd) => runtime
            .block_on(network::run_port(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::SecurityGroup(cmd) => runtime
            .block_on(security_group::run_group(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::SecurityGroupRule(cmd) => runtime
            .block_on(security_group::run_rule(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::VolumeType(cmd) => runtime
            .block_on(volume::run_type(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Volume(cmd) => runtime
            .block_on(volume::run_volume(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Snapshot(cmd) => runtime
            .block_on(volume::run_snapshot(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Backends { client } => runtime
            .block_on(volume::run_backends(client))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Fleet(cmd) => runtime
            .block_on(fleet::run(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Plugin(cmd) => runtime
            .block_on(plugin::run(cmd))
            .map_err(|e| crate::api::error::chain(&e)),
        Command::Openapi => {
            print!("{}", crate::api::openapi::document_json());
            Ok(())
        }
    };
    // Blocking calls still stuck in libvirt must not hold the exit up: everything durable is
    // already flushed, so give them a moment and leave.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Default agent URL for clients.
pub fn default_url() -> String {
    format!("http://{DEFAULT_LISTEN}")
}

/// Default state directory for clients looking for the token.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
