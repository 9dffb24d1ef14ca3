//! `hyperlet image …`: import (with progress), list, show, delete.

use super::client::{ApiClient, ClientArgs, ClientError};
use super::table::print_value;
use super::table::{key_values, rows};
use clap::Subcommand;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `hyperlet image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Create an image and upload a local file into it.
    Import {
        /// The file to upload.
        file: PathBuf,
        /// raw, qcow2, vmdk, vdi, vhdx, aki or ari.
        #[arg(long)]
        disk_format: String,
        /// bare, aki or ari [default: aki/ari for those disk formats, else bare].
        #[arg(long)]
        container_format: Option<String>,
        /// Image name [default: the file name].
        #[arg(long)]
        name: Option<String>,
        /// A property `key=value` (repeatable), e.g. kernel_id=…, os_command_line=….
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List images.
    List {
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one image.
    Show {
        /// Image id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an image.
    Delete {
        /// Image id.
        id: String,
        /// Connection options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a `hyperlet image` command.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses, or the file cannot be read.
pub async fn run(cmd: ImageCommand) -> Result<(), ClientError> {
    match cmd {
        ImageCommand::Import {
            file,
            disk_format,
            container_format,
            name,
            properties,
            quiet,
            client,
        } => {
            let mut props = serde_json::Map::new();
            for p in &properties {
                let (k, v) = p.split_once('=').ok_or_else(|| {
                    ClientError::Usage(format!("--property {p:?} is not KEY=VALUE"))
                })?;
                props.insert(k.to_string(), Value::String(v.to_string()));
            }
            let container = container_format.unwrap_or_else(|| match disk_format.as_str() {
                "aki" | "ari" => disk_format.clone(),
                _ => "bare".into(),
            });
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into())
            });
            let api = ApiClient::from_args(&client)?;
            let meta = std::fs::metadata(&file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let body = json!({
                "name": name, "disk_format": disk_format,
                "container_format": container, "properties": props,
            });
            let image: Value = api.request(Method::POST, "/v1/images", Some(&body)).await?;
            let id = image["id"].as_str().unwrap_or_default().to_string();
            let handle = tokio::fs::File::open(&file)
                .await
                .map_err(|e| ClientError::Usage(format!("cannot open {}: {e}", file.display())))?;
            let total = meta.len();
            let sent = Arc::new(AtomicU64::new(0));
            let counter = sent.clone();
            let stream =
                tokio_util::io::ReaderStream::with_capacity(handle, 1 << 20).map(move |chunk| {
                    if let Ok(bytes) = &chunk {
                        let done = counter.fetch_add(bytes.len() as u64, Ordering::Relaxed)
                            + bytes.len() as u64;
                        if !quiet {
                            progress(done, total);
                        }
                    }
                    chunk
                });
            let result: Result<Value, ClientError> = api
                .upload(
                    &format!("/v1/images/{id}/file"),
                    reqwest::Body::wrap_stream(stream),
                    total,
                )
                .await;
            if !quiet {
                eprintln!();
            }
            let image = result?;
            print_value(&client, &image, render_image);
        }
        ImageCommand::List { client } => {
            let api = ApiClient::from_args(&client)?;
            let list: Value = api.request(Method::GET, "/v1/images", None::<&()>).await?;
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                let images = list["images"].as_array().cloned().unwrap_or_default();
                let table: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        [
                            "id",
                            "name",
                            "status",
                            "disk_format",
                            "container_format",
                            "size",
                        ]
                        .iter()
                        .map(|k| super::host::text(&i[*k]))
                        .collect()
                    })
                    .collect();
                print!(
                    "{}",
                    rows(
                        &["ID", "NAME", "STATUS", "DISK", "CONTAINER", "SIZE"],
                        &table
                    )
                );
            }
        }
        ImageCommand::Show { id, client } => {
            let api = ApiClient::from_args(&client)?;
            let image: Value = api
                .request(Method::GET, &format!("/v1/images/{id}"), None::<&()>)
                .await?;
            print_value(&client, &image, render_image);
        }
        ImageCommand::Delete { id, client } => {
            let api = ApiClient::from_args(&client)?;
            api.request_empty(Method::DELETE, &format!("/v1/images/{id}"))
                .await?;
            if !client.json {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

fn progress(done: u64, total: u64) {
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let width = 30;
    let filled = (pct as usize * width / 100).min(width);
    eprint!(
        "\r[{}{}] {pct:>3}% {} / {} MiB",
        "#".repeat(filled),
        " ".repeat(width - filled),
        done >> 20,
        total >> 20
    );
}

fn render_image(i: &Value) -> String {
    let t = |k: &str| super::host::text(&i[k]);
    key_values(&[
        ("id", t("id")),
        ("name", t("name")),
        ("status", t("status")),
        ("disk_format", t("disk_format")),
        ("container_format", t("container_format")),
        ("stored_format", t("stored_format")),
        ("size", t("size")),
        ("virtual_size", t("virtual_size")),
        ("checksum", t("checksum")),
        ("properties", i["properties"].to_string()),
        ("error", t("error")),
    ])
}
