//! `/v1/plugins` and `/v1/scheduler/evaluate`.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::ApiJson;
use crate::ops::scheduler::{self, EvaluateRequest};
use crate::ops::Services;
use crate::plugin::PluginView;
use crate::sched::Evaluation;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/plugins` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// Configured plugins, in chain order.
    pub plugins: Vec<PluginView>,
}

/// Lists the configured plugins: world, version, grants, status and why a plugin is not loaded.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, description = "The plugins", body = PluginList)))]
pub async fn list(State(services): State<Services>) -> Json<PluginList> {
    Json(PluginList {
        plugins: services.plugins().views(),
    })
}

/// Runs the filter/weigher chain for a request over this node, or over the hosts given.
#[utoipa::path(post, path = "/v1/scheduler/evaluate", tag = "plugins", security(("bearer" = [])),
    request_body = EvaluateRequest,
    responses(
        (status = 200, description = "Hosts that passed first, best first", body = Evaluation),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 502, description = "A plugin failed (trap, timeout, bad answer); named in the message", body = ErrorBody),
    ))]
pub async fn evaluate(
    State(services): State<Services>,
    ApiJson(req): ApiJson<EvaluateRequest>,
) -> Result<Json<Evaluation>, ApiError> {
    Ok(Json(scheduler::evaluate(&services, req).await?))
}
