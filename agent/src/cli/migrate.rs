//! `hyperlet server migrate` and `hyperlet server migration abort|force-complete`.

use super::client::{ApiClient, ClientError};
use super::server::Target;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// `hyperlet server migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Live: the server keeps running while it moves (else cold: it is shut down, moved, and
    /// VERIFY_RESIZE on the destination until `server resize confirm|revert` there).
    #[arg(long)]
    pub live: bool,
    /// The destination node [default: the fleet's placement picks one].
    #[arg(long)]
    pub host: Option<String>,
    /// Copy the local disks (the default for servers with local disks).
    #[arg(long)]
    pub block_migration: bool,
    /// Return once the agent accepted, without following the progress.
    #[arg(long)]
    pub no_wait: bool,
    /// Target.
    #[command(flatten)]
    pub target: Target,
}

/// `hyperlet server migration …`.
#[derive(Debug, Subcommand)]
pub enum MigrationCommand {
    /// Stop a running live migration (the server stays where it is).
    Abort(Target),
    /// End a live migration that does not converge (post-copy if allowed, else pause to
    /// finish).
    ForceComplete(Target),
}

/// Runs `hyperlet server migrate`.
///
/// # Errors
/// [`ClientError`] when the agent refuses or the migration fails.
pub async fn migrate(args: MigrateArgs) -> Result<(), ClientError> {
    if args.block_migration && !args.live {
        return Err(ClientError::Usage(
            "--block-migration is for --live; a cold migration always copies the local disks"
                .into(),
        ));
    }
    let api = ApiClient::from_args(&args.target.client)?;
    let id = &args.target.id;
    let mut body = json!({ "host": args.host });
    if args.block_migration {
        body["block_migration"] = json!(true);
    }
    let action = if args.live { "live_migrate" } else { "migrate" };
    let _: Value = api
        .request(
            Method::POST,
            &format!("/v1/servers/{id}/action"),
            Some(&json!({ action: body })),
        )
        .await?;
    if args.no_wait {
        println!("migration of server {id} accepted");
        return Ok(());
    }
    follow(&api, id, args.target.client.json, args.live).await
}

/// Follows a migration: a progress line (live) until the server moved (or came back with a
/// fault).
async fn follow(api: &ApiClient, id: &str, json: bool, live: bool) -> Result<(), ClientError> {
    let task = if live {
        "migrating"
    } else {
        "resize_migrating"
    };
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let tty = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        let answer = api
            .request::<Value, ()>(Method::GET, &format!("/v1/servers/{id}"), None)
            .await;
        match answer {
            Err(ClientError::Moved { node, api_url }) => {
                if tty {
                    eprintln!();
                }
                if json {
                    println!("{}", json!({ "id": id, "node": node, "api_url": api_url }));
                } else if live {
                    println!("server {id} moved to node {node} ({api_url})");
                } else {
                    println!(
                        "server {id} moved to node {node} ({api_url}); it is VERIFY_RESIZE \
                         there: `hyperlet server confirm-resize` or `revert-resize` it on that node"
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(e),
            Ok(server) => {
                if server["task_state"] != task {
                    if tty {
                        eprintln!();
                    }
                    return Err(ClientError::Failed(format!(
                        "the migration did not complete: {}",
                        server["fault"].as_str().unwrap_or("no fault recorded")
                    )));
                }
                if tty && live {
                    eprint!("\r{}", progress_line(&server["migration"]));
                    let _ = std::io::stderr().flush();
                }
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Failed("gave up following after 24 h".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `[#####-----] 52% memory 61/128 MiB, disk 0/1024 MiB, pass 2, pause ~40 ms`.
pub fn progress_line(m: &Value) -> String {
    let n = |key: &str| m[key].as_u64().unwrap_or(0);
    let total = n("memory_total_bytes") + n("disk_total_bytes");
    let left = n("memory_remaining_bytes") + n("disk_remaining_bytes");
    if total == 0 {
        return "preparing the destination…".into();
    }
    let done = total.saturating_sub(left);
    let percent = (done * 100 / total).min(100);
    let filled = (percent / 5) as usize;
    let mib = |b: u64| b / (1024 * 1024);
    format!(
        "[{}{}] {percent:>3}% memory {}/{} MiB, disk {}/{} MiB, pass {}, pause ~{} ms ",
        "#".repeat(filled),
        "-".repeat(20 - filled),
        mib(n("memory_total_bytes").saturating_sub(n("memory_remaining_bytes"))),
        mib(n("memory_total_bytes")),
        mib(n("disk_total_bytes").saturating_sub(n("disk_remaining_bytes"))),
        mib(n("disk_total_bytes")),
        n("iteration"),
        n("expected_downtime_ms"),
    )
}

/// Runs `hyperlet server migration …`.
///
/// # Errors
/// [`ClientError`] when the agent refuses.
pub async fn migration(command: MigrationCommand) -> Result<(), ClientError> {
    let (target, action) = match command {
        MigrationCommand::Abort(t) => (t, "live_migrate_abort"),
        MigrationCommand::ForceComplete(t) => (t, "live_migrate_force_complete"),
    };
    let api = ApiClient::from_args(&target.client)?;
    let _: Value = api
        .request(
            Method::POST,
            &format!("/v1/servers/{}/action", target.id),
            Some(&json!({ action: null })),
        )
        .await?;
    println!("{action} accepted for server {}", target.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_memory_and_disk() {
        let line = progress_line(&json!({
            "memory_total_bytes": 128u64 << 20, "memory_remaining_bytes": 64u64 << 20,
            "disk_total_bytes": 0, "disk_remaining_bytes": 0, "iteration": 2,
            "expected_downtime_ms": 40
        }));
        assert!(line.contains(" 50% memory 64/128 MiB"), "{line}");
        assert!(line.contains("pass 2, pause ~40 ms"), "{line}");
        assert_eq!(progress_line(&Value::Null), "preparing the destination…");
    }
}
