//! The fleet's key layout in etcd. Every key starts with the configured prefix:
//!
//! ```text
//! <prefix>/nodes/<name>   the node record (JSON, no lease): capabilities, capacity, status
//! <prefix>/alive/<name>   the liveness key (small JSON) under the node's lease
//! <prefix>/hosts/<name>   the scheduler's figures of the node (compact JSON, no lease),
//!                         written with the record: what fleet placement reads
//! <prefix>/networks/<network id>/nodes/<name>   a node's ports on a VXLAN network
//! <prefix>/ipam/<subnet id>/<address>          which node and port hold an address
//! ```
//!
//! A node is *up* while its liveness key exists; the record stays after the lease ends so a
//! dead node is listed as down until `hyperlet fleet forget NODE`.

/// Longest node name (a DNS label is 63; a FQDN may be longer).
pub const MAX_NODE_NAME: usize = 253;
/// Longest prefix.
pub const MAX_PREFIX: usize = 64;

/// The keys of one fleet (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (checked by [`check_prefix`]).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>/` — everything of this fleet.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `<prefix>/nodes/` — every node record.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `<prefix>/nodes/<name>` — one node record.
    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }

    /// `<prefix>/hosts/` — every node's placement entry.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// `<prefix>/hosts/<name>` — one node's placement entry.
    pub fn host(&self, name: &str) -> String {
        format!("{}{name}", self.hosts())
    }

    /// `<prefix>/alive/` — every liveness key.
    pub fn alive_all(&self) -> String {
        format!("{}/alive/", self.prefix)
    }

    /// `<prefix>/alive/<name>` — one node's liveness key.
    pub fn alive(&self, name: &str) -> String {
        format!("{}{name}", self.alive_all())
    }

    /// `<prefix>/networks/` — which nodes have ports on which networks (l2population).
    pub fn networks(&self) -> String {
        format!("{}/networks/", self.prefix)
    }

    /// `<prefix>/networks/<network id>/nodes/<name>` — one node's ports on one network.
    pub fn network_node(&self, network: &str, name: &str) -> String {
        format!("{}{network}/nodes/{name}", self.networks())
    }

    /// `<prefix>/ipam/` — every fleet-wide address claim.
    pub fn ipam_all(&self) -> String {
        format!("{}/ipam/", self.prefix)
    }

    /// `<prefix>/ipam/<subnet id>/` — the fleet-wide claims on one subnet's addresses.
    pub fn ipam_subnet(&self, subnet: &str) -> String {
        format!("{}/ipam/{subnet}/", self.prefix)
    }

    /// `<prefix>/ipam/<subnet id>/<address>` — one claimed address.
    pub fn ipam(&self, subnet: &str, ip: std::net::Ipv4Addr) -> String {
        format!("{}{ip}", self.ipam_subnet(subnet))
    }

    /// The (network id, node name) of a key under [`Keys::networks`].
    pub fn parse_network_node<'a>(&self, key: &'a [u8]) -> Option<(&'a str, &'a str)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.networks())?;
        let (network, name) = rest.split_once("/nodes/")?;
        (uuid::Uuid::parse_str(network).is_ok() && check_node_name(name).is_ok())
            .then_some((network, name))
    }

    /// The node name at the end of a key under `dir` (one of the directory keys above), or
    /// `None` for a key that is not a valid name there.
    pub fn name_in<'a>(&self, dir: &str, key: &'a [u8]) -> Option<&'a str> {
        let key = std::str::from_utf8(key).ok()?;
        let name = key.strip_prefix(dir)?;
        check_node_name(name).ok().map(|()| name)
    }
}

/// Checks a fleet prefix: `/` then letters, digits, `/ . _ -`, no trailing `/`.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = prefix.len() > 1
        && prefix.len() <= MAX_PREFIX
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains("//")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{prefix:?} is not a fleet prefix"))
    }
}

/// Checks a node name: 1–253 letters, digits, `.`, `_` or `-`, starting with a letter or digit
/// (hostnames and FQDNs fit; nothing that could escape its key).
///
/// # Errors
/// A message saying what is wrong.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!("node name must be 1-{MAX_NODE_NAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "node name {name:?} must start with a letter or digit"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "node name {name:?} may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_under_the_prefix() {
        let keys = Keys::new("/hyperlet");
        assert_eq!(keys.node("a"), "/hyperlet/nodes/a");
        assert_eq!(keys.alive("a"), "/hyperlet/alive/a");
        assert_eq!(
            keys.name_in(&keys.nodes(), b"/hyperlet/nodes/a-1"),
            Some("a-1")
        );
        assert_eq!(keys.name_in(&keys.nodes(), b"/hyperlet/nodes/a/b"), None);
        assert_eq!(keys.name_in(&keys.nodes(), b"/other/nodes/a"), None);
        let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        let key = keys.network_node(id, "n1");
        assert_eq!(keys.parse_network_node(key.as_bytes()), Some((id, "n1")));
        assert_eq!(
            keys.parse_network_node(b"/hyperlet/networks/x/nodes/n1"),
            None
        );
    }

    #[test]
    fn names_and_prefixes_are_checked() {
        assert!(check_node_name("compute-7.example.org").is_ok());
        for bad in ["", "-a", "a/b", "a b", "../x", &"a".repeat(254)] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("/hyperlet").is_ok());
        assert!(check_prefix("/a/b-c").is_ok());
        for bad in ["", "/", "hyperlet", "/a/", "/a//b", "/a b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
