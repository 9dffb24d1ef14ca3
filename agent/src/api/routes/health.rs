//! `GET /healthz` — liveness, without authentication.

use serde::Serialize;
use utoipa::ToSchema;

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the agent answers.
    pub status: String,
    /// Agent version.
    pub version: String,
}

/// Liveness probe.
#[utoipa::path(get, path = "/healthz", tag = "agent",
    responses((status = 200, description = "The agent is serving", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
    })
}
