//! `/v1/servers` — virtual machines on this node.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::{ApiJson, CreateJson};
use crate::ops::servers::{self, ActionOutput, Server, ServerAction, ServerCreate, ServerStats};
use crate::ops::{idempotent, Services};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/servers` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerList {
    /// The servers, oldest first.
    pub servers: Vec<Server>,
}

/// Creates a server: 202 with status BUILD; it becomes ACTIVE (or ERROR with a fault).
#[utoipa::path(post, path = "/v1/servers", tag = "servers", security(("bearer" = [])),
    request_body = ServerCreate,
    responses(
        (status = 202, description = "Accepted, building", body = Server),
        (status = 400, description = "Invalid request; nothing created", body = ErrorBody),
        (status = 404, description = "image_id, boot_volume_id, a network_id or a port_id names nothing (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The node cannot take the server (capacity, disabled, another availability zone), an image is not active yet; or the client-chosen id belongs to a resource made by another request", body = ErrorBody),
    ))]
pub async fn create(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<ServerCreate>,
) -> Result<(StatusCode, Json<Server>), ApiError> {
    let s = &services;
    let server = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        servers::create(s, req)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(server)))
}

/// Lists servers.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", security(("bearer" = [])),
    responses((status = 200, description = "All servers", body = ServerList)))]
pub async fn list(State(services): State<Services>) -> Result<Json<ServerList>, ApiError> {
    Ok(Json(ServerList {
        servers: servers::list(&services).await?,
    }))
}

/// Shows one server.
#[utoipa::path(get, path = "/v1/servers/{id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    responses((status = 200, description = "The server", body = Server),
        (status = 301, description = "The server moved to another node (live migration): \
            `Location` is its URL there, the body names the node", body = MovedAnswer),
        (status = 404, description = "No such server", body = ErrorBody)))]
pub async fn show(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match servers::get(&services, &id).await {
        Ok(server) => Ok(Json(server).into_response()),
        Err(e @ crate::ops::OpError::NotFound { .. }) => {
            let moved = services
                .store()
                .get_moved(&id)
                .await
                .map_err(crate::ops::OpError::from)?;
            let Some(moved) = moved else {
                return Err(e.into());
            };
            let location = format!("{}/v1/servers/{id}", moved.api_url.trim_end_matches('/'));
            Ok((
                axum::http::StatusCode::MOVED_PERMANENTLY,
                [(axum::http::header::LOCATION, location)],
                Json(MovedAnswer { moved_to: moved }),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/servers/{id}` of a server that moved away.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MovedAnswer {
    /// Where it went.
    pub moved_to: crate::state::MovedServer,
}

/// Deletes a server: 202 with status DELETED; it is gone when the domain and files are.
#[utoipa::path(delete, path = "/v1/servers/{id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    responses((status = 202, description = "Accepted, deleting", body = Server),
        (status = 404, description = "No such server", body = ErrorBody)))]
pub async fn delete(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Server>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(servers::delete(&services, &id).await?),
    ))
}

/// Runs one action: `{"start": null}`, `{"reboot": {"type": "HARD"}}`, `{"rebuild":
/// {"image_id": "…"}}`, `{"resize": {"flavor": {…}}}`, `{"console_output": {"length": 50}}`,
/// `{"set_password": {"password": "…"}}`, …
#[utoipa::path(post, path = "/v1/servers/{id}/action", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    request_body(content = Object, description = "Exactly one key naming the action"),
    responses(
        (status = 200, description = "Console output, or done (set_password)", body = ActionOutput),
        (status = 202, description = "Accepted, running in the background", body = Server),
        (status = 400, description = "Unknown action or bad arguments", body = ErrorBody),
        (status = 404, description = "No such server, or rebuild's image_id names no image (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "Not allowed in the current status, busy, or no guest agent", body = ErrorBody),
        (status = 504, description = "The hypervisor did not answer in time", body = ErrorBody),
    ))]
pub async fn action(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<ActionOutput>), ApiError> {
    let action = ServerAction::parse(body)?;
    let output = servers::action(&services, &id, action).await?;
    let status = match output {
        ActionOutput::Accepted(_) => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(output)))
}

/// Live CPU, memory and block figures from QMP.
#[utoipa::path(get, path = "/v1/servers/{id}/stats", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    responses((status = 200, description = "Figures", body = ServerStats),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 504, description = "QEMU did not answer in time", body = ErrorBody)))]
pub async fn stats(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<ServerStats>, ApiError> {
    Ok(Json(servers::stats(&services, &id).await?))
}

/// Hot-attaches a NIC: `{network_id}`, `{network_id, fixed_ip}` or `{port_id}`.
#[utoipa::path(post, path = "/v1/servers/{id}/interfaces", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    request_body = crate::ops::networks::ports::NetworkRequest,
    responses((status = 200, description = "The server with the new NIC", body = Server),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "No such server, or network_id/port_id names nothing (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "Address or port taken, or the server cannot change now", body = ErrorBody)))]
pub async fn attach_interface(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<crate::ops::networks::ports::NetworkRequest>,
) -> Result<Json<Server>, ApiError> {
    Ok(Json(
        servers::interfaces::attach(&services, &id, req).await?,
    ))
}

/// Hot-detaches a NIC and releases its port.
#[utoipa::path(delete, path = "/v1/servers/{id}/interfaces/{port_id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id"), ("port_id" = String, Path, description = "The NIC's port")),
    responses((status = 200, description = "The server without the NIC", body = Server),
        (status = 404, description = "No such server or interface", body = ErrorBody),
        (status = 409, description = "The server cannot change now", body = ErrorBody)))]
pub async fn detach_interface(
    State(services): State<Services>,
    Path((id, port_id)): Path<(String, String)>,
) -> Result<Json<Server>, ApiError> {
    Ok(Json(
        servers::interfaces::detach(&services, &id, &port_id).await?,
    ))
}
