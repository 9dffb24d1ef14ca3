//! `GET /healthz` — liveness, without authentication.

use crate::fleet::link::LinkState;
use crate::ops::Services;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the agent answers (it keeps serving its servers and API even when a
    /// dependency such as etcd is down; `details` says which).
    pub status: String,
    /// Agent version.
    pub version: String,
    /// The state of the agent's dependencies.
    pub details: HealthDetails,
}

/// Dependencies as `/healthz` reports them.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDetails {
    /// The link to the fleet's etcd: `standalone`, `connecting`, `up` or `degraded`.
    pub fleet: LinkState,
}

/// Liveness probe.
#[utoipa::path(get, path = "/healthz", tag = "agent",
    responses((status = 200, description = "The agent is serving", body = Health)))]
pub async fn healthz(State(services): State<Services>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        details: HealthDetails {
            fleet: services.fleet_link().state(),
        },
    })
}
