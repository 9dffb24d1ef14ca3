//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! The same document is kept in the repository as `docs/openapi.json`; a test fails when the
//! two differ (regenerate with `hyperlet openapi > docs/openapi.json`).
//!
//! Answers that come from the shared middleware rather than from a handler are added to every
//! operation here ([`CommonResponses`]), from the same facts the middleware acts on: the bearer
//! requirement and its 401 on every path outside [`PUBLIC_PATHS`], 400/413/415 on every JSON
//! body, 400 on every operation with path or query parameters (a parameter that is not UTF-8 or
//! not a known field), 503 when the request deadline runs out. The event stream's framing is
//! described by [`SseFraming`].

use super::error::{ErrorBody, ErrorDetail};
use super::middleware::PUBLIC_PATHS;
use super::routes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
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
        routes::consoles::create,
        routes::consoles::open,
        routes::consoles::screenshot,
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
        routes::networks::update_port,
        routes::security_groups::create_group,
        routes::security_groups::list_groups,
        routes::security_groups::show_group,
        routes::security_groups::update_group,
        routes::security_groups::delete_group,
        routes::security_groups::create_rule,
        routes::security_groups::list_rules,
        routes::security_groups::show_rule,
        routes::security_groups::delete_rule,
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
    modifiers(&BearerAuth, &CommonResponses, &SseFraming),
    tags(
        (name = "agent", description = "Health, metrics and the API description"),
        (name = "host", description = "This node"),
        (name = "events", description = "State-change stream"),
        (name = "images", description = "The node's image cache"),
        (name = "servers", description = "Virtual machines"),
        (name = "networks", description = "Networks, subnets and ports; DHCP and metadata"),
        (name = "security-groups", description = "Security groups and their rules, enforced on this node's bridges"),
        (name = "volumes", description = "Volume types, volumes, snapshots and backends"),
        (name = "plugins", description = "WebAssembly plugins and the scheduler chain"),
        (name = "consoles", description = "Serial and VNC consoles over WebSocket, screenshots"),
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

/// Adds the answers of the shared middleware to every operation they apply to.
struct CommonResponses;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn add_response(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            for op in operations(item) {
                for param in op.parameters.iter_mut().flatten() {
                    not_nullable(param);
                }
                if !public {
                    op.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    add_response(op, "401", "Missing or wrong bearer token");
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add_response(
                        op,
                        "400",
                        "A parameter is not valid (not UTF-8, out of range or unknown)",
                    );
                }
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    add_response(
                        op,
                        "400",
                        "The body is not valid JSON or not a valid request",
                    );
                    add_response(op, "413", "The body is larger than api.body_limit_bytes");
                    add_response(op, "415", "The body is not sent as application/json");
                } else if op.request_body.is_some() {
                    add_response(op, "413", "The body is larger than the limit");
                }
                if !public {
                    add_response(
                        op,
                        "503",
                        "The request did not complete within api.request_timeout_secs",
                    );
                }
            }
        }
    }
}

/// An optional parameter is absent or a value: `null` is no value a query string or header
/// can carry (utoipa writes `Option<T>` as `[T, null]`).
fn not_nullable(param: &mut utoipa::openapi::path::Parameter) {
    let Some(schema) = &param.schema else { return };
    let Ok(mut json) = serde_json::to_value(schema) else {
        return;
    };
    let Some(types) = json.get_mut("type").and_then(|t| t.as_array_mut()) else {
        return;
    };
    types.retain(|t| t != "null");
    if types.len() == 1 {
        let only = types[0].clone();
        json["type"] = only;
    }
    if let Ok(schema) = serde_json::from_value(json) {
        param.schema = Some(schema);
    }
}

/// Describes `GET /v1/events` as the events it sends: `id`, `event` and `data` lines, where
/// `data` is JSON — an [`crate::state::Event`], or `{"from", "to"}` for a `gap` message.
struct SseFraming;

impl Modify for SseFraming {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let gap: utoipa::openapi::Schema = serde_json::from_value(serde_json::json!({
            "type": "object",
            "description": "Data of a `gap` message: events from..=to were pruned from the backlog.",
            "required": ["from", "to"],
            "properties": {
                "from": { "type": "integer", "minimum": 0 },
                "to": { "type": "integer", "minimum": 0 }
            },
            "additionalProperties": false
        }))
        .expect("the gap schema is a schema");
        components.schemas.insert("EventGap".into(), gap.into());
        let mut data_schema = serde_json::Map::new();
        data_schema.insert(
            "oneOf".into(),
            serde_json::json!([
                { "$ref": "#/components/schemas/Event" },
                { "$ref": "#/components/schemas/EventGap" }
            ]),
        );
        let mut extensions = utoipa::openapi::extensions::Extensions::default();
        extensions.insert("contentSchema".into(), data_schema.into());
        let data = utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("The Event (or, for `gap`, the EventGap) as JSON"))
            .content_media_type("application/json")
            .extensions(Some(extensions))
            .build();
        let frame = utoipa::openapi::ObjectBuilder::new()
            .description(Some(
                "One server-sent event: `id` is the event's sequence number (absent on `gap`), \
                 `event` its kind, `data` its JSON",
            ))
            .property(
                "id",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[0-9]+$")),
            )
            .property(
                "event",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            )
            .property("data", data)
            .required("event")
            .required("data")
            .build();
        let Some(op) = openapi
            .paths
            .paths
            .get_mut("/v1/events")
            .and_then(|item| item.get.as_mut())
        else {
            return;
        };
        if let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") {
            if let Some(content) = ok.content.get_mut("text/event-stream") {
                content.schema = Some(frame.into());
            }
        }
    }
}

/// The document: [`ApiDoc`] with the rules of [`super::schema_rules`] (JSON Schema keywords
/// such as `anyOf` that utoipa's types cannot carry, so they are added to the JSON).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    super::schema_rules::apply(&mut doc);
    doc
}

/// The document as pretty JSON, as stored in `docs/openapi.json`.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}
