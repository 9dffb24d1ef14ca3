//! A fleet on one machine: a *fabric* bridge in the host namespace with etcd on it, and
//! *nodes*, each a private libvirtd ([`PrivateLibvirt`]: its own network and mount namespaces)
//! joined to the fabric by a veth, running its own `hyperlet serve` inside those namespaces
//! (TLS with a certificate for its fabric address, registered in the fabric's etcd).
//!
//! Every object is made for the test and removed on drop: agents and daemons stopped by PID,
//! namespaces and links deleted, etcd stopped.
//!
//! ```no_run
//! let fabric = hyperlet_tests::fleet::Fabric::new();
//! let a = fabric.node("node-a", 1, "");
//! let b = fabric.node("node-b", 2, "");
//! assert_ne!(a.ip, b.ip);
//! ```

use crate::etcd::Etcd;
use crate::node::PrivateLibvirt;
use crate::pki::Pki;
use crate::storage::NfsRelay;
use crate::{Agent, Launch};
use std::process::{Command, Stdio};

/// The agents' API port on their fabric address.
pub const API_PORT: u16 = 8787;
/// Lease TTL of fabric agents, seconds: the agent's default (`[fleet] lease_ttl_secs`, not
/// set in their configs), so a node going down is seen as an operator would see it.
pub const TTL: u64 = 15;

fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip (apt-get install iproute2)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(args: &[&str]) {
    let (ok, out) = ip(args);
    assert!(ok, "ip {}: {out}", args.join(" "));
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// The fabric: a bridge with a /24, etcd on its first address, and a CA for the agents.
pub struct Fabric {
    /// etcd, listening on the fabric.
    pub etcd: Etcd,
    bridge: String,
    net: String,
    pki: Pki,
    peer_token: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Fabric {
    /// Makes the bridge (a free `10.250.K.0/24`), starts etcd on `10.250.K.1` and a CA.
    pub fn new() -> Self {
        let (_, used) = ip(&["-o", "-4", "addr"]);
        let k = (0..64)
            .map(|_| 1 + rand_below(250))
            .find(|k| !used.contains(&format!("10.250.{k}.")))
            .expect("a free 10.250.K.0/24");
        let net = format!("10.250.{k}");
        let bridge = format!("hlfab{}", short_id());
        must(&["link", "add", &bridge, "type", "bridge"]);
        must(&["addr", "add", &format!("{net}.1/24"), "dev", &bridge]);
        must(&["link", "set", &bridge, "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        // The fleet's peer token: one for every node, readable by its owner only.
        let peer_token = dir.path().join("peer.token");
        std::fs::write(
            &peer_token,
            format!("{}\n", uuid::Uuid::new_v4().simple().to_string().repeat(2)),
        )
        .expect("peer token");
        std::fs::set_permissions(
            &peer_token,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod peer token");
        let etcd = Etcd::start_on(&format!("{net}.1"));
        Self {
            etcd,
            bridge,
            net,
            pki,
            peer_token,
            _dir: dir,
        }
    }

    /// The fabric's own address (etcd listens there).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.net)
    }

    /// The fleet's peer token (what agents present to each other on `/v1/peer/…`).
    pub fn peer_token(&self) -> String {
        std::fs::read_to_string(&self.peer_token)
            .expect("peer token")
            .trim()
            .to_string()
    }

    /// The CA every agent's certificate is signed by.
    pub fn ca(&self) -> std::path::PathBuf {
        self.pki.ca()
    }

    /// The fabric address of node `index`.
    pub fn address(&self, index: u8) -> String {
        format!("{}.{}", self.net, 10 + u16::from(index))
    }

    /// Starts node `name` at [`Fabric::address`] `index` with `extra` appended to its config.
    pub fn node(&self, name: &str, index: u8, extra: &str) -> FleetNode {
        self.start_node(name, index, extra, false)
    }

    /// As [`Fabric::node`], with the test binary's shared NFS server reachable inside the
    /// node at the host's address for it (`127.0.0.1`, through a [`NfsRelay`]) before the
    /// agent starts: every such node sees the same shares, as nodes of a fleet see one filer.
    /// The caller holds [`crate::storage::nfs_shared`] and has started the server
    /// ([`crate::storage::ganesha`]).
    pub fn node_with_nfs(&self, name: &str, index: u8, extra: &str) -> FleetNode {
        self.start_node(name, index, extra, true)
    }

    fn start_node(&self, name: &str, index: u8, extra: &str, nfs: bool) -> FleetNode {
        let address = self.address(index);
        let libvirt = PrivateLibvirt::start();
        let host_end = format!("hlv{}", short_id());
        let node_end = format!("hlp{}", short_id());
        must(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
        ]);
        must(&["link", "set", &host_end, "master", &self.bridge]);
        must(&["link", "set", &host_end, "up"]);
        must(&["link", "set", &node_end, "netns", libvirt.netns()]);
        let ns = libvirt.netns().to_string();
        let relay = nfs.then(|| NfsRelay::start(&ns));
        must(&["-n", &ns, "link", "set", &node_end, "name", "eth0"]);
        must(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        must(&["-n", &ns, "link", "set", "eth0", "up"]);
        let (cert, key) = self.pki.server(name, &address);
        let toml = format!(
            "[tls]\ncert = {cert:?}\nkey = {key:?}\n\n[fleet]\nendpoints = [\"{etcd}\"]\n\
             node_name = \"{name}\"\n\n[migration]\n\
             peer_token_file = {peer:?}\npeer_ca_cert = {ca:?}\n\
             libvirt_uri = \"{libvirt}\"\n\n{extra}\n",
            etcd = self.etcd.endpoint(),
            peer = self.peer_token,
            ca = self.pki.ca(),
            libvirt = PrivateLibvirt::tcp_uri(&address),
        );
        let agent = Agent::launch(Launch {
            toml,
            args: Vec::new(),
            addr: format!("{address}:{API_PORT}"),
            scheme: "https",
            wrap: vec![
                "nsenter".into(),
                "-t".into(),
                libvirt.libvirtd_pid().to_string(),
                "-m".into(),
                "-n".into(),
                "--".into(),
            ],
            ca: Some(self.pki.ca()),
        });
        FleetNode {
            name: name.to_string(),
            ip: address,
            agent,
            libvirt,
            _nfs: relay,
        }
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.etcd.stop();
        let _ = ip(&["link", "delete", &self.bridge]);
    }
}

/// One node of the fleet. Fields drop in order: the agent first, then its libvirtd and
/// namespaces (the veth goes with the namespace), then the NFS relay.
pub struct FleetNode {
    /// The node's name in the fleet.
    pub name: String,
    /// Its fabric address (API, VXLAN source).
    pub ip: String,
    /// Its agent.
    pub agent: Agent,
    /// Its libvirtd and namespaces.
    pub libvirt: PrivateLibvirt,
    /// The NFS relay into its namespace, if any (stopped last).
    _nfs: Option<NfsRelay>,
}

impl Drop for FleetNode {
    /// A failing test shows each node's agent: whether it still runs and how its log ends.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.agent.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "node {}: agent {}; its log ends:\n{}",
                self.name,
                self.agent.process_state(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

impl FleetNode {
    /// Runs a command inside the node's network namespace; returns (success, output).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["netns", "exec", self.libvirt.netns()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

fn rand_below(n: u32) -> u32 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % n
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fabric_ttl_is_the_agents_default() {
        assert_eq!(
            super::TTL,
            hyperlet::config::FleetConfig::default().lease_ttl_secs
        );
    }
}
