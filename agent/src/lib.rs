//! hyperlet — the per-node agent of a KVM cloud.
//!
//! One daemon does what nova-compute, cinder-volume, the neutron L2/DHCP/metadata agents and
//! the node image cache do in OpenStack. A controller drives it over REST (`/v1`); on its own it
//! is a complete single-node cloud with embedded state.
//!
//! The crate is split by concern:
//!
//! * [`config`] — the settings (TOML file, flags, environment) and their validation.
//! * [`daemon`] — `hyperlet serve`: listeners, TLS, signals and graceful shutdown.
//! * [`api`] — the REST layer: one route table, one handler file per resource, the error mapping.
//! * [`ops`] — typed operations shared by every front (REST, CLI, internal callers).
//! * [`state`] — the embedded SQLite store, the operation journal and the event log.
//! * [`host`] — facts about this machine: CPU, memory, disk and the KVM probe.
//! * [`compute`] — the hypervisor connection (libvirt).
//! * [`console`] — serial and VNC consoles over WebSocket, one-time URLs, screenshots.
//! * [`image`] — the image cache: qcow2, format inspection.
//! * [`volume`] — the cinder-volume half: host interfaces for volume drivers (LVM on granted VGs).
//! * [`net`] — native networking: named network namespaces, links and addresses over rtnetlink.
//! * [`metadata`] — the 169.254.169.254 metadata service (EC2 and OpenStack trees) per network namespace.
//! * [`dhcp`] — the native DHCP server: static leases for ports, inside a network's namespace.
//! * [`tool`] — the one runner of host tools (argv, deadline, resource limits).
//! * [`auth`] — bearer tokens.
//! * [`metrics`] — Prometheus counters and histograms.
//! * [`cli`] — the command-line client that speaks REST to a running agent.

pub mod api;
pub mod auth;
pub mod cli;
pub mod compute;
pub mod config;
pub mod console;
pub mod daemon;
pub mod dhcp;
pub mod fleet;
pub mod host;
pub mod image;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod plugin;
pub mod sched;
pub mod state;
pub mod tool;
pub mod ui;
pub mod volume;

/// The agent's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
