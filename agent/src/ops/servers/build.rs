//! What a server's domain looks like, and its disks.

use super::model::ServerSpec;
use crate::compute::{Boot, Disk, DiskSource, DomainMetadata, DomainSpec, Smbios};
use crate::image::{qcow2, qemu_img, ImageError};
use crate::ops::{OpError, Services};
use crate::state::{ImageRecord, ImageStatus};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Kernel command line when a kernel image's root image names none.
pub const DEFAULT_CMDLINE: &str = "root=/dev/vda console=ttyS0";
const GIB: u64 = 1024 * 1024 * 1024;
const QEMU_IMG_DEADLINE: Duration = Duration::from_secs(120);

/// The files a server's domain uses from the image cache.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImages {
    pub root_blob: PathBuf,
    pub root_format: String,
    pub root_virtual_size: u64,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

pub(crate) async fn active_image(
    services: &Services,
    id: &str,
    role: &str,
) -> Result<ImageRecord, OpError> {
    let image = services
        .store()
        .get_image(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "image",
            id: id.to_string(),
        })?;
    if image.status != ImageStatus::Active {
        // The request is fine; the image is not ready yet (as a volume that is not available).
        return Err(OpError::Conflict(format!(
            "{role} image {id} is not active (upload its bytes first)"
        )));
    }
    Ok(image)
}

pub(crate) fn blob_of(services: &Services, image: &ImageRecord) -> Result<PathBuf, OpError> {
    let blob = image.blob.as_deref().ok_or_else(|| {
        OpError::Store(crate::state::StoreError::Corrupt(format!(
            "active image {} has no cached file",
            image.id
        )))
    })?;
    Ok(services.images().blob_path(blob))
}

/// Looks up the root image (and the kernel and ramdisk it names) and checks their kinds.
pub(crate) async fn resolve_images(
    services: &Services,
    image_id: &str,
) -> Result<(ResolvedImages, ImageRecord), OpError> {
    let root = active_image(services, image_id, "root").await?;
    if root.container_format != "bare" && root.container_format != "ami" {
        return Err(OpError::InvalidInput(format!(
            "image {image_id} has container_format {}; servers boot from bare or ami images",
            root.container_format
        )));
    }
    let mut kernel = None;
    let mut initrd = None;
    if let Some(kid) = root.properties.get("kernel_id") {
        let k = active_image(services, kid, "kernel").await?;
        if k.container_format != "aki" {
            return Err(OpError::InvalidInput(format!(
                "kernel_id {kid} is not a kernel (aki) image"
            )));
        }
        kernel = Some(blob_of(services, &k)?);
    }
    if let Some(rid) = root.properties.get("ramdisk_id") {
        let r = active_image(services, rid, "ramdisk").await?;
        if r.container_format != "ari" {
            return Err(OpError::InvalidInput(format!(
                "ramdisk_id {rid} is not a ramdisk (ari) image"
            )));
        }
        if kernel.is_none() {
            return Err(OpError::InvalidInput(format!(
                "image {image_id} names a ramdisk_id but no kernel_id"
            )));
        }
        initrd = Some(blob_of(services, &r)?);
    }
    let resolved = ResolvedImages {
        root_blob: blob_of(services, &root)?,
        root_format: root.stored_format.clone().unwrap_or_else(|| "raw".into()),
        root_virtual_size: root.virtual_size.unwrap_or(0),
        kernel,
        initrd,
    };
    Ok((resolved, root))
}

/// The root disk size in bytes: the flavor's, or the image's when the flavor says 0.
pub(crate) fn root_size(spec: &ServerSpec, images: &ResolvedImages) -> u64 {
    if spec.flavor.disk_gb == 0 {
        images.root_virtual_size
    } else {
        spec.flavor.disk_gb * GIB
    }
}

/// Checks that the flavor's root disk can hold the image.
pub(crate) fn check_fits(spec: &ServerSpec, images: &ResolvedImages) -> Result<(), OpError> {
    if spec.flavor.disk_gb != 0 && spec.flavor.disk_gb * GIB < images.root_virtual_size {
        return Err(OpError::InvalidInput(format!(
            "flavor.disk_gb {} is smaller than the image's virtual size ({} bytes, {:.1} GiB)",
            spec.flavor.disk_gb,
            images.root_virtual_size,
            images.root_virtual_size as f64 / GIB as f64
        )));
    }
    Ok(())
}

/// A server's disks in guest order: root (`vda`: overlay or boot volume), ephemeral, swap,
/// then attached volumes.
pub(crate) fn disks(spec: &ServerSpec) -> Vec<Disk> {
    let mut disks = vec![match &spec.boot_volume {
        Some(boot) => boot.disk.disk("vda", &boot.volume_id),
        None => Disk {
            target: "vda".into(),
            source: DiskSource::File {
                path: spec.root_disk(),
                format: "qcow2".into(),
            },
            serial: None,
            read_only: false,
        },
    }];
    let mut next = b'b';
    if spec.flavor.ephemeral_gb > 0 {
        disks.push(Disk {
            target: format!("vd{}", next as char),
            source: DiskSource::File {
                path: spec.ephemeral_disk(),
                format: "qcow2".into(),
            },
            serial: None,
            read_only: false,
        });
        next += 1;
    }
    if spec.flavor.swap_mb > 0 {
        disks.push(Disk {
            target: format!("vd{}", next as char),
            source: DiskSource::File {
                path: spec.swap_disk(),
                format: "raw".into(),
            },
            serial: None,
            read_only: false,
        });
    }
    disks.extend(
        spec.volumes
            .iter()
            .map(|v| v.disk.disk(&v.device, &v.volume_id)),
    );
    disks
}

/// The libvirt definition of a server.
pub(crate) fn domain_spec(
    services: &Services,
    id: &str,
    name: &str,
    spec: &ServerSpec,
    images: &ResolvedImages,
) -> DomainSpec {
    let boot = match &images.kernel {
        Some(kernel) => Boot::Kernel {
            kernel: kernel.clone(),
            initrd: images.initrd.clone(),
            cmdline: spec
                .os_command_line
                .clone()
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
        },
        None => Boot::Disk,
    };
    let disks = disks(spec);
    DomainSpec {
        name: spec.domain_name.clone(),
        uuid: id.to_string(),
        domain_type: services.domain_type(),
        memory_mib: spec.flavor.ram_mb,
        vcpus: spec.flavor.vcpus,
        boot,
        smbios: Smbios::nova(id),
        disks,
        nics: spec.nics.iter().map(|n| n.domain_nic()).collect(),
        console_log: spec.console_log(),
        vnc: services.config().consoles.vnc,
        metadata: domain_metadata(services, id, name, spec),
        addresses: Default::default(),
    }
}

fn io(context: &str, path: &std::path::Path, e: std::io::Error) -> OpError {
    OpError::Image(ImageError::Io {
        context: format!("{context} {}", path.display()),
        source: e,
    })
}

/// Creates the server's directory, its root overlay (natively) and its ephemeral and swap
/// disks. Fails when the directory already exists.
pub(crate) async fn create_disks(
    spec: &ServerSpec,
    images: &ResolvedImages,
) -> Result<(), OpError> {
    let dir = spec.dir.clone();
    std::fs::create_dir(&dir).map_err(|e| io("cannot create", &dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("cannot chmod", &dir, e))?;
    if spec.boot_volume.is_none() {
        create_root(spec, images).await?;
    }
    if spec.flavor.ephemeral_gb > 0 {
        let path = spec.ephemeral_disk().display().to_string();
        let size = format!("{}G", spec.flavor.ephemeral_gb);
        qemu_img::run(
            &["create", "-q", "-f", "qcow2", &path, &size],
            QEMU_IMG_DEADLINE,
        )
        .await?;
    }
    if spec.flavor.swap_mb > 0 {
        let path = spec.swap_disk().display().to_string();
        let size = format!("{}M", spec.flavor.swap_mb);
        qemu_img::run(
            &["create", "-q", "-f", "raw", &path, &size],
            QEMU_IMG_DEADLINE,
        )
        .await?;
    }
    Ok(())
}

/// (Re)creates the root overlay over the root image, natively.
pub(crate) async fn create_root(spec: &ServerSpec, images: &ResolvedImages) -> Result<(), OpError> {
    let root = spec.root_disk();
    let backing = images.root_blob.clone();
    let format = images.root_format.clone();
    let size = root_size(spec, images);
    tokio::task::spawn_blocking(move || qcow2::create_overlay(&root, &backing, &format, size))
        .await
        .map_err(|e| OpError::Image(ImageError::Overlay(format!("worker failed: {e}"))))?
        .map_err(|e| OpError::Image(ImageError::Overlay(e.to_string())))
}

/// Grows the root overlay to the flavor's size (resize).
pub(crate) async fn grow_root(spec: &ServerSpec, images: &ResolvedImages) -> Result<(), OpError> {
    let path = spec.root_disk().display().to_string();
    let size = root_size(spec, images).to_string();
    qemu_img::run(
        &["resize", "-q", "-f", "qcow2", &path, &size],
        QEMU_IMG_DEADLINE,
    )
    .await?;
    Ok(())
}

/// Removes the server's directory; succeeds when it is already gone.
pub(crate) fn remove_dir(spec: &ServerSpec) -> Result<(), String> {
    match std::fs::remove_dir_all(&spec.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", spec.dir.display())),
    }
}

/// The agent's `<metadata>` of a server's domain.
pub(crate) fn domain_metadata(
    services: &Services,
    id: &str,
    name: &str,
    spec: &ServerSpec,
) -> DomainMetadata {
    DomainMetadata {
        node_id: services.node_id().to_string(),
        server_id: id.to_string(),
        server_name: name.to_string(),
        // Anyone with read-only libvirt access reads this: no user data, no keys.
        spec_json: serde_json::to_string(&spec.without_secrets()).unwrap_or_default(),
    }
}
