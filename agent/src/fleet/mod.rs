//! The fleet: nodes register in etcd, controllers read them there.
//!
//! A node with a `[fleet]` section holds one etcd lease, renewed by keep-alive, with a small
//! liveness key under it, and a larger node record that is not under the lease (a dead node
//! stays listed as down). Without the section the node is standalone and none of this runs.
//!
//! - [`keys`]: the key layout under the prefix.
//! - [`backoff`]: the retry pacing of the long-running loops.
//! - [`record`]: the node record and the liveness value.
//! - [`etcd`]: connecting (TLS, user), deadlines on every call.
//! - [`link`]: the state of this node's link to etcd, for `/v1/host`, `/healthz`, `/metrics`.
//! - [`registry`]: the agent side — lease, keep-alive, record updates, reconnection.
//! - [`view`]: the controller side — nodes, stats, watch, forget.
//! - [`place`]: fleet-wide placement with the nodes' scheduler plugins.

pub mod backoff;
pub mod etcd;
pub mod keys;
pub mod link;
pub mod place;
pub mod record;
pub mod registry;
pub mod view;

use std::time::Duration;

/// What goes wrong talking to the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A file the `[fleet]` section names cannot be used.
    #[error("Invalid setting `{setting}`: {reason}")]
    Setup {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// No etcd endpoint could be reached.
    #[error("etcd at {endpoints} is unreachable: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What the client said.
        reason: String,
    },
    /// An etcd call did not answer within its deadline.
    #[error("etcd {op} did not answer within {after:?}")]
    Timeout {
        /// The call.
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// etcd refused or failed a call.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// The call.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// Another agent (another node id) holds this node name.
    #[error("node name {name} is registered by another agent (node id {holder}); give this node another fleet.node_name or stop the other one")]
    NameTaken {
        /// The name.
        name: String,
        /// The other agent's node id.
        holder: String,
    },
    /// etcd no longer knows the lease (expired while unreachable, or etcd lost its data).
    #[error("the lease expired or was revoked in etcd")]
    LeaseLost,
    /// The node record could not be built.
    #[error("cannot describe this node: {0}")]
    Record(String),
    /// No such node in the fleet.
    #[error("no node named {0} in the fleet")]
    UnknownNode(String),
    /// The node is up; forgetting it would hide a live node.
    #[error("node {0} is up; stop its agent first (or pass --force)")]
    NodeUp(String),
}
