//! `/v1/security-groups`, `/v1/security-group-rules` — neutron's security groups, enforced
//! natively on this node's bridges.

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::ApiJson;
use crate::net::security::{SecurityGroup, SecurityGroupRule};
use crate::ops::security_groups::model::{
    SecurityGroupCreate, SecurityGroupRuleCreate, SecurityGroupUpdate,
};
use crate::ops::security_groups::{self as groups};
use crate::ops::Services;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Every group.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecurityGroupList {
    /// The groups, oldest first.
    pub security_groups: Vec<SecurityGroup>,
}

/// Rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecurityGroupRuleList {
    /// The rules, oldest first.
    pub security_group_rules: Vec<SecurityGroupRule>,
}

/// Filter of the rule list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RuleFilter {
    /// Only this group's rules.
    pub security_group_id: Option<String>,
}

/// Creates a group (with neutron's initial rule: egress IPv4 anywhere).
#[utoipa::path(post, path = "/v1/security-groups", tag = "security-groups", security(("bearer" = [])),
    request_body = SecurityGroupCreate,
    responses((status = 201, description = "Created", body = SecurityGroup),
        (status = 400, description = "Invalid fields; nothing created", body = ErrorBody),
        (status = 409, description = "The name is taken, or the node has the most groups it holds", body = ErrorBody)))]
pub async fn create_group(
    State(services): State<Services>,
    ApiJson(req): ApiJson<SecurityGroupCreate>,
) -> Result<(StatusCode, Json<SecurityGroup>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(groups::create(&services, req).await?),
    ))
}

/// Lists every group with its rules.
#[utoipa::path(get, path = "/v1/security-groups", tag = "security-groups", security(("bearer" = [])),
    responses((status = 200, description = "Every group", body = SecurityGroupList)))]
pub async fn list_groups(
    State(services): State<Services>,
) -> Result<Json<SecurityGroupList>, ApiError> {
    Ok(Json(SecurityGroupList {
        security_groups: groups::list(&services).await?,
    }))
}

/// Shows one group.
#[utoipa::path(get, path = "/v1/security-groups/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses((status = 200, description = "The group", body = SecurityGroup),
        (status = 404, description = "No such group", body = ErrorBody)))]
pub async fn show_group(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<SecurityGroup>, ApiError> {
    Ok(Json(groups::get(&services, &id).await?))
}

/// Renames a group or changes its description.
#[utoipa::path(patch, path = "/v1/security-groups/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    request_body = SecurityGroupUpdate,
    responses((status = 200, description = "The group", body = SecurityGroup),
        (status = 400, description = "Invalid fields; nothing changed", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "The name is taken, or `default` would be renamed", body = ErrorBody)))]
pub async fn update_group(
    State(services): State<Services>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SecurityGroupUpdate>,
) -> Result<Json<SecurityGroup>, ApiError> {
    Ok(Json(groups::update(&services, &id, req).await?))
}

/// Deletes a group no port uses: 204.
#[utoipa::path(delete, path = "/v1/security-groups/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses((status = 204, description = "Deleted, with its rules and the rules naming it as remote group"),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "Ports use it, or it is `default`", body = ErrorBody)))]
pub async fn delete_group(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    groups::delete(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a rule to a group; it is enforced when this answers.
#[utoipa::path(post, path = "/v1/security-group-rules", tag = "security-groups", security(("bearer" = [])),
    request_body = SecurityGroupRuleCreate,
    responses((status = 201, description = "Created and programmed", body = SecurityGroupRule),
        (status = 400, description = "Invalid field or combination (named); nothing created", body = ErrorBody),
        (status = 404, description = "security_group_id or remote_group_id names no group (`unknown_reference`)", body = ErrorBody),
        (status = 409, description = "The same rule exists, or the group has the most rules it holds", body = ErrorBody)))]
pub async fn create_rule(
    State(services): State<Services>,
    ApiJson(req): ApiJson<SecurityGroupRuleCreate>,
) -> Result<(StatusCode, Json<SecurityGroupRule>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(groups::create_rule(&services, req).await?),
    ))
}

/// Lists rules.
#[utoipa::path(get, path = "/v1/security-group-rules", tag = "security-groups", security(("bearer" = [])),
    params(RuleFilter),
    responses((status = 200, description = "Rules", body = SecurityGroupRuleList)))]
pub async fn list_rules(
    State(services): State<Services>,
    Query(filter): Query<RuleFilter>,
) -> Result<Json<SecurityGroupRuleList>, ApiError> {
    Ok(Json(SecurityGroupRuleList {
        security_group_rules: groups::list_rules(&services, filter.security_group_id).await?,
    }))
}

/// Shows one rule.
#[utoipa::path(get, path = "/v1/security-group-rules/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The rule", body = SecurityGroupRule),
        (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn show_rule(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Json<SecurityGroupRule>, ApiError> {
    Ok(Json(groups::get_rule(&services, &id).await?))
}

/// Deletes a rule: 204 once it no longer applies to new connections.
#[utoipa::path(delete, path = "/v1/security-group-rules/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 204, description = "Deleted and unprogrammed"),
        (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn delete_rule(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    groups::delete_rule(&services, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
