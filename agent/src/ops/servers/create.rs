//! Server create: validation, admission against capacity, then the journaled build.
//!
//! Journal steps of `server.create` (each undone newest first on failure or after a crash):
//!
//! | step | does | undo |
//! |---|---|---|
//! | `record` | (the row was inserted under the admission lock) | mark the server ERROR |
//! | `disks` | create the directory, root overlay, ephemeral and swap disks | remove the directory |
//! | `define` | define the domain | undefine it |
//! | `start` | start the domain | destroy it |

use super::build::{self, ResolvedImages};
use super::model::{ServerCreate, ServerSpec, ServerStatus};
use super::{set_status, Server};
use crate::ops::host;
use crate::ops::{OpError, Services};
use crate::state::{OperationHandler, OperationRecord, ServerRow, StepRecord, UndoFuture};
use serde_json::json;

/// Validates, admits and records a server in BUILD, then builds it in the background.
///
/// # Errors
/// [`OpError::InvalidInput`] (400) and [`OpError::NotFound`] (404 for an unknown image) for bad
/// requests, [`OpError::Conflict`] (409) when the node cannot take the server — in every case
/// nothing is created.
pub async fn create(services: &Services, req: ServerCreate) -> Result<Server, OpError> {
    req.validate()?;
    let zone = &services.config().availability_zone;
    if let Some(az) = &req.availability_zone {
        if az != zone {
            return Err(OpError::Conflict(format!(
                "availability_zone {az:?} is not this node's zone {zone:?}"
            )));
        }
    }
    let image_id = match &req.boot_volume_id {
        Some(volume_id) => crate::ops::volumes::attach::boot_image(services, volume_id).await?,
        None => req.image_id.clone(),
    };
    let (images, root) = build::resolve_images(services, &image_id).await?;
    let id = req
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let spec = ServerSpec {
        flavor: req.flavor.clone(),
        previous_flavor: None,
        image_id: image_id.clone(),
        kernel_image_id: root.properties.get("kernel_id").cloned(),
        ramdisk_image_id: root.properties.get("ramdisk_id").cloned(),
        os_command_line: root.properties.get("os_command_line").cloned(),
        key_name: req.key_name.clone(),
        public_keys: req.public_keys.clone(),
        user_data: req.user_data.as_ref().map(|u| u.trim().to_string()),
        metadata: req.metadata.clone(),
        availability_zone: zone.clone(),
        domain_name: format!("hyperlet-{id}"),
        dir: services.config().servers_dir().join(&id),
        nics: Vec::new(),
        boot_volume: None,
        volumes: Vec::new(),
        migrated_from: None,
    };
    let mut spec = spec;
    if req.boot_volume_id.is_none() {
        build::check_fits(&spec, &images)?;
    }
    let owner = format!("compute:{zone}");
    let groups = match &req.security_groups {
        Some(refs) => {
            let mut ids = Vec::new();
            for r in refs {
                let id = crate::ops::security_groups::resolve(services, "security_groups", &r.name)
                    .await?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
        None => vec![crate::ops::security_groups::default_id(services).await?],
    };
    for want in &req.networks {
        match crate::ops::networks::ports::bind_for_server(services, &id, &owner, want, &groups)
            .await
        {
            Ok((_, nic)) => spec.nics.push(nic),
            Err(e) => {
                release_nics(services, &spec).await;
                return Err(e);
            }
        }
    }
    // The ports are programmed before their taps can exist: a guest never starts unfiltered.
    if let Err(e) = crate::ops::security_groups::apply::sync(services).await {
        release_nics(services, &spec).await;
        return Err(e);
    }
    if let Some(volume_id) = &req.boot_volume_id {
        match crate::ops::volumes::attach::reserve_boot(services, &id, volume_id).await {
            Ok(boot) => spec.boot_volume = Some(boot),
            Err(e) => {
                release_nics(services, &spec).await;
                return Err(e);
            }
        }
    }
    let admitted = async {
        let _admission = services.admission().lock().await;
        admit(services, &spec).await?;
        crate::ops::scheduler::admit(
            services,
            crate::sched::RequestSpec {
                vcpus: spec.flavor.vcpus,
                ram_mb: spec.flavor.ram_mb,
                disk_gb: spec.flavor.disk_gb + spec.flavor.ephemeral_gb,
                volume_gb: 0,
                availability_zone: req.availability_zone.clone(),
                image_properties: root.properties.clone(),
            },
        )
        .await?;
        let now = crate::state::now_rfc3339();
        services
            .store()
            .insert_server(ServerRow {
                id: id.clone(),
                name: req.name.clone(),
                status: ServerStatus::Build.as_str().into(),
                task_state: Some("spawning".into()),
                image_id: req.image_id.clone(),
                spec: serde_json::to_string(&spec).expect("spec serialises"),
                fault: None,
                created_at: now.clone(),
                updated_at: now,
            })
            .await?;
        Ok::<_, OpError>(())
    }
    .await;
    if let Err(e) = admitted {
        release_nics(services, &spec).await;
        return Err(e);
    }
    for network_id in nic_networks(&spec.nics) {
        crate::ops::networks::runtime::refresh(services, &network_id).await;
    }
    let _ = services
        .events()
        .publish(
            "server.created",
            "server",
            &id,
            json!({ "name": req.name, "status": "BUILD" }),
        )
        .await;
    let server = super::get(services, &id).await?;
    let task_services = services.clone();
    let name = req.name.clone();
    tokio::spawn(async move {
        let lock = task_services.server_lock(&id);
        let _guard = lock.lock().await;
        if let Err(e) = build_server(&task_services, &id, &name, &spec, &images).await {
            tracing::warn!(server_id = %id, error = %crate::api::error::chain(&e), "server build failed");
        }
    });
    Ok(server)
}

/// Lets go of the ports and volumes bound for a server that will not exist (or no longer
/// does).
pub(crate) async fn release_nics(services: &Services, spec: &ServerSpec) {
    for nic in &spec.nics {
        if let Err(e) = crate::ops::networks::ports::release_for_server(services, nic).await {
            tracing::warn!(port_id = %nic.port_id, error = %e, "cannot release a port");
        }
    }
    let volumes = spec.boot_volume.iter().chain(spec.volumes.iter());
    for volume in volumes {
        if let Err(e) = crate::ops::volumes::attach::release(services, &volume.volume_id).await {
            tracing::warn!(volume_id = %volume.volume_id, error = %e, "cannot release a volume");
        }
    }
}

/// The networks a server has NICs on, each once.
pub(crate) fn nic_networks(nics: &[crate::ops::networks::ports::ServerNic]) -> Vec<String> {
    let mut out: Vec<String> = nics.iter().map(|n| n.network_id.clone()).collect();
    out.sort();
    out.dedup();
    out
}

/// Refuses a server the node cannot hold: disabled node, or vCPU/RAM/disk over the limits.
pub(crate) async fn admit(services: &Services, spec: &ServerSpec) -> Result<(), OpError> {
    let report = host::describe(services).await?;
    if !report.service_status.enabled {
        return Err(OpError::Conflict(format!(
            "this node is disabled for new servers ({})",
            report
                .service_status
                .disabled_reason
                .as_deref()
                .unwrap_or("no reason given")
        )));
    }
    let (mut vcpus, mut ram, mut disk) = (0u64, 0u64, 0u64);
    for other in super::list(services).await? {
        if other.status == ServerStatus::Deleted {
            continue;
        }
        vcpus += u64::from(other.flavor.vcpus);
        ram += other.flavor.ram_mb;
        disk += other.flavor.disk_gb + other.flavor.ephemeral_gb;
    }
    let cap = &report.capacity;
    let f = &spec.flavor;
    if vcpus + u64::from(f.vcpus) > cap.vcpus_limit {
        return Err(OpError::Conflict(format!(
            "not enough vCPUs: {} requested, {} of {} allocated",
            f.vcpus, vcpus, cap.vcpus_limit
        )));
    }
    if ram + f.ram_mb > cap.memory_limit_mb {
        return Err(OpError::Conflict(format!(
            "not enough memory: {} MiB requested, {} of {} MiB allocated",
            f.ram_mb, ram, cap.memory_limit_mb
        )));
    }
    if disk + f.disk_gb + f.ephemeral_gb > cap.disk_limit_gb {
        return Err(OpError::Conflict(format!(
            "not enough disk: {} GiB requested, {} of {} GiB allocated",
            f.disk_gb + f.ephemeral_gb,
            disk,
            cap.disk_limit_gb
        )));
    }
    Ok(())
}

async fn build_server(
    services: &Services,
    id: &str,
    name: &str,
    spec: &ServerSpec,
    images: &ResolvedImages,
) -> Result<(), OpError> {
    let journal = services.journal();
    let mut op = journal.begin(KIND, id, json!({ "name": name })).await?;
    let libvirt = services.libvirt();
    let domain = spec.domain_name.clone();
    let xml = build::domain_spec(services, id, name, spec, images).to_xml();
    let steps = async {
        op.step("record", json!({ "server_id": id }), || async {
            Ok::<_, OpError>(())
        })
        .await?;
        op.step("disks", json!({ "dir": spec.dir }), || {
            build::create_disks(spec, images)
        })
        .await?;
        op.step("define", json!({ "domain": domain }), || async {
            Ok::<_, OpError>(libvirt.define(xml).await?)
        })
        .await?;
        op.step("start", json!({ "domain": domain }), || async {
            Ok::<_, OpError>(libvirt.start(&domain).await?)
        })
        .await?;
        Ok::<_, OpError>(())
    }
    .await;
    match steps {
        Ok(()) => {
            op.complete().await?;
            set_status(services, id, ServerStatus::Active, None, None).await
        }
        Err(e) => {
            let fault = crate::api::error::chain(&e);
            if let Err(undo) = op.roll_back(&fault).await? {
                tracing::error!(server_id = %id, %undo, "rollback of a failed build is incomplete");
            }
            set_status(services, id, ServerStatus::Error, None, Some(&fault)).await?;
            Err(e)
        }
    }
}

/// Journal kind of a server build.
pub const KIND: &str = "server.create";

/// Undoes the steps of an interrupted or failed build.
pub(crate) struct CreateHandler {
    services: Services,
}

impl CreateHandler {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

impl OperationHandler for CreateHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            undo_step(&self.services, &op.resource_id, op.error.as_deref(), step).await
        })
    }
}

/// Undo of one build step; shared with rebuild, whose steps have the same names.
pub(crate) async fn undo_step(
    services: &Services,
    server_id: &str,
    error: Option<&str>,
    step: &StepRecord,
) -> Result<(), String> {
    let libvirt = services.libvirt();
    let text = |key: &str| step.data[key].as_str().unwrap_or_default().to_string();
    match step.name.as_str() {
        "start" => libvirt
            .destroy(&text("domain"))
            .await
            .map_err(|e| e.to_string()),
        "define" => libvirt
            .undefine(&text("domain"))
            .await
            .map_err(|e| e.to_string()),
        "disks" => match std::fs::remove_dir_all(text("dir")) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", text("dir"))),
        },
        "record" => {
            let fault = error.unwrap_or("the build was interrupted by an agent restart");
            set_status(services, server_id, ServerStatus::Error, None, Some(fault))
                .await
                .map_err(|e| e.to_string())
        }
        other => Err(format!("unknown step {other}")),
    }
}
