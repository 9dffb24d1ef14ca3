//! Fleet-wide address allocation: on a network that can span nodes (every type but `local`),
//! an address handed out by one node is claimed in etcd (`<prefix>/ipam/<subnet>/<address>`,
//! created only if absent, in one transaction), so two nodes never hand out the same address.
//! Standalone nodes and `local` networks allocate in the store alone.
//!
//! A port is first recorded in the store (which picks a free address, skipping those other
//! nodes claimed), then its addresses are claimed; if another node won one meanwhile, the
//! port is removed and allocated again without it. etcd unreachable → the port is not created
//! (503): an address is never handed out unclaimed. Deleting a port releases its claims (only
//! claims that name it). [`reconcile`] closes the two windows a crash or an outage leaves: a
//! port recorded but not yet claimed, and a claim whose release failed.

use crate::config::FleetConfig;
use crate::fleet::etcd::Etcd;
use crate::fleet::keys::Keys;
use crate::fleet::{record, FleetError};
use crate::net::model::{Network, NetworkType, Port};
use crate::ops::networks::ports::alloc_error;
use crate::ops::{OpError, Services};
use crate::state::{IpRequest, NewPort};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Most allocation rounds lost to other nodes before giving up.
const ROUNDS: usize = 16;

/// Who holds a claimed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The node.
    pub node: String,
    /// The port.
    pub port: String,
}

/// What [`FleetIpam::claim`] found.
enum Claimed {
    /// The claim was created now.
    Created,
    /// This port already held it.
    Already,
    /// Another port (maybe of another node) holds it.
    Held(Claim),
}

/// The claims of one agent.
pub struct FleetIpam {
    fleet: FleetConfig,
    keys: Keys,
    node: String,
    client: tokio::sync::Mutex<Option<Etcd>>,
}

impl FleetIpam {
    /// Claims for node `node` in the fleet `fleet` describes (connects on first use).
    pub fn new(fleet: &FleetConfig, node: &str) -> Self {
        Self {
            fleet: fleet.clone(),
            keys: Keys::new(&fleet.prefix),
            node: node.to_string(),
            client: tokio::sync::Mutex::new(None),
        }
    }

    async fn etcd(&self) -> Result<Etcd, FleetError> {
        let mut client = self.client.lock().await;
        if let Some(etcd) = client.as_ref() {
            return Ok(etcd.clone());
        }
        let etcd = Etcd::connect(&self.fleet).await?;
        *client = Some(etcd.clone());
        Ok(etcd)
    }

    /// Addresses of `subnet` claimed by other nodes (or other ports).
    async fn claimed_elsewhere(&self, subnet: &str) -> Result<Vec<(Ipv4Addr, Claim)>, FleetError> {
        let prefix = self.keys.ipam_subnet(subnet);
        let (kvs, _) = self.etcd().await?.get_prefix(&prefix).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let ip = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?;
                let claim: Claim = record::parse(kv.value()).ok()?;
                let ip = ip.parse().ok()?;
                (claim.node != self.node).then_some((ip, claim))
            })
            .collect())
    }

    /// Claims `ip` of `subnet` for `port` in one transaction (create if absent, else read the
    /// holder in the same transaction).
    async fn claim(&self, subnet: &str, ip: Ipv4Addr, port: &str) -> Result<Claimed, FleetError> {
        let key = self.keys.ipam(subnet, ip);
        let mine = Claim {
            node: self.node.clone(),
            port: port.to_string(),
        };
        let value = serde_json::to_vec(&mine).map_err(|e| FleetError::Record(e.to_string()))?;
        let resp = self
            .etcd()
            .await?
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, None)])
                    .or_else([TxnOp::get(key, None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(Claimed::Created);
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let holder: Claim = match holder {
            Some(bytes) => record::parse(&bytes).map_err(FleetError::Record)?,
            None => {
                return Err(FleetError::Record(format!(
                    "the claim on {ip} changed; retry"
                )))
            }
        };
        Ok(if holder == mine {
            Claimed::Already
        } else {
            Claimed::Held(holder)
        })
    }

    /// Takes over `ip` of `subnet` for `port` when node `from` holds it for the same port (the
    /// port moved here with its server). `true` when this node holds it now.
    async fn transfer(
        &self,
        subnet: &str,
        ip: Ipv4Addr,
        port: &str,
        from: &str,
    ) -> Result<bool, FleetError> {
        let key = self.keys.ipam(subnet, ip);
        let value = |node: &str| {
            serde_json::to_vec(&Claim {
                node: node.to_string(),
                port: port.to_string(),
            })
            .map_err(|e| FleetError::Record(e.to_string()))
        };
        let (theirs, mine) = (value(from)?, value(&self.node)?);
        let resp = self
            .etcd()
            .await?
            .txn(
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, theirs)])
                    .and_then([TxnOp::put(key.clone(), mine.clone(), None)])
                    .or_else([TxnOp::get(key, None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(holder.as_deref() == Some(mine.as_slice()))
    }

    /// Releases `ip` of `subnet` if `port` of this node holds it.
    async fn release(&self, subnet: &str, ip: Ipv4Addr, port: &str) -> Result<(), FleetError> {
        let key = self.keys.ipam(subnet, ip);
        let value = serde_json::to_vec(&Claim {
            node: self.node.clone(),
            port: port.to_string(),
        })
        .map_err(|e| FleetError::Record(e.to_string()))?;
        self.etcd()
            .await?
            .txn(
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, value)])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await?;
        Ok(())
    }
}

/// What [`reconcile`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Addresses of local ports that had no claim (a crash between the port and its claim).
    pub claimed: usize,
    /// Claims of this node whose port is gone (a release that failed while etcd was away).
    pub released: usize,
    /// Addresses of local ports that another node holds (logged; an operator must choose).
    pub conflicts: usize,
}

/// Makes etcd's claims match this node's ports: every address of a port on a network that
/// can span nodes is claimed (if absent), and this node's claims whose port no longer exists
/// are deleted. Run when the node joins its fleet and every few minutes.
///
/// # Errors
/// [`OpError::Fleet`] when etcd cannot be reached, [`OpError::Store`].
pub async fn reconcile(services: &Services) -> Result<Reconciled, OpError> {
    let Some(ipam) = services.fleet_ipam() else {
        return Ok(Reconciled::default());
    };
    let store = services.store();
    let networks = store.list_networks().await?;
    let ports = store.list_ports(crate::state::PortFilter::All).await?;
    let mut done = Reconciled::default();
    let mut local = std::collections::HashSet::new();
    for port in &ports {
        local.insert(port.id.clone());
        let Some(network) = networks.iter().find(|n| n.id == port.network_id) else {
            continue;
        };
        if applies(services, network).is_none() {
            continue;
        }
        for fixed in &port.fixed_ips {
            match ipam
                .claim(&fixed.subnet_id, fixed.ip_address, &port.id)
                .await?
            {
                Claimed::Created => done.claimed += 1,
                Claimed::Already => {}
                // The same port on another node: it moved here with its server (a migration
                // whose hand-over of the claim did not land).
                Claimed::Held(holder)
                    if holder.port == port.id
                        && ipam
                            .transfer(&fixed.subnet_id, fixed.ip_address, &port.id, &holder.node)
                            .await? =>
                {
                    done.claimed += 1;
                }
                Claimed::Held(holder) => {
                    done.conflicts += 1;
                    tracing::error!(
                        port = %port.id, ip = %fixed.ip_address, holder_node = %holder.node,
                        holder_port = %holder.port,
                        "an address of a local port is claimed by another node; one of the two ports must go"
                    );
                }
            }
        }
    }
    let etcd = ipam.etcd().await?;
    let (claims, _) = etcd.get_prefix(&ipam.keys.ipam_all()).await?;
    for kv in &claims {
        let Ok(claim) = record::parse::<Claim>(kv.value()) else {
            continue;
        };
        if claim.node != ipam.node || local.contains(&claim.port) {
            continue;
        }
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let gone = etcd
            .txn(
                Txn::new()
                    .when([Compare::value(
                        key.clone(),
                        CompareOp::Equal,
                        kv.value().to_vec(),
                    )])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await?;
        if gone.succeeded() {
            done.released += 1;
        }
    }
    Ok(done)
}

/// Runs [`reconcile`] until `stop`: at once (again after failures, with backoff), then every
/// five minutes.
pub async fn keep_reconciled(services: Services, stop: tokio_util::sync::CancellationToken) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        match reconcile(&services).await {
            Ok(done) => {
                if done != Reconciled::default() {
                    tracing::warn!(?done, "fleet-wide address claims reconciled");
                }
                wait = std::time::Duration::from_secs(300);
            }
            Err(e) => {
                tracing::warn!(error = %crate::api::error::chain(&e), "cannot reconcile fleet-wide address claims yet");
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The claims that apply to `network`: the agent's when it is in a fleet and the network can
/// span nodes.
fn applies(services: &Services, network: &Network) -> Option<std::sync::Arc<FleetIpam>> {
    (network.network_type != NetworkType::Local)
        .then(|| services.fleet_ipam())
        .flatten()
}

/// Records a port (see the module documentation). Call under the network lock.
///
/// # Errors
/// As the store's allocation; [`OpError::Conflict`] when a fixed address is claimed on
/// another node or no free address is left fleet-wide; [`OpError::Fleet`] when etcd cannot
/// be reached (nothing is created).
pub async fn create_port(
    services: &Services,
    network: &Network,
    mut new: NewPort,
) -> Result<Port, OpError> {
    let store = services.store();
    let Some(ipam) = applies(services, network) else {
        return store.create_port(new).await.map_err(alloc_error);
    };
    for subnet in &network.subnets {
        for (ip, holder) in ipam.claimed_elsewhere(subnet).await? {
            if new
                .ips
                .iter()
                .any(|r| matches!(r, IpRequest::Fixed(f) if *f == ip))
            {
                return Err(taken(ip, subnet, &holder));
            }
            new.exclude.push((subnet.clone(), ip));
        }
    }
    for _ in 0..ROUNDS {
        let port = store.create_port(new.clone()).await.map_err(alloc_error)?;
        let mut lost = None;
        let mut done = Vec::new();
        for fixed in &port.fixed_ips {
            match ipam
                .claim(&fixed.subnet_id, fixed.ip_address, &port.id)
                .await
            {
                Ok(Claimed::Created | Claimed::Already) => done.push(fixed.clone()),
                Ok(Claimed::Held(holder)) => {
                    lost = Some((fixed.clone(), holder));
                    break;
                }
                Err(e) => {
                    undo(services, &ipam, &port, &done).await;
                    return Err(OpError::Fleet(e));
                }
            }
        }
        let Some((fixed, holder)) = lost else {
            return Ok(port);
        };
        undo(services, &ipam, &port, &done).await;
        if new
            .ips
            .iter()
            .any(|r| matches!(r, IpRequest::Fixed(ip) if *ip == fixed.ip_address))
        {
            return Err(taken(fixed.ip_address, &fixed.subnet_id, &holder));
        }
        new.exclude
            .push((fixed.subnet_id.clone(), fixed.ip_address));
    }
    Err(OpError::Conflict(format!(
        "no address could be claimed fleet-wide on network {} after {ROUNDS} rounds",
        network.id
    )))
}

fn taken(ip: Ipv4Addr, subnet: &str, holder: &Claim) -> OpError {
    OpError::Conflict(format!(
        "address {ip} of subnet {subnet} is in use by port {} on node {}",
        holder.port, holder.node
    ))
}

async fn undo(
    services: &Services,
    ipam: &FleetIpam,
    port: &Port,
    claimed: &[crate::net::model::FixedIp],
) {
    for fixed in claimed {
        let _ = ipam
            .release(&fixed.subnet_id, fixed.ip_address, &port.id)
            .await;
    }
    if let Err(e) = services.store().delete_port(&port.id).await {
        tracing::warn!(port = %port.id, error = %e, "could not remove a port that lost its address");
    }
}

/// Deletes a port from the store and releases its fleet-wide claims (a release that fails is
/// logged; the claim names the port, so nothing else is freed by mistake).
///
/// # Errors
/// [`OpError::Store`] when the store cannot be written.
pub async fn delete_port(services: &Services, port: &Port) -> Result<(), OpError> {
    services.store().delete_port(&port.id).await?;
    let network = services.store().get_network(&port.network_id).await?;
    let Some(ipam) = network.as_ref().and_then(|n| applies(services, n)) else {
        return Ok(());
    };
    for fixed in &port.fixed_ips {
        if let Err(e) = ipam
            .release(&fixed.subnet_id, fixed.ip_address, &port.id)
            .await
        {
            tracing::warn!(port = %port.id, ip = %fixed.ip_address, error = %e, "could not release a fleet-wide address claim");
        }
    }
    Ok(())
}

/// Hands the fleet-wide claims of `port` (which moved here with its server) from node `from`
/// to this node. Failures are logged: the periodic reconciliation takes them over later.
pub async fn take_over(services: &Services, port: &Port, from: &str) {
    let network = match services.store().get_network(&port.network_id).await {
        Ok(Some(network)) => network,
        _ => return,
    };
    let Some(ipam) = applies(services, &network) else {
        return;
    };
    for fixed in &port.fixed_ips {
        match ipam
            .transfer(&fixed.subnet_id, fixed.ip_address, &port.id, from)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(port = %port.id, ip = %fixed.ip_address, from,
                "the address of a port that moved here is claimed by someone else"),
            Err(e) => tracing::warn!(port = %port.id, ip = %fixed.ip_address, error = %e,
                "cannot take over a moved port's address claim yet; reconciliation will"),
        }
    }
}
