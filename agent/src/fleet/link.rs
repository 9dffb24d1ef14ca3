//! The state of this node's link to etcd, as `/v1/host`, `/healthz` and `/metrics` show it.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use utoipa::ToSchema;

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No `[fleet]` section: the node is on its own.
    Standalone,
    /// Registering for the first time.
    Connecting,
    /// Registered; the lease is being kept alive.
    Up,
    /// etcd is unreachable or refused; the agent keeps serving and retries with backoff.
    Degraded,
}

impl LinkState {
    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Degraded => "degraded",
        }
    }
}

/// The link as `GET /v1/host` reports it (`fleet`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FleetStatus {
    /// Where the link stands.
    pub state: LinkState,
    /// This node's name in the fleet (absent when standalone).
    pub node_name: Option<String>,
    /// etcd endpoints.
    pub endpoints: Vec<String>,
    /// The agent's advertised API URL.
    pub api_url: Option<String>,
    /// The node's VXLAN source address.
    pub tunnel_ip: Option<String>,
    /// When the state last changed (RFC 3339).
    pub since: Option<String>,
    /// When etcd last confirmed the lease (RFC 3339).
    pub last_heartbeat_at: Option<String>,
    /// Why the link is degraded.
    pub last_error: Option<String>,
    /// Times the agent registered again after losing the link.
    pub reconnects: u64,
}

/// The shared link state (one per agent).
pub struct FleetLink {
    status: RwLock<FleetStatus>,
    keepalives: AtomicU64,
    keepalive_failures: AtomicU64,
    record_writes: AtomicU64,
}

impl FleetLink {
    /// A standalone node's link.
    pub fn standalone() -> Self {
        Self::with(FleetStatus {
            state: LinkState::Standalone,
            node_name: None,
            endpoints: Vec::new(),
            api_url: None,
            tunnel_ip: None,
            since: None,
            last_heartbeat_at: None,
            last_error: None,
            reconnects: 0,
        })
    }

    fn with(status: FleetStatus) -> Self {
        Self {
            status: RwLock::new(status),
            keepalives: AtomicU64::new(0),
            keepalive_failures: AtomicU64::new(0),
            record_writes: AtomicU64::new(0),
        }
    }

    /// A copy of the current status.
    pub fn status(&self) -> FleetStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.status.read().unwrap_or_else(|p| p.into_inner()).state
    }

    fn update(&self, f: impl FnOnce(&mut FleetStatus)) {
        f(&mut self.status.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The node starts joining a fleet: the link is connecting.
    pub fn begin(&self, node_name: &str, endpoints: &[String], api_url: &str, tunnel_ip: &str) {
        self.update(|s| {
            s.state = LinkState::Connecting;
            s.node_name = Some(node_name.to_string());
            s.endpoints = endpoints.to_vec();
            s.api_url = Some(api_url.to_string());
            s.tunnel_ip = Some(tunnel_ip.to_string());
            s.since = Some(crate::state::now_rfc3339());
        });
    }

    /// Registered (again): the link is up.
    pub fn registered(&self) {
        self.update(|s| {
            if s.state == LinkState::Degraded {
                s.reconnects += 1;
            }
            if s.state != LinkState::Up {
                s.since = Some(crate::state::now_rfc3339());
            }
            s.state = LinkState::Up;
            s.last_error = None;
            s.last_heartbeat_at = Some(crate::state::now_rfc3339());
        });
    }

    /// etcd confirmed the lease.
    pub fn heartbeat(&self) {
        self.keepalives.fetch_add(1, Ordering::Relaxed);
        self.update(|s| s.last_heartbeat_at = Some(crate::state::now_rfc3339()));
    }

    /// The link failed: degraded until the next registration.
    pub fn failed(&self, error: &str) {
        self.keepalive_failures.fetch_add(1, Ordering::Relaxed);
        self.update(|s| {
            if s.state != LinkState::Degraded {
                s.since = Some(crate::state::now_rfc3339());
            }
            s.state = LinkState::Degraded;
            s.last_error = Some(error.to_string());
        });
    }

    /// The node record was written.
    pub fn record_written(&self) {
        self.record_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the link failed.
    pub fn failures(&self) -> u64 {
        self.keepalive_failures.load(Ordering::Relaxed)
    }

    /// Keep-alives etcd confirmed.
    pub fn keepalives(&self) -> u64 {
        self.keepalives.load(Ordering::Relaxed)
    }

    /// The link's metrics in Prometheus text format (nothing for a standalone node).
    pub fn render_metrics(&self) -> String {
        let status = self.status();
        if status.state == LinkState::Standalone {
            return String::new();
        }
        let up = u8::from(status.state == LinkState::Up);
        format!(
            "# HELP hyperlet_fleet_link_up 1 while the node is registered in etcd and its lease is kept alive.\n\
             # TYPE hyperlet_fleet_link_up gauge\n\
             hyperlet_fleet_link_up {up}\n\
             # HELP hyperlet_fleet_keepalives_total Lease keep-alives etcd confirmed.\n\
             # TYPE hyperlet_fleet_keepalives_total counter\n\
             hyperlet_fleet_keepalives_total {}\n\
             # HELP hyperlet_fleet_link_failures_total Times the link to etcd failed (a lease renewal that is retried, or a session that registers again).\n\
             # TYPE hyperlet_fleet_link_failures_total counter\n\
             hyperlet_fleet_link_failures_total {}\n\
             # HELP hyperlet_fleet_reconnects_total Registrations after a failure.\n\
             # TYPE hyperlet_fleet_reconnects_total counter\n\
             hyperlet_fleet_reconnects_total {}\n\
             # HELP hyperlet_fleet_record_writes_total Node record writes.\n\
             # TYPE hyperlet_fleet_record_writes_total counter\n\
             hyperlet_fleet_record_writes_total {}\n",
            self.keepalives.load(Ordering::Relaxed),
            self.keepalive_failures.load(Ordering::Relaxed),
            status.reconnects,
            self.record_writes.load(Ordering::Relaxed),
        )
    }
}
