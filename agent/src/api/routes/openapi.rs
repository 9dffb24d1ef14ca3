//! `GET /v1/openapi.json` — the API description, generated from the code.

use axum::Json;

/// The OpenAPI document of this agent.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "agent",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::api::openapi::document())
}
