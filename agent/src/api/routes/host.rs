//! `/v1/host` — this node: hypervisor, capacity, service status.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::ApiJson;
use crate::ops::host::{self, HostReport, ServiceStatus, ServiceStatusUpdate};
use crate::ops::Services;
use axum::extract::State;
use axum::Json;

/// Describes this node from live figures.
#[utoipa::path(get, path = "/v1/host", tag = "host",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The node", body = HostReport),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn show(State(services): State<Services>) -> Result<Json<HostReport>, ApiError> {
    Ok(Json(host::describe(&services).await?))
}

/// Enables or disables the node for new servers (nova's service enable/disable).
#[utoipa::path(patch, path = "/v1/host", tag = "host",
    security(("bearer" = [])),
    request_body = ServiceStatusUpdate,
    responses(
        (status = 200, description = "The new status", body = ServiceStatus),
        (status = 400, description = "Malformed or invalid body; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn update(
    State(services): State<Services>,
    ApiJson(update): ApiJson<ServiceStatusUpdate>,
) -> Result<Json<ServiceStatus>, ApiError> {
    Ok(Json(host::set_service_status(&services, update).await?))
}
