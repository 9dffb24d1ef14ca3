//! Image operations: create a record, upload its bytes, list, show, delete.

use super::{OpError, Services};
use crate::image::inspect::DiskFormat;
use crate::state::ImageRecord;
use futures_util::Stream;
use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Accepted `disk_format` values.
pub const DISK_FORMATS: [&str; 8] = ["raw", "qcow2", "vmdk", "vdi", "vhdx", "aki", "ari", "ami"];
/// Accepted `container_format` values.
pub const CONTAINER_FORMATS: [&str; 4] = ["bare", "aki", "ari", "ami"];
/// Properties whose value must be an image id.
const IMAGE_REF_PROPERTIES: [&str; 2] = ["kernel_id", "ramdisk_id"];

fn disk_format_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("raw, qcow2, vmdk, vdi, vhdx, aki, ari or ami."))
        .enum_values(Some(DISK_FORMATS))
        .build()
}

fn container_format_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("bare, aki (kernel), ari (ramdisk) or ami."))
        .enum_values(Some(CONTAINER_FORMATS))
        .build()
}

/// `POST /v1/images` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageCreate {
    /// Client-chosen id (a UUID) [default: a new one]. A repeat with the same id and the same
    /// body returns the existing resource (a controller's retry makes no duplicate); the same
    /// id with a different body is 409.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// Name, 1–255 characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    pub name: String,
    /// raw, qcow2, vmdk, vdi, vhdx, aki, ari or ami.
    #[schema(schema_with = disk_format_schema)]
    pub disk_format: String,
    /// bare, aki (kernel), ari (ramdisk) or ami.
    #[schema(schema_with = container_format_schema)]
    pub container_format: String,
    /// Properties; `kernel_id`, `ramdisk_id` and `os_command_line` on a root image mean direct
    /// kernel boot.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl ImageCreate {
    /// Checks the request before anything is created.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the first problem.
    pub fn validate(&self) -> Result<(), OpError> {
        let bad = |m: String| Err(OpError::InvalidInput(m));
        let len = self.name.chars().count();
        if len == 0 || len > 255 {
            return bad(format!("name must have 1 to 255 characters, not {len}"));
        }
        if self.name.chars().any(char::is_control) {
            return bad("name must not contain control characters".into());
        }
        if !DISK_FORMATS.contains(&self.disk_format.as_str()) {
            return bad(format!(
                "disk_format {:?} is not one of {}",
                self.disk_format,
                DISK_FORMATS.join(", ")
            ));
        }
        if !CONTAINER_FORMATS.contains(&self.container_format.as_str()) {
            return bad(format!(
                "container_format {:?} is not one of {}",
                self.container_format,
                CONTAINER_FORMATS.join(", ")
            ));
        }
        for kind in ["aki", "ari"] {
            if (self.container_format == kind) != (self.disk_format == kind) {
                return bad(format!(
                    "container_format {kind} goes with disk_format {kind} (got {}/{})",
                    self.container_format, self.disk_format
                ));
            }
        }
        for (key, value) in &self.properties {
            if key.is_empty() || key.chars().count() > 255 {
                return bad(format!(
                    "property name {key:?} must have 1 to 255 characters"
                ));
            }
            if value.chars().count() > 65_535 {
                return bad(format!("property {key} is longer than 65535 characters"));
            }
            if let Some(field) = IMAGE_REF_PROPERTIES.iter().find(|p| **p == key) {
                if uuid::Uuid::parse_str(value).is_err() {
                    return Err(OpError::unknown(field, value, "image"));
                }
            }
        }
        Ok(())
    }

    /// The format used to inspect the upload.
    fn inspect_format(&self) -> DiskFormat {
        match self.disk_format.as_str() {
            "qcow2" => DiskFormat::Qcow2,
            "vmdk" => DiskFormat::Vmdk,
            "vdi" => DiskFormat::Vdi,
            "vhdx" => DiskFormat::Vhdx,
            _ => DiskFormat::Raw,
        }
    }
}

/// Creates a `queued` image record.
///
/// # Errors
/// [`OpError::InvalidInput`] for a bad request (nothing is created), [`OpError::Store`].
pub async fn create(services: &Services, req: ImageCreate) -> Result<ImageRecord, OpError> {
    req.validate()?;
    let id = req
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let image = services
        .store()
        .insert_image(
            &id,
            &req.name,
            &req.disk_format,
            &req.container_format,
            &req.properties,
        )
        .await?;
    publish(services, "image.created", &image).await;
    Ok(image)
}

/// One image.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such image.
pub async fn get(services: &Services, id: &str) -> Result<ImageRecord, OpError> {
    services
        .store()
        .get_image(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "image",
            id: id.to_string(),
        })
}

/// All images.
///
/// # Errors
/// [`OpError::Store`].
pub async fn list(services: &Services) -> Result<Vec<ImageRecord>, OpError> {
    Ok(services.store().list_images().await?)
}

/// Receives, inspects and stores the bytes of a `queued` image, which becomes `active`.
///
/// # Errors
/// [`OpError::NotFound`], [`OpError::Conflict`] when the image is not `queued`, and
/// [`OpError::Image`] when the bytes are refused (the image stays `queued` with the reason).
pub async fn upload<S, E>(services: &Services, id: &str, body: S) -> Result<ImageRecord, OpError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let image = get(services, id).await?;
    let declared = ImageCreate {
        id: None,
        name: image.name.clone(),
        disk_format: image.disk_format.clone(),
        container_format: image.container_format.clone(),
        properties: BTreeMap::new(),
    }
    .inspect_format();
    if !services.store().begin_image_upload(id).await? {
        return Err(OpError::Conflict(format!(
            "image {id} is {} and takes no upload; create a new image",
            serde_json::to_value(image.status)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("busy")
        )));
    }
    let cache = services.images();
    let stored = async {
        let received = cache.receive(body).await?;
        let (sha256, size) = (received.sha256.clone(), received.size);
        let blob = cache.store(received, declared).await?;
        Ok::<_, crate::image::ImageError>(crate::state::StoredImage {
            checksum: sha256,
            size,
            virtual_size: blob.virtual_size,
            stored_format: blob.format.as_str().to_string(),
            blob: blob.name,
        })
    }
    .await;
    match stored {
        Ok(stored) => {
            services.store().activate_image(id, &stored).await?;
            let image = get(services, id).await?;
            publish(services, "image.active", &image).await;
            Ok(image)
        }
        Err(e) => {
            let message = crate::api::error::chain(&e);
            services.store().fail_image_upload(id, &message).await?;
            Err(OpError::Image(e))
        }
    }
}

/// Deletes an image unless a server uses it; removes the cached bytes when no other image
/// shares them.
///
/// # Errors
/// [`OpError::NotFound`], [`OpError::Conflict`] naming the servers that use it.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    let image = get(services, id).await?;
    let users = services.store().servers_using_image(id).await?;
    if !users.is_empty() {
        return Err(OpError::Conflict(format!(
            "image {id} is in use by server(s) {}; delete them first",
            users.join(", ")
        )));
    }
    if let Some(blob) = services.store().delete_image(id).await? {
        services.images().remove(&blob);
    }
    publish(services, "image.deleted", &image).await;
    Ok(())
}

async fn publish(services: &Services, kind: &str, image: &ImageRecord) {
    let data = serde_json::json!({ "status": image.status, "name": image.name });
    if let Err(e) = services
        .events()
        .publish(kind, "image", &image.id, data)
        .await
    {
        tracing::warn!(error = %e, "could not publish {kind}");
    }
}
