//! Makes the kernel's nftables match the store: the [`Ruleset`] of every port, group and
//! network is rendered ([`crate::net::firewall`]) and the difference to what was applied
//! last runs as one `nft -f` transaction — all of it or nothing. At start (and after a
//! failure) the agent's two tables are replaced whole, still in one transaction, so guests
//! that keep running while the agent restarts are filtered throughout.
//!
//! Only the agent's own tables (`[firewall] table_prefix`) are ever written.

use crate::net::firewall::{self, tables, FirewallPort, Indices, Ruleset};
use crate::net::model::{tap_name, DHCP_OWNER};
use crate::ops::{OpError, Services};
use crate::state::PortFilter;
use crate::tool::Tool;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What was applied last.
#[derive(Default)]
struct Applied {
    indices: Indices,
    /// `None` until the first full replacement succeeds (and after a failure).
    tables: Option<[tables::Table; 2]>,
    /// Port number → port id, for the counters.
    ports: BTreeMap<u32, String>,
    /// The last failure, until an apply succeeds.
    error: Option<String>,
}

/// The firewall applier: one per agent.
pub struct Firewall {
    prefix: String,
    dir: PathBuf,
    deadline: Duration,
    applied: tokio::sync::Mutex<Applied>,
}

/// Dropped packets of one port by reason, from the nftables counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDrops {
    /// The port.
    pub port_id: String,
    /// `spoof` (anti-spoofing) or `policy` (no rule allowed it).
    pub reason: &'static str,
    /// Packets dropped.
    pub packets: u64,
}

impl Firewall {
    /// An applier for tables `<prefix>_l2`/`<prefix>_sg`, writing its scripts under
    /// `state_dir/firewall`.
    pub fn new(prefix: &str, state_dir: &std::path::Path, deadline: Duration) -> Self {
        Self {
            prefix: prefix.to_string(),
            dir: state_dir.join("firewall"),
            deadline,
            applied: tokio::sync::Mutex::new(Applied::default()),
        }
    }

    /// The last failure to program the kernel, if the latest attempt failed.
    pub async fn last_error(&self) -> Option<String> {
        self.applied.lock().await.error.clone()
    }

    async fn nft(&self, script: &str, name: &str) -> Result<(), String> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.dir.join(name);
        tokio::fs::write(&path, script)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Tool::new("nft", "nftables", self.deadline)
            .run(&["-f".into(), path.to_string_lossy().into_owned()])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Programs `ruleset`: the difference to the last applied tables, or a full replacement
    /// when there are none (first run, after a failure) or the difference fails.
    async fn apply(
        &self,
        applied: &mut Applied,
        ruleset: &Ruleset,
        taps: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut indices = applied.indices.clone();
        indices.update(ruleset).map_err(|e| e.to_string())?;
        let new = firewall::render(ruleset, &indices, &self.prefix);
        let diff = applied
            .tables
            .as_ref()
            .and_then(|[l2, sg]| Some(tables::diff(l2, &new[0])? + &tables::diff(sg, &new[1])?));
        let result = match diff {
            Some(d) if d.is_empty() => Ok(()),
            Some(d) => {
                // Crash tests stop the agent here: the store has the change, the kernel not.
                crate::state::failpoint("firewall", "update:started").await;
                match self.nft(&d, "update.nft").await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "incremental firewall update failed; replacing the tables");
                        self.full(ruleset, &mut indices).await
                    }
                }
            }
            None => self.full(ruleset, &mut indices).await,
        };
        match result {
            Ok(()) => {
                // A full replacement may have renumbered: render what is now in the kernel.
                applied.tables = Some(firewall::render(ruleset, &indices, &self.prefix));
                applied.ports = port_ids(taps, &indices);
                applied.indices = indices;
                applied.error = None;
                Ok(())
            }
            Err(e) => {
                applied.tables = None;
                applied.indices = Indices::default();
                applied.error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn full(&self, ruleset: &Ruleset, indices: &mut Indices) -> Result<(), String> {
        *indices = Indices::default();
        indices.update(ruleset).map_err(|e| e.to_string())?;
        let [l2, sg] = firewall::render(ruleset, indices, &self.prefix);
        self.nft(&tables::full(&[&l2, &sg]), "full.nft").await
    }

    /// Reads the drop counters of every numbered port.
    pub async fn drops(&self) -> Vec<PortDrops> {
        let ports = self.applied.lock().await.ports.clone();
        let mut out = Vec::new();
        for (family, suffix, prefix, reason) in [
            ("bridge", "l2", "spoof_", "spoof"),
            ("inet", "sg", "policy_", "policy"),
        ] {
            let table = format!("{}_{suffix}", self.prefix);
            let text = match Tool::new("nft", "nftables", self.deadline)
                .run(&[
                    "-j".into(),
                    "list".into(),
                    "counters".into(),
                    "table".into(),
                    family.into(),
                    table,
                ])
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read firewall counters");
                    continue;
                }
            };
            for (name, packets) in parse_counters(&text) {
                let port = name
                    .strip_prefix(prefix)
                    .and_then(|n| n.parse::<u32>().ok())
                    .and_then(|n| ports.get(&n));
                if let Some(port_id) = port {
                    out.push(PortDrops {
                        port_id: port_id.clone(),
                        reason,
                        packets,
                    });
                }
            }
        }
        out
    }
}

/// `(name, packets)` of every counter in `nft -j list counters` output.
fn parse_counters(text: &str) -> Vec<(String, u64)> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let c = item.get("counter")?;
            Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?))
        })
        .collect()
}

fn port_ids(taps: &BTreeMap<String, String>, indices: &Indices) -> BTreeMap<u32, String> {
    indices
        .ports()
        .iter()
        .filter_map(|(tap, n)| Some((*n, taps.get(tap)?.clone())))
        .collect()
}

/// The ruleset the store describes — every guest port (DHCP ports are trusted), every group,
/// every network's bridge — and the port id of each tap.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read.
pub async fn ruleset(services: &Services) -> Result<(Ruleset, BTreeMap<String, String>), OpError> {
    let mut taps = BTreeMap::new();
    let store = services.store();
    let mut ruleset = Ruleset {
        bridges: store
            .list_networks()
            .await?
            .into_iter()
            .filter_map(|n| n.bridge)
            .collect(),
        ..Ruleset::default()
    };
    for group in store.list_security_groups().await? {
        let rules = group
            .security_group_rules
            .iter()
            .map(|r| r.firewall_rule())
            .collect();
        ruleset.rules.insert(group.id, rules);
    }
    for port in store.list_ports(PortFilter::All).await? {
        if port.device_owner == DHCP_OWNER {
            ruleset.trusted.push(tap_name(&port.id));
            continue;
        }
        let pairs = port
            .allowed_address_pairs
            .iter()
            .filter_map(|p| {
                let cidr =
                    crate::ops::security_groups::model::normalise_prefix("", &p.ip_address).ok()?;
                Some((cidr, Some(p.mac_address.clone())))
            })
            .collect();
        ruleset.ports.push(FirewallPort {
            device: tap_name(&port.id),
            mac: port.mac_address.clone(),
            ips: port.fixed_ips.iter().map(|f| f.ip_address).collect(),
            pairs,
            groups: port.security_groups.clone(),
            secured: port.port_security_enabled,
        });
        taps.insert(tap_name(&port.id), port.id);
    }
    Ok((ruleset, taps))
}

/// Makes the kernel match the store. Runs on a task of its own (a cancelled request never
/// cuts it short); callers queue on the applier, and each one reads the store after the one
/// before it finished, so its own change is in what it applies.
///
/// # Errors
/// [`OpError::Network`] when nftables refused or did not answer in time (the kernel keeps
/// the tables it had: each run is one transaction).
pub async fn sync(services: &Services) -> Result<(), OpError> {
    let services = services.clone();
    tokio::spawn(async move {
        let firewall = services.firewall();
        // The store is read under the applier's lock: whoever applies last read last.
        let mut applied = firewall.applied.lock().await;
        let (ruleset, taps) = ruleset(&services).await?;
        firewall
            .apply(&mut applied, &ruleset, &taps)
            .await
            .map_err(|e| OpError::Network(format!("cannot program the firewall: {e}")))
    })
    .await
    .map_err(|e| OpError::Interrupted(format!("firewall update ended early: {e}")))?
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_read_from_nft_json() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "bridge", "name": "spoof_3", "table": "hyperlet_l2", "handle": 4, "packets": 7, "bytes": 420}}]}"#;
        assert_eq!(
            super::parse_counters(text),
            vec![("spoof_3".to_string(), 7)]
        );
        assert!(super::parse_counters("not json").is_empty());
    }
}
