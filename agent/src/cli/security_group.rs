//! `hyperlet security-group …`, `security-group-rule …`, `port set`, and the server's
//! `add-security-group`/`remove-security-group`: security groups as the openstack CLI spells
//! them. Groups are named by id or name.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::network::{create, delete, list, put, render, show, Kind};
use super::table::print_value;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

/// `hyperlet security-group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group (it starts with one rule: egress IPv4 anywhere).
    Create {
        /// Name, unique on the node.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List groups.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one group with its rules.
    Show {
        /// Group id or name.
        group: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rename a group or change its description.
    Set {
        /// Group id or name.
        group: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a group no port uses.
    Delete {
        /// Group id or name.
        group: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hyperlet security-group-rule` subcommands.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Add a rule to a group (enforced when the command returns).
    Create {
        /// The group (id or name).
        group: String,
        /// Traffic to the port (default) …
        #[arg(long, conflicts_with = "egress")]
        ingress: bool,
        /// … or from it.
        #[arg(long)]
        egress: bool,
        /// tcp, udp, icmp, any or a number 0-255 [default: any].
        #[arg(long)]
        protocol: Option<String>,
        /// Destination ports for tcp/udp: `N` or `N:M`.
        #[arg(long = "dst-port", value_name = "N[:M]")]
        dst_port: Option<String>,
        /// ICMP type.
        #[arg(long)]
        icmp_type: Option<u16>,
        /// ICMP code (with a type).
        #[arg(long)]
        icmp_code: Option<u16>,
        /// The other end as an IPv4 address or prefix.
        #[arg(long, conflicts_with = "remote_group")]
        remote_ip: Option<String>,
        /// The other end as the members of a group (id or name).
        #[arg(long)]
        remote_group: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List rules.
    List {
        /// Only this group's (id or name).
        #[arg(long)]
        group: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one rule.
    Show {
        /// Rule id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a rule.
    Delete {
        /// Rule id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

const GROUPS: Kind = Kind {
    path: "/v1/security-groups",
    key: "security_groups",
    columns: &[
        ("ID", "id"),
        ("NAME", "name"),
        ("DESCRIPTION", "description"),
    ],
};

const RULES: Kind = Kind {
    path: "/v1/security-group-rules",
    key: "security_group_rules",
    columns: &[
        ("ID", "id"),
        ("GROUP", "security_group_id"),
        ("DIRECTION", "direction"),
        ("PROTOCOL", "protocol"),
        ("MIN", "port_range_min"),
        ("MAX", "port_range_max"),
        ("REMOTE IP", "remote_ip_prefix"),
        ("REMOTE GROUP", "remote_group_id"),
    ],
};

/// The id of the group named `key` (an id or a name).
///
/// # Errors
/// [`ClientError::Usage`] when no group has that id or name.
pub async fn group_id(api: &ApiClient, key: &str) -> Result<String, ClientError> {
    let all: Value = api.request(Method::GET, GROUPS.path, None::<&()>).await?;
    let groups = all[GROUPS.key].as_array().cloned().unwrap_or_default();
    groups
        .iter()
        .find(|g| g["id"] == key)
        .or_else(|| groups.iter().find(|g| g["name"] == key))
        .and_then(|g| g["id"].as_str().map(str::to_string))
        .ok_or_else(|| ClientError::Usage(format!("no security group has the id or name {key:?}")))
}

/// Runs a `hyperlet security-group` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_group(cmd: GroupCommand) -> Result<(), ClientError> {
    match cmd {
        GroupCommand::Create {
            name,
            description,
            client,
        } => {
            let body = json!({"name": name, "description": description});
            create(&GROUPS, body, &client).await
        }
        GroupCommand::List { client } => list(&GROUPS, "", &client).await,
        GroupCommand::Show { group, client } => {
            let id = group_id(&ApiClient::from_args(&client)?, &group).await?;
            show(&GROUPS, &id, &client).await
        }
        GroupCommand::Set {
            group,
            name,
            description,
            client,
        } => {
            let api = ApiClient::from_args(&client)?;
            let id = group_id(&api, &group).await?;
            let mut body = Map::new();
            put(&mut body, "name", name);
            put(&mut body, "description", description);
            let updated: Value = api
                .request(
                    Method::PATCH,
                    &format!("{}/{id}", GROUPS.path),
                    Some(&Value::Object(body)),
                )
                .await?;
            print_value(&client, &updated, render);
            Ok(())
        }
        GroupCommand::Delete { group, client } => {
            let id = group_id(&ApiClient::from_args(&client)?, &group).await?;
            delete(&GROUPS, &id, &client).await
        }
    }
}

/// `N` or `N:M` as (min, max).
fn port_range(text: &str) -> Result<(u16, u16), ClientError> {
    let bad = || ClientError::Usage(format!("--dst-port {text:?} must be N or N:M (1-65535)"));
    let (lo, hi) = text.split_once(':').unwrap_or((text, text));
    Ok((
        lo.parse().map_err(|_| bad())?,
        hi.parse().map_err(|_| bad())?,
    ))
}

/// Runs a `hyperlet security-group-rule` command.
///
/// # Errors
/// [`ClientError`] for bad arguments, or when the agent cannot be reached or refuses.
pub async fn run_rule(cmd: RuleCommand) -> Result<(), ClientError> {
    match cmd {
        RuleCommand::Create {
            group,
            ingress: _,
            egress,
            protocol,
            dst_port,
            icmp_type,
            icmp_code,
            remote_ip,
            remote_group,
            description,
            client,
        } => {
            let api = ApiClient::from_args(&client)?;
            let mut body = Map::new();
            body.insert(
                "security_group_id".into(),
                json!(group_id(&api, &group).await?),
            );
            body.insert(
                "direction".into(),
                json!(if egress { "egress" } else { "ingress" }),
            );
            body.insert("description".into(), json!(description));
            put(&mut body, "protocol", protocol);
            if let Some(range) = dst_port {
                let (lo, hi) = port_range(&range)?;
                body.insert("port_range_min".into(), json!(lo));
                body.insert("port_range_max".into(), json!(hi));
            }
            put(&mut body, "port_range_min", icmp_type);
            put(&mut body, "port_range_max", icmp_code);
            put(&mut body, "remote_ip_prefix", remote_ip);
            if let Some(remote) = remote_group {
                body.insert(
                    "remote_group_id".into(),
                    json!(group_id(&api, &remote).await?),
                );
            }
            create(&RULES, Value::Object(body), &client).await
        }
        RuleCommand::List { group, client } => {
            let query = match group {
                Some(g) => format!(
                    "?security_group_id={}",
                    group_id(&ApiClient::from_args(&client)?, &g).await?
                ),
                None => String::new(),
            };
            list(&RULES, &query, &client).await
        }
        RuleCommand::Show { id, client } => show(&RULES, &id, &client).await,
        RuleCommand::Delete { id, client } => delete(&RULES, &id, &client).await,
    }
}

/// `PATCH /v1/ports/{id}` with `body`, printing the port.
pub async fn patch_port(api: &ApiClient, port: &str, body: &Value) -> Result<Value, ClientError> {
    api.request(Method::PATCH, &format!("/v1/ports/{port}"), Some(body))
        .await
}

/// Adds (or removes) a group on every port of a server, as nova's `addSecurityGroup`.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn server_group(
    api: &ApiClient,
    server: &str,
    group: &str,
    add: bool,
) -> Result<(), ClientError> {
    let id = group_id(api, group).await?;
    let ports: Value = api
        .request(
            Method::GET,
            &format!("/v1/ports?device_id={server}"),
            None::<&()>,
        )
        .await?;
    let ports = ports["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() {
        return Err(ClientError::Failed(format!("server {server} has no ports")));
    }
    for port in ports {
        let mut groups: Vec<Value> = port["security_groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = groups.iter().any(|g| g == &json!(id));
        match (add, has) {
            (true, false) => groups.push(json!(id)),
            (false, true) => groups.retain(|g| g != &json!(id)),
            _ => continue,
        }
        let port_id = port["id"].as_str().unwrap_or_default();
        patch_port(api, port_id, &json!({"security_groups": groups})).await?;
    }
    Ok(())
}
