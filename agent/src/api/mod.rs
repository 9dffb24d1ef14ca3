//! The REST API (`/v1`).
//!
//! [`router`] holds the one route table. Each resource has a file under `routes/` whose
//! handlers extract and validate the request, call a typed operation in [`crate::ops`] and
//! turn the result into JSON. Errors are answered in one shape by [`error::ApiError`]; the
//! mapping from operation errors to statuses is [`error::status_of`].
//!
//! Adding an endpoint: write the operation in `ops/`, the handler (with `#[utoipa::path]`) in
//! `routes/<resource>.rs`, add one line to the table below and the path to
//! [`openapi::ApiDoc`], then regenerate `docs/openapi.json` with `hyperlet openapi`.

pub mod error;
pub mod json;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod schema_rules;
pub mod strict;

use crate::ops::Services;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;

/// Builds the HTTP application: routes, fallbacks and middleware.
pub fn router(services: Services) -> Router {
    let body_limit = services.config().api.body_limit_bytes;
    let node_page = if services.config().api.node_page {
        Router::new()
            .route("/ui", get(routes::ui::redirect))
            .route("/ui/", get(routes::ui::index))
            .route(middleware::UI_FILE_ROUTE, get(routes::ui::file))
    } else {
        Router::new()
    };
    Router::new()
        .merge(node_page)
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(routes::metrics::metrics))
        .route("/v1/openapi.json", get(routes::openapi::openapi))
        .route(
            "/v1/host",
            get(routes::host::show).patch(routes::host::update),
        )
        .route("/v1/events", get(routes::events::events))
        .route(
            "/v1/images",
            get(routes::images::list).post(routes::images::create),
        )
        .route(
            "/v1/images/{id}",
            get(routes::images::show).delete(routes::images::delete),
        )
        .route(
            middleware::UPLOAD_ROUTE,
            put(routes::images::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/servers",
            get(routes::servers::list).post(routes::servers::create),
        )
        .route(
            "/v1/servers/{id}",
            get(routes::servers::show).delete(routes::servers::delete),
        )
        .route("/v1/servers/{id}/action", post(routes::servers::action))
        .route("/v1/servers/{id}/stats", get(routes::servers::stats))
        .route(
            "/v1/servers/{id}/remote-consoles",
            post(routes::consoles::create),
        )
        .route(
            "/v1/servers/{id}/screenshot",
            get(routes::consoles::screenshot),
        )
        .route(middleware::CONSOLE_ROUTE, get(routes::consoles::open))
        .route(
            "/v1/servers/{id}/interfaces",
            post(routes::servers::attach_interface),
        )
        .route(
            "/v1/servers/{id}/interfaces/{port_id}",
            axum::routing::delete(routes::servers::detach_interface),
        )
        .route(
            "/v1/networks",
            get(routes::networks::list_networks).post(routes::networks::create_network),
        )
        .route(
            "/v1/networks/{id}",
            get(routes::networks::show_network).delete(routes::networks::delete_network),
        )
        .route(
            "/v1/subnets",
            get(routes::networks::list_subnets).post(routes::networks::create_subnet),
        )
        .route(
            "/v1/subnets/{id}",
            get(routes::networks::show_subnet).delete(routes::networks::delete_subnet),
        )
        .route(
            "/v1/ports",
            get(routes::networks::list_ports).post(routes::networks::create_port),
        )
        .route(
            "/v1/ports/{id}",
            get(routes::networks::show_port)
                .patch(routes::networks::update_port)
                .delete(routes::networks::delete_port),
        )
        .route(
            "/v1/security-groups",
            get(routes::security_groups::list_groups).post(routes::security_groups::create_group),
        )
        .route(
            "/v1/security-groups/{id}",
            get(routes::security_groups::show_group)
                .patch(routes::security_groups::update_group)
                .delete(routes::security_groups::delete_group),
        )
        .route(
            "/v1/security-group-rules",
            get(routes::security_groups::list_rules).post(routes::security_groups::create_rule),
        )
        .route(
            "/v1/security-group-rules/{id}",
            get(routes::security_groups::show_rule).delete(routes::security_groups::delete_rule),
        )
        .route(
            "/v1/volume-types",
            get(routes::volumes::list_types).post(routes::volumes::create_type),
        )
        .route(
            "/v1/volume-types/{id}",
            axum::routing::delete(routes::volumes::delete_type),
        )
        .route(
            "/v1/volumes",
            get(routes::volumes::list_volumes).post(routes::volumes::create_volume),
        )
        .route(
            "/v1/volumes/{id}",
            get(routes::volumes::show_volume).delete(routes::volumes::delete_volume),
        )
        .route(
            "/v1/volumes/{id}/action",
            post(routes::volumes::volume_action),
        )
        .route(
            "/v1/snapshots",
            get(routes::volumes::list_snapshots).post(routes::volumes::create_snapshot),
        )
        .route(
            "/v1/snapshots/{id}",
            get(routes::volumes::show_snapshot).delete(routes::volumes::delete_snapshot),
        )
        .route("/v1/backends", get(routes::volumes::list_backends))
        .route(
            "/v1/servers/{id}/volumes",
            post(routes::volumes::attach_volume),
        )
        .route(
            "/v1/servers/{id}/volumes/{volume_id}",
            axum::routing::delete(routes::volumes::detach_volume),
        )
        .route("/v1/plugins", get(routes::plugins::list))
        .route("/v1/scheduler/evaluate", post(routes::plugins::evaluate))
        .route("/v1/peer/migrations", post(routes::peer::prepare))
        .route(
            "/v1/peer/migrations/{id}/finish",
            post(routes::peer::finish),
        )
        .route("/v1/peer/migrations/{id}/abort", post(routes::peer::abort))
        .route(
            "/v1/peer/migrations/{id}/confirm",
            post(routes::peer::confirm),
        )
        .route(
            "/v1/peer/migrations/{id}/disks/{file}",
            get(routes::peer::disk_file),
        )
        .route("/v1/peer/images/{id}/file", get(routes::peer::image_file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(middleware::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::body_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::request_context,
        ))
        .with_state(services)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("No such route: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
