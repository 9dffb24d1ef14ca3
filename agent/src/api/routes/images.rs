//! `/v1/images` — the node's image cache.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::CreateJson;
use crate::ops::images::{self, ImageCreate};
use crate::ops::{idempotent, Services};
use crate::state::ImageRecord;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/images` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageList {
    /// The images, oldest first.
    pub images: Vec<ImageRecord>,
}

/// Creates an image record in status `queued`; upload its bytes with `PUT /v1/images/{id}/file`.
#[utoipa::path(post, path = "/v1/images", tag = "images", security(("bearer" = [])),
    request_body = ImageCreate,
    responses(
        (status = 201, description = "Created, queued", body = ImageRecord),
        (status = 400, description = "Invalid request; nothing created", body = ErrorBody),
        (status = 404, description = "kernel_id or ramdisk_id names no image (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The client-chosen id belongs to an image made by another request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn create(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<ImageCreate>,
) -> Result<(StatusCode, Json<ImageRecord>), ApiError> {
    let s = &services;
    let image = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        images::create(s, req)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Lists images.
#[utoipa::path(get, path = "/v1/images", tag = "images", security(("bearer" = [])),
    responses((status = 200, description = "All images", body = ImageList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
pub async fn list(State(services): State<Services>) -> Result<Json<ImageList>, ApiError> {
    Ok(Json(ImageList {
        images: images::list(&services).await?,
    }))
}

/// Shows one image.
#[utoipa::path(get, path = "/v1/images/{id}", tag = "images", security(("bearer" = [])),
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, description = "The image", body = ImageRecord),
        (status = 404, description = "No such image", body = ErrorBody)))]
pub async fn show(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<ImageRecord>, ApiError> {
    Ok(Json(images::get(&services, &id).await?))
}

/// Deletes an image (409 while a server uses it).
#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images", security(("bearer" = [])),
    params(("id" = String, Path, description = "Image id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "A server uses the image", body = ErrorBody)))]
pub async fn delete(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    images::delete(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads the image's bytes (`application/octet-stream`, streamed). The bytes are inspected
/// before anything else reads them; unsafe images are refused with 400 and the reason.
#[utoipa::path(put, path = "/v1/images/{id}/file", tag = "images", security(("bearer" = [])),
    params(("id" = String, Path, description = "Image id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored; the image is active", body = ImageRecord),
        (status = 400, description = "Refused by inspection or conversion", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "The image is not queued", body = ErrorBody),
        (status = 413, description = "Over the upload limit", body = ErrorBody),
        (status = 415, description = "Not application/octet-stream", body = ErrorBody)))]
pub async fn upload(
    State(services): State<Services>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImageRecord>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the image bytes with Content-Type: application/octet-stream",
        ));
    }
    let stream = body.into_data_stream();
    Ok(Json(images::upload(&services, &id, stream).await?))
}
