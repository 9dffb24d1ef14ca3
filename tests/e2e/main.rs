//! End-to-end tests: real `hyperlet serve` processes, real libvirtd, real signals.
//!
//! One test binary with a module per area (faster to build than one binary per file).
//! Build the agent first (`cargo build -p hyperlet`); `scripts/test.sh` does everything.

mod api;
mod cli;
mod client_ids;
mod consoles;
mod events;
mod firewall;
mod firewall_guests;
mod fleet;
mod fleet_networks;
mod fleet_place;
mod fuzz;
mod hypervisor;
mod images;
mod journal_crash;
mod lifecycle;
mod limits;
mod migration;
mod mutations;
mod network_plugins;
mod networks;
mod node_page;
mod openapi;
mod plugin_http;
mod plugins;
mod servers;
mod shares;
mod stuck_share;
mod tls;
mod volume_plugins;
mod volumes;
