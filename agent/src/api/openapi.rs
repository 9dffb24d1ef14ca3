//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! The same document is kept in the repository as `docs/openapi.json`; a test fails when the
//! two differ (regenerate with `hyperlet openapi > docs/openapi.json`).

use super::error::{ErrorBody, ErrorDetail};
use super::routes;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "hyperlet", description = "Per-node agent of a KVM cloud: REST API v1"),
    paths(
        routes::health::healthz,
        routes::metrics::metrics,
        routes::openapi::openapi,
        routes::host::show,
        routes::host::update,
        routes::events::events,
        routes::images::create,
        routes::images::list,
        routes::images::show,
        routes::images::delete,
        routes::images::upload,
        routes::servers::create,
        routes::servers::list,
        routes::servers::show,
        routes::servers::delete,
        routes::servers::action,
        routes::servers::stats,
        routes::servers::attach_interface,
        routes::servers::detach_interface,
        routes::networks::create_network,
        routes::networks::list_networks,
        routes::networks::show_network,
        routes::networks::delete_network,
        routes::networks::create_subnet,
        routes::networks::list_subnets,
        routes::networks::show_subnet,
        routes::networks::delete_subnet,
        routes::networks::create_port,
        routes::networks::list_ports,
        routes::networks::show_port,
        routes::networks::delete_port,
        routes::volumes::create_type,
        routes::volumes::list_types,
        routes::volumes::delete_type,
        routes::volumes::create_volume,
        routes::volumes::list_volumes,
        routes::volumes::show_volume,
        routes::volumes::delete_volume,
        routes::volumes::volume_action,
        routes::volumes::create_snapshot,
        routes::volumes::list_snapshots,
        routes::volumes::show_snapshot,
        routes::volumes::delete_snapshot,
        routes::volumes::list_backends,
        routes::volumes::attach_volume,
        routes::volumes::detach_volume,
        routes::plugins::list,
        routes::plugins::evaluate,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::state::Event)),
    modifiers(&BearerAuth),
    tags(
        (name = "agent", description = "Health, metrics and the API description"),
        (name = "host", description = "This node"),
        (name = "events", description = "State-change stream"),
        (name = "images", description = "The node's image cache"),
        (name = "servers", description = "Virtual machines"),
        (name = "networks", description = "Networks, subnets and ports; DHCP and metadata"),
        (name = "volumes", description = "Volume types, volumes, snapshots and backends"),
        (name = "plugins", description = "WebAssembly plugins and the scheduler chain"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as pretty JSON, as stored in `docs/openapi.json`.
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}
