//! Views over a [`HostBatch`] that resolve the hosts' string indexes.

use crate::{codes, HostBatch, HostState, PluginError};

/// A checked [`HostBatch`]: every host's string indexes are in range, so [`Host`]'s accessors
/// never fail.
#[derive(Clone, Copy, Debug)]
pub struct Hosts<'a> {
    batch: &'a HostBatch,
}

impl<'a> Hosts<'a> {
    /// Checks `batch`.
    ///
    /// # Errors
    ///
    /// [`codes::BAD_BATCH`] naming the first host whose string index is out of range.
    pub fn new(batch: &'a HostBatch) -> Result<Self, PluginError> {
        let n = batch.strings.len();
        for (i, host) in batch.hosts.iter().enumerate() {
            let fields = [
                ("availability-zone-idx", host.availability_zone_idx),
                ("hypervisor-type-idx", host.hypervisor_type_idx),
                ("architecture-idx", host.architecture_idx),
                ("vm-mode-idx", host.vm_mode_idx),
            ];
            if let Some((field, idx)) = fields.into_iter().find(|&(_, idx)| idx as usize >= n) {
                return Err(PluginError::new(
                    codes::BAD_BATCH,
                    format!("Host {i} has {field} {idx}, but the batch has {n} strings"),
                ));
            }
        }
        Ok(Self { batch })
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.batch.hosts.len()
    }

    /// Whether the batch has no hosts.
    pub fn is_empty(&self) -> bool {
        self.batch.hosts.is_empty()
    }

    /// Host number `index`.
    pub fn get(&self, index: usize) -> Option<Host<'a>> {
        let state = self.batch.hosts.get(index)?;
        Some(Host {
            state,
            strings: &self.batch.strings,
            index,
        })
    }

    /// The hosts in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Host<'a>> + 'a {
        let strings = &self.batch.strings;
        self.batch
            .hosts
            .iter()
            .enumerate()
            .map(move |(index, state)| Host {
                state,
                strings,
                index,
            })
    }

    /// The batch's shared strings.
    pub fn strings(&self) -> &'a [String] {
        &self.batch.strings
    }
}

/// One candidate host: its [`HostState`] with the string fields resolved.
#[derive(Clone, Copy, Debug)]
pub struct Host<'a> {
    state: &'a HostState,
    strings: &'a [String],
    index: usize,
}

impl<'a> Host<'a> {
    fn string(&self, idx: u32) -> &'a str {
        // In range: `Hosts::new` checked every index.
        self.strings.get(idx as usize).map_or("", String::as_str)
    }

    /// Position of the host in the batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The raw record.
    pub fn state(&self) -> &'a HostState {
        self.state
    }

    /// Availability zone.
    pub fn availability_zone(&self) -> &'a str {
        self.string(self.state.availability_zone_idx)
    }

    /// Hypervisor type, e.g. `qemu`.
    pub fn hypervisor_type(&self) -> &'a str {
        self.string(self.state.hypervisor_type_idx)
    }

    /// CPU architecture, e.g. `x86_64`.
    pub fn architecture(&self) -> &'a str {
        self.string(self.state.architecture_idx)
    }

    /// Supported VM mode, e.g. `hvm`.
    pub fn vm_mode(&self) -> &'a str {
        self.string(self.state.vm_mode_idx)
    }

    /// The node takes new servers.
    pub fn enabled(&self) -> bool {
        self.state.enabled
    }

    /// Seconds since the node last reported.
    pub fn heartbeat_age_s(&self) -> u32 {
        self.state.heartbeat_age_s
    }

    /// Physical CPUs.
    pub fn vcpus_total(&self) -> u32 {
        self.state.vcpus_total
    }

    /// vCPUs allocated to servers.
    pub fn vcpus_used(&self) -> u32 {
        self.state.vcpus_used
    }

    /// Physical memory, MiB.
    pub fn ram_total_mb(&self) -> u64 {
        self.state.ram_total_mb
    }

    /// Memory allocated to servers, MiB.
    pub fn ram_used_mb(&self) -> u64 {
        self.state.ram_used_mb
    }

    /// Memory free on the host right now, MiB.
    pub fn ram_free_mb(&self) -> u64 {
        self.state.ram_free_mb
    }

    /// Disk for servers, GiB.
    pub fn disk_total_gb(&self) -> u64 {
        self.state.disk_total_gb
    }

    /// Disk allocated to servers, GiB.
    pub fn disk_used_gb(&self) -> u64 {
        self.state.disk_used_gb
    }

    /// Volume capacity free, GiB.
    pub fn volume_free_gb(&self) -> u64 {
        self.state.volume_free_gb
    }

    /// vCPU allocation ratio.
    pub fn cpu_allocation_ratio(&self) -> f32 {
        self.state.cpu_allocation_ratio
    }

    /// RAM allocation ratio.
    pub fn ram_allocation_ratio(&self) -> f32 {
        self.state.ram_allocation_ratio
    }

    /// Disk allocation ratio.
    pub fn disk_allocation_ratio(&self) -> f32 {
        self.state.disk_allocation_ratio
    }

    /// vCPUs still allocatable: `vcpus_total × cpu_allocation_ratio − vcpus_used` (negative
    /// when over-committed), as nova's `CoreFilter`/placement compute it.
    pub fn usable_vcpus(&self) -> f64 {
        usable(
            self.state.vcpus_total.into(),
            self.state.cpu_allocation_ratio,
            self.state.vcpus_used.into(),
        )
    }

    /// MiB of RAM still allocatable: `ram_total_mb × ram_allocation_ratio − ram_used_mb`, as
    /// nova's `RamFilter` and `RAMWeigher` compute it.
    pub fn usable_ram_mb(&self) -> f64 {
        usable(
            self.state.ram_total_mb,
            self.state.ram_allocation_ratio,
            self.state.ram_used_mb,
        )
    }

    /// GiB of disk still allocatable: `disk_total_gb × disk_allocation_ratio − disk_used_gb`.
    pub fn usable_disk_gb(&self) -> f64 {
        usable(
            self.state.disk_total_gb,
            self.state.disk_allocation_ratio,
            self.state.disk_used_gb,
        )
    }
}

/// `total × ratio − used`; exact for capacities below 2^52.
fn usable(total: u64, ratio: f32, used: u64) -> f64 {
    total as f64 * f64::from(ratio) - used as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, HostBuilder};

    #[test]
    fn resolves_strings() {
        let b = batch(&[
            HostBuilder::new().az("az1").hypervisor_type("qemu"),
            HostBuilder::new()
                .az("az2")
                .architecture("aarch64")
                .vm_mode("xen"),
        ]);
        let hosts = Hosts::new(&b).unwrap();
        assert_eq!(hosts.len(), 2);
        let names: Vec<_> = hosts
            .iter()
            .map(|h| (h.index(), h.availability_zone()))
            .collect();
        assert_eq!(names, [(0, "az1"), (1, "az2")]);
        let h = hosts.get(1).unwrap();
        assert_eq!(
            (h.architecture(), h.vm_mode(), h.hypervisor_type()),
            ("aarch64", "xen", "qemu")
        );
        assert!(hosts.get(2).is_none());
    }

    #[test]
    fn rejects_index_out_of_range() {
        let mut b = batch(&[HostBuilder::new(), HostBuilder::new()]);
        b.hosts[1].vm_mode_idx = 99;
        let err = Hosts::new(&b).unwrap_err();
        assert_eq!(err.code, "bad-batch");
        assert_eq!(
            err.message,
            format!(
                "Host 1 has vm-mode-idx 99, but the batch has {} strings",
                b.strings.len()
            )
        );
    }

    #[test]
    fn usable_capacity() {
        let b = batch(&[HostBuilder::new()
            .ram(8192, 7168)
            .ram_ratio(1.5)
            .vcpus(4, 10)
            .cpu_ratio(2.0)
            .disk(100, 20)]);
        let hosts = Hosts::new(&b).unwrap();
        let h = hosts.get(0).unwrap();
        assert_eq!(h.usable_ram_mb(), 8192.0 * 1.5 - 7168.0);
        assert_eq!(h.usable_vcpus(), -2.0);
        assert_eq!(h.usable_disk_gb(), 80.0);
    }
}
