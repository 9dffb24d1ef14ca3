//! `GET /metrics` — Prometheus text.

use crate::ops::Services;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// REST request counts and latencies by route, method and status; DHCP and metadata counters
/// by network; firewall drops by port and reason; the fleet link (with `[fleet]`).
#[utoipa::path(get, path = "/metrics", tag = "agent",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(services): State<Services>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        services.metrics().render()
            + &crate::metrics::render_networks(&services.net_runtime().counters())
            + &crate::metrics::render_port_drops(&services.firewall().drops().await)
            + &services.fleet_link().render_metrics()
            + &services.consoles().render_metrics(),
    )
}
