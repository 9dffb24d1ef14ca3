//! The instance the guest namespace plays, and a [`MetadataSource`] that knows only it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hyperlet::metadata::{InstanceMetadata, MetadataSource, SetPasswordError};
use hyperlet::net::neigh::format_mac;
use serde_json::json;

use super::{CLIENT_IP, CLIENT_MAC, NETWORK, SERVER_IP};

/// One realistic instance: two keys, ~1 KiB of cloud-config user data, a static
/// `network_data.json`.
pub fn instance() -> InstanceMetadata {
    let mac = format_mac(&CLIENT_MAC);
    let rsa = format!(
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ{} ops@bastion",
        "C7q9Kx2mVb4Lr8Tn1Wd6Hs3Pf5Yg0Zc".repeat(11)
    );
    let ed25519 =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq7d0Qk5w2X9pLmN3vB8cR1tY6uJ4sE0aF2gH7iK9oP deploy@ci";
    InstanceMetadata {
        uuid: "5b0e1f3c-8a42-4d6e-9f17-2c3b4a5d6e7f".into(),
        name: "web-01".into(),
        hostname: "web-01.novalocal".into(),
        availability_zone: "nova".into(),
        project_id: "9f8e7d6c5b4a49382716a5b4c3d2e1f0".into(),
        launch_index: 0,
        instance_type: "m1.small".into(),
        image_id: "ami-0000002a".into(),
        public_keys: BTreeMap::from([
            ("ops".to_owned(), rsa),
            ("deploy".to_owned(), ed25519.to_owned()),
        ]),
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        meta: BTreeMap::from([
            ("role".to_owned(), "web".to_owned()),
            ("env".to_owned(), "bench".to_owned()),
        ]),
        local_ipv4: CLIENT_IP,
        mac: mac.clone(),
        network_data: json!({
            "links": [{
                "id": "tap5b0e1f3c-8a",
                "type": "bridge",
                "ethernet_mac_address": mac,
                "mtu": 1450,
                "vif_id": "e2a1c0d9-7b6f-4a5e-8d3c-1f0e9d8c7b6a",
            }],
            "networks": [{
                "id": "network0",
                "link": "tap5b0e1f3c-8a",
                "type": "ipv4",
                "ip_address": CLIENT_IP.to_string(),
                "netmask": "255.255.255.0",
                "routes": [
                    {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "198.51.100.1"},
                    {
                        "network": "169.254.169.254",
                        "netmask": "255.255.255.255",
                        "gateway": SERVER_IP.to_string(),
                    },
                ],
                "network_id": NETWORK,
                "services": [{"type": "dns", "address": "198.51.100.3"}],
            }],
            "services": [{"type": "dns", "address": "198.51.100.3"}],
        }),
        vendor_data: json!({}),
    }
}

/// About 1 KiB of cloud-config.
const USER_DATA: &str = r#"#cloud-config
hostname: web-01
fqdn: web-01.novalocal
manage_etc_hosts: true
package_update: true
packages:
  - nginx
  - jq
  - chrony
users:
  - name: deploy
    groups: [sudo]
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
write_files:
  - path: /etc/app/config.toml
    permissions: "0640"
    content: |
      [server]
      listen = "0.0.0.0:8080"
      workers = 4
      [database]
      url = "postgres://app@db.internal:5432/app"
      pool = 16
      [cache]
      url = "redis://cache.internal:6379/0"
  - path: /etc/chrony/conf.d/local.conf
    content: |
      server ntp1.internal iburst
      server ntp2.internal iburst
runcmd:
  - [systemctl, enable, --now, chrony]
  - [sh, -c, "mkdir -p /var/lib/app && chown deploy: /var/lib/app"]
  - [sh, -c, "curl -fsS http://169.254.169.254/openstack/latest/meta_data.json > /run/md.json"]
  - [systemctl, restart, nginx]
final_message: "web-01 up after $UPTIME seconds"
"#;

/// A [`MetadataSource`] that knows one port: ([`NETWORK`], [`CLIENT_IP`], [`CLIENT_MAC`]).
pub struct OneInstance(pub Arc<InstanceMetadata>);

impl MetadataSource for OneInstance {
    fn identify(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Option<Arc<InstanceMetadata>> {
        (network_id == NETWORK && ip == CLIENT_IP && mac == Some(CLIENT_MAC))
            .then(|| self.0.clone())
    }

    fn password(&self, _server_id: &str) -> Option<String> {
        None
    }

    fn set_password(&self, _server_id: &str, _password: &str) -> Result<(), SetPasswordError> {
        Err(SetPasswordError::Store(
            "the bench source is read-only".into(),
        ))
    }
}
