//! Volume types: a name bound to a backend, one of them the default.

use crate::ops::{OpError, Services};
use crate::state::VolumeType;
use serde::Deserialize;
use utoipa::ToSchema;

/// `POST /v1/volume-types`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeTypeCreate {
    /// Name (1–255 characters, unique).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    pub name: String,
    /// The backend (a configured volume driver) that serves it.
    pub backend: String,
    /// Make it the default type.
    #[serde(default)]
    pub is_default: bool,
}

/// Every volume type.
///
/// # Errors
/// [`OpError::Store`].
pub async fn list(services: &Services) -> Result<Vec<VolumeType>, OpError> {
    Ok(services.store().list_volume_types().await?)
}

/// A type by id or name, or 404.
///
/// # Errors
/// [`OpError::NotFound`].
pub async fn get(services: &Services, id_or_name: &str) -> Result<VolumeType, OpError> {
    list(services)
        .await?
        .into_iter()
        .find(|t| t.id == id_or_name || t.name == id_or_name)
        .ok_or_else(|| OpError::NotFound {
            kind: "volume type",
            id: id_or_name.to_string(),
        })
}

/// The type a volume request names, or the default type.
///
/// # Errors
/// [`OpError::InvalidInput`] for an unknown type or when none is named and none is default.
pub async fn resolve(services: &Services, name: Option<&str>) -> Result<VolumeType, OpError> {
    let types = list(services).await?;
    match name {
        Some(n) => types
            .into_iter()
            .find(|t| t.name == n || t.id == n)
            .ok_or_else(|| OpError::unknown("volume_type", n, "volume type")),
        None => types.into_iter().find(|t| t.is_default).ok_or_else(|| {
            OpError::Conflict(
                "no volume_type given and no default type: create one with is_default".into(),
            )
        }),
    }
}

/// Creates a volume type.
///
/// # Errors
/// 400 for a bad name or an unknown backend; 409 for a taken name.
pub async fn create(services: &Services, req: VolumeTypeCreate) -> Result<VolumeType, OpError> {
    if req.name.is_empty()
        || req.name.chars().count() > 255
        || req.name.chars().any(char::is_control)
    {
        return Err(OpError::InvalidInput(
            "name must have 1 to 255 characters and no control characters".into(),
        ));
    }
    let backends = services.plugins().volume_driver_names();
    if !backends.contains(&req.backend) {
        return Err(OpError::unknown_among(
            "backend",
            &req.backend,
            "volume driver",
            &backends,
        ));
    }
    if list(services).await?.iter().any(|t| t.name == req.name) {
        return Err(OpError::Conflict(format!(
            "volume type {:?} exists",
            req.name
        )));
    }
    let t = VolumeType {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name,
        backend: req.backend,
        is_default: req.is_default,
        created_at: crate::state::now_rfc3339(),
    };
    services.store().insert_volume_type(t.clone()).await?;
    Ok(t)
}

/// Deletes a type no volume uses.
///
/// # Errors
/// 404 for an unknown type; 409 while volumes use it.
pub async fn delete(services: &Services, id_or_name: &str) -> Result<(), OpError> {
    let t = get(services, id_or_name).await?;
    let used = services.store().count_volumes_of_type(&t.name).await?;
    if used > 0 {
        return Err(OpError::Conflict(format!(
            "volume type {} is used by {used} volume(s)",
            t.name
        )));
    }
    services.store().delete_volume_type(&t.id).await?;
    Ok(())
}
