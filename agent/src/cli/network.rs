//! `hyperlet network|subnet|port …`: networks, subnets and ports.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::host::text;
use super::table::{key_values, print_value, rows};
use super::wait;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

/// `hyperlet network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (flat, vlan, vxlan or local) and wait until its backend set it up.
    Create {
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// flat, vlan, vxlan or local [default: local].
        #[arg(long = "type")]
        network_type: Option<String>,
        /// Physical network label (flat, vlan).
        #[arg(long)]
        physical_network: Option<String>,
        /// VLAN id or VNI.
        #[arg(long)]
        segmentation_id: Option<u32>,
        /// MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// Network backend plugin [default: the only one configured].
        #[arg(long)]
        backend: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List networks.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one network.
    Show {
        /// Network id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a network no server uses and wait until it is gone.
    Delete {
        /// Network id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hyperlet subnet` subcommands.
#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// Create an IPv4 subnet on a network (DHCP and metadata on by default).
    Create {
        /// The network.
        #[arg(long)]
        network: String,
        /// The prefix, e.g. 198.51.100.0/24.
        #[arg(long)]
        cidr: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Gateway [default: the first address].
        #[arg(long, conflicts_with = "no_gateway")]
        gateway: Option<String>,
        /// No gateway.
        #[arg(long)]
        no_gateway: bool,
        /// An allocation pool START-END (repeatable).
        #[arg(long = "pool", value_name = "START-END")]
        pools: Vec<String>,
        /// A DNS server (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// A host route DESTINATION=NEXTHOP (repeatable).
        #[arg(long = "route", value_name = "CIDR=NEXTHOP")]
        routes: Vec<String>,
        /// No DHCP (and no metadata) on this subnet.
        #[arg(long)]
        no_dhcp: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List subnets.
    List {
        /// Only this network's.
        #[arg(long)]
        network: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one subnet.
    Show {
        /// Subnet id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a subnet no port uses.
    Delete {
        /// Subnet id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hyperlet port` subcommands.
#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Create an unbound port.
    Create {
        /// The network.
        #[arg(long)]
        network: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// MAC address [default: generated].
        #[arg(long)]
        mac: Option<String>,
        /// A fixed address (repeatable).
        #[arg(long = "fixed-ip")]
        fixed_ips: Vec<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a port's name, security groups, port security or allowed address pairs.
    Set {
        /// Port id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// A security group, id or name (repeatable; replaces the port's groups).
        #[arg(long = "security-group")]
        groups: Vec<String>,
        /// Remove every security group.
        #[arg(long, conflicts_with = "groups")]
        no_security_group: bool,
        /// Turn anti-spoofing and security groups off (with --no-security-group): the port
        /// may then use any address.
        #[arg(long, conflicts_with = "enable_port_security")]
        disable_port_security: bool,
        /// Turn them back on.
        #[arg(long)]
        enable_port_security: bool,
        /// An allowed address pair `ip-address=IP[/LEN][,mac-address=MAC]` (repeatable;
        /// replaces the port's pairs).
        #[arg(
            long = "allowed-address",
            value_name = "ip-address=IP[,mac-address=MAC]"
        )]
        allowed_addresses: Vec<String>,
        /// Remove every allowed address pair.
        #[arg(long, conflicts_with = "allowed_addresses")]
        no_allowed_address: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List ports.
    List {
        /// Only this network's.
        #[arg(long, conflicts_with = "device")]
        network: Option<String>,
        /// Only this server's.
        #[arg(long)]
        device: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one port.
    Show {
        /// Port id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an unbound port.
    Delete {
        /// Port id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// One resource kind: its path, list key and table columns (shared with `volume.rs`).
pub(super) struct Kind {
    /// Collection path, e.g. `/v1/networks`.
    pub path: &'static str,
    /// Key of the list in the collection's answer.
    pub key: &'static str,
    /// Table columns: header and field.
    pub columns: &'static [(&'static str, &'static str)],
}

const NETWORKS: Kind = Kind {
    path: "/v1/networks",
    key: "networks",
    columns: &[
        ("ID", "id"),
        ("NAME", "name"),
        ("TYPE", "network_type"),
        ("SEGMENT", "segmentation_id"),
        ("BRIDGE", "bridge"),
        ("STATUS", "status"),
    ],
};
const SUBNETS: Kind = Kind {
    path: "/v1/subnets",
    key: "subnets",
    columns: &[
        ("ID", "id"),
        ("NAME", "name"),
        ("NETWORK", "network_id"),
        ("CIDR", "cidr"),
        ("GATEWAY", "gateway_ip"),
        ("DHCP", "enable_dhcp"),
    ],
};
const PORTS: Kind = Kind {
    path: "/v1/ports",
    key: "ports",
    columns: &[
        ("ID", "id"),
        ("NETWORK", "network_id"),
        ("MAC", "mac_address"),
        ("DEVICE", "device_id"),
        ("OWNER", "device_owner"),
        ("STATUS", "status"),
    ],
};

/// A record as key/value lines.
pub(super) fn render(v: &Value) -> String {
    let pairs: Vec<(&str, String)> = v
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, val)| {
                    let shown = match val {
                        Value::Array(_) | Value::Object(_) => val.to_string(),
                        other => text(other),
                    };
                    (k.as_str(), shown)
                })
                .collect()
        })
        .unwrap_or_default();
    key_values(&pairs)
}

/// `GET` the collection and print it as a table (or JSON).
pub(super) async fn list(kind: &Kind, query: &str, client: &ClientArgs) -> Result<(), ClientError> {
    let api = ApiClient::from_args(client)?;
    let path = format!("{}{query}", kind.path);
    let list: Value = api.request(Method::GET, &path, None::<&()>).await?;
    if client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    let items = list[kind.key].as_array().cloned().unwrap_or_default();
    let header: Vec<&str> = kind.columns.iter().map(|(h, _)| *h).collect();
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|i| kind.columns.iter().map(|(_, k)| text(&i[*k])).collect())
        .collect();
    print!("{}", rows(&header, &body));
    Ok(())
}

/// `GET` one record and print it.
pub(super) async fn show(kind: &Kind, id: &str, client: &ClientArgs) -> Result<(), ClientError> {
    let api = ApiClient::from_args(client)?;
    let item: Value = api
        .request(Method::GET, &format!("{}/{id}", kind.path), None::<&()>)
        .await?;
    print_value(client, &item, render);
    Ok(())
}

/// `POST` a record and print the answer.
pub(super) async fn create(
    kind: &Kind,
    body: Value,
    client: &ClientArgs,
) -> Result<(), ClientError> {
    let api = ApiClient::from_args(client)?;
    let item: Value = api.request(Method::POST, kind.path, Some(&body)).await?;
    print_value(client, &item, render);
    Ok(())
}

/// `DELETE` one record.
pub(super) async fn delete(kind: &Kind, id: &str, client: &ClientArgs) -> Result<(), ClientError> {
    let api = ApiClient::from_args(client)?;
    api.request_empty(Method::DELETE, &format!("{}/{id}", kind.path))
        .await?;
    if !client.json {
        println!("deleted {id}");
    }
    Ok(())
}

/// Puts `value` under `key` when it is set.
pub(super) fn put<T: serde::Serialize>(body: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        body.insert(key.into(), json!(v));
    }
}

fn split_pair<'a>(text: &'a str, sep: char, what: &str) -> Result<(&'a str, &'a str), ClientError> {
    text.split_once(sep)
        .ok_or_else(|| ClientError::Usage(format!("{what} {text:?} must look like A{sep}B")))
}

/// `ip-address=IP[,mac-address=MAC]` as an address pair.
fn address_pair(text: &str) -> Result<Value, ClientError> {
    let mut pair = Map::new();
    for part in text.split(',') {
        match split_pair(part, '=', "--allowed-address")? {
            ("ip-address", v) => pair.insert("ip_address".into(), json!(v)),
            ("mac-address", v) => pair.insert("mac_address".into(), json!(v)),
            (k, _) => {
                return Err(ClientError::Usage(format!(
                    "--allowed-address takes ip-address= and mac-address=, not {k}="
                )))
            }
        };
    }
    if !pair.contains_key("ip_address") {
        return Err(ClientError::Usage(format!(
            "--allowed-address {text:?} needs ip-address="
        )));
    }
    Ok(Value::Object(pair))
}

/// Runs a `hyperlet network` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_network(cmd: NetworkCommand) -> Result<(), ClientError> {
    match cmd {
        NetworkCommand::Create {
            name,
            network_type,
            physical_network,
            segmentation_id,
            mtu,
            backend,
            client,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            put(&mut body, "network_type", network_type);
            put(&mut body, "physical_network", physical_network);
            put(&mut body, "segmentation_id", segmentation_id);
            put(&mut body, "mtu", mtu);
            put(&mut body, "backend", backend);
            let api = ApiClient::from_args(&client)?;
            let network: Value = api
                .request(Method::POST, NETWORKS.path, Some(&Value::Object(body)))
                .await?;
            let path = format!("{}/{}", NETWORKS.path, text(&network["id"]));
            let network = wait::settled(&api, &path, &["BUILD"]).await?;
            print_value(&client, &network, render);
            if network["status"] == "ERROR" {
                return Err(ClientError::Failed(format!(
                    "network {} could not be set up: {}",
                    text(&network["id"]),
                    text(&network["fault"])
                )));
            }
            Ok(())
        }
        NetworkCommand::List { client } => list(&NETWORKS, "", &client).await,
        NetworkCommand::Show { id, client } => show(&NETWORKS, &id, &client).await,
        NetworkCommand::Delete { id, client } => {
            let api = ApiClient::from_args(&client)?;
            let path = format!("{}/{id}", NETWORKS.path);
            let _: Value = api.request(Method::DELETE, &path, None::<&()>).await?;
            match wait::gone(&api, &path, &["DELETING"]).await? {
                None if client.json => Ok(()),
                None => {
                    println!("deleted {id}");
                    Ok(())
                }
                Some(network) => Err(ClientError::Failed(format!(
                    "network {id} could not be deleted ({}): {}",
                    text(&network["status"]),
                    text(&network["fault"])
                ))),
            }
        }
    }
}

/// Runs a `hyperlet subnet` command.
///
/// # Errors
/// [`ClientError`] for bad arguments, or when the agent cannot be reached or refuses.
pub async fn run_subnet(cmd: SubnetCommand) -> Result<(), ClientError> {
    match cmd {
        SubnetCommand::Create {
            network,
            cidr,
            name,
            gateway,
            no_gateway,
            pools,
            dns,
            routes,
            no_dhcp,
            client,
        } => {
            let mut body = Map::new();
            body.insert("network_id".into(), json!(network));
            body.insert("cidr".into(), json!(cidr));
            body.insert("name".into(), json!(name));
            body.insert("enable_dhcp".into(), json!(!no_dhcp));
            body.insert("dns_nameservers".into(), json!(dns));
            if no_gateway {
                body.insert("gateway_ip".into(), Value::Null);
            }
            put(&mut body, "gateway_ip", gateway);
            if !pools.is_empty() {
                let mut list = Vec::new();
                for p in &pools {
                    let (start, end) = split_pair(p, '-', "pool")?;
                    list.push(json!({"start": start, "end": end}));
                }
                body.insert("allocation_pools".into(), json!(list));
            }
            let mut list = Vec::new();
            for r in &routes {
                let (destination, nexthop) = split_pair(r, '=', "route")?;
                list.push(json!({"destination": destination, "nexthop": nexthop}));
            }
            body.insert("host_routes".into(), json!(list));
            create(&SUBNETS, Value::Object(body), &client).await
        }
        SubnetCommand::List { network, client } => {
            let query = network
                .map(|n| format!("?network_id={n}"))
                .unwrap_or_default();
            list(&SUBNETS, &query, &client).await
        }
        SubnetCommand::Show { id, client } => show(&SUBNETS, &id, &client).await,
        SubnetCommand::Delete { id, client } => delete(&SUBNETS, &id, &client).await,
    }
}

/// Runs a `hyperlet port` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_port(cmd: PortCommand) -> Result<(), ClientError> {
    match cmd {
        PortCommand::Create {
            network,
            name,
            mac,
            fixed_ips,
            client,
        } => {
            let mut body = Map::new();
            body.insert("network_id".into(), json!(network));
            body.insert("name".into(), json!(name));
            put(&mut body, "mac_address", mac);
            if !fixed_ips.is_empty() {
                let ips: Vec<Value> = fixed_ips
                    .iter()
                    .map(|ip| json!({"ip_address": ip}))
                    .collect();
                body.insert("fixed_ips".into(), json!(ips));
            }
            create(&PORTS, Value::Object(body), &client).await
        }
        PortCommand::List {
            network,
            device,
            client,
        } => {
            let query = match (network, device) {
                (Some(n), _) => format!("?network_id={n}"),
                (None, Some(d)) => format!("?device_id={d}"),
                (None, None) => String::new(),
            };
            list(&PORTS, &query, &client).await
        }
        PortCommand::Show { id, client } => show(&PORTS, &id, &client).await,
        PortCommand::Set {
            id,
            name,
            groups,
            no_security_group,
            disable_port_security,
            enable_port_security,
            allowed_addresses,
            no_allowed_address,
            client,
        } => {
            let api = ApiClient::from_args(&client)?;
            let mut body = Map::new();
            put(&mut body, "name", name);
            if no_security_group {
                body.insert("security_groups".into(), json!([]));
            } else if !groups.is_empty() {
                let mut ids = Vec::new();
                for g in &groups {
                    ids.push(super::security_group::group_id(&api, g).await?);
                }
                body.insert("security_groups".into(), json!(ids));
            }
            if disable_port_security || enable_port_security {
                body.insert("port_security_enabled".into(), json!(enable_port_security));
            }
            if no_allowed_address {
                body.insert("allowed_address_pairs".into(), json!([]));
            } else if !allowed_addresses.is_empty() {
                let mut pairs = Vec::new();
                for a in &allowed_addresses {
                    pairs.push(address_pair(a)?);
                }
                body.insert("allowed_address_pairs".into(), json!(pairs));
            }
            let port = super::security_group::patch_port(&api, &id, &Value::Object(body)).await?;
            print_value(&client, &port, render);
            Ok(())
        }
        PortCommand::Delete { id, client } => delete(&PORTS, &id, &client).await,
    }
}
