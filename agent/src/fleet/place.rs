//! Fleet-wide placement, the controller's core loop: rank every live node with the same
//! scheduler filter and weigher plugins the nodes run, then create on the best node and, when
//! it answers 409 (it lost a race for its capacity), on the next one.
//!
//! The ranking runs either here (plugins loaded from a config, [`rank_with`]) or on one agent
//! (`POST /v1/scheduler/evaluate` with every host). Down nodes are never candidates; they are
//! reported as refused with the reason.
//!
//! The nodes come from [`super::view::Fleet::placement`]: every node's compact placement entry
//! and the names of the live ones, not the full records (a tenth of the bytes at 10,000 nodes).

use super::view::NodeState;
use crate::plugin::PluginRegistry;
use crate::sched::{self, Evaluation, HostResult, HostState, RequestSpec};
use std::sync::Arc;
use std::time::Duration;

/// Deadline of one ranking.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One node as placement sees it.
#[derive(Debug, Clone)]
pub struct Placeable {
    /// The node's name.
    pub name: String,
    /// Up while its liveness key exists.
    pub state: NodeState,
    /// The agent's API URL (empty when the node never published an entry).
    pub api_url: String,
    /// Its scheduler figures (absent when the node never published an entry).
    pub host: Option<HostState>,
}

/// The scheduler's view of the up nodes (heartbeat age 0: their lease is alive).
pub fn hosts(nodes: &[Placeable]) -> Vec<HostState> {
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .filter_map(|n| n.host.clone())
        .collect()
}

/// Ranks the up nodes with a locally loaded chain; down nodes (and up nodes without a
/// record) are appended as refused.
///
/// # Errors
/// [`sched::SchedError`] when a plugin fails or the chain overruns [`DEADLINE`].
pub async fn rank_with(
    registry: Arc<PluginRegistry>,
    spec: RequestSpec,
    nodes: &[Placeable],
) -> Result<Evaluation, sched::SchedError> {
    let mut evaluation = sched::evaluate_async(registry, spec, hosts(nodes), DEADLINE).await?;
    add_absent(&mut evaluation, nodes);
    Ok(evaluation)
}

/// Appends the nodes that were not ranked (down, or without a record) as refused.
pub fn add_absent(evaluation: &mut Evaluation, nodes: &[Placeable]) {
    let ranked: std::collections::HashSet<String> =
        evaluation.hosts.iter().map(|h| h.name.clone()).collect();
    for node in nodes {
        if ranked.contains(&node.name) {
            continue;
        }
        let reason = match node.state {
            NodeState::Down => "the node is down (its lease expired)",
            NodeState::Up => "the node has not published its record yet",
        };
        evaluation.hosts.push(HostResult {
            name: node.name.clone(),
            passed: false,
            failed_by: Some("fleet".into()),
            reason: Some(reason.into()),
            weight: 0.0,
            weights: Default::default(),
        });
    }
}

/// The passing nodes, best first.
pub fn candidates<'a>(evaluation: &Evaluation, nodes: &'a [Placeable]) -> Vec<&'a Placeable> {
    let by_name: std::collections::HashMap<&str, &Placeable> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    evaluation
        .hosts
        .iter()
        .filter(|h| h.passed)
        .filter_map(|h| by_name.get(h.name.as_str()).copied())
        .collect()
}
