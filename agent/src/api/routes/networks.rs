//! `/v1/networks`, `/v1/subnets`, `/v1/ports` — the neutron half: L2 networks, IPv4 subnets
//! with DHCP, and ports.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::{ApiJson, CreateJson};
use crate::net::model::{Network, Port, Subnet};
use crate::ops::networks::model::{NetworkCreate, PortCreate, SubnetCreate};
use crate::ops::networks::{self, ports, subnets};
use crate::ops::security_groups::model::PortUpdate;
use crate::ops::{idempotent, Services};
use crate::state::PortFilter;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/networks` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkList {
    /// The networks, oldest first.
    pub networks: Vec<Network>,
}

/// `GET /v1/subnets` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubnetList {
    /// The subnets, oldest first.
    pub subnets: Vec<Subnet>,
}

/// `GET /v1/ports` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortList {
    /// The ports, oldest first.
    pub ports: Vec<Port>,
}

/// Filters of `GET /v1/subnets` and `GET /v1/ports`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NetFilter {
    /// Only this network's.
    pub network_id: Option<String>,
    /// Only this device's (ports).
    pub device_id: Option<String>,
}

/// Creates a network: 202 `BUILD`; its backend sets it up in the background (`ACTIVE`, or
/// `ERROR` with the fault; `network.status` events).
#[utoipa::path(post, path = "/v1/networks", tag = "networks", security(("bearer" = [])),
    request_body = NetworkCreate,
    responses(
        (status = 202, description = "Recorded BUILD; being set up", body = Network),
        (status = 400, description = "Invalid attributes, unknown backend or refused by it; nothing created", body = ErrorBody),
        (status = 404, description = "backend names no configured network backend (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The segment is used by another network, or no backend is named and not exactly one is configured; or the client-chosen id belongs to a resource made by another request", body = ErrorBody),
    ))]
pub async fn create_network(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<NetworkCreate>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    let s = &services;
    let network = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        networks::create(s, req)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(network)))
}

/// Lists networks.
#[utoipa::path(get, path = "/v1/networks", tag = "networks", security(("bearer" = [])),
    responses((status = 200, description = "All networks", body = NetworkList)))]
pub async fn list_networks(
    State(services): State<Services>,
) -> Result<Json<NetworkList>, ApiError> {
    Ok(Json(NetworkList {
        networks: networks::list(&services).await?,
    }))
}

/// Shows one network.
#[utoipa::path(get, path = "/v1/networks/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Network id")),
    responses((status = 200, description = "The network", body = Network),
        (status = 404, description = "No such network", body = ErrorBody)))]
pub async fn show_network(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(networks::get(&services, &id).await?))
}

/// Deletes a network with its subnets, DHCP namespace and bridge: 202 `DELETING`; gone when
/// done (`network.deleted`), `ERROR` with the fault when it failed.
#[utoipa::path(delete, path = "/v1/networks/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Network id")),
    responses((status = 202, description = "Recorded DELETING; being torn down", body = Network),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 409, description = "Ports (servers) still use it, or it is BUILD or DELETING", body = ErrorBody)))]
pub async fn delete_network(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(networks::delete(&services, &id).await?),
    ))
}

/// Creates a subnet; with DHCP on, the network's DHCP and metadata service starts: 201.
#[utoipa::path(post, path = "/v1/subnets", tag = "networks", security(("bearer" = [])),
    request_body = SubnetCreate,
    responses(
        (status = 201, description = "Created", body = Subnet),
        (status = 404, description = "network_id names no network (`unknown_reference`)", body = ErrorBody),
        (status = 400, description = "Invalid prefix, gateway, pools or routes, overlap, unknown network; nothing created", body = ErrorBody),
        (status = 409, description = "The client-chosen id belongs to a subnet made by another request", body = ErrorBody),
    ))]
pub async fn create_subnet(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<SubnetCreate>,
) -> Result<(StatusCode, Json<Subnet>), ApiError> {
    let s = &services;
    let subnet = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        subnets::create(s, req)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(subnet)))
}

/// Lists subnets.
#[utoipa::path(get, path = "/v1/subnets", tag = "networks", security(("bearer" = [])),
    params(NetFilter),
    responses((status = 200, description = "Subnets", body = SubnetList)))]
pub async fn list_subnets(
    State(services): State<Services>,
    Query(filter): Query<NetFilter>,
) -> Result<Json<SubnetList>, ApiError> {
    Ok(Json(SubnetList {
        subnets: subnets::list(&services, filter.network_id.as_deref()).await?,
    }))
}

/// Shows one subnet.
#[utoipa::path(get, path = "/v1/subnets/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Subnet id")),
    responses((status = 200, description = "The subnet", body = Subnet),
        (status = 404, description = "No such subnet", body = ErrorBody)))]
pub async fn show_subnet(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<Subnet>, ApiError> {
    Ok(Json(subnets::get(&services, &id).await?))
}

/// Deletes a subnet: 204.
#[utoipa::path(delete, path = "/v1/subnets/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Subnet id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such subnet", body = ErrorBody),
        (status = 409, description = "Ports use its addresses", body = ErrorBody)))]
pub async fn delete_subnet(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    subnets::delete(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an unbound port: 201.
#[utoipa::path(post, path = "/v1/ports", tag = "networks", security(("bearer" = [])),
    request_body = PortCreate,
    responses(
        (status = 201, description = "Created", body = Port),
        (status = 400, description = "Unknown network, bad MAC or address outside the subnets", body = ErrorBody),
        (status = 404, description = "network_id names no network (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "Address or MAC taken, pool exhausted; or the client-chosen id belongs to a resource made by another request", body = ErrorBody),
    ))]
pub async fn create_port(
    State(services): State<Services>,
    CreateJson(mut req, body): CreateJson<PortCreate>,
) -> Result<(StatusCode, Json<Port>), ApiError> {
    let s = &services;
    let port = idempotent::create(s, req.id.take(), &body, move |id| {
        req.id = id;
        ports::create(s, req)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(port)))
}

/// Lists ports.
#[utoipa::path(get, path = "/v1/ports", tag = "networks", security(("bearer" = [])),
    params(NetFilter),
    responses((status = 200, description = "Ports", body = PortList)))]
pub async fn list_ports(
    State(services): State<Services>,
    Query(filter): Query<NetFilter>,
) -> Result<Json<PortList>, ApiError> {
    // Both filters: the network's ports of that device.
    let (store_filter, device) = match (filter.network_id, filter.device_id) {
        (Some(n), d) => (PortFilter::Network(n), d),
        (None, Some(d)) => (PortFilter::Device(d), None),
        (None, None) => (PortFilter::All, None),
    };
    let mut ports = ports::list(&services, store_filter).await?;
    if let Some(device) = device {
        ports.retain(|p| p.device_id == device);
    }
    Ok(Json(PortList { ports }))
}

/// Shows one port.
#[utoipa::path(get, path = "/v1/ports/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Port id")),
    responses((status = 200, description = "The port", body = Port),
        (status = 404, description = "No such port", body = ErrorBody)))]
pub async fn show_port(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<Port>, ApiError> {
    Ok(Json(ports::get(&services, &id).await?))
}

/// Deletes an unbound port: 204.
#[utoipa::path(delete, path = "/v1/ports/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Port id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such port", body = ErrorBody),
        (status = 409, description = "Attached to a server, or the DHCP port", body = ErrorBody)))]
pub async fn delete_port(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ports::delete(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a port's name, security groups, port security or allowed address pairs.
#[utoipa::path(patch, path = "/v1/ports/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Port id")),
    request_body = PortUpdate,
    responses((status = 200, description = "The port, its firewall rules programmed", body = Port),
        (status = 400, description = "Invalid fields; nothing changed", body = ErrorBody),
        (status = 404, description = "No such port, or security_groups names no group (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The DHCP port, or port security off while groups or address pairs remain", body = ErrorBody)))]
pub async fn update_port(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PortUpdate>,
) -> Result<Json<Port>, ApiError> {
    Ok(Json(ports::update(&services, &id, req).await?))
}
