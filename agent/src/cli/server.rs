//! `hyperlet server …`: create, list, show, delete and every action, as virsh/openstack do.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::host::text;
use super::table::print_value;
use super::table::{key_values, rows};
use base64::Engine;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flavor flags.
#[derive(Debug, Clone, Args)]
pub struct FlavorArgs {
    /// Virtual CPUs.
    #[arg(long)]
    pub vcpus: u32,
    /// Memory, MiB.
    #[arg(long)]
    pub ram: u64,
    /// Root disk, GiB (0: the image's size).
    #[arg(long, default_value_t = 0)]
    pub disk: u64,
    /// Ephemeral disk, GiB.
    #[arg(long, default_value_t = 0)]
    pub ephemeral: u64,
    /// Swap, MiB.
    #[arg(long, default_value_t = 0)]
    pub swap: u64,
}

impl FlavorArgs {
    fn json(&self) -> Value {
        json!({
            "vcpus": self.vcpus, "ram_mb": self.ram, "disk_gb": self.disk,
            "ephemeral_gb": self.ephemeral, "swap_mb": self.swap,
        })
    }
}

/// A server id plus connection options.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Server id.
    pub id: String,
    /// Connection options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `hyperlet server` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Create a server.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Root image id.
        #[arg(
            long,
            required_unless_present = "boot_volume",
            conflicts_with = "boot_volume"
        )]
        image: Option<String>,
        /// Boot from this volume (made from an image) instead.
        #[arg(long)]
        boot_volume: Option<String>,
        /// Resources.
        #[command(flatten)]
        flavor: FlavorArgs,
        /// Key pair name.
        #[arg(long)]
        key_name: Option<String>,
        /// A public key `NAME=FILE` (repeatable).
        #[arg(long = "public-key", value_name = "NAME=FILE")]
        public_keys: Vec<String>,
        /// File whose content is the user data.
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// Metadata `KEY=VALUE` (repeatable).
        #[arg(long = "property", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// A NIC, as nova: `net-id=ID[,v4-fixed-ip=IP]` or `port-id=ID` (repeatable).
        #[arg(long = "nic", value_name = "net-id=ID|port-id=ID")]
        nics: Vec<String>,
        /// A security group (name or id) for the ports created for `--nic net-id=…`
        /// (repeatable) [default: default].
        #[arg(long = "security-group", value_name = "NAME")]
        security_groups: Vec<String>,
        /// Wait until the server is ACTIVE (or ERROR).
        #[arg(long)]
        wait: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a security group to every port of the server.
    AddSecurityGroup {
        /// Target.
        #[command(flatten)]
        target: Target,
        /// The group (id or name).
        group: String,
    },
    /// Remove a security group from every port of the server.
    RemoveSecurityGroup {
        /// Target.
        #[command(flatten)]
        target: Target,
        /// The group (id or name).
        group: String,
    },
    /// Hot-attach a NIC: `--nic net-id=ID[,v4-fixed-ip=IP]` or `--nic port-id=ID`.
    InterfaceAttach {
        /// The NIC.
        #[arg(long = "nic", value_name = "net-id=ID|port-id=ID")]
        nic: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Attach a volume (hot-plug when the server runs).
    VolumeAttach {
        /// The volume.
        #[arg(long)]
        volume: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Detach a volume.
    VolumeDetach {
        /// The volume.
        #[arg(long)]
        volume: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Hot-detach a NIC by its port id.
    InterfaceDetach {
        /// The NIC's port.
        #[arg(long)]
        port: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// List servers.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one server.
    Show(Target),
    /// Delete a server.
    Delete(Target),
    /// Power on.
    Start(Target),
    /// Power off (clean shutdown, then forced).
    Stop(Target),
    /// Reboot (soft unless --hard).
    Reboot {
        /// Destroy and start instead of a clean shutdown.
        #[arg(long)]
        hard: bool,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Pause the vCPUs.
    Pause(Target),
    /// Resume paused vCPUs.
    Unpause(Target),
    /// Save memory to disk and stop.
    Suspend(Target),
    /// Restore a suspended server.
    Resume(Target),
    /// Rebuild from an image.
    Rebuild {
        /// The new image id.
        #[arg(long)]
        image: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Change the flavor (then confirm-resize or revert-resize).
    Resize {
        /// New resources.
        #[command(flatten)]
        flavor: FlavorArgs,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Keep the new flavor after a resize.
    ConfirmResize(Target),
    /// Go back to the old flavor after a resize.
    RevertResize(Target),
    /// Print the serial console log, or attach to the console (`--attach`, as `virsh
    /// console`: Ctrl-] leaves).
    Console {
        /// Only the last N lines.
        #[arg(long, conflicts_with = "attach")]
        length: Option<u32>,
        /// Attach this terminal to the interactive serial console.
        #[arg(long)]
        attach: bool,
        /// With --attach: watch without typing.
        #[arg(long, requires = "attach", conflicts_with = "force")]
        read_only: bool,
        /// With --attach: take the console over from the session typing into it.
        #[arg(long, requires = "attach")]
        force: bool,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
    /// Move the server to another node of the fleet (`--live`), following the progress.
    Migrate(super::migrate::MigrateArgs),
    /// Act on a running migration.
    Migration {
        /// What to do.
        #[command(subcommand)]
        command: super::migrate::MigrationCommand,
    },
    /// Set root's password through the guest agent.
    SetPassword {
        /// The new password.
        #[arg(long)]
        password: String,
        /// Target.
        #[command(flatten)]
        target: Target,
    },
}

fn pairs(items: &[String], flag: &str) -> Result<Vec<(String, String)>, ClientError> {
    items
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ClientError::Usage(format!("{flag} {p:?} is not KEY=VALUE")))
        })
        .collect()
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// Runs a `hyperlet server` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run(cmd: ServerCommand) -> Result<(), ClientError> {
    match cmd {
        ServerCommand::Create {
            name,
            image,
            flavor,
            key_name,
            public_keys,
            user_data,
            metadata,
            nics,
            security_groups,
            boot_volume,
            wait,
            client,
        } => {
            let mut networks = Vec::new();
            for nic in &nics {
                networks.push(nic_json(nic)?);
            }
            let mut keys = serde_json::Map::new();
            for (n, file) in pairs(&public_keys, "--public-key")? {
                let key = String::from_utf8_lossy(&read(&PathBuf::from(file))?)
                    .trim()
                    .to_string();
                keys.insert(n, Value::String(key));
            }
            let meta: serde_json::Map<String, Value> = pairs(&metadata, "--property")?
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut body = json!({
                "name": name, "image_id": image.unwrap_or_default(), "flavor": flavor.json(),
                "public_keys": keys, "metadata": meta, "networks": networks,
            });
            if let Some(k) = key_name {
                body["key_name"] = Value::String(k);
            }
            if !security_groups.is_empty() {
                body["security_groups"] = security_groups
                    .iter()
                    .map(|name| json!({ "name": name }))
                    .collect();
            }
            if let Some(v) = boot_volume {
                body["boot_volume_id"] = Value::String(v);
            }
            if let Some(path) = user_data {
                body["user_data"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(read(&path)?));
            }
            let api = ApiClient::from_args(&client)?;
            let mut server: Value = api
                .request(Method::POST, "/v1/servers", Some(&body))
                .await?;
            if wait {
                server = wait_for(
                    &api,
                    server["id"].as_str().unwrap_or_default(),
                    &["ACTIVE", "ERROR"],
                )
                .await?;
            }
            print_value(&client, &server, render_server);
        }
        ServerCommand::List { client } => {
            let api = ApiClient::from_args(&client)?;
            let list: Value = api.request(Method::GET, "/v1/servers", None::<&()>).await?;
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                let body: Vec<Vec<String>> = list["servers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|s| {
                        vec![
                            text(&s["id"]),
                            text(&s["name"]),
                            text(&s["status"]),
                            text(&s["task_state"]),
                            format!(
                                "{}c/{}M/{}G",
                                s["flavor"]["vcpus"], s["flavor"]["ram_mb"], s["flavor"]["disk_gb"]
                            ),
                            text(&s["image_id"]),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    rows(&["ID", "NAME", "STATUS", "TASK", "FLAVOR", "IMAGE"], &body)
                );
            }
        }
        ServerCommand::Show(t) => {
            let api = ApiClient::from_args(&t.client)?;
            let server: Value = api
                .request(Method::GET, &format!("/v1/servers/{}", t.id), None::<&()>)
                .await?;
            print_value(&t.client, &server, render_server);
        }
        ServerCommand::Delete(t) => {
            let api = ApiClient::from_args(&t.client)?;
            let server: Value = api
                .request(
                    Method::DELETE,
                    &format!("/v1/servers/{}", t.id),
                    None::<&()>,
                )
                .await?;
            print_value(&t.client, &server, render_server);
        }
        ServerCommand::Start(t) => act(t, json!({"start": null})).await?,
        ServerCommand::Stop(t) => act(t, json!({"stop": null})).await?,
        ServerCommand::Reboot { hard, target } => {
            let kind = if hard { "HARD" } else { "SOFT" };
            act(target, json!({"reboot": {"type": kind}})).await?
        }
        ServerCommand::Pause(t) => act(t, json!({"pause": null})).await?,
        ServerCommand::Unpause(t) => act(t, json!({"unpause": null})).await?,
        ServerCommand::Suspend(t) => act(t, json!({"suspend": null})).await?,
        ServerCommand::Resume(t) => act(t, json!({"resume": null})).await?,
        ServerCommand::AddSecurityGroup { target, group } => {
            let api = ApiClient::from_args(&target.client)?;
            super::security_group::server_group(&api, &target.id, &group, true).await?;
        }
        ServerCommand::RemoveSecurityGroup { target, group } => {
            let api = ApiClient::from_args(&target.client)?;
            super::security_group::server_group(&api, &target.id, &group, false).await?;
        }
        ServerCommand::InterfaceAttach { nic, target } => {
            let api = ApiClient::from_args(&target.client)?;
            let body = nic_json(&nic)?;
            let server: Value = api
                .request(
                    Method::POST,
                    &format!("/v1/servers/{}/interfaces", target.id),
                    Some(&body),
                )
                .await?;
            print_value(&target.client, &server, render_server);
        }
        ServerCommand::VolumeAttach { volume, target } => {
            let api = ApiClient::from_args(&target.client)?;
            let body = json!({"volume_id": volume});
            let server: Value = api
                .request(
                    Method::POST,
                    &format!("/v1/servers/{}/volumes", target.id),
                    Some(&body),
                )
                .await?;
            print_value(&target.client, &server, render_server);
        }
        ServerCommand::VolumeDetach { volume, target } => {
            let api = ApiClient::from_args(&target.client)?;
            let server: Value = api
                .request(
                    Method::DELETE,
                    &format!("/v1/servers/{}/volumes/{volume}", target.id),
                    None::<&()>,
                )
                .await?;
            print_value(&target.client, &server, render_server);
        }
        ServerCommand::InterfaceDetach { port, target } => {
            let api = ApiClient::from_args(&target.client)?;
            let server: Value = api
                .request(
                    Method::DELETE,
                    &format!("/v1/servers/{}/interfaces/{port}", target.id),
                    None::<&()>,
                )
                .await?;
            print_value(&target.client, &server, render_server);
        }
        ServerCommand::Rebuild { image, target } => {
            act(target, json!({"rebuild": {"image_id": image}})).await?
        }
        ServerCommand::Resize { flavor, target } => {
            act(target, json!({"resize": {"flavor": flavor.json()}})).await?
        }
        ServerCommand::ConfirmResize(t) => act(t, json!({"confirm_resize": null})).await?,
        ServerCommand::RevertResize(t) => act(t, json!({"revert_resize": null})).await?,
        ServerCommand::Console {
            attach: true,
            read_only,
            force,
            target,
            ..
        } => super::console::attach(&target.id, &target.client, read_only, force).await?,
        ServerCommand::Console { length, target, .. } => {
            let api = ApiClient::from_args(&target.client)?;
            let body = json!({"console_output": {"length": length}});
            let out: Value = api
                .request(
                    Method::POST,
                    &format!("/v1/servers/{}/action", target.id),
                    Some(&body),
                )
                .await?;
            if target.client.json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                println!("{}", out["output"].as_str().unwrap_or_default());
            }
        }
        ServerCommand::Migrate(args) => super::migrate::migrate(args).await?,
        ServerCommand::Migration { command } => super::migrate::migration(command).await?,
        ServerCommand::SetPassword { password, target } => {
            act(target, json!({"set_password": {"password": password}})).await?
        }
    }
    Ok(())
}

async fn act(target: Target, body: Value) -> Result<(), ClientError> {
    let api = ApiClient::from_args(&target.client)?;
    let out: Value = api
        .request(
            Method::POST,
            &format!("/v1/servers/{}/action", target.id),
            Some(&body),
        )
        .await?;
    if out.get("id").is_some() {
        print_value(&target.client, &out, render_server);
    } else if target.client.json {
        println!("{out}");
    } else {
        println!("done");
    }
    Ok(())
}

async fn wait_for(api: &ApiClient, id: &str, statuses: &[&str]) -> Result<Value, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let server: Value = api
            .request(Method::GET, &format!("/v1/servers/{id}"), None::<&()>)
            .await?;
        let status = server["status"].as_str().unwrap_or_default();
        if statuses.contains(&status) || Instant::now() > deadline {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn render_server(s: &Value) -> String {
    let f = &s["flavor"];
    key_values(&[
        ("id", text(&s["id"])),
        ("name", text(&s["name"])),
        ("status", text(&s["status"])),
        ("task_state", text(&s["task_state"])),
        (
            "flavor",
            format!(
                "vcpus={} ram_mb={} disk_gb={} ephemeral_gb={} swap_mb={}",
                f["vcpus"], f["ram_mb"], f["disk_gb"], f["ephemeral_gb"], f["swap_mb"]
            ),
        ),
        ("image_id", text(&s["image_id"])),
        ("domain_name", text(&s["domain_name"])),
        ("availability_zone", text(&s["availability_zone"])),
        ("metadata", s["metadata"].to_string()),
        ("fault", text(&s["fault"])),
        ("created_at", text(&s["created_at"])),
    ])
}

/// A `--nic` value (`net-id=ID[,v4-fixed-ip=IP]` or `port-id=ID`) as a `networks` entry.
fn nic_json(text: &str) -> Result<Value, ClientError> {
    let mut out = serde_json::Map::new();
    for part in text.split(',') {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            ClientError::Usage(format!(
                "--nic {text:?}: expected net-id=ID[,v4-fixed-ip=IP] or port-id=ID"
            ))
        })?;
        let field = match key {
            "net-id" => "network_id",
            "port-id" => "port_id",
            "v4-fixed-ip" => "fixed_ip",
            other => {
                return Err(ClientError::Usage(format!(
                    "--nic {text:?}: unknown key {other:?} (net-id, port-id, v4-fixed-ip)"
                )))
            }
        };
        out.insert(field.into(), Value::String(value.to_string()));
    }
    Ok(Value::Object(out))
}
