//! `POST /v1/servers/{id}/action`: one JSON key naming the action, its value null or the
//! arguments (`{"pause": null}`, `{"reboot": {"type": "HARD"}}`).
//!
//! Each action is allowed only in some statuses (409 naming the status otherwise) and never
//! while another operation runs on the server (409 busy). Power actions run in the background
//! (202 with `task_state` set); `console_output` and `set_password` answer directly.

use super::build::{self, ResolvedImages};
use super::model::{Flavor, ServerSpec, ServerStatus};
use super::{load, set_status, Loaded, Server};
use crate::compute::PowerState;
use crate::ops::{OpError, Services};
use crate::state::{OperationHandler, OperationRecord, StepRecord, UndoFuture};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// One server action.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerAction {
    /// Power on a SHUTOFF server.
    Start,
    /// Power off (ACPI, then forced after the clean-shutdown timeout).
    Stop,
    /// Reboot; `hard` destroys and starts, soft shuts down cleanly first.
    Reboot {
        /// HARD (true) or SOFT (false).
        hard: bool,
    },
    /// Pause the vCPUs.
    Pause,
    /// Resume paused vCPUs.
    Unpause,
    /// Save memory to disk and stop.
    Suspend,
    /// Restore a suspended server.
    Resume,
    /// Replace the root disk with a fresh one from an image.
    Rebuild {
        /// The new image.
        image_id: String,
    },
    /// Change the flavor (disk may only grow).
    Resize {
        /// The new flavor.
        flavor: Flavor,
    },
    /// Keep the new flavor.
    ConfirmResize,
    /// Go back to the old flavor and disk.
    RevertResize,
    /// The last lines of the serial console.
    ConsoleOutput {
        /// How many lines (all when absent).
        length: Option<usize>,
    },
    /// Set the root password through the guest agent.
    SetPassword {
        /// The new password.
        password: String,
    },
    /// Move the running server to another node of the fleet.
    LiveMigrate(crate::ops::migration::outgoing::LiveMigrate),
    /// Stop a running live migration (the server stays here).
    LiveMigrateAbort,
    /// End a live migration that does not converge (post-copy, or pause to finish).
    LiveMigrateForceComplete,
    /// Move the server, shut off, to another node of the fleet (cold migration); it ends
    /// VERIFY_RESIZE there.
    Migrate {
        /// The destination node; `None`: fleet placement picks one.
        host: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateArgs {
    #[serde(default)]
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveMigrateArgs {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    block_migration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootArgs {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildArgs {
    image_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeArgs {
    flavor: Flavor,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleArgs {
    length: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordArgs {
    password: String,
}

fn args<T: serde::de::DeserializeOwned>(name: &str, value: Value) -> Result<T, OpError> {
    serde_json::from_value(value)
        .map_err(|e| OpError::InvalidInput(format!("bad arguments for {name}: {e}")))
}

fn no_args(name: &str, value: &Value) -> Result<(), OpError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(map) if map.is_empty() => Ok(()),
        _ => Err(OpError::InvalidInput(format!(
            "{name} takes no arguments (use null)"
        ))),
    }
}

impl ServerAction {
    /// Parses the action body.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] unless the body is an object with exactly one known action.
    pub fn parse(body: Value) -> Result<Self, OpError> {
        let Value::Object(map) = body else {
            return Err(OpError::InvalidInput(
                "the body must be a JSON object".into(),
            ));
        };
        if map.len() != 1 {
            return Err(OpError::InvalidInput(format!(
                "the body must name exactly one action, not {}",
                map.len()
            )));
        }
        let (name, value) = map.into_iter().next().expect("one entry");
        let simple = |action: ServerAction| no_args(&name, &value).map(|()| action);
        match name.as_str() {
            "start" => simple(Self::Start),
            "stop" => simple(Self::Stop),
            "pause" => simple(Self::Pause),
            "unpause" => simple(Self::Unpause),
            "suspend" => simple(Self::Suspend),
            "resume" => simple(Self::Resume),
            "confirm_resize" => simple(Self::ConfirmResize),
            "live_migrate_abort" => simple(Self::LiveMigrateAbort),
            "live_migrate_force_complete" => simple(Self::LiveMigrateForceComplete),
            "revert_resize" => simple(Self::RevertResize),
            "reboot" => {
                let a: RebootArgs = args(&name, value)?;
                match a.kind.as_str() {
                    "SOFT" => Ok(Self::Reboot { hard: false }),
                    "HARD" => Ok(Self::Reboot { hard: true }),
                    other => Err(OpError::InvalidInput(format!(
                        "reboot type must be SOFT or HARD, not {other:?}"
                    ))),
                }
            }
            "rebuild" => {
                let a: RebuildArgs = args(&name, value)?;
                if a.image_id.is_empty() {
                    return Err(OpError::InvalidInput("rebuild needs an image_id".into()));
                }
                if uuid::Uuid::parse_str(&a.image_id).is_err() {
                    return Err(OpError::unknown("image_id", &a.image_id, "image"));
                }
                Ok(Self::Rebuild {
                    image_id: a.image_id,
                })
            }
            "resize" => {
                let a: ResizeArgs = args(&name, value)?;
                a.flavor.validate()?;
                Ok(Self::Resize { flavor: a.flavor })
            }
            "console_output" => {
                let a: ConsoleArgs = if value.is_null() {
                    ConsoleArgs { length: None }
                } else {
                    args(&name, value)?
                };
                match a.length {
                    Some(n) if n <= 0 => Err(OpError::InvalidInput(format!(
                        "console_output length must be positive, not {n}"
                    ))),
                    n => Ok(Self::ConsoleOutput {
                        length: n.map(|n| n as usize),
                    }),
                }
            }
            "set_password" => {
                let a: PasswordArgs = args(&name, value)?;
                if a.password.is_empty()
                    || a.password.chars().count() > 255
                    || a.password.contains('\n')
                {
                    return Err(OpError::InvalidInput(
                        "password needs 1 to 255 characters and no newline".into(),
                    ));
                }
                Ok(Self::SetPassword {
                    password: a.password,
                })
            }
            "migrate" => {
                let a: MigrateArgs = if value.is_null() {
                    MigrateArgs { host: None }
                } else {
                    args(&name, value)?
                };
                if let Some(host) = &a.host {
                    crate::fleet::keys::check_node_name(host).map_err(|reason| {
                        OpError::InvalidInput(format!("migrate host {host:?}: {reason}"))
                    })?;
                }
                Ok(Self::Migrate { host: a.host })
            }
            "live_migrate" => {
                use crate::ops::migration::outgoing::{BlockMigration, LiveMigrate};
                let a: LiveMigrateArgs = if value.is_null() {
                    LiveMigrateArgs {
                        host: None,
                        block_migration: None,
                    }
                } else {
                    args(&name, value)?
                };
                if let Some(host) = &a.host {
                    crate::fleet::keys::check_node_name(host).map_err(|reason| {
                        OpError::InvalidInput(format!("live_migrate host {host:?}: {reason}"))
                    })?;
                }
                let block_migration = match a.block_migration {
                    None => BlockMigration::Auto,
                    Some(Value::String(s)) if s == "auto" => BlockMigration::Auto,
                    Some(Value::Bool(true)) => BlockMigration::Yes,
                    Some(Value::Bool(false)) => BlockMigration::No,
                    Some(other) => {
                        return Err(OpError::InvalidInput(format!(
                        "live_migrate block_migration must be \"auto\", true or false, not {other}"
                    )))
                    }
                };
                Ok(Self::LiveMigrate(LiveMigrate {
                    host: a.host,
                    block_migration,
                }))
            }
            other => Err(OpError::InvalidInput(format!(
                "unknown action {other:?}; one of start, stop, reboot, pause, unpause, suspend, \
                 resume, rebuild, resize, confirm_resize, revert_resize, console_output, \
                 set_password, migrate, live_migrate, live_migrate_abort, \
                 live_migrate_force_complete"
            ))),
        }
    }

    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Reboot { .. } => "reboot",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Rebuild { .. } => "rebuild",
            Self::Resize { .. } => "resize",
            Self::ConfirmResize => "confirm_resize",
            Self::RevertResize => "revert_resize",
            Self::ConsoleOutput { .. } => "console_output",
            Self::SetPassword { .. } => "set_password",
            Self::LiveMigrate(_) => "live_migrate",
            Self::LiveMigrateAbort => "live_migrate_abort",
            Self::LiveMigrateForceComplete => "live_migrate_force_complete",
            Self::Migrate { .. } => "migrate",
        }
    }

    fn allowed_in(&self) -> &'static [ServerStatus] {
        use ServerStatus::*;
        match self {
            Self::Start => &[Shutoff],
            Self::Stop => &[Active, Paused, Error],
            Self::Reboot { hard: false } => &[Active],
            Self::Reboot { hard: true } => &[Active, Shutoff, Paused, Error],
            Self::Pause => &[Active],
            Self::Unpause => &[Paused],
            Self::Suspend => &[Active],
            Self::Resume => &[Suspended],
            Self::Rebuild { .. } => &[Active, Shutoff, Error],
            Self::Resize { .. } => &[Active, Shutoff],
            Self::ConfirmResize | Self::RevertResize => &[VerifyResize],
            Self::ConsoleOutput { .. } => {
                &[Active, Shutoff, Paused, Suspended, Error, VerifyResize]
            }
            Self::SetPassword { .. } => &[Active],
            Self::LiveMigrate(_) | Self::LiveMigrateAbort | Self::LiveMigrateForceComplete => {
                &[Active, Paused]
            }
            Self::Migrate { .. } => &[Active, Shutoff],
        }
    }
}

/// What an action answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ActionOutput {
    /// The action was accepted and runs in the background.
    Accepted(Box<Server>),
    /// Console text.
    Console {
        /// The console output.
        output: String,
    },
    /// Done, nothing to return.
    Done {
        /// Always true.
        ok: bool,
    },
}

/// Runs an action on a server.
///
/// # Errors
/// [`OpError::NotFound`], [`OpError::Conflict`] when the status does not allow the action or
/// the server is busy, [`OpError::InvalidInput`] for bad arguments, and compute errors for the
/// direct actions (a guest without an agent gives [`crate::compute::ComputeError::NoGuestAgent`]).
pub async fn action(
    services: &Services,
    id: &str,
    action: ServerAction,
) -> Result<ActionOutput, OpError> {
    let loaded = load(services, id).await?;
    if !action.allowed_in().contains(&loaded.status) {
        return Err(OpError::Conflict(format!(
            "cannot {} server {id} while it is {}",
            action.name(),
            loaded.status.as_str()
        )));
    }
    if loaded.spec.boot_volume.is_some()
        && matches!(
            action,
            ServerAction::Rebuild { .. } | ServerAction::Resize { .. }
        )
    {
        return Err(OpError::Conflict(format!(
            "cannot {} server {id}: it boots from volume {} (its root disk is not an image overlay)",
            action.name(),
            loaded.spec.boot_volume.as_ref().map(|b| b.volume_id.as_str()).unwrap_or("")
        )));
    }
    match &action {
        ServerAction::ConsoleOutput { length } => {
            return Ok(ActionOutput::Console {
                output: console_output(&loaded.spec, *length)?,
            })
        }
        ServerAction::SetPassword { password } => {
            set_password(services, &loaded, password).await?;
            return Ok(ActionOutput::Done { ok: true });
        }
        // These act on a migration that holds the server's lock.
        ServerAction::LiveMigrateAbort => {
            crate::ops::migration::outgoing::abort(services, &loaded).await?;
            return Ok(ActionOutput::Accepted(Box::new(
                super::get(services, id).await?,
            )));
        }
        ServerAction::LiveMigrateForceComplete => {
            crate::ops::migration::outgoing::force_complete(services, &loaded).await?;
            return Ok(ActionOutput::Accepted(Box::new(
                super::get(services, id).await?,
            )));
        }
        _ => {}
    }
    let lock = services.server_lock(id);
    let guard = lock.try_lock_owned().map_err(|_| {
        OpError::Conflict(format!(
            "server {id} is busy with {}; try again when it finishes",
            loaded
                .row
                .task_state
                .as_deref()
                .unwrap_or("another operation")
        ))
    })?;
    if let ServerAction::LiveMigrate(req) = action {
        let server = crate::ops::migration::outgoing::start(services, loaded, guard, req).await?;
        return Ok(ActionOutput::Accepted(Box::new(server)));
    }
    if let ServerAction::Migrate { host } = action {
        let server = crate::ops::migration::cold::start(services, loaded, guard, host).await?;
        return Ok(ActionOutput::Accepted(Box::new(server)));
    }
    if matches!(action, ServerAction::RevertResize) && loaded.spec.migrated_from.is_some() {
        let server = crate::ops::migration::cold::start_revert(services, loaded, guard).await?;
        return Ok(ActionOutput::Accepted(Box::new(server)));
    }
    // Checks that need lookups, before anything changes.
    let prepared = prepare(services, &loaded, &action).await?;
    let (status, task) = transitional(&action, loaded.status);
    set_status(
        services,
        id,
        status,
        Some(task),
        loaded.row.fault.as_deref(),
    )
    .await?;
    let view = super::get(services, id).await?;
    let services = services.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let _guard = guard;
        let result = run(&services, &loaded, &action, prepared).await;
        let after = match result {
            Ok(status) => set_status(&services, &id, status, None, None).await,
            Err(e) => {
                let fault = format!("{} failed: {}", action.name(), crate::api::error::chain(&e));
                tracing::warn!(server_id = %id, %fault);
                let status = fallback_status(&services, &loaded).await;
                set_status(&services, &id, status, None, Some(&fault)).await
            }
        };
        if let Err(e) = after {
            tracing::error!(server_id = %id, error = %e, "could not record the action's outcome");
        }
    });
    Ok(ActionOutput::Accepted(Box::new(view)))
}

/// What the status becomes while the action runs.
fn transitional(action: &ServerAction, current: ServerStatus) -> (ServerStatus, &'static str) {
    match action {
        ServerAction::Start => (current, "powering-on"),
        ServerAction::Stop => (current, "powering-off"),
        ServerAction::Reboot { hard: true } => (ServerStatus::Reboot, "rebooting_hard"),
        ServerAction::Reboot { hard: false } => (ServerStatus::Reboot, "rebooting"),
        ServerAction::Pause => (current, "pausing"),
        ServerAction::Unpause => (current, "unpausing"),
        ServerAction::Suspend => (current, "suspending"),
        ServerAction::Resume => (current, "resuming"),
        ServerAction::Rebuild { .. } => (ServerStatus::Rebuild, "rebuilding"),
        ServerAction::Resize { .. } => (ServerStatus::Resize, "resize_migrating"),
        ServerAction::ConfirmResize => (current, "resize_confirming"),
        ServerAction::RevertResize => (ServerStatus::Resize, "resize_reverting"),
        ServerAction::ConsoleOutput { .. } | ServerAction::SetPassword { .. } => (current, "busy"),
        ServerAction::LiveMigrate(_)
        | ServerAction::LiveMigrateAbort
        | ServerAction::LiveMigrateForceComplete => (current, "migrating"),
        ServerAction::Migrate { .. } => (ServerStatus::Resize, "resize_migrating"),
    }
}

/// After a failed action: the status libvirt's view implies, or ERROR.
async fn fallback_status(services: &Services, loaded: &Loaded) -> ServerStatus {
    if loaded.status == ServerStatus::VerifyResize && loaded.spec.migrated_from.is_some() {
        // A confirm that could not reach the old node: confirm again.
        return ServerStatus::VerifyResize;
    }
    match services.libvirt().state(&loaded.spec.domain_name).await {
        Ok(Some(PowerState::Running)) => ServerStatus::Active,
        Ok(Some(PowerState::Paused)) => ServerStatus::Paused,
        Ok(Some(PowerState::Shutoff)) => ServerStatus::Shutoff,
        _ => ServerStatus::Error,
    }
}

/// Lookups and checks done before the action is accepted.
enum Prepared {
    Nothing,
    Rebuild(Box<(ResolvedImages, ServerSpec)>),
    Resize(Box<(ResolvedImages, ServerSpec)>),
}

async fn prepare(
    services: &Services,
    loaded: &Loaded,
    action: &ServerAction,
) -> Result<Prepared, OpError> {
    match action {
        ServerAction::Rebuild { image_id } => {
            let (images, root) = build::resolve_images(services, image_id).await?;
            let mut spec = loaded.spec.clone();
            spec.image_id = image_id.clone();
            spec.kernel_image_id = root.properties.get("kernel_id").cloned();
            spec.ramdisk_image_id = root.properties.get("ramdisk_id").cloned();
            spec.os_command_line = root.properties.get("os_command_line").cloned();
            build::check_fits(&spec, &images)?;
            Ok(Prepared::Rebuild(Box::new((images, spec))))
        }
        ServerAction::Resize { flavor } => {
            let old = &loaded.spec.flavor;
            if flavor == old {
                return Err(OpError::InvalidInput(
                    "the new flavor is the current one".into(),
                ));
            }
            if flavor.disk_gb < old.disk_gb || (old.disk_gb != 0 && flavor.disk_gb == 0) {
                return Err(OpError::InvalidInput(format!(
                    "resize cannot shrink the root disk ({} GiB to {} GiB)",
                    old.disk_gb, flavor.disk_gb
                )));
            }
            if flavor.ephemeral_gb != old.ephemeral_gb || flavor.swap_mb != old.swap_mb {
                return Err(OpError::InvalidInput(
                    "resize cannot change ephemeral_gb or swap_mb".into(),
                ));
            }
            let (images, _) = build::resolve_images(services, &loaded.row.image_id).await?;
            let mut spec = loaded.spec.clone();
            spec.flavor = flavor.clone();
            spec.previous_flavor = Some(old.clone());
            admit_resize(services, &loaded.row.id, flavor).await?;
            Ok(Prepared::Resize(Box::new((images, spec))))
        }
        _ => Ok(Prepared::Nothing),
    }
}

/// Capacity check of a resize: the other servers plus the new flavor.
async fn admit_resize(services: &Services, id: &str, flavor: &Flavor) -> Result<(), OpError> {
    let report = crate::ops::host::describe(services).await?;
    let (mut vcpus, mut ram) = (0u64, 0u64);
    for other in super::list(services).await? {
        if other.id != id && other.status != ServerStatus::Deleted {
            vcpus += u64::from(other.flavor.vcpus);
            ram += other.flavor.ram_mb;
        }
    }
    if vcpus + u64::from(flavor.vcpus) > report.capacity.vcpus_limit {
        return Err(OpError::Conflict(format!(
            "not enough vCPUs for the resize: {} requested, {} of {} allocated to other servers",
            flavor.vcpus, vcpus, report.capacity.vcpus_limit
        )));
    }
    if ram + flavor.ram_mb > report.capacity.memory_limit_mb {
        return Err(OpError::Conflict(format!(
            "not enough memory for the resize: {} MiB requested, {} of {} MiB allocated to other servers",
            flavor.ram_mb, ram, report.capacity.memory_limit_mb
        )));
    }
    Ok(())
}

/// Clean-shutdown timeout before a forced power-off.
fn clean_shutdown(services: &Services) -> Duration {
    Duration::from_secs(services.config().hypervisor.clean_shutdown_timeout_secs)
}

/// Powers a domain off: ACPI first, then forced after the timeout.
pub(crate) async fn power_off(services: &Services, domain: &str) -> Result<(), OpError> {
    let libvirt = services.libvirt();
    if libvirt.state(domain).await? == Some(PowerState::Running) {
        // A guest that ignores ACPI is powered off by force below.
        let _ = libvirt.shutdown(domain).await;
        let deadline = Instant::now() + clean_shutdown(services);
        while Instant::now() < deadline {
            match libvirt.state(domain).await? {
                Some(PowerState::Shutoff) | None => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    libvirt.destroy(domain).await?;
    Ok(())
}

async fn run(
    services: &Services,
    loaded: &Loaded,
    action: &ServerAction,
    prepared: Prepared,
) -> Result<ServerStatus, OpError> {
    let libvirt = services.libvirt();
    let domain = loaded.spec.domain_name.as_str();
    let id = loaded.row.id.as_str();
    Ok(match (action, prepared) {
        (ServerAction::Start, _) => {
            libvirt.start(domain).await?;
            ServerStatus::Active
        }
        (ServerAction::Stop, _) => {
            power_off(services, domain).await?;
            ServerStatus::Shutoff
        }
        (ServerAction::Reboot { hard }, _) => {
            if *hard {
                libvirt.destroy(domain).await?;
            } else {
                power_off(services, domain).await?;
            }
            if libvirt.state(domain).await? == Some(PowerState::Paused) {
                libvirt.destroy(domain).await?;
            }
            libvirt.start(domain).await?;
            ServerStatus::Active
        }
        (ServerAction::Pause, _) => {
            libvirt.pause(domain).await?;
            ServerStatus::Paused
        }
        (ServerAction::Unpause, _) => {
            libvirt.unpause(domain).await?;
            ServerStatus::Active
        }
        (ServerAction::Suspend, _) => {
            libvirt.managed_save(domain).await?;
            ServerStatus::Suspended
        }
        (ServerAction::Resume, _) => {
            libvirt.start(domain).await?;
            ServerStatus::Active
        }
        (ServerAction::Rebuild { .. }, Prepared::Rebuild(p)) => {
            let (images, spec) = *p;
            rebuild(services, id, &loaded.row.name, &spec, &images).await?;
            ServerStatus::Active
        }
        (ServerAction::Resize { .. }, Prepared::Resize(p)) => {
            let (images, spec) = *p;
            resize(services, loaded, &spec, &images).await?;
            ServerStatus::VerifyResize
        }
        (ServerAction::ConfirmResize, _) if loaded.spec.migrated_from.is_some() => {
            crate::ops::migration::cold::confirm(services, loaded).await?
        }
        (ServerAction::ConfirmResize, _) => {
            let mut spec = loaded.spec.clone();
            spec.previous_flavor = None;
            let _ = std::fs::remove_file(spec.resize_backup());
            save_spec(services, id, &loaded.row.image_id, &spec).await?;
            ServerStatus::Active
        }
        (ServerAction::RevertResize, _) => {
            revert_resize(services, loaded).await?;
            ServerStatus::Active
        }
        _ => {
            return Err(OpError::Conflict(format!(
                "{} cannot run here",
                action.name()
            )))
        }
    })
}

/// Stores a server's spec (and its root image id), then copies it (without secrets) into its
/// domain's `<metadata>`, from which a lost record is adopted. The store is what counts: a
/// domain that cannot be updated right now is logged and keeps its older copy.
pub(crate) async fn save_spec(
    services: &Services,
    id: &str,
    image_id: &str,
    spec: &ServerSpec,
) -> Result<(), OpError> {
    let text = serde_json::to_string(spec).expect("spec serialises");
    services
        .store()
        .set_server_spec(id, image_id, &text)
        .await?;
    let name = match services.store().get_server(id).await? {
        Some(row) => row.name,
        None => return Ok(()),
    };
    let metadata = build::domain_metadata(services, id, &name, spec);
    if let Err(e) = services
        .libvirt()
        .set_metadata(&spec.domain_name, &metadata)
        .await
    {
        tracing::warn!(server_id = %id, error = %e, "cannot update the domain's metadata; it keeps the older spec");
    }
    Ok(())
}

/// Journal kind of a rebuild.
pub const REBUILD_KIND: &str = "server.rebuild";

/// Rebuild: a new root overlay from the new image, a new definition, started.
async fn rebuild(
    services: &Services,
    id: &str,
    name: &str,
    spec: &ServerSpec,
    images: &ResolvedImages,
) -> Result<(), OpError> {
    let libvirt = services.libvirt();
    let domain = spec.domain_name.clone();
    let mut op = services
        .journal()
        .begin(REBUILD_KIND, id, json!({ "image_id": spec.image_id }))
        .await?;
    let result = async {
        op.step("record", json!({ "server_id": id }), || async {
            Ok::<_, OpError>(())
        })
        .await?;
        libvirt.destroy(&domain).await?;
        libvirt.undefine(&domain).await?;
        build::remove_dir(spec).map_err(OpError::Conflict)?;
        op.step("disks", json!({ "dir": spec.dir }), || {
            build::create_disks(spec, images)
        })
        .await?;
        let xml = build::domain_spec(services, id, name, spec, images).to_xml();
        op.step("define", json!({ "domain": domain }), || async {
            Ok::<_, OpError>(libvirt.define(xml).await?)
        })
        .await?;
        save_spec(services, id, &spec.image_id, spec).await?;
        op.step("start", json!({ "domain": domain }), || async {
            Ok::<_, OpError>(libvirt.start(&domain).await?)
        })
        .await?;
        Ok::<_, OpError>(())
    }
    .await;
    match result {
        Ok(()) => {
            op.complete().await?;
            Ok(())
        }
        Err(e) => {
            let fault = crate::api::error::chain(&e);
            let _ = op.roll_back(&fault).await?;
            Err(e)
        }
    }
}

/// Undoes an interrupted rebuild (the server ends in ERROR without a domain; delete or
/// rebuild it again).
pub(crate) struct RebuildHandler {
    services: Services,
}

impl RebuildHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

impl OperationHandler for RebuildHandler {
    fn kind(&self) -> &'static str {
        REBUILD_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            super::create::undo_step(&self.services, &op.resource_id, op.error.as_deref(), step)
                .await
        })
    }
}

/// Journal kind of a resize.
pub const RESIZE_KIND: &str = "server.resize";

/// Resize, journaled: stop, keep a copy of the root overlay, grow it, redefine with the new
/// flavor, start. Undo (after a failure or a crash) puts the old disk, definition and spec back.
///
/// | step | undo |
/// |---|---|
/// | `record` (old spec) | save the old spec |
/// | `power_off` | — |
/// | `backup` (root, backup) | move the copy back over the root disk |
/// | `grow` | — (the copy holds the old disk) |
/// | `define` (old XML) | define the old XML |
/// | `start` | destroy |
async fn resize(
    services: &Services,
    loaded: &Loaded,
    spec: &ServerSpec,
    images: &ResolvedImages,
) -> Result<(), OpError> {
    let libvirt = services.libvirt();
    let id = loaded.row.id.as_str();
    let domain = spec.domain_name.clone();
    let old_xml = build::domain_spec(services, id, &loaded.row.name, &loaded.spec, images).to_xml();
    let new_xml = build::domain_spec(services, id, &loaded.row.name, spec, images).to_xml();
    let mut op = services.journal().begin(RESIZE_KIND, id, json!({})).await?;
    let result = async {
        op.step(
            "record",
            json!({ "old_spec": loaded.spec, "image_id": loaded.row.image_id }),
            || async { Ok::<_, OpError>(()) },
        )
        .await?;
        op.step("power_off", json!({ "domain": domain }), || {
            power_off(services, &domain)
        })
        .await?;
        let (root, backup) = (spec.root_disk(), spec.resize_backup());
        op.step(
            "backup",
            json!({ "root": root, "backup": backup }),
            || async {
                std::fs::copy(&root, &backup).map(|_| ()).map_err(|e| {
                    OpError::Conflict(format!(
                        "cannot keep a copy of the root disk for revert: {e}"
                    ))
                })
            },
        )
        .await?;
        op.step("grow", json!({}), || async {
            if spec.flavor.disk_gb > loaded.spec.flavor.disk_gb {
                build::grow_root(spec, images).await?;
            }
            Ok::<_, OpError>(())
        })
        .await?;
        op.step("define", json!({ "old_xml": old_xml }), || async {
            libvirt.define(new_xml).await?;
            save_spec(services, id, &loaded.row.image_id, spec).await
        })
        .await?;
        op.step("start", json!({ "domain": domain }), || async {
            Ok::<_, OpError>(libvirt.start(&domain).await?)
        })
        .await?;
        Ok::<_, OpError>(())
    }
    .await;
    match result {
        Ok(()) => {
            op.complete().await?;
            Ok(())
        }
        Err(e) => {
            let fault = crate::api::error::chain(&e);
            if let Err(undo) = op.roll_back(&fault).await? {
                tracing::error!(server_id = %id, %undo, "rollback of a failed resize is incomplete");
            }
            Err(e)
        }
    }
}

/// Undoes an interrupted or failed resize: old disk, definition and spec back (not running).
pub(crate) struct ResizeHandler {
    services: Services,
}

impl ResizeHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

impl OperationHandler for ResizeHandler {
    fn kind(&self) -> &'static str {
        RESIZE_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            let text = |key: &str| step.data[key].as_str().unwrap_or_default().to_string();
            match step.name.as_str() {
                "start" => services
                    .libvirt()
                    .destroy(&text("domain"))
                    .await
                    .map_err(|e| e.to_string()),
                "define" => services
                    .libvirt()
                    .define(text("old_xml"))
                    .await
                    .map_err(|e| e.to_string()),
                "backup" => {
                    let backup = std::path::PathBuf::from(text("backup"));
                    if backup.exists() {
                        std::fs::rename(&backup, text("root"))
                            .map_err(|e| format!("cannot restore the root disk: {e}"))?;
                    }
                    Ok(())
                }
                "power_off" | "grow" => Ok(()),
                "record" => {
                    let spec: ServerSpec = serde_json::from_value(step.data["old_spec"].clone())
                        .map_err(|e| format!("resize journal unreadable: {e}"))?;
                    let image = step.data["image_id"].as_str().unwrap_or_default();
                    save_spec(services, &op.resource_id, image, &spec)
                        .await
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("unknown step {other}")),
            }
        })
    }
}

/// Revert: the old disk and flavor back, started.
async fn revert_resize(services: &Services, loaded: &Loaded) -> Result<(), OpError> {
    let libvirt = services.libvirt();
    let mut spec = loaded.spec.clone();
    let old = spec.previous_flavor.take().ok_or_else(|| {
        OpError::Conflict("the server has no previous flavor to revert to".into())
    })?;
    spec.flavor = old;
    let (images, _) = build::resolve_images(services, &loaded.row.image_id).await?;
    libvirt.destroy(&spec.domain_name).await?;
    std::fs::rename(spec.resize_backup(), spec.root_disk()).map_err(|e| {
        OpError::Conflict(format!("the pre-resize copy of the root disk is gone: {e}"))
    })?;
    let xml =
        build::domain_spec(services, &loaded.row.id, &loaded.row.name, &spec, &images).to_xml();
    libvirt.define(xml).await?;
    save_spec(services, &loaded.row.id, &loaded.row.image_id, &spec).await?;
    libvirt.start(&spec.domain_name).await?;
    Ok(())
}

/// The last `length` lines of the console log (all when `None`).
fn console_output(spec: &ServerSpec, length: Option<usize>) -> Result<String, OpError> {
    let text = match std::fs::read(spec.console_log()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(OpError::Image(crate::image::ImageError::Io {
                context: format!("cannot read {}", spec.console_log().display()),
                source: e,
            }))
        }
    };
    Ok(match length {
        None => text,
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
    })
}

/// Sets root's password through the QEMU guest agent.
async fn set_password(services: &Services, loaded: &Loaded, password: &str) -> Result<(), OpError> {
    services
        .libvirt()
        .set_user_password(&loaded.spec.domain_name, "root", password)
        .await?;
    Ok(())
}
