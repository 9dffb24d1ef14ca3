//! Statistics of a running domain through libvirt's own APIs.
//!
//! QMP passthrough (`virDomainQemuMonitorCommand`) would answer the same questions, but libvirt
//! marks every domain it is used on as tainted (`custom-monitor`), since it can no longer vouch
//! for QEMU's state. These are the calls libvirt supports: `virDomainGetInfo` (CPU time, vCPUs,
//! memory), `virDomainMemoryStats` (balloon and guest figures), `virDomainBlockStats` per disk
//! and `virDomainInterfaceStats` per tap.

use super::{ComputeError, Libvirt};
use serde::Serialize;
use std::collections::BTreeMap;
use virt::domain::Domain;
use virt::sys;

/// I/O counters of one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BlockStats {
    /// Guest device (`vda`, …).
    pub device: String,
    /// Bytes read.
    pub rd_bytes: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Read requests.
    pub rd_operations: u64,
    /// Write requests.
    pub wr_operations: u64,
}

/// Traffic counters of one NIC, as the guest sees it (received = into the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InterfaceStats {
    /// Host tap device.
    pub device: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_drops: u64,
}

/// Live figures of a running domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DomainStats {
    /// CPU time used by the guest since it started, nanoseconds.
    pub cpu_time_ns: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory the guest has now (after ballooning), bytes.
    pub memory_actual_bytes: u64,
    /// Further memory figures in bytes (counters as counts), by libvirt's names: `rss`
    /// always; `unused`, `available`, `usable`, `disk_caches`, `swap_in`, … when the guest's
    /// balloon driver reports them.
    pub memory: BTreeMap<String, u64>,
    /// Disks, in the order asked for.
    pub block: Vec<BlockStats>,
    /// NICs, in the order asked for.
    pub interfaces: Vec<InterfaceStats>,
}

/// libvirt's name of a memory statistic and whether it is in KiB (else a count or seconds).
fn memory_stat_name(tag: u32) -> Option<(&'static str, bool)> {
    Some(match tag {
        sys::VIR_DOMAIN_MEMORY_STAT_SWAP_IN => ("swap_in", true),
        sys::VIR_DOMAIN_MEMORY_STAT_SWAP_OUT => ("swap_out", true),
        sys::VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT => ("major_fault", false),
        sys::VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT => ("minor_fault", false),
        sys::VIR_DOMAIN_MEMORY_STAT_UNUSED => ("unused", true),
        sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE => ("available", true),
        sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON => ("actual", true),
        sys::VIR_DOMAIN_MEMORY_STAT_RSS => ("rss", true),
        sys::VIR_DOMAIN_MEMORY_STAT_USABLE => ("usable", true),
        sys::VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE => ("last_update", false),
        sys::VIR_DOMAIN_MEMORY_STAT_DISK_CACHES => ("disk_caches", true),
        sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC => ("hugetlb_pgalloc", false),
        sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL => ("hugetlb_pgfail", false),
        _ => return None,
    })
}

/// libvirt reports "not supported" as -1.
fn counter(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Libvirt {
    /// Statistics of the running domain `name`: CPU and memory, and the I/O counters of the
    /// disks `disks` (guest device names) and NICs `taps` (host tap names).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt fails (the domain is not running, a device is unknown) or
    /// times out (a hung QEMU does not answer the block statistics).
    pub async fn stats(
        &self,
        name: &str,
        disks: Vec<String>,
        taps: Vec<String>,
    ) -> Result<DomainStats, ComputeError> {
        let name = name.to_string();
        self.with_connection("virDomainGetInfo", move |conn| {
            let dom = Domain::lookup_by_name(conn, &name)?;
            let info = dom.get_info()?;
            let mut memory = BTreeMap::new();
            for stat in dom.memory_stats(0)? {
                if let Some((key, kib)) = memory_stat_name(stat.tag) {
                    let value = if kib {
                        stat.val.saturating_mul(1024)
                    } else {
                        stat.val
                    };
                    memory.insert(key.to_string(), value);
                }
            }
            let mut block = Vec::with_capacity(disks.len());
            for device in disks {
                let s = dom.get_block_stats(&device)?;
                block.push(BlockStats {
                    device,
                    rd_bytes: counter(s.rd_bytes),
                    wr_bytes: counter(s.wr_bytes),
                    rd_operations: counter(s.rd_req),
                    wr_operations: counter(s.wr_req),
                });
            }
            let mut interfaces = Vec::with_capacity(taps.len());
            for device in taps {
                let s = dom.interface_stats(&device)?;
                interfaces.push(InterfaceStats {
                    device,
                    rx_bytes: counter(s.rx_bytes),
                    rx_packets: counter(s.rx_packets),
                    rx_errors: counter(s.rx_errs),
                    rx_drops: counter(s.rx_drop),
                    tx_bytes: counter(s.tx_bytes),
                    tx_packets: counter(s.tx_packets),
                    tx_errors: counter(s.tx_errs),
                    tx_drops: counter(s.tx_drop),
                });
            }
            Ok(DomainStats {
                cpu_time_ns: info.cpu_time,
                vcpus: info.nr_virt_cpu,
                memory_actual_bytes: memory
                    .get("actual")
                    .copied()
                    .unwrap_or(info.memory.saturating_mul(1024)),
                memory,
                block,
                interfaces,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_names_follow_virsh_dommemstat() {
        assert_eq!(
            memory_stat_name(sys::VIR_DOMAIN_MEMORY_STAT_RSS),
            Some(("rss", true))
        );
        assert_eq!(
            memory_stat_name(sys::VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT),
            Some(("major_fault", false))
        );
        assert_eq!(memory_stat_name(sys::VIR_DOMAIN_MEMORY_STAT_NR), None);
        assert_eq!(counter(-1), 0);
        assert_eq!(counter(42), 42);
    }
}
