//! Security groups and their rules (neutron's API), enforced natively by the agent.
//!
//! Every change is stored first, then [`apply::sync`] makes the kernel's nftables match the
//! store in one transaction (see [`crate::net::firewall`] for what runs where). A port's
//! groups, port security and allowed address pairs are changed through the ports API
//! (`ops::networks::ports::update`).
//!
//! * `model` — requests and their validation;
//! * `apply` — the store → nftables applier.

pub mod apply;
pub mod model;

use crate::net::security::{SecurityGroup, SecurityGroupRule, DEFAULT_GROUP};
use crate::ops::{OpError, Services};
use crate::state::GroupError;
use model::{SecurityGroupCreate, SecurityGroupRuleCreate, SecurityGroupUpdate};
use serde_json::json;

fn group_error(e: GroupError) -> OpError {
    match e {
        GroupError::Store(e) => OpError::Store(e),
        e @ (GroupError::NameInUse { .. }
        | GroupError::InUse { .. }
        | GroupError::Default
        | GroupError::Duplicate { .. }
        | GroupError::Limit(_)) => OpError::Conflict(e.to_string()),
    }
}

/// A group, or 404.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such group.
pub async fn get(services: &Services, id: &str) -> Result<SecurityGroup, OpError> {
    services
        .store()
        .get_security_group(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "security group",
            id: id.to_string(),
        })
}

/// Every group with its rules.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn list(services: &Services) -> Result<Vec<SecurityGroup>, OpError> {
    Ok(services.store().list_security_groups().await?)
}

/// The id of a group named by id or, failing that, by name (nova's `--security-group`).
///
/// # Errors
/// [`OpError::UnknownReference`] naming `field`.
pub async fn resolve(
    services: &Services,
    field: &'static str,
    key: &str,
) -> Result<String, OpError> {
    if let Some(g) = services.store().get_security_group(key).await? {
        return Ok(g.id);
    }
    match services.store().security_group_by_name(key).await? {
        Some(g) => Ok(g.id),
        None => Err(OpError::unknown(field, key, "security group")),
    }
}

/// The `default` group's id.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read (the group always exists).
pub async fn default_id(services: &Services) -> Result<String, OpError> {
    services
        .store()
        .security_group_by_name(DEFAULT_GROUP)
        .await?
        .map(|g| g.id)
        .ok_or_else(|| OpError::Conflict("the default security group is missing".into()))
}

async fn publish(
    services: &Services,
    kind: &str,
    resource: &str,
    id: &str,
    data: serde_json::Value,
) {
    let _ = services.events().publish(kind, resource, id, data).await;
}

/// Creates a group with neutron's initial rule (egress IPv4 anywhere).
///
/// # Errors
/// 400 for bad fields; 409 for a taken name or too many groups.
pub async fn create(
    services: &Services,
    req: SecurityGroupCreate,
) -> Result<SecurityGroup, OpError> {
    req.validate()?;
    let group = crate::state::new_group(&req.name, &req.description);
    services
        .store()
        .insert_security_group(group.clone())
        .await
        .map_err(group_error)?;
    apply::sync(services).await?;
    publish(
        services,
        "security_group.created",
        "security_group",
        &group.id,
        json!({"name": group.name}),
    )
    .await;
    Ok(group)
}

/// Renames a group or changes its description.
///
/// # Errors
/// 404 for an unknown group; 400 for bad fields; 409 for a taken name or renaming `default`.
pub async fn update(
    services: &Services,
    id: &str,
    req: SecurityGroupUpdate,
) -> Result<SecurityGroup, OpError> {
    req.validate()?;
    let group = services
        .store()
        .update_security_group(id, req.name, req.description)
        .await
        .map_err(group_error)?
        .ok_or_else(|| OpError::NotFound {
            kind: "security group",
            id: id.to_string(),
        })?;
    publish(
        services,
        "security_group.updated",
        "security_group",
        id,
        json!({"name": group.name}),
    )
    .await;
    Ok(group)
}

/// Deletes a group no port uses (with its rules, and other groups' rules naming it).
///
/// # Errors
/// 404 for an unknown group; 409 for `default` or a group in use.
pub async fn delete(services: &Services, id: &str) -> Result<(), OpError> {
    if !services
        .store()
        .delete_security_group(id)
        .await
        .map_err(group_error)?
    {
        return Err(OpError::NotFound {
            kind: "security group",
            id: id.to_string(),
        });
    }
    apply::sync(services).await?;
    publish(
        services,
        "security_group.deleted",
        "security_group",
        id,
        json!({}),
    )
    .await;
    Ok(())
}

/// A rule, or 404.
///
/// # Errors
/// [`OpError::NotFound`] when there is no such rule.
pub async fn get_rule(services: &Services, id: &str) -> Result<SecurityGroupRule, OpError> {
    services
        .store()
        .get_security_group_rule(id)
        .await?
        .ok_or_else(|| OpError::NotFound {
            kind: "security group rule",
            id: id.to_string(),
        })
}

/// Rules: all, or of one group.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn list_rules(
    services: &Services,
    group: Option<String>,
) -> Result<Vec<SecurityGroupRule>, OpError> {
    Ok(services.store().list_security_group_rules(group).await?)
}

/// Adds a rule to a group and programs it.
///
/// # Errors
/// 400 naming the field at fault; 404 (`unknown_reference`) for an unknown group or remote
/// group; 409 for a duplicate or too many rules.
pub async fn create_rule(
    services: &Services,
    req: SecurityGroupRuleCreate,
) -> Result<SecurityGroupRule, OpError> {
    let checked = req.validate()?;
    let store = services.store();
    if store
        .get_security_group(&req.security_group_id)
        .await?
        .is_none()
    {
        return Err(OpError::unknown(
            "security_group_id",
            &req.security_group_id,
            "security group",
        ));
    }
    if let Some(remote) = &req.remote_group_id {
        if store.get_security_group(remote).await?.is_none() {
            return Err(OpError::unknown(
                "remote_group_id",
                remote,
                "security group",
            ));
        }
    }
    let rule = SecurityGroupRule {
        id: uuid::Uuid::new_v4().to_string(),
        security_group_id: req.security_group_id,
        direction: req.direction,
        ethertype: "IPv4".into(),
        protocol: checked.protocol,
        port_range_min: checked.port_range_min,
        port_range_max: checked.port_range_max,
        remote_ip_prefix: checked.remote_ip_prefix,
        remote_group_id: req.remote_group_id,
        description: req.description,
        created_at: crate::state::now_rfc3339(),
    };
    store
        .insert_security_group_rule(rule.clone())
        .await
        .map_err(group_error)?;
    apply::sync(services).await?;
    publish(
        services,
        "security_group_rule.created",
        "security_group_rule",
        &rule.id,
        json!({"security_group_id": rule.security_group_id}),
    )
    .await;
    Ok(rule)
}

/// Deletes a rule and unprograms it.
///
/// # Errors
/// 404 for an unknown rule.
pub async fn delete_rule(services: &Services, id: &str) -> Result<(), OpError> {
    let rule = get_rule(services, id).await?;
    if !services.store().delete_security_group_rule(id).await? {
        return Err(OpError::NotFound {
            kind: "security group rule",
            id: id.to_string(),
        });
    }
    apply::sync(services).await?;
    publish(
        services,
        "security_group_rule.deleted",
        "security_group_rule",
        id,
        json!({"security_group_id": rule.security_group_id}),
    )
    .await;
    Ok(())
}
