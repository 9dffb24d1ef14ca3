//! `/v1/peer/…`: what agents of one fleet call on each other during a migration. Only the
//! fleet's peer token opens these routes (the admin token does not), and they are not part of
//! the public API document. The work runs detached from the request: a caller that goes away
//! does not cut a preparation in half (it repeats the request and gets the same answer).

use crate::api::error::ApiError;
use crate::ops::migration::{cold, incoming, wire};
use crate::ops::{OpError, Services};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Runs `work` on its own task and waits for it.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, OpError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::from(OpError::Interrupted(format!("the work failed: {e}"))))?
        .map_err(ApiError::from)
}

/// `POST /v1/peer/migrations`: prepare for an incoming server.
pub async fn prepare(
    State(services): State<Services>,
    Json(req): Json<wire::IncomingRequest>,
) -> Result<Json<wire::IncomingAnswer>, ApiError> {
    Ok(Json(
        detached(async move { incoming::prepare(&services, req).await }).await?,
    ))
}

/// `POST /v1/peer/migrations/{id}/finish` `{"resume": bool}`: the server arrived.
pub async fn finish(
    State(services): State<Services>,
    Path(id): Path<String>,
    Json(body): Json<wire::FinishRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    detached(async move { incoming::finish(&services, &id, body.resume).await }).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `POST /v1/peer/migrations/{id}/abort`: undo the preparation.
pub async fn abort(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    detached(async move { incoming::abort(&services, &id).await }).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `POST /v1/peer/migrations/{id}/confirm`: the cold migration of the server away from here
/// is confirmed; the disks kept for a revert go.
pub async fn confirm(
    State(services): State<Services>,
    Path(id): Path<String>,
    Json(body): Json<wire::ConfirmRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    detached(async move { cold::confirmed(&services, &id, &body.secret).await }).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `GET /v1/peer/migrations/{id}/disks/{file}`: a disk file of a server this node is moving
/// away cold, streamed (only while that migration runs, only the server's own disk files).
pub async fn disk_file(
    State(services): State<Services>,
    Path((id, file)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let secret = headers
        .get(cold::SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = cold::served_disk(&services, &id, &file, secret).await?;
    stream_file(&path, &format!("disk {file} of server {id}")).await
}

/// `GET /v1/peer/images/{id}/file`: the cached file of an active image, streamed.
pub async fn image_file(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let image = crate::ops::servers::build::active_image(&services, &id, "requested").await?;
    let path = crate::ops::servers::build::blob_of(&services, &image)?;
    stream_file(&path, &format!("the cached file of image {id}")).await
}

async fn stream_file(path: &std::path::Path, what: &str) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::from(OpError::Interrupted(format!("cannot read {what}: {e}"))))?;
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
