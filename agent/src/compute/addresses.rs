//! Guest-visible PCI addresses of a domain's disks and NICs.
//!
//! libvirt places devices on the guest's PCI bus when a domain is defined and when a device
//! is hot-plugged; a migration must give the destination's definition the same addresses
//! (libvirt refuses "Target device PCI address … does not match source …"). The source reads
//! them from its running domain ([`PciAddresses::from_domain_xml`]); the destination renders
//! its own definition with them ([`super::DomainSpec::addresses`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One PCI address (`<address type='pci' domain bus slot function/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciAddress {
    /// PCI domain.
    pub domain: u16,
    /// Bus.
    pub bus: u8,
    /// Slot (0–31).
    pub slot: u8,
    /// Function (0–7).
    pub function: u8,
}

impl PciAddress {
    /// Whether slot and function are in range.
    pub fn valid(&self) -> bool {
        self.slot < 32 && self.function < 8
    }

    /// The element's attributes.
    pub(crate) fn attributes(&self) -> [(&'static str, String); 5] {
        [
            ("type", "pci".into()),
            ("domain", format!("{:#06x}", self.domain)),
            ("bus", format!("{:#04x}", self.bus)),
            ("slot", format!("{:#04x}", self.slot)),
            ("function", format!("{:#x}", self.function)),
        ]
    }
}

/// The PCI addresses of a domain's disks (by target, `vda`…) and NICs (by MAC, lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciAddresses {
    /// Disks by target device.
    #[serde(default)]
    pub disks: BTreeMap<String, PciAddress>,
    /// NICs by MAC address.
    #[serde(default)]
    pub nics: BTreeMap<String, PciAddress>,
}

/// Why a domain's XML gave no addresses.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the domain's device addresses: {0}")]
pub struct AddressError(String);

fn number<T: TryFrom<u64>>(node: roxmltree::Node<'_, '_>, name: &str) -> Result<T, AddressError> {
    let text = node
        .attribute(name)
        .ok_or_else(|| AddressError(format!("an address has no {name}")))?;
    let value = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| AddressError(format!("{name}={text:?} is not a number")))?;
    T::try_from(value).map_err(|_| AddressError(format!("{name}={text} is out of range")))
}

fn pci_of(device: roxmltree::Node<'_, '_>) -> Result<Option<PciAddress>, AddressError> {
    let Some(address) = device
        .children()
        .find(|c| c.has_tag_name("address") && c.attribute("type") == Some("pci"))
    else {
        return Ok(None);
    };
    Ok(Some(PciAddress {
        domain: number(address, "domain")?,
        bus: number(address, "bus")?,
        slot: number(address, "slot")?,
        function: number(address, "function")?,
    }))
}

fn child_attribute<'a>(device: roxmltree::Node<'a, '_>, tag: &str, name: &str) -> Option<&'a str> {
    device
        .children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.attribute(name))
}

impl PciAddresses {
    /// The addresses in a domain's XML (as libvirt reports a defined or running domain).
    ///
    /// # Errors
    /// [`AddressError`] when the XML does not parse or an address is malformed.
    pub fn from_domain_xml(xml: &str) -> Result<Self, AddressError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| AddressError(e.to_string()))?;
        let mut found = Self::default();
        let Some(devices) = doc
            .root_element()
            .children()
            .find(|c| c.has_tag_name("devices"))
        else {
            return Ok(found);
        };
        for device in devices.children().filter(roxmltree::Node::is_element) {
            let (map, key) = match device.tag_name().name() {
                "disk" => (&mut found.disks, child_attribute(device, "target", "dev")),
                "interface" => (&mut found.nics, child_attribute(device, "mac", "address")),
                _ => continue,
            };
            if let (Some(key), Some(address)) = (key, pci_of(device)?) {
                map.insert(key.to_ascii_lowercase(), address);
            }
        }
        Ok(found)
    }

    /// Checks addresses handed over by a peer: in range, no two devices on one address.
    ///
    /// # Errors
    /// A message naming the fault.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (key, address) in self.disks.iter().chain(self.nics.iter()) {
            if !address.valid() {
                return Err(format!("device {key} has an impossible PCI address"));
            }
            if !seen.insert(*address) {
                return Err(format!("two devices share the PCI address of {key}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_by_target_and_mac() {
        let xml = r#"<domain type='qemu'><name>d</name><devices>
            <disk type='file' device='disk'><target dev='vda' bus='virtio'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>
            <disk type='network' device='disk'><target dev='vdb' bus='virtio'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/></disk>
            <interface type='bridge'><mac address='FA:16:3E:00:00:01'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></interface>
            <channel type='unix'><address type='virtio-serial' controller='0' bus='0' port='1'/></channel>
            <memballoon model='virtio'><address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></memballoon>
            </devices></domain>"#;
        let found = PciAddresses::from_domain_xml(xml).unwrap();
        assert_eq!(found.disks["vdb"].slot, 6);
        assert_eq!(found.disks["vda"].slot, 4);
        assert_eq!(found.nics["fa:16:3e:00:00:01"].slot, 3);
        assert_eq!(found.disks.len() + found.nics.len(), 3);
        assert!(found.check().is_ok());
        let attrs = found.disks["vdb"].attributes();
        assert_eq!(attrs[3], ("slot", "0x06".to_string()));
        assert_eq!(attrs[1], ("domain", "0x0000".to_string()));

        let mut clash = found.clone();
        clash.disks.insert("vdc".into(), found.disks["vda"]);
        assert!(clash.check().is_err());
        clash.disks.remove("vdc");
        clash.disks.insert(
            "vdc".into(),
            PciAddress {
                domain: 0,
                bus: 0,
                slot: 40,
                function: 0,
            },
        );
        assert!(clash.check().is_err());
        let bad = xml.replace("slot='0x06'", "slot='0x1ff'");
        assert!(PciAddresses::from_domain_xml(&bad).is_err());
        assert!(PciAddresses::from_domain_xml("<domain").is_err());
    }
}
