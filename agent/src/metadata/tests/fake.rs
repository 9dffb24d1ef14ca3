//! A [`MetadataSource`] over a fixed list of ports, and the instances the tests use.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::metadata::{InstanceMetadata, MetadataSource, SetPasswordError};
use crate::net::neigh::{format_mac, parse_mac};

/// The network every test uses.
pub(crate) const NETWORK: &str = "4e1b0a9c-0000-4000-8000-00000000000a";

/// Ports → servers, passwords in memory.
#[derive(Default)]
pub(crate) struct FakeSource {
    /// The servers, found by address and MAC.
    pub(crate) servers: Vec<Arc<InstanceMetadata>>,
    /// Stored passwords by server id.
    pub(crate) passwords: Mutex<HashMap<String, String>>,
    /// How many times `identify` was called.
    pub(crate) identify_calls: AtomicUsize,
    /// `set_password` fails with a store error.
    pub(crate) broken_store: bool,
    /// `password` and `set_password` (the calls that may block) sleep this long first.
    pub(crate) slow: Option<Duration>,
}

impl FakeSource {
    /// A source serving `servers` (each identified by its `local_ipv4` and `mac`).
    pub(crate) fn new(servers: Vec<InstanceMetadata>) -> Self {
        Self {
            servers: servers.into_iter().map(Arc::new).collect(),
            ..Self::default()
        }
    }
}

impl MetadataSource for FakeSource {
    fn identify(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Option<Arc<InstanceMetadata>> {
        self.identify_calls.fetch_add(1, Ordering::SeqCst);
        if network_id != NETWORK {
            return None;
        }
        self.servers
            .iter()
            .find(|s| s.local_ipv4 == ip && mac.is_none_or(|m| parse_mac(&s.mac) == Some(m)))
            .cloned()
    }

    fn password(&self, server_id: &str) -> Option<String> {
        if let Some(delay) = self.slow {
            std::thread::sleep(delay);
        }
        self.passwords.lock().unwrap().get(server_id).cloned()
    }

    fn set_password(&self, server_id: &str, password: &str) -> Result<(), SetPasswordError> {
        if let Some(delay) = self.slow {
            std::thread::sleep(delay);
        }
        if self.broken_store {
            return Err(SetPasswordError::Store("disk full".into()));
        }
        let mut passwords = self.passwords.lock().unwrap();
        if passwords.contains_key(server_id) {
            return Err(SetPasswordError::AlreadySet);
        }
        passwords.insert(server_id.to_owned(), password.to_owned());
        Ok(())
    }
}

/// The MAC `fa:16:3e:00:00:<n>`.
pub(crate) fn mac(n: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, 0, n]
}

/// Server number `n` at `198.51.100.<ip>` with MAC `fa:16:3e:00:00:<n>`: two public keys,
/// user data `#!/bin/sh\necho server-<n>\n`, metadata `{"role": "web"}`.
pub(crate) fn server(n: u8, ip: u8) -> InstanceMetadata {
    let uuid = format!("0000000{n}-1111-4222-8333-444455556666");
    InstanceMetadata {
        uuid: uuid.clone(),
        name: format!("web{n}"),
        hostname: format!("web{n}.example.test"),
        availability_zone: "nova".into(),
        project_id: "p-1".into(),
        launch_index: u32::from(n),
        instance_type: "m1.small".into(),
        image_id: "ami-00000042".into(),
        public_keys: BTreeMap::from([
            (
                "zeta".to_owned(),
                format!("ssh-ed25519 AAAAzeta{n} zeta@test"),
            ),
            (
                "alpha".to_owned(),
                format!("ssh-ed25519 AAAAalpha{n} alpha@test"),
            ),
        ]),
        user_data: Some(format!("#!/bin/sh\necho server-{n}\n").into_bytes()),
        meta: BTreeMap::from([("role".to_owned(), "web".to_owned())]),
        local_ipv4: Ipv4Addr::new(198, 51, 100, ip),
        mac: format_mac(&mac(n)),
        network_data: json!({
            "links": [{"id": "tap1", "type": "ovs", "ethernet_mac_address": format_mac(&mac(n)), "mtu": 1500}],
            "networks": [{"id": "network0", "link": "tap1", "type": "ipv4_dhcp", "network_id": NETWORK}],
            "services": [],
        }),
        vendor_data: json!({"cloud": "hyperlet"}),
    }
}
