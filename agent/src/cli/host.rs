//! `hyperlet host …`: show, enable and disable this node.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::table::key_values;
use super::table::print_value;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

/// `hyperlet host` subcommands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Show hypervisor, capacity and status of the node.
    Show {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take new servers again.
    Enable {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop taking new servers.
    Disable {
        /// Why (shown to operators and controllers).
        #[arg(long)]
        reason: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a `hyperlet host` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run(cmd: HostCommand) -> Result<(), ClientError> {
    match cmd {
        HostCommand::Show { client } => {
            let api = ApiClient::from_args(&client)?;
            let host: Value = api.request(Method::GET, "/v1/host", None::<&()>).await?;
            print_value(&client, &host, render_host);
        }
        HostCommand::Enable { client } => {
            let api = ApiClient::from_args(&client)?;
            let body = serde_json::json!({ "enabled": true });
            let status: Value = api.request(Method::PATCH, "/v1/host", Some(&body)).await?;
            print_value(&client, &status, render_status);
        }
        HostCommand::Disable { reason, client } => {
            let api = ApiClient::from_args(&client)?;
            let body = serde_json::json!({ "enabled": false, "disabled_reason": reason });
            let status: Value = api.request(Method::PATCH, "/v1/host", Some(&body)).await?;
            print_value(&client, &status, render_status);
        }
    }
    Ok(())
}

/// A JSON value as table text (`-` for null, strings unquoted).
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_status(s: &Value) -> String {
    key_values(&[
        ("enabled", text(&s["enabled"])),
        ("disabled_reason", text(&s["disabled_reason"])),
        ("updated_at", text(&s["updated_at"])),
    ])
}

fn render_host(h: &Value) -> String {
    let hv = &h["hypervisor"];
    let cap = &h["capacity"];
    let versions = &hv["versions"];
    key_values(&[
        ("hostname", text(&h["hostname"])),
        ("availability_zone", text(&h["availability_zone"])),
        ("enabled", text(&h["service_status"]["enabled"])),
        ("agent_version", text(&h["agent_version"])),
        ("uptime_seconds", text(&h["uptime_seconds"])),
        ("hypervisor", text(&versions["hypervisor_type"])),
        ("hypervisor_version", text(&versions["hypervisor_version"])),
        ("libvirt_version", text(&versions["libvirt_version"])),
        ("libvirt_reachable", text(&hv["reachable"])),
        ("domain_type", text(&hv["domain_type"])),
        ("accelerator", text(&hv["accelerator"])),
        ("kvm_usable", text(&hv["kvm"]["usable"])),
        ("kvm_reason", text(&hv["kvm"]["reason"])),
        (
            "fleet",
            match (&h["fleet"]["state"], &h["fleet"]["last_error"]) {
                (state, Value::String(error)) => format!("{} ({error})", text(state)),
                (state, _) => text(state),
            },
        ),
        (
            "vcpus",
            format!(
                "{} (limit {})",
                text(&cap["vcpus"]),
                text(&cap["vcpus_limit"])
            ),
        ),
        (
            "memory_mb",
            format!(
                "{} (available {}, limit {})",
                text(&cap["memory_mb"]),
                text(&cap["memory_available_mb"]),
                text(&cap["memory_limit_mb"])
            ),
        ),
        (
            "disk_gb",
            format!(
                "{} (available {}, limit {})",
                text(&cap["disk_gb"]),
                text(&cap["disk_available_gb"]),
                text(&cap["disk_limit_gb"])
            ),
        ),
    ])
}
