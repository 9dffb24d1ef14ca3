//! Security groups, their rules, and the groups of each port (`security_groups`,
//! `security_group_rules`, `port_security_groups` tables).
//!
//! Every check that depends on other rows — a unique name, a duplicate rule, a group still
//! used by ports, the per-group rule limit — runs inside the transaction that writes, so two
//! racing requests can never both pass it.

use super::{now_rfc3339, Store, StoreError};
use crate::net::model::Port;
use crate::net::security::{
    AddressPair, SecurityGroup, SecurityGroupRule, DEFAULT_GROUP, MAX_GROUPS, MAX_RULES_PER_GROUP,
};
use rusqlite::{params, Connection, OptionalExtension};

/// Why a security group change was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another group has the name.
    #[error("A security group named {name:?} already exists ({id})")]
    NameInUse {
        /// The name.
        name: String,
        /// The group that has it.
        id: String,
    },
    /// Ports use the group.
    #[error("Security group {id} is used by port(s) {}; remove it from them first", ports.join(", "))]
    InUse {
        /// The group.
        id: String,
        /// Some of the ports using it.
        ports: Vec<String>,
    },
    /// The `default` group cannot be deleted or renamed.
    #[error("The default security group cannot be deleted or renamed")]
    Default,
    /// The same rule exists.
    #[error("Security group rule already exists: {id}")]
    Duplicate {
        /// The existing rule.
        id: String,
    },
    /// A limit would be passed.
    #[error("{0}")]
    Limit(String),
}

fn rules_of(conn: &Connection, group: Option<&str>) -> rusqlite::Result<Vec<SecurityGroupRule>> {
    let mut stmt = conn.prepare_cached(
        "SELECT doc FROM security_group_rules WHERE ?1 IS NULL OR security_group_id = ?1
         ORDER BY created_at, id",
    )?;
    let docs: Vec<String> = stmt
        .query_map([group], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    docs.iter()
        .map(|d| {
            serde_json::from_str(d).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .collect()
}

fn groups_where(
    conn: &Connection,
    filter: &str,
    arg: &str,
) -> rusqlite::Result<Vec<SecurityGroup>> {
    let sql = format!(
        "SELECT id, name, description, created_at, updated_at FROM security_groups {filter}
         ORDER BY created_at, id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let map = |r: &rusqlite::Row<'_>| {
        Ok(SecurityGroup {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            security_group_rules: Vec::new(),
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
        })
    };
    let mut groups: Vec<SecurityGroup> = if filter.is_empty() {
        stmt.query_map([], map)?.collect::<rusqlite::Result<_>>()?
    } else {
        stmt.query_map([arg], map)?
            .collect::<rusqlite::Result<_>>()?
    };
    for g in &mut groups {
        g.security_group_rules = rules_of(conn, Some(&g.id))?;
    }
    Ok(groups)
}

fn insert_rule(conn: &Connection, rule: &SecurityGroupRule) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO security_group_rules (id, security_group_id, remote_group_id, created_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            rule.id,
            rule.security_group_id,
            rule.remote_group_id,
            rule.created_at,
            serde_json::to_string(rule).expect("rules serialise")
        ],
    )?;
    Ok(())
}

/// Replaces the groups of a port (inside the caller's transaction).
pub(super) fn set_port_groups(
    conn: &Connection,
    port_id: &str,
    groups: &[String],
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM port_security_groups WHERE port_id = ?1",
        [port_id],
    )?;
    for (position, group) in groups.iter().enumerate() {
        conn.execute(
            "INSERT INTO port_security_groups (port_id, security_group_id, position) VALUES (?1, ?2, ?3)",
            params![port_id, group, position as i64],
        )?;
    }
    Ok(())
}

/// Creates the `default` group (neutron's rules: egress IPv4 anywhere, ingress from its own
/// members) when the node has none, and puts the ports with port security and no group in it
/// (ports created before security groups existed).
pub(super) fn ensure_default(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let exists: Option<String> = tx
        .query_row(
            "SELECT id FROM security_groups WHERE name = ?1",
            [DEFAULT_GROUP],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Ok(());
    }
    let group = new_group(
        DEFAULT_GROUP,
        "Default security group: egress anywhere, ingress from its members",
    );
    insert_group(&tx, &group)?;
    let ports: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM ports p WHERE port_security_enabled = 1 AND device_owner != ?1
             AND NOT EXISTS (SELECT 1 FROM port_security_groups g WHERE g.port_id = p.id)",
        )?;
        let rows = stmt.query_map([crate::net::model::DHCP_OWNER], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for port in ports {
        set_port_groups(&tx, &port, std::slice::from_ref(&group.id))?;
    }
    tx.commit()?;
    Ok(())
}

/// A new group with neutron's initial rules: egress anywhere, and for `default` also
/// ingress from its members.
pub fn new_group(name: &str, description: &str) -> SecurityGroup {
    let now = now_rfc3339();
    let id = uuid::Uuid::new_v4().to_string();
    let rule = |direction, remote: Option<String>| SecurityGroupRule {
        id: uuid::Uuid::new_v4().to_string(),
        security_group_id: id.clone(),
        direction,
        ethertype: "IPv4".into(),
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: remote,
        description: String::new(),
        created_at: now.clone(),
    };
    let mut rules = vec![rule(crate::net::security::RuleDirection::Egress, None)];
    if name == DEFAULT_GROUP {
        rules.push(rule(
            crate::net::security::RuleDirection::Ingress,
            Some(id.clone()),
        ));
    }
    SecurityGroup {
        id: id.clone(),
        name: name.into(),
        description: description.into(),
        security_group_rules: rules,
        created_at: now.clone(),
        updated_at: now,
    }
}

fn insert_group(conn: &Connection, group: &SecurityGroup) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO security_groups (id, name, description, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            group.id,
            group.name,
            group.description,
            group.created_at,
            group.updated_at
        ],
    )?;
    for rule in &group.security_group_rules {
        insert_rule(conn, rule)?;
    }
    Ok(())
}

fn name_owner(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT id FROM security_groups WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}

impl Store {
    /// Every group with its rules, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_security_groups(&self) -> Result<Vec<SecurityGroup>, StoreError> {
        self.call(|conn| Ok(groups_where(conn, "", "")?)).await
    }

    /// One group by id.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_security_group(&self, id: &str) -> Result<Option<SecurityGroup>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| Ok(groups_where(conn, "WHERE id = ?1", &id)?.pop()))
            .await
    }

    /// One group by name.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn security_group_by_name(
        &self,
        name: &str,
    ) -> Result<Option<SecurityGroup>, StoreError> {
        let name = name.to_string();
        self.call(move |conn| Ok(groups_where(conn, "WHERE name = ?1", &name)?.pop()))
            .await
    }

    /// Stores a new group with its initial rules.
    ///
    /// # Errors
    /// [`GroupError::NameInUse`], [`GroupError::Limit`] past [`MAX_GROUPS`].
    pub async fn insert_security_group(&self, group: SecurityGroup) -> Result<(), GroupError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            if let Some(id) = name_owner(&tx, &group.name)? {
                return Ok(Err(GroupError::NameInUse {
                    name: group.name,
                    id,
                }));
            }
            let count: i64 =
                tx.query_row("SELECT COUNT(*) FROM security_groups", [], |r| r.get(0))?;
            if count as usize >= MAX_GROUPS {
                return Ok(Err(GroupError::Limit(format!(
                    "This node already has {MAX_GROUPS} security groups, the most it holds"
                ))));
            }
            insert_group(&tx, &group)?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await?
    }

    /// Renames a group or changes its description; `None` when there is no such group.
    ///
    /// # Errors
    /// [`GroupError::NameInUse`], [`GroupError::Default`] for renaming `default`.
    pub async fn update_security_group(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Option<SecurityGroup>, GroupError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let Some(current) = groups_where(&tx, "WHERE id = ?1", &id)?.pop() else {
                return Ok(Ok(None));
            };
            if let Some(name) = &name {
                if *name != current.name && current.name == DEFAULT_GROUP {
                    return Ok(Err(GroupError::Default));
                }
                match name_owner(&tx, name)? {
                    Some(owner) if owner != id => {
                        return Ok(Err(GroupError::NameInUse {
                            name: name.clone(),
                            id: owner,
                        }))
                    }
                    _ => {}
                }
            }
            tx.execute(
                "UPDATE security_groups SET name = ?2, description = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    id,
                    name.unwrap_or(current.name),
                    description.unwrap_or(current.description),
                    now_rfc3339()
                ],
            )?;
            let updated = groups_where(&tx, "WHERE id = ?1", &id)?.pop();
            tx.commit()?;
            Ok(Ok(updated))
        })
        .await?
    }

    /// Deletes a group and its rules (and the rules of other groups naming it as remote).
    /// `false` when there was no such group.
    ///
    /// # Errors
    /// [`GroupError::Default`], [`GroupError::InUse`] while ports use it.
    pub async fn delete_security_group(&self, id: &str) -> Result<bool, GroupError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let name: Option<String> = tx
                .query_row(
                    "SELECT name FROM security_groups WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            match name.as_deref() {
                None => return Ok(Ok(false)),
                Some(DEFAULT_GROUP) => return Ok(Err(GroupError::Default)),
                Some(_) => {}
            }
            let ports: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT port_id FROM port_security_groups WHERE security_group_id = ?1 LIMIT 5",
                )?;
                let rows = stmt.query_map([&id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if !ports.is_empty() {
                return Ok(Err(GroupError::InUse { id, ports }));
            }
            tx.execute("DELETE FROM security_groups WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(Ok(true))
        })
        .await?
    }

    /// Adds a rule to its group.
    ///
    /// # Errors
    /// [`GroupError::Duplicate`] for the same rule, [`GroupError::Limit`] past
    /// [`MAX_RULES_PER_GROUP`].
    pub async fn insert_security_group_rule(
        &self,
        rule: SecurityGroupRule,
    ) -> Result<(), GroupError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let existing = rules_of(&tx, Some(&rule.security_group_id))?;
            if let Some(same) = existing.iter().find(|r| r.same_as(&rule)) {
                return Ok(Err(GroupError::Duplicate {
                    id: same.id.clone(),
                }));
            }
            if existing.len() >= MAX_RULES_PER_GROUP {
                return Ok(Err(GroupError::Limit(format!(
                    "Security group {} already has {MAX_RULES_PER_GROUP} rules, the most a group holds",
                    rule.security_group_id
                ))));
            }
            insert_rule(&tx, &rule)?;
            tx.execute(
                "UPDATE security_groups SET updated_at = ?2 WHERE id = ?1",
                params![rule.security_group_id, now_rfc3339()],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await?
    }

    /// Rules: all, or of one group.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_security_group_rules(
        &self,
        group: Option<String>,
    ) -> Result<Vec<SecurityGroupRule>, StoreError> {
        self.call(move |conn| Ok(rules_of(conn, group.as_deref())?))
            .await
    }

    /// One rule.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_security_group_rule(
        &self,
        id: &str,
    ) -> Result<Option<SecurityGroupRule>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let doc: Option<String> = conn
                .query_row(
                    "SELECT doc FROM security_group_rules WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            doc.map(|d| {
                serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("rule {id}: {e}")))
            })
            .transpose()
        })
        .await
    }

    /// Deletes a rule; `false` when there was none.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_security_group_rule(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let group: Option<String> = tx
                .query_row(
                    "SELECT security_group_id FROM security_group_rules WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(group) = &group {
                tx.execute("DELETE FROM security_group_rules WHERE id = ?1", [&id])?;
                tx.execute(
                    "UPDATE security_groups SET updated_at = ?2 WHERE id = ?1",
                    params![group, now_rfc3339()],
                )?;
            }
            tx.commit()?;
            Ok(group.is_some())
        })
        .await
    }

    /// Changes a port's name, groups, port security and address pairs (each when `Some`;
    /// checked by the caller) in one transaction; returns the port, `None` when it is gone.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn update_port(
        &self,
        id: &str,
        change: PortChange,
    ) -> Result<Option<Port>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let exists: bool = tx
                .query_row("SELECT 1 FROM ports WHERE id = ?1", [&id], |_| Ok(true))
                .optional()?
                .unwrap_or(false);
            if !exists {
                return Ok(None);
            }
            if let Some(name) = &change.name {
                tx.execute(
                    "UPDATE ports SET name = ?2 WHERE id = ?1",
                    params![id, name],
                )?;
            }
            if let Some(enabled) = change.port_security_enabled {
                tx.execute(
                    "UPDATE ports SET port_security_enabled = ?2 WHERE id = ?1",
                    params![id, enabled],
                )?;
            }
            if let Some(pairs) = &change.allowed_address_pairs {
                tx.execute(
                    "UPDATE ports SET allowed_address_pairs = ?2 WHERE id = ?1",
                    params![id, serde_json::to_string(pairs).expect("pairs serialise")],
                )?;
            }
            if let Some(groups) = &change.security_groups {
                set_port_groups(&tx, &id, groups)?;
            }
            tx.execute(
                "UPDATE ports SET updated_at = ?2 WHERE id = ?1",
                params![id, now_rfc3339()],
            )?;
            let port = super::networks::port_by_id(&tx, &id)?;
            tx.commit()?;
            Ok(Some(port))
        })
        .await
    }
}

/// What [`Store::update_port`] changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PortChange {
    /// New name.
    pub name: Option<String>,
    /// New groups (ids, in order).
    pub security_groups: Option<Vec<String>>,
    /// Port security on or off.
    pub port_security_enabled: Option<bool>,
    /// New address pairs.
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
}
