//! `hyperlet volume-type|volume|snapshot|backend …`: the cinder half.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::network::{create, delete, list, put, render, show, Kind};
use super::table::print_value;
use super::wait;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

/// `hyperlet volume-type` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeTypeCommand {
    /// Create a volume type bound to a backend.
    Create {
        /// Name.
        name: String,
        /// The backend (volume driver) serving it.
        #[arg(long)]
        backend: String,
        /// Make it the default type.
        #[arg(long)]
        default: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List volume types.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a volume type no volume uses.
    Delete {
        /// Type id or name.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hyperlet volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (empty, from an image, a snapshot or another volume).
    Create {
        /// Size, GiB.
        #[arg(long)]
        size: i64,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Volume type [default: the default type].
        #[arg(long = "type")]
        volume_type: Option<String>,
        /// Fill it from this image.
        #[arg(long, conflicts_with_all = ["snapshot", "source"])]
        image: Option<String>,
        /// Create it from this snapshot.
        #[arg(long, conflicts_with = "source")]
        snapshot: Option<String>,
        /// Clone this volume.
        #[arg(long)]
        source: Option<String>,
        /// Wait until it is available (or error).
        #[arg(long)]
        wait: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List volumes.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one volume.
    Show {
        /// Volume id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Grow a volume.
    Extend {
        /// Volume id.
        id: String,
        /// New size, GiB.
        #[arg(long)]
        size: i64,
        /// Wait until the extend has finished.
        #[arg(long)]
        wait: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a volume (not attached, no snapshots).
    Delete {
        /// Volume id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hyperlet snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume.
    Create {
        /// The volume.
        #[arg(long)]
        volume: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Wait until it is available (or error).
        #[arg(long)]
        wait: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List snapshots.
    List {
        /// Only this volume's.
        #[arg(long)]
        volume: Option<String>,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one snapshot.
    Show {
        /// Snapshot id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a snapshot.
    Delete {
        /// Snapshot id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

const TYPES: Kind = Kind {
    path: "/v1/volume-types",
    key: "volume_types",
    columns: &[
        ("ID", "id"),
        ("NAME", "name"),
        ("BACKEND", "backend"),
        ("DEFAULT", "is_default"),
    ],
};
const VOLUMES: Kind = Kind {
    path: "/v1/volumes",
    key: "volumes",
    columns: &[
        ("ID", "id"),
        ("NAME", "name"),
        ("SIZE", "size_gb"),
        ("TYPE", "volume_type"),
        ("STATUS", "status"),
        ("ATTACHED TO", "attached_to"),
    ],
};
const SNAPSHOTS: Kind = Kind {
    path: "/v1/snapshots",
    key: "snapshots",
    columns: &[
        ("ID", "id"),
        ("VOLUME", "volume_id"),
        ("NAME", "name"),
        ("SIZE", "size_gb"),
        ("STATUS", "status"),
    ],
};
const BACKENDS: Kind = Kind {
    path: "/v1/backends",
    key: "backends",
    columns: &[
        ("NAME", "name"),
        ("TOTAL GB", "total_gb"),
        ("FREE GB", "free_gb"),
        ("PROVISIONED GB", "provisioned_gb"),
        ("THIN", "thin_provisioning"),
        ("ERROR", "error"),
    ],
};

/// Runs a `hyperlet volume-type` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_type(cmd: VolumeTypeCommand) -> Result<(), ClientError> {
    match cmd {
        VolumeTypeCommand::Create {
            name,
            backend,
            default,
            client,
        } => {
            let body = json!({"name": name, "backend": backend, "is_default": default});
            create(&TYPES, body, &client).await
        }
        VolumeTypeCommand::List { client } => list(&TYPES, "", &client).await,
        VolumeTypeCommand::Delete { id, client } => delete(&TYPES, &id, &client).await,
    }
}

/// Runs a `hyperlet volume` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_volume(cmd: VolumeCommand) -> Result<(), ClientError> {
    match cmd {
        VolumeCommand::Create {
            size,
            name,
            volume_type,
            image,
            snapshot,
            source,
            wait,
            client,
        } => {
            let mut body = Map::new();
            body.insert("size_gb".into(), json!(size));
            body.insert("name".into(), json!(name));
            put(&mut body, "volume_type", volume_type);
            put(&mut body, "image_id", image);
            put(&mut body, "snapshot_id", snapshot);
            put(&mut body, "source_volid", source);
            create_waiting(&VOLUMES, Value::Object(body), wait, &client).await
        }
        VolumeCommand::List { client } => list(&VOLUMES, "", &client).await,
        VolumeCommand::Show { id, client } => show(&VOLUMES, &id, &client).await,
        VolumeCommand::Extend {
            id,
            size,
            wait,
            client,
        } => {
            let api = ApiClient::from_args(&client)?;
            let body = json!({"extend": {"new_size_gb": size}});
            let mut volume: Value = api
                .request(
                    Method::POST,
                    &format!("/v1/volumes/{id}/action"),
                    Some(&body),
                )
                .await?;
            if wait {
                volume = wait::settled(&api, &format!("/v1/volumes/{id}"), TRANSITIONAL).await?;
            }
            print_value(&client, &volume, render);
            Ok(())
        }
        VolumeCommand::Delete { id, client } => delete(&VOLUMES, &id, &client).await,
    }
}

/// Runs a `hyperlet snapshot` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_snapshot(cmd: SnapshotCommand) -> Result<(), ClientError> {
    match cmd {
        SnapshotCommand::Create {
            volume,
            name,
            wait,
            client,
        } => {
            create_waiting(
                &SNAPSHOTS,
                json!({"volume_id": volume, "name": name}),
                wait,
                &client,
            )
            .await
        }
        SnapshotCommand::List { volume, client } => {
            let query = volume
                .map(|v| format!("?volume_id={v}"))
                .unwrap_or_default();
            list(&SNAPSHOTS, &query, &client).await
        }
        SnapshotCommand::Show { id, client } => show(&SNAPSHOTS, &id, &client).await,
        SnapshotCommand::Delete { id, client } => delete(&SNAPSHOTS, &id, &client).await,
    }
}

/// Statuses a volume or snapshot passes through while the agent works on it.
const TRANSITIONAL: &[&str] = &[
    "creating",
    "extending",
    "deleting",
    "attaching",
    "detaching",
];

/// `POST` a record (answered 202) and print it, after it settled when `wait`.
async fn create_waiting(
    kind: &Kind,
    body: Value,
    wait: bool,
    client: &ClientArgs,
) -> Result<(), ClientError> {
    if !wait {
        return create(kind, body, client).await;
    }
    let api = ApiClient::from_args(client)?;
    let item: Value = api.request(Method::POST, kind.path, Some(&body)).await?;
    let id = item["id"].as_str().unwrap_or_default();
    let item = wait::settled(&api, &format!("{}/{id}", kind.path), TRANSITIONAL).await?;
    print_value(client, &item, render);
    Ok(())
}

/// Runs `hyperlet backend list`.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub async fn run_backends(client: ClientArgs) -> Result<(), ClientError> {
    list(&BACKENDS, "", &client).await
}
