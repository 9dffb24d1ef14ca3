//! Fleet-wide placement, the controller's core loop: rank every live node with the same
//! scheduler filter and weigher plugins the nodes run, then create on the best node and, when
//! it answers 409 (it lost a race for its capacity), on the next one.
//!
//! The ranking runs either here (plugins loaded from a config, [`rank_with`]) or on one agent
//! (`POST /v1/scheduler/evaluate` with every host). Down nodes are never candidates; they are
//! reported as refused with the reason.

use super::view::{Node, NodeState};
use crate::plugin::PluginRegistry;
use crate::sched::{self, Evaluation, HostResult, HostState, RequestSpec};
use std::sync::Arc;
use std::time::Duration;

/// Deadline of one ranking.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The scheduler's view of the up nodes (their records' figures; heartbeat age 0: their lease
/// is alive).
pub fn hosts(nodes: &[Node]) -> Vec<HostState> {
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .filter_map(|n| {
            let record = n.record.as_ref()?;
            Some(HostState {
                name: n.name.clone(),
                enabled: record.enabled,
                heartbeat_age_s: 0,
                availability_zone: record.availability_zone.clone(),
                ..record.capacity.clone()
            })
        })
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
    nodes: &[Node],
) -> Result<Evaluation, sched::SchedError> {
    let mut evaluation = sched::evaluate_async(registry, spec, hosts(nodes), DEADLINE).await?;
    add_absent(&mut evaluation, nodes);
    Ok(evaluation)
}

/// Appends the nodes that were not ranked (down, or without a record) as refused.
pub fn add_absent(evaluation: &mut Evaluation, nodes: &[Node]) {
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
pub fn candidates<'a>(evaluation: &Evaluation, nodes: &'a [Node]) -> Vec<&'a Node> {
    let by_name: std::collections::HashMap<&str, &Node> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    evaluation
        .hosts
        .iter()
        .filter(|h| h.passed)
        .filter_map(|h| by_name.get(h.name.as_str()).copied())
        .collect()
}
