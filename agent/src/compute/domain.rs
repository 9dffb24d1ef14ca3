//! Domain XML from typed structs.
//!
//! [`DomainSpec`] describes everything the agent puts into a libvirt domain; [`DomainSpec::to_xml`]
//! renders it through the escaping [`XmlWriter`]. The `<metadata>` block tags the domain as
//! ours (node id + server id) so a restarted agent can adopt it, and so several agents sharing
//! one libvirtd never touch each other's domains.

use super::addresses::{PciAddress, PciAddresses};
use super::xml::{first_element_text, XmlWriter};
use super::DomainType;
use std::path::PathBuf;

/// XML namespace of the agent's domain metadata.
pub const METADATA_NS: &str = "https://hyperlet.dev/xmlns/instance/1";

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// From the first disk (BIOS).
    Disk,
    /// Direct kernel boot (AMI-style images with `kernel_id`/`ramdisk_id`).
    Kernel {
        /// Kernel file.
        kernel: PathBuf,
        /// Initial ramdisk file.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
}

/// Where a disk's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A file on the host.
    File {
        /// Path.
        path: PathBuf,
        /// `qcow2` or `raw`.
        format: String,
    },
    /// A volume file on a mounted share, already owned by the QEMU user. libvirt is told not
    /// to relabel it (`<seclabel model='dac' relabel='no'/>`): its chown would resolve the path
    /// again, and anyone who can write the export could have swapped the name for a link to a
    /// host file since the agent checked it.
    ShareFile {
        /// Path under the share's mount point.
        path: PathBuf,
        /// `qcow2` or `raw`.
        format: String,
    },
    /// A block device on the host (an LVM volume).
    Block {
        /// Device path.
        dev: PathBuf,
    },
    /// A file on an NFS share, reached by QEMU's userspace NFS client.
    Nfs {
        /// Server host.
        host: String,
        /// Path on the server (`/export/volume-…`).
        path: String,
        /// `qcow2` or `raw`.
        format: String,
    },
}

/// One virtio disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Guest device name (`vda`, `vdb`, …).
    pub target: String,
    /// Backing data.
    pub source: DiskSource,
    /// Serial visible in the guest (volume id).
    pub serial: Option<String>,
    /// Read-only.
    pub read_only: bool,
}

/// One NIC: a tap on a Linux bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// MAC address.
    pub mac: String,
    /// Bridge to plug into.
    pub bridge: String,
    /// Host tap device name.
    pub tap: String,
    /// MTU.
    pub mtu: Option<u32>,
}

/// What the agent records inside the domain XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMetadata {
    /// Id of the agent (node) that owns the domain.
    pub node_id: String,
    /// Server id (also the domain UUID).
    pub server_id: String,
    /// Server name.
    pub server_name: String,
    /// The server's spec as JSON, so a restarted agent that lost its record can adopt it.
    pub spec_json: String,
}

impl DomainMetadata {
    /// The metadata as the element `virDomainSetMetadata` takes: unprefixed, libvirt puts it
    /// (and every child) in [`METADATA_NS`] under the `hyperlet` prefix, as the domain XML
    /// written by [`DomainSpec::to_xml`] has it.
    pub fn element_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.open("instance", &[]);
        w.text("node-id", &[], &self.node_id);
        w.text("server-id", &[], &self.server_id);
        w.text("server-name", &[], &self.server_name);
        w.text("spec", &[], &self.spec_json);
        w.close();
        w.finish()
    }

    /// Reads the agent's metadata back from a domain's XML; `None` when the domain is not ours.
    pub fn from_domain_xml(xml: &str) -> Option<Self> {
        if !xml.contains(METADATA_NS) {
            return None;
        }
        Some(Self {
            node_id: first_element_text(xml, "hyperlet:node-id")?,
            server_id: first_element_text(xml, "hyperlet:server-id")?,
            server_name: first_element_text(xml, "hyperlet:server-name").unwrap_or_default(),
            spec_json: first_element_text(xml, "hyperlet:spec").unwrap_or_default(),
        })
    }
}

/// SMBIOS system information, as nova sets it so cloud-init recognises an OpenStack cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smbios {
    /// `OpenStack Foundation`.
    pub manufacturer: String,
    /// `OpenStack Nova`.
    pub product: String,
    /// Agent version.
    pub version: String,
    /// Server id.
    pub serial: String,
    /// Server id.
    pub uuid: String,
    /// `Virtual Machine`.
    pub family: String,
}

impl Smbios {
    /// nova's values for a server.
    pub fn nova(server_id: &str) -> Self {
        Self {
            manufacturer: "OpenStack Foundation".into(),
            product: "OpenStack Nova".into(),
            version: crate::VERSION.into(),
            serial: server_id.into(),
            uuid: server_id.into(),
            family: "Virtual Machine".into(),
        }
    }
}

/// Everything in a domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// libvirt domain name.
    pub name: String,
    /// Domain UUID (the server id).
    pub uuid: String,
    /// kvm or qemu (TCG).
    pub domain_type: DomainType,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Boot method.
    pub boot: Boot,
    /// SMBIOS system information.
    pub smbios: Smbios,
    /// Disks, in order.
    pub disks: Vec<Disk>,
    /// NICs, in order.
    pub nics: Vec<Nic>,
    /// File the serial console is logged to.
    pub console_log: PathBuf,
    /// A VNC display on a unix socket libvirt makes in the domain's private directory (only
    /// root and QEMU reach it; no VNC password) and a VGA video device.
    pub vnc: bool,
    /// Agent metadata.
    pub metadata: DomainMetadata,
    /// Guest PCI addresses to keep (a migrating domain's, from the source); devices not named
    /// here are placed by libvirt.
    pub addresses: PciAddresses,
}

impl DomainSpec {
    /// Renders the libvirt domain XML.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        let domain_type = match self.domain_type {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        };
        w.open("domain", &[("type", domain_type)]);
        w.text("name", &[], &self.name);
        w.text("uuid", &[], &self.uuid);
        self.write_metadata(&mut w);
        let memory_kib = (self.memory_mib * 1024).to_string();
        w.text("memory", &[("unit", "KiB")], &memory_kib);
        w.text("currentMemory", &[("unit", "KiB")], &memory_kib);
        w.text("vcpu", &[("placement", "static")], &self.vcpus.to_string());
        self.write_sysinfo(&mut w);
        self.write_os(&mut w);
        w.open("features", &[])
            .empty("acpi", &[])
            .empty("apic", &[])
            .close();
        if self.domain_type == DomainType::Kvm {
            w.empty("cpu", &[("mode", "host-model")]);
        }
        w.open("clock", &[("offset", "utc")]).close();
        w.text("on_poweroff", &[], "destroy");
        w.text("on_reboot", &[], "restart");
        w.text("on_crash", &[], "destroy");
        w.open("devices", &[]);
        for disk in &self.disks {
            write_disk(&mut w, disk, self.addresses.disks.get(&disk.target));
        }
        for nic in &self.nics {
            let address = self.addresses.nics.get(&nic.mac.to_ascii_lowercase());
            write_nic(&mut w, nic, address);
        }
        let log = self.console_log.display().to_string();
        w.open("serial", &[("type", "pty")])
            .empty("log", &[("file", &log), ("append", "on")])
            .empty("target", &[("port", "0")])
            .close();
        w.open("console", &[("type", "pty")])
            .empty("target", &[("type", "serial"), ("port", "0")])
            .close();
        if self.vnc {
            w.open("graphics", &[("type", "vnc")])
                .empty("listen", &[("type", "socket")])
                .close();
            w.open("video", &[])
                .empty("model", &[("type", "vga")])
                .close();
        }
        w.open("channel", &[("type", "unix")])
            .empty("source", &[("mode", "bind")])
            .empty(
                "target",
                &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
            )
            .close();
        w.open("memballoon", &[("model", "virtio")])
            .empty("stats", &[("period", "10")])
            .close();
        w.open("rng", &[("model", "virtio")])
            .text("backend", &[("model", "random")], "/dev/urandom")
            .close();
        w.close(); // devices
        w.close(); // domain
        w.finish()
    }

    fn write_metadata(&self, w: &mut XmlWriter) {
        let m = &self.metadata;
        w.open("metadata", &[]);
        w.open("hyperlet:instance", &[("xmlns:hyperlet", METADATA_NS)]);
        w.text("hyperlet:node-id", &[], &m.node_id);
        w.text("hyperlet:server-id", &[], &m.server_id);
        w.text("hyperlet:server-name", &[], &m.server_name);
        w.text("hyperlet:spec", &[], &m.spec_json);
        w.close().close();
    }

    fn write_sysinfo(&self, w: &mut XmlWriter) {
        let s = &self.smbios;
        w.open("sysinfo", &[("type", "smbios")]).open("system", &[]);
        for (name, value) in [
            ("manufacturer", &s.manufacturer),
            ("product", &s.product),
            ("version", &s.version),
            ("serial", &s.serial),
            ("uuid", &s.uuid),
            ("family", &s.family),
        ] {
            w.text("entry", &[("name", name)], value);
        }
        w.close().close();
    }

    fn write_os(&self, w: &mut XmlWriter) {
        w.open("os", &[]);
        w.text("type", &[("arch", "x86_64"), ("machine", "pc")], "hvm");
        match &self.boot {
            Boot::Disk => {
                w.empty("boot", &[("dev", "hd")]);
            }
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                w.text("kernel", &[], &kernel.display().to_string());
                if let Some(initrd) = initrd {
                    w.text("initrd", &[], &initrd.display().to_string());
                }
                w.text("cmdline", &[], cmdline);
            }
        }
        w.empty("smbios", &[("mode", "sysinfo")]);
        w.close();
    }
}

fn write_address(w: &mut XmlWriter, address: Option<&PciAddress>) {
    if let Some(address) = address {
        let attrs = address.attributes();
        let refs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.empty("address", &refs);
    }
}

fn write_disk(w: &mut XmlWriter, disk: &Disk, address: Option<&PciAddress>) {
    let (kind, format) = match &disk.source {
        DiskSource::File { format, .. } | DiskSource::ShareFile { format, .. } => {
            ("file", format.as_str())
        }
        DiskSource::Block { .. } => ("block", "raw"),
        DiskSource::Nfs { format, .. } => ("network", format.as_str()),
    };
    w.open("disk", &[("type", kind), ("device", "disk")]);
    if matches!(disk.source, DiskSource::Nfs { .. }) {
        // QEMU's libnfs driver has no native AIO.
        w.empty(
            "driver",
            &[("name", "qemu"), ("type", format), ("cache", "none")],
        );
    } else {
        w.empty(
            "driver",
            &[
                ("name", "qemu"),
                ("type", format),
                ("cache", "none"),
                ("io", "native"),
            ],
        );
    }
    match &disk.source {
        DiskSource::File { path, .. } => {
            w.empty("source", &[("file", &path.display().to_string())]);
        }
        DiskSource::ShareFile { path, .. } => {
            w.open("source", &[("file", &path.display().to_string())])
                .empty("seclabel", &[("model", "dac"), ("relabel", "no")])
                .close();
        }
        DiskSource::Block { dev } => {
            w.empty("source", &[("dev", &dev.display().to_string())]);
        }
        DiskSource::Nfs { host, path, .. } => {
            w.open("source", &[("protocol", "nfs"), ("name", path)])
                .empty("host", &[("name", host)])
                .close();
        }
    }
    w.empty("target", &[("dev", &disk.target), ("bus", "virtio")]);
    if let Some(serial) = &disk.serial {
        w.text("serial", &[], serial);
    }
    if disk.read_only {
        w.empty("readonly", &[]);
    }
    write_address(w, address);
    w.close();
}

impl Disk {
    /// The `<disk>` element alone, for hot attach and detach.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        write_disk(&mut w, self, None);
        w.finish()
    }
}

impl Nic {
    /// The `<interface>` element alone, for hot attach and detach.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        write_nic(&mut w, self, None);
        w.finish()
    }
}

fn write_nic(w: &mut XmlWriter, nic: &Nic, address: Option<&PciAddress>) {
    w.open("interface", &[("type", "bridge")]);
    w.empty("mac", &[("address", &nic.mac)]);
    w.empty("source", &[("bridge", &nic.bridge)]);
    w.empty("target", &[("dev", &nic.tap)]);
    w.empty("model", &[("type", "virtio")]);
    if let Some(mtu) = nic.mtu {
        w.empty("mtu", &[("size", &mtu.to_string())]);
    }
    write_address(w, address);
    w.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "hyperlet-0b7c".into(),
            uuid: "0b7c6b4e-0000-4000-8000-000000000001".into(),
            domain_type: DomainType::Qemu,
            memory_mib: 256,
            vcpus: 1,
            boot: Boot::Kernel {
                kernel: "/img/k".into(),
                initrd: Some("/img/i".into()),
                cmdline: "console=ttyS0 x=\"<y>\"".into(),
            },
            smbios: Smbios::nova("0b7c6b4e-0000-4000-8000-000000000001"),
            disks: vec![Disk {
                target: "vda".into(),
                source: DiskSource::File {
                    path: "/d/root.qcow2".into(),
                    format: "qcow2".into(),
                },
                serial: None,
                read_only: false,
            }],
            nics: vec![],
            console_log: "/d/console.log".into(),
            vnc: true,
            metadata: DomainMetadata {
                node_id: "node-1".into(),
                server_id: "0b7c6b4e-0000-4000-8000-000000000001".into(),
                server_name: "web <1>".into(),
                spec_json: "{\"a\":\"<b>\"}".into(),
            },
            addresses: PciAddresses::default(),
        }
    }

    #[test]
    fn kept_addresses_are_rendered_on_their_devices() {
        let mut spec = spec();
        spec.nics.push(Nic {
            mac: "FA:16:3E:00:00:01".into(),
            bridge: "brq1".into(),
            tap: "tap1".into(),
            mtu: None,
        });
        let at = |slot| PciAddress {
            domain: 0,
            bus: 0,
            slot,
            function: 0,
        };
        spec.addresses.disks.insert("vda".into(), at(6));
        spec.addresses
            .nics
            .insert("fa:16:3e:00:00:01".into(), at(3));
        let xml = spec.to_xml();
        let found = PciAddresses::from_domain_xml(&xml).unwrap();
        assert_eq!(found, spec.addresses, "{xml}");
        assert!(!spec.disks[0].to_xml().contains("<address"));
    }

    #[test]
    fn xml_has_what_nova_sets_and_metadata_reads_back() {
        let xml = spec().to_xml();
        assert!(xml.starts_with("<domain type=\"qemu\">"));
        assert!(xml.contains("<entry name=\"product\">OpenStack Nova</entry>"));
        assert!(xml.contains("<entry name=\"manufacturer\">OpenStack Foundation</entry>"));
        assert!(xml.contains("<smbios mode=\"sysinfo\"/>"));
        assert!(xml.contains("<cmdline>console=ttyS0 x=&quot;&lt;y&gt;&quot;</cmdline>"));
        assert!(xml.contains("org.qemu.guest_agent.0"));
        assert!(xml.contains("<graphics type=\"vnc\">"), "{xml}");
        assert!(xml.contains("<listen type=\"socket\"/>"), "{xml}");
        let no_vnc = DomainSpec {
            vnc: false,
            ..spec()
        };
        assert!(!no_vnc.to_xml().contains("<graphics"));
        assert!(xml.contains("<backend model=\"random\">/dev/urandom</backend>"));
        let meta = DomainMetadata::from_domain_xml(&xml).unwrap();
        assert_eq!(meta, spec().metadata);
        assert!(DomainMetadata::from_domain_xml("<domain/>").is_none());
    }

    #[test]
    fn a_share_file_is_never_relabelled_and_the_servers_own_disks_are() {
        let mut spec = spec();
        spec.disks.push(Disk {
            target: "vdb".into(),
            source: DiskSource::ShareFile {
                path: "/mnt/share/volume-1".into(),
                format: "raw".into(),
            },
            serial: Some("volume-1".into()),
            read_only: false,
        });
        let xml = spec.to_xml();
        let squeezed: String = xml.lines().map(str::trim).collect();
        assert!(
            squeezed.contains(
                "<source file=\"/mnt/share/volume-1\"><seclabel model=\"dac\" relabel=\"no\"/></source>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<source file=\"/d/root.qcow2\"/>"), "{xml}");
    }
}
