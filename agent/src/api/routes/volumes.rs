//! `/v1/volume-types`, `/v1/volumes`, `/v1/snapshots`, `/v1/backends` — the cinder half —
//! and `/v1/servers/{id}/volumes` (attach, detach).

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::{ApiJson, CreateJson};
use crate::ops::volumes::snapshots::{self, SnapshotCreate};
use crate::ops::volumes::types::{self, VolumeTypeCreate};
use crate::ops::volumes::{self, attach, Backend, VolumeCreate};
use crate::ops::{idempotent, Services};
use crate::state::{Snapshot, Volume, VolumeType};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/volume-types` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeTypeList {
    /// The types, by name.
    pub volume_types: Vec<VolumeType>,
}

/// `GET /v1/volumes` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeList {
    /// The volumes, oldest first.
    pub volumes: Vec<Volume>,
}

/// `GET /v1/snapshots` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotList {
    /// The snapshots, oldest first.
    pub snapshots: Vec<Snapshot>,
}

/// `GET /v1/backends` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendList {
    /// Configured volume backends with their capacity.
    pub backends: Vec<Backend>,
}

/// Filter of `GET /v1/snapshots`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFilter {
    /// Only this volume's.
    pub volume_id: Option<String>,
}

/// `POST /v1/volumes/{id}/action`: `{"extend": {"new_size_gb": N}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeAction {
    /// Grow the volume.
    pub extend: ExtendArgs,
}

/// Arguments of `extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendArgs {
    /// The new size, GiB; larger than the current one.
    pub new_size_gb: i64,
}

/// `POST /v1/servers/{id}/volumes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttach {
    /// The volume to attach.
    pub volume_id: String,
}

/// Creates a volume type bound to a backend: 201.
#[utoipa::path(post, path = "/v1/volume-types", tag = "volumes", security(("bearer" = [])),
    request_body = VolumeTypeCreate,
    responses((status = 201, description = "Created", body = VolumeType),
        (status = 400, description = "Bad name or unknown backend", body = ErrorBody),
        (status = 404, description = "backend names no configured volume driver (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub async fn create_type(
    State(services): State<Services>,
    ApiJson(req): ApiJson<VolumeTypeCreate>,
) -> Result<(StatusCode, Json<VolumeType>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(types::create(&services, req).await?),
    ))
}

/// Lists volume types.
#[utoipa::path(get, path = "/v1/volume-types", tag = "volumes", security(("bearer" = [])),
    responses((status = 200, description = "Volume types", body = VolumeTypeList)))]
pub async fn list_types(
    State(services): State<Services>,
) -> Result<Json<VolumeTypeList>, ApiError> {
    Ok(Json(VolumeTypeList {
        volume_types: types::list(&services).await?,
    }))
}

/// Deletes a volume type no volume uses: 204.
#[utoipa::path(delete, path = "/v1/volume-types/{id}", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Type id or name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such type", body = ErrorBody),
        (status = 409, description = "Volumes use it", body = ErrorBody)))]
pub async fn delete_type(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    types::delete(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a volume: 202 `creating`, then `available` (or `error` with the cause).
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", security(("bearer" = [])),
    request_body = VolumeCreate,
    responses((status = 202, description = "Accepted, creating", body = Volume),
        (status = 400, description = "Bad size or name, several sources, a source too large for the size; nothing created", body = ErrorBody),
        (status = 404, description = "volume_type, image_id, snapshot_id or source_volid names nothing (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The backend is full (names it and its free capacity), the source is busy or its image not active yet, or no volume_type is given and none is the default; or the client-chosen id belongs to a resource made by another request", body = ErrorBody)))]
pub async fn create_volume(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<VolumeCreate>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let s = &services;
    let volume = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        volumes::create(s, req)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(volume)))
}

/// Lists volumes.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", security(("bearer" = [])),
    responses((status = 200, description = "Volumes", body = VolumeList)))]
pub async fn list_volumes(State(services): State<Services>) -> Result<Json<VolumeList>, ApiError> {
    Ok(Json(VolumeList {
        volumes: volumes::list(&services).await?,
    }))
}

/// Shows one volume.
#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id")),
    responses((status = 200, description = "The volume", body = Volume),
        (status = 404, description = "No such volume", body = ErrorBody)))]
pub async fn show_volume(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(volumes::get(&services, &id).await?))
}

/// Deletes a volume that is neither attached nor snapshotted: 202 with it `deleting`, then
/// gone (`volume.deleted`), or `error_deleting` with the cause.
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id")),
    responses((status = 202, description = "Accepted: the volume deleting", body = Volume),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Attached, has snapshots, or busy", body = ErrorBody)))]
pub async fn delete_volume(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(volumes::delete(&services, &id).await?),
    ))
}

/// Runs a volume action: `{"extend": {"new_size_gb": N}}`: 202 with the volume `extending`,
/// then `available` at the new size (or at the old one with the error).
#[utoipa::path(post, path = "/v1/volumes/{id}/action", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Volume id")),
    request_body = VolumeAction,
    responses((status = 202, description = "Accepted: the volume extending", body = Volume),
        (status = 400, description = "Not larger than the current size", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Not available, or the backend cannot hold it", body = ErrorBody)))]
pub async fn volume_action(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<VolumeAction>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(volumes::extend(&services, &id, req.extend.new_size_gb).await?),
    ))
}

/// Takes a snapshot: 202 with it `creating`, then `available` (or `error` with the cause).
#[utoipa::path(post, path = "/v1/snapshots", tag = "volumes", security(("bearer" = [])),
    request_body = SnapshotCreate,
    responses((status = 202, description = "Accepted: the snapshot creating", body = Snapshot),
        (status = 400, description = "Unknown volume", body = ErrorBody),
        (status = 404, description = "volume_id names no volume (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The volume is busy", body = ErrorBody)))]
pub async fn create_snapshot(
    State(services): State<Services>,
    ApiJson(req): ApiJson<SnapshotCreate>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(snapshots::create(&services, req).await?),
    ))
}

/// Lists snapshots.
#[utoipa::path(get, path = "/v1/snapshots", tag = "volumes", security(("bearer" = [])),
    params(SnapshotFilter),
    responses((status = 200, description = "Snapshots", body = SnapshotList)))]
pub async fn list_snapshots(
    State(services): State<Services>,
    Query(filter): Query<SnapshotFilter>,
) -> Result<Json<SnapshotList>, ApiError> {
    Ok(Json(SnapshotList {
        snapshots: snapshots::list(&services, filter.volume_id.as_deref()).await?,
    }))
}

/// Shows one snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, description = "The snapshot", body = Snapshot),
        (status = 404, description = "No such snapshot", body = ErrorBody)))]
pub async fn show_snapshot(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(snapshots::get(&services, &id).await?))
}

/// Deletes a snapshot: 202 with it `deleting`, then gone (`snapshot.deleted`), or
/// `error_deleting` with the cause (e.g. volumes depend on it).
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "volumes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 202, description = "Accepted: the snapshot deleting", body = Snapshot),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 409, description = "It is being created or deleted", body = ErrorBody)))]
pub async fn delete_snapshot(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(snapshots::delete(&services, &id).await?),
    ))
}

/// Lists volume backends with their capacity (cinder's pools).
#[utoipa::path(get, path = "/v1/backends", tag = "volumes", security(("bearer" = [])),
    responses((status = 200, description = "Backends", body = BackendList)))]
pub async fn list_backends(
    State(services): State<Services>,
) -> Result<Json<BackendList>, ApiError> {
    Ok(Json(BackendList {
        backends: volumes::backends(&services).await?,
    }))
}

/// Attaches a volume to a server (hot-plug when it runs): 202 with the volume `attaching`,
/// then `in-use` (or `available` again with the error).
#[utoipa::path(post, path = "/v1/servers/{id}/volumes", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    request_body = VolumeAttach,
    responses((status = 202, description = "Accepted: the volume attaching, its device reserved", body = Volume),
        (status = 400, description = "Unknown volume", body = ErrorBody),
        (status = 404, description = "No such server, or volume_id names no volume (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The volume is not available, or the server cannot change now", body = ErrorBody)))]
pub async fn attach_volume(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<VolumeAttach>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(attach::attach(&services, &id, &req.volume_id).await?),
    ))
}

/// Detaches a volume from a server: 202 with the volume `detaching`, then `available` once the
/// guest released the disk (or `in-use` again with the error).
#[utoipa::path(delete, path = "/v1/servers/{id}/volumes/{volume_id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id"), ("volume_id" = String, Path, description = "Volume id")),
    responses((status = 202, description = "Accepted: the volume detaching", body = Volume),
        (status = 404, description = "No such server, or the volume is not attached to it", body = ErrorBody),
        (status = 409, description = "The server cannot change now, or it is the root disk", body = ErrorBody)))]
pub async fn detach_volume(
    State(services): State<Services>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(attach::detach(&services, &id, &volume_id).await?),
    ))
}
