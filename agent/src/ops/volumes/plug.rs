//! The journaled half of attach and detach: what runs after the API answered 202.
//!
//! `volume.attach`: `record` (the volume `attaching`, its device reserved) → `connect` (the
//! driver's connection info) → `libvirt_attach` (hot-plug) → `save_spec` (the server's spec
//! lists the volume) → the volume `in-use`. `volume.detach`: `record` (`detaching`) →
//! `libvirt_detach` (hot-unplug, then wait until the disk has left the domain) → `save_spec`
//! → the volume `available`.
//!
//! Both settle the same way after a failure or a crash: [`reconcile`] makes the server's spec
//! and the volume row follow what libvirt has. A disk in the domain is `in-use` and listed in
//! the spec; a disk not in the domain is `available` and unlisted. So an attach killed after
//! libvirt plugged the disk is finished at the next start, and one killed before is released;
//! a row never says `available` while the disk is plugged.

use super::attach::{AttachedVolume, VolumeDisk};
use super::{driver, set_status, volume_ref};
use crate::ops::{background, OpError, Services};
use crate::state::{
    Operation, OperationHandler, OperationRecord, RestartPolicy, StepRecord, UndoFuture, Volume,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Journal kind of an attach.
pub const ATTACH_KIND: &str = "volume.attach";
/// Journal kind of a detach.
pub const DETACH_KIND: &str = "volume.detach";

/// The server and volume locks an attach or detach holds until its background work ends
/// (server first, then volume).
pub(crate) struct Held {
    _server: OwnedMutexGuard<()>,
    _volume: OwnedMutexGuard<()>,
}

impl Held {
    /// Takes the server's lock, then the volume's (always in that order).
    pub(crate) async fn take(services: &Services, server_id: &str, volume_id: &str) -> Self {
        let server = services.server_lock(server_id).lock_owned().await;
        let volume = super::volume_lock(services, volume_id).lock_owned().await;
        Self {
            _server: server,
            _volume: volume,
        }
    }
}

/// What the background work of one attach or detach needs.
pub(crate) struct Plug {
    /// The server.
    pub server_id: String,
    /// Its domain.
    pub domain: String,
    /// The volume.
    pub volume_id: String,
    /// The guest device.
    pub device: String,
}

/// The serial a volume's disk carries in the domain XML (the first 20 characters of its id).
fn serial_of(volume_id: &str) -> String {
    volume_id.chars().take(20).collect()
}

/// Is the volume's disk in the domain (the running guest's XML, or the definition when off)?
/// `false` when the domain is gone.
async fn plugged(services: &Services, domain: &str, volume_id: &str) -> Result<bool, OpError> {
    let xml = services.libvirt().xml(domain, false).await?;
    let needle = format!("<serial>{}</serial>", serial_of(volume_id));
    Ok(xml.is_some_and(|x| x.contains(&needle)))
}

/// Makes the server's spec and the volume row follow libvirt: `in-use` and listed when the
/// disk is in the domain, `available` and unlisted when it is not (or the server is gone).
/// `disk` is how the hypervisor reaches the volume when the caller knows it.
///
/// # Errors
/// [`OpError`] when libvirt or the store cannot be read; nothing is changed then.
pub(crate) async fn reconcile(
    services: &Services,
    plug: &Plug,
    disk: Option<VolumeDisk>,
    error: Option<String>,
) -> Result<(), OpError> {
    let Ok(loaded) = crate::ops::servers::load(services, &plug.server_id).await else {
        // The server is gone, its domain with it.
        return mark_available(services, &plug.volume_id, error).await;
    };
    let present = plugged(services, &loaded.spec.domain_name, &plug.volume_id).await?;
    let mut spec = loaded.spec.clone();
    let listed = spec.volumes.iter().any(|v| v.volume_id == plug.volume_id);
    if present {
        if !listed {
            let disk = match disk {
                Some(d) => d,
                None => {
                    let volume = super::get(services, &plug.volume_id).await?;
                    let v = volume_ref(&volume);
                    let c = driver::call(services, &volume.backend, move |p| p.connection_info(&v))
                        .await?;
                    VolumeDisk::from_connection(&c)
                }
            };
            spec.volumes.push(AttachedVolume {
                volume_id: plug.volume_id.clone(),
                device: plug.device.clone(),
                disk,
            });
            crate::ops::servers::save_spec(services, &plug.server_id, &loaded.row.image_id, &spec)
                .await?;
        }
        mark_in_use(services, plug, error).await
    } else {
        if listed {
            spec.volumes.retain(|v| v.volume_id != plug.volume_id);
            crate::ops::servers::save_spec(services, &plug.server_id, &loaded.row.image_id, &spec)
                .await?;
        }
        mark_available(services, &plug.volume_id, error).await
    }
}

/// Records the volume `available` and unattached (with the error that brought it back), and
/// says so.
async fn mark_available(
    services: &Services,
    volume_id: &str,
    error: Option<String>,
) -> Result<(), OpError> {
    super::attach::release(services, volume_id).await?;
    if error.is_some() {
        if let Some(mut volume) = services.store().get_volume(volume_id).await? {
            volume.error = error.clone();
            services.store().put_volume(volume).await?;
        }
    }
    announce(services, volume_id, error).await;
    Ok(())
}

/// Records the volume `in-use` on the plug's server and device, and says so.
async fn mark_in_use(
    services: &Services,
    plug: &Plug,
    error: Option<String>,
) -> Result<(), OpError> {
    if let Some(mut volume) = services.store().get_volume(&plug.volume_id).await? {
        volume.status = "in-use".into();
        volume.attached_to = Some(plug.server_id.clone());
        volume.device = Some(plug.device.clone());
        volume.error = error.clone();
        volume.updated_at = crate::state::now_rfc3339();
        services.store().put_volume(volume).await?;
    }
    announce(services, &plug.volume_id, error).await;
    Ok(())
}

/// Publishes the volume's current status (and the error that brought it there).
async fn announce(services: &Services, volume_id: &str, error: Option<String>) {
    let status = match services.store().get_volume(volume_id).await {
        Ok(Some(v)) => v.status,
        _ => return,
    };
    let _ = services
        .events()
        .publish(
            "volume.status",
            "volume",
            volume_id,
            json!({ "status": status, "error": error }),
        )
        .await;
}

/// Records the attach (`attaching`, the device reserved) on a task of its own that then
/// hot-plugs the disk; answers with the volume once recorded.
///
/// # Errors
/// [`OpError`] when the journal or the store cannot be written; nothing changed then.
pub(crate) async fn start_attach(
    services: &Services,
    plug: Plug,
    volume: Volume,
    held: Held,
) -> Result<Volume, OpError> {
    let services = services.clone();
    background::run(move |answer| async move {
        let mut op = match services
            .journal()
            .begin(ATTACH_KIND, &plug.volume_id, input(&plug, None))
            .await
        {
            Ok(op) => op,
            Err(e) => return answer.send(Err(e.into())),
        };
        let recorded = op
            .step(
                "record",
                json!({ "server_id": plug.server_id, "device": plug.device }),
                || async {
                    let mut volume = volume;
                    volume.status = "attaching".into();
                    volume.attached_to = Some(plug.server_id.clone());
                    volume.device = Some(plug.device.clone());
                    volume.error = None;
                    volume.updated_at = crate::state::now_rfc3339();
                    services.store().put_volume(volume.clone()).await?;
                    Ok::<_, OpError>(volume)
                },
            )
            .await;
        match recorded {
            Ok(volume) => {
                announce(&services, &plug.volume_id, None).await;
                answer.send(Ok(volume));
                run_attach(services, op, plug, held).await;
            }
            Err(e) => {
                let _ = op.roll_back(&crate::api::error::chain(&e)).await;
                answer.send(Err(e));
            }
        }
    })
    .await
}

/// Records the detach (`detaching`) on a task of its own that then hot-unplugs the disk;
/// answers with the volume once recorded.
///
/// # Errors
/// [`OpError`] when the journal or the store cannot be written; nothing changed then.
pub(crate) async fn start_detach(
    services: &Services,
    plug: Plug,
    disk: VolumeDisk,
    held: Held,
) -> Result<Volume, OpError> {
    let services = services.clone();
    background::run(move |answer| async move {
        let mut op = match services
            .journal()
            .begin(DETACH_KIND, &plug.volume_id, input(&plug, Some(&disk)))
            .await
        {
            Ok(op) => op,
            Err(e) => return answer.send(Err(e.into())),
        };
        let recorded = op
            .step("record", json!({ "server_id": plug.server_id }), || {
                set_status(&services, &plug.volume_id, "detaching", None)
            })
            .await;
        match recorded {
            Ok(Some(volume)) => {
                answer.send(Ok(volume));
                run_detach(services, op, plug, disk, held).await;
            }
            Ok(None) => {
                let _ = op.roll_back("the volume vanished").await;
                answer.send(Err(OpError::NotFound {
                    kind: "volume",
                    id: plug.volume_id.clone(),
                }));
            }
            Err(e) => {
                let _ = op.roll_back(&crate::api::error::chain(&e)).await;
                answer.send(Err(e));
            }
        }
    })
    .await
}

/// Runs an attach after the API answered: connect, hot-plug, record.
async fn run_attach(services: Services, mut op: Operation, plug: Plug, held: Held) {
    let _held = held;
    let steps = async {
        let volume = super::get(&services, &plug.volume_id).await?;
        let connection = op
            .step("connect", json!({}), || async {
                let v = volume_ref(&volume);
                driver::call(&services, &volume.backend, move |p| p.connection_info(&v)).await
            })
            .await?;
        let disk = VolumeDisk::from_connection(&connection);
        let xml = disk.disk(&plug.device, &plug.volume_id).to_xml();
        op.step(
            "libvirt_attach",
            json!({ "domain": plug.domain, "device": plug.device, "disk": disk }),
            || async {
                Ok::<_, OpError>(services.libvirt().attach_device(&plug.domain, xml).await?)
            },
        )
        .await?;
        op.step("save_spec", json!({}), || async {
            let loaded = crate::ops::servers::load(&services, &plug.server_id).await?;
            let mut spec = loaded.spec;
            if !spec.volumes.iter().any(|v| v.volume_id == plug.volume_id) {
                spec.volumes.push(AttachedVolume {
                    volume_id: plug.volume_id.clone(),
                    device: plug.device.clone(),
                    disk: disk.clone(),
                });
            }
            crate::ops::servers::save_spec(&services, &plug.server_id, &loaded.row.image_id, &spec)
                .await
        })
        .await?;
        mark_in_use(&services, &plug, None).await
    }
    .await;
    match steps {
        Ok(()) => {
            if let Err(e) = op.complete().await {
                tracing::error!(volume_id = %plug.volume_id, error = %e, "cannot record a finished attach");
            }
            let _ = services
                .events()
                .publish(
                    "server.volume_attached",
                    "server",
                    &plug.server_id,
                    json!({ "volume_id": plug.volume_id, "device": plug.device }),
                )
                .await;
        }
        Err(e) => fail(op, &plug, &e, "attach").await,
    }
}

/// Runs a detach after the API answered: hot-unplug, wait for the guest to let go, record.
async fn run_detach(
    services: Services,
    mut op: Operation,
    plug: Plug,
    disk: VolumeDisk,
    held: Held,
) {
    let _held = held;
    let steps = async {
        let xml = disk.disk(&plug.device, &plug.volume_id).to_xml();
        op.step(
            "libvirt_detach",
            json!({ "domain": plug.domain, "device": plug.device }),
            || async {
                services.libvirt().detach_device(&plug.domain, xml).await?;
                wait_unplugged(&services, &plug).await
            },
        )
        .await?;
        op.step("save_spec", json!({}), || async {
            let loaded = crate::ops::servers::load(&services, &plug.server_id).await?;
            let mut spec = loaded.spec;
            spec.volumes.retain(|v| v.volume_id != plug.volume_id);
            crate::ops::servers::save_spec(&services, &plug.server_id, &loaded.row.image_id, &spec)
                .await
        })
        .await?;
        mark_available(&services, &plug.volume_id, None).await
    }
    .await;
    match steps {
        Ok(()) => {
            if let Err(e) = op.complete().await {
                tracing::error!(volume_id = %plug.volume_id, error = %e, "cannot record a finished detach");
            }
            let _ = services
                .events()
                .publish(
                    "server.volume_detached",
                    "server",
                    &plug.server_id,
                    json!({ "volume_id": plug.volume_id }),
                )
                .await;
        }
        Err(e) => fail(op, &plug, &e, "detach").await,
    }
}

/// Waits until the guest has released the disk (hot-unplug needs its cooperation).
async fn wait_unplugged(services: &Services, plug: &Plug) -> Result<(), OpError> {
    let limit = services.config().hypervisor.lifecycle_timeout();
    let deadline = Instant::now() + limit;
    while plugged(services, &plug.domain, &plug.volume_id).await? {
        if Instant::now() >= deadline {
            return Err(OpError::Conflict(format!(
                "the guest of server {} did not release {} within {} s",
                plug.server_id,
                plug.device,
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Rolls a failed attach or detach back; its `record` undo settles the rows on libvirt.
async fn fail(op: Operation, plug: &Plug, e: &OpError, what: &str) {
    let error = format!("{what} failed: {}", crate::api::error::chain(e));
    tracing::warn!(volume_id = %plug.volume_id, server_id = %plug.server_id, %error);
    match op.roll_back(&error).await {
        Ok(Ok(())) => {}
        Ok(Err(undo)) => {
            tracing::error!(volume_id = %plug.volume_id, %undo, "rollback is incomplete; the next start retries it");
        }
        Err(e) => {
            tracing::error!(volume_id = %plug.volume_id, error = %e, "cannot record the rollback")
        }
    }
}

/// The plug an operation record describes (its input).
fn plug_of(op: &OperationRecord) -> Result<Plug, String> {
    let text = |key: &str| {
        op.input[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("operation {} has no {key}", op.id))
    };
    Ok(Plug {
        server_id: text("server_id")?,
        domain: text("domain")?,
        volume_id: op.resource_id.clone(),
        device: text("device")?,
    })
}

/// The disk recorded by the operation's hot-plug step, if it got that far.
fn recorded_disk(op: &OperationRecord) -> Option<VolumeDisk> {
    op.steps
        .iter()
        .find(|s| s.name == "libvirt_attach")
        .and_then(|s| serde_json::from_value::<VolumeDisk>(s.data["disk"].clone()).ok())
        .or_else(|| serde_json::from_value::<VolumeDisk>(op.input["disk"].clone()).ok())
}

/// Settles attaches and detaches: undo on failure, reconcile with libvirt after a restart.
pub(crate) struct PlugHandler {
    services: Services,
    kind: &'static str,
}

impl PlugHandler {
    /// The handler of `kind` ([`ATTACH_KIND`] or [`DETACH_KIND`]).
    pub(crate) fn new(services: Services, kind: &'static str) -> Self {
        Self { services, kind }
    }
}

impl OperationHandler for PlugHandler {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let plug = plug_of(op)?;
            let services = &self.services;
            match (self.kind, step.name.as_str()) {
                (ATTACH_KIND, "libvirt_attach") => {
                    let Some(disk) = recorded_disk(op) else {
                        return Ok(());
                    };
                    if plugged(services, &plug.domain, &plug.volume_id)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        let xml = disk.disk(&plug.device, &plug.volume_id).to_xml();
                        // Best effort: whatever the guest does, `record` settles on the truth.
                        if let Err(e) = services.libvirt().detach_device(&plug.domain, xml).await {
                            tracing::warn!(volume_id = %plug.volume_id, error = %e, "cannot unplug a half-attached disk");
                        }
                    }
                    Ok(())
                }
                (_, "record") => reconcile(services, &plug, recorded_disk(op), op.error.clone())
                    .await
                    .map_err(|e| crate::api::error::chain(&e)),
                _ => Ok(()),
            }
        })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let plug = plug_of(op)?;
            reconcile(&self.services, &plug, recorded_disk(op), None)
                .await
                .map_err(|e| crate::api::error::chain(&e))?;
            tracing::warn!(volume_id = %plug.volume_id, server_id = %plug.server_id, kind = self.kind, "settled an interrupted operation on what libvirt has");
            Ok(())
        })
    }
}

/// Registers the attach and detach handlers.
pub(crate) fn register(services: &Services) {
    for kind in [ATTACH_KIND, DETACH_KIND] {
        services
            .journal()
            .register(Arc::new(PlugHandler::new(services.clone(), kind)));
    }
}

/// The operation input of an attach or detach.
fn input(plug: &Plug, disk: Option<&VolumeDisk>) -> Value {
    json!({
        "server_id": plug.server_id,
        "domain": plug.domain,
        "device": plug.device,
        "disk": disk,
    })
}
