//! Views over a [`HostBatch`] that resolve the hosts' string indexes, and over the hosts'
//! [`Identities`] (names, traits, metadata).

use crate::identity::Identities;
use crate::{codes, HostBatch, HostIdentity, PluginError};

/// A checked [`HostBatch`]: every column has one entry per host and every string index is in
/// range, so [`Host`]'s accessors never fail.
#[derive(Clone, Copy, Debug)]
pub struct Hosts<'a> {
    batch: &'a HostBatch,
    len: usize,
    identity: Option<&'a Identities>,
}

impl<'a> Hosts<'a> {
    /// Checks `batch`.
    ///
    /// # Errors
    ///
    /// [`codes::BAD_BATCH`] naming the first column whose length differs from `enabled`'s,
    /// or the first host whose string index is out of range.
    pub fn new(batch: &'a HostBatch) -> Result<Self, PluginError> {
        let len = batch.enabled.len();
        let lengths = [
            ("heartbeat-age-s", batch.heartbeat_age_s.len()),
            ("vcpus-total", batch.vcpus_total.len()),
            ("vcpus-used", batch.vcpus_used.len()),
            ("ram-total-mb", batch.ram_total_mb.len()),
            ("ram-used-mb", batch.ram_used_mb.len()),
            ("ram-free-mb", batch.ram_free_mb.len()),
            ("disk-total-gb", batch.disk_total_gb.len()),
            ("disk-used-gb", batch.disk_used_gb.len()),
            ("volume-free-gb", batch.volume_free_gb.len()),
            ("cpu-allocation-ratio", batch.cpu_allocation_ratio.len()),
            ("ram-allocation-ratio", batch.ram_allocation_ratio.len()),
            ("disk-allocation-ratio", batch.disk_allocation_ratio.len()),
            ("availability-zone-idx", batch.availability_zone_idx.len()),
            ("hypervisor-type-idx", batch.hypervisor_type_idx.len()),
            ("architecture-idx", batch.architecture_idx.len()),
            ("vm-mode-idx", batch.vm_mode_idx.len()),
        ];
        if let Some((column, got)) = lengths.into_iter().find(|&(_, got)| got != len) {
            return Err(PluginError::new(
                codes::BAD_BATCH,
                format!("Column {column} has {got} entries, but enabled has {len}"),
            ));
        }
        let n = batch.strings.len();
        // Host by host, so the error names the first bad host whatever its column.
        let columns = [
            ("availability-zone-idx", &batch.availability_zone_idx),
            ("hypervisor-type-idx", &batch.hypervisor_type_idx),
            ("architecture-idx", &batch.architecture_idx),
            ("vm-mode-idx", &batch.vm_mode_idx),
        ];
        let in_range = |column: &[u32]| column.iter().all(|&idx| (idx as usize) < n);
        if !columns.iter().all(|(_, column)| in_range(column)) {
            for i in 0..len {
                if let Some((field, idx)) = columns
                    .iter()
                    .map(|(field, column)| (*field, column[i]))
                    .find(|&(_, idx)| idx as usize >= n)
                {
                    return Err(PluginError::new(
                        codes::BAD_BATCH,
                        format!("Host {i} has {field} {idx}, but the batch has {n} strings"),
                    ));
                }
            }
        }
        Ok(Self {
            batch,
            len,
            identity: None,
        })
    }

    /// Checks `batch`, and takes the hosts' names, traits and metadata from `identity`
    /// (fetched when first asked for). Without it ([`Hosts::new`]) every host's name is empty
    /// and it has no traits or metadata.
    ///
    /// # Errors
    ///
    /// As [`Hosts::new`].
    pub fn with_identity(
        batch: &'a HostBatch,
        identity: &'a Identities,
    ) -> Result<Self, PluginError> {
        let mut hosts = Self::new(batch)?;
        hosts.identity = Some(identity);
        Ok(hosts)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no hosts.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Host number `index`.
    pub fn get(&self, index: usize) -> Option<Host<'a>> {
        (index < self.len).then_some(Host {
            batch: self.batch,
            index,
            identity: self.identity,
        })
    }

    /// The hosts in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Host<'a>> + 'a {
        let (batch, identity) = (self.batch, self.identity);
        (0..self.len).map(move |index| Host {
            batch,
            index,
            identity,
        })
    }

    /// The batch's shared strings.
    pub fn strings(&self) -> &'a [String] {
        &self.batch.strings
    }

    /// The raw (checked) batch, column by column.
    pub fn batch(&self) -> &'a HostBatch {
        self.batch
    }
}

/// One candidate host: a view of entry [`Host::index`] of every column of the batch, with the
/// string fields resolved. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Host<'a> {
    batch: &'a HostBatch,
    index: usize,
    identity: Option<&'a Identities>,
}

impl<'a> Host<'a> {
    fn identity(&self) -> Option<&'a HostIdentity> {
        self.identity.map(Identities::get)
    }

    /// The host's name (as the controller or the fleet knows it; unique within a call), e.g.
    /// to refuse hosts named `maint-*`. The first call of any of the identity accessors
    /// ([`Host::name`], [`Host::traits`], [`Host::has_trait`], [`Host::metadata`],
    /// [`Host::metadata_entries`]) in a call fetches every host's identity from the agent at
    /// once; a plugin that never calls them never pays for them.
    pub fn name(&self) -> &'a str {
        self.identity()
            .map_or("", |id| id.names[self.index].as_str())
    }

    /// The host's traits (placement-style names such as `HW_CPU_X86_AVX2` or `CUSTOM_GPU`),
    /// in ascending order, each once.
    pub fn traits(&self) -> impl Iterator<Item = &'a str> + 'a {
        let id = self.identity();
        let range = id.map_or(0..0, |id| {
            id.trait_start[self.index] as usize..id.trait_start[self.index + 1] as usize
        });
        range.map(move |j| {
            let id = id.expect("a non-empty range has an identity");
            id.strings[id.trait_idx[j] as usize].as_str()
        })
    }

    /// Whether the host has trait `name` (exact, case-sensitive).
    pub fn has_trait(&self, name: &str) -> bool {
        self.traits().any(|t| t == name)
    }

    /// The host's metadata value of `key` (exact key), as host aggregates' metadata.
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        self.metadata_entries()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Every metadata entry of the host, keys in ascending order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let id = self.identity();
        let range = id.map_or(0..0, |id| {
            id.metadata_start[self.index] as usize..id.metadata_start[self.index + 1] as usize
        });
        range.map(move |j| {
            let id = id.expect("a non-empty range has an identity");
            (
                id.strings[id.metadata_key_idx[j] as usize].as_str(),
                id.strings[id.metadata_value_idx[j] as usize].as_str(),
            )
        })
    }

    fn string(&self, column: &[u32]) -> &'a str {
        // In range: `Hosts::new` checked every column's length and every index.
        self.batch.strings[column[self.index] as usize].as_str()
    }

    /// Position of the host in the batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The raw batch this host is entry [`Host::index`] of.
    pub fn batch(&self) -> &'a HostBatch {
        self.batch
    }

    /// Availability zone.
    pub fn availability_zone(&self) -> &'a str {
        self.string(&self.batch.availability_zone_idx)
    }

    /// Hypervisor type, e.g. `qemu`.
    pub fn hypervisor_type(&self) -> &'a str {
        self.string(&self.batch.hypervisor_type_idx)
    }

    /// CPU architecture, e.g. `x86_64`.
    pub fn architecture(&self) -> &'a str {
        self.string(&self.batch.architecture_idx)
    }

    /// Supported VM mode, e.g. `hvm`.
    pub fn vm_mode(&self) -> &'a str {
        self.string(&self.batch.vm_mode_idx)
    }

    /// The node takes new servers.
    pub fn enabled(&self) -> bool {
        self.batch.enabled[self.index]
    }

    /// Seconds since the node last reported.
    pub fn heartbeat_age_s(&self) -> u32 {
        self.batch.heartbeat_age_s[self.index]
    }

    /// Physical CPUs.
    pub fn vcpus_total(&self) -> u32 {
        self.batch.vcpus_total[self.index]
    }

    /// vCPUs allocated to servers.
    pub fn vcpus_used(&self) -> u32 {
        self.batch.vcpus_used[self.index]
    }

    /// Physical memory, MiB.
    pub fn ram_total_mb(&self) -> u64 {
        self.batch.ram_total_mb[self.index]
    }

    /// Memory allocated to servers, MiB.
    pub fn ram_used_mb(&self) -> u64 {
        self.batch.ram_used_mb[self.index]
    }

    /// Memory free on the host right now, MiB.
    pub fn ram_free_mb(&self) -> u64 {
        self.batch.ram_free_mb[self.index]
    }

    /// Disk for servers, GiB.
    pub fn disk_total_gb(&self) -> u64 {
        self.batch.disk_total_gb[self.index]
    }

    /// Disk allocated to servers, GiB.
    pub fn disk_used_gb(&self) -> u64 {
        self.batch.disk_used_gb[self.index]
    }

    /// Volume capacity free, GiB.
    pub fn volume_free_gb(&self) -> u64 {
        self.batch.volume_free_gb[self.index]
    }

    /// vCPU allocation ratio.
    pub fn cpu_allocation_ratio(&self) -> f32 {
        self.batch.cpu_allocation_ratio[self.index]
    }

    /// RAM allocation ratio.
    pub fn ram_allocation_ratio(&self) -> f32 {
        self.batch.ram_allocation_ratio[self.index]
    }

    /// Disk allocation ratio.
    pub fn disk_allocation_ratio(&self) -> f32 {
        self.batch.disk_allocation_ratio[self.index]
    }

    /// vCPUs still allocatable: `vcpus_total × cpu_allocation_ratio − vcpus_used` (negative
    /// when over-committed), as nova's `CoreFilter`/placement compute it.
    pub fn usable_vcpus(&self) -> f64 {
        usable(
            self.vcpus_total().into(),
            self.cpu_allocation_ratio(),
            self.vcpus_used().into(),
        )
    }

    /// MiB of RAM still allocatable: `ram_total_mb × ram_allocation_ratio − ram_used_mb`, as
    /// nova's `RamFilter` and `RAMWeigher` compute it.
    pub fn usable_ram_mb(&self) -> f64 {
        usable(
            self.ram_total_mb(),
            self.ram_allocation_ratio(),
            self.ram_used_mb(),
        )
    }

    /// GiB of disk still allocatable: `disk_total_gb × disk_allocation_ratio − disk_used_gb`.
    pub fn usable_disk_gb(&self) -> f64 {
        usable(
            self.disk_total_gb(),
            self.disk_allocation_ratio(),
            self.disk_used_gb(),
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
        b.vm_mode_idx[1] = 99;
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
    fn rejects_ragged_columns() {
        let mut b = batch(&[HostBuilder::new(), HostBuilder::new()]);
        b.ram_used_mb.pop();
        let err = Hosts::new(&b).unwrap_err();
        assert_eq!(err.code, "bad-batch");
        assert_eq!(
            err.message,
            "Column ram-used-mb has 1 entries, but enabled has 2"
        );
        let mut b = batch(&[HostBuilder::new()]);
        b.enabled.clear();
        let err = Hosts::new(&b).unwrap_err();
        assert_eq!(
            err.message,
            "Column heartbeat-age-s has 1 entries, but enabled has 0"
        );
    }

    #[test]
    fn empty_batch() {
        let b = batch(&[]);
        let hosts = Hosts::new(&b).unwrap();
        assert!(hosts.is_empty());
        assert_eq!(hosts.iter().len(), 0);
    }

    #[test]
    fn identity_accessors_resolve_names_traits_and_metadata() {
        let builders = [
            HostBuilder::new()
                .name("maint-1")
                .with_trait("CUSTOM_GPU")
                .with_trait("HW_CPU_X86_AVX2")
                .with_trait("CUSTOM_GPU")
                .metadata("ssd", "true"),
            HostBuilder::new(),
        ];
        let b = batch(&builders);
        let identity = Identities::given(crate::testing::identity(&builders));
        let hosts = Hosts::with_identity(&b, &identity).unwrap();
        assert!(!identity.is_loaded());
        let first = hosts.get(0).unwrap();
        assert_eq!(first.name(), "maint-1");
        assert!(identity.is_loaded());
        assert_eq!(
            first.traits().collect::<Vec<_>>(),
            ["CUSTOM_GPU", "HW_CPU_X86_AVX2"]
        );
        assert!(first.has_trait("CUSTOM_GPU") && !first.has_trait("custom_gpu"));
        assert_eq!(first.metadata("ssd"), Some("true"));
        assert_eq!(first.metadata("tenant"), None);
        let second = hosts.get(1).unwrap();
        assert_eq!(second.name(), "host-1");
        assert_eq!(second.traits().count(), 0);
        assert_eq!(second.metadata_entries().count(), 0);
        // Without an identity: no name, no traits.
        let bare = Hosts::new(&b).unwrap();
        assert_eq!(bare.get(0).unwrap().name(), "");
        assert!(!bare.get(0).unwrap().has_trait("CUSTOM_GPU"));
    }

    #[test]
    fn identities_that_do_not_fit_the_batch_are_refused() {
        let builders = [HostBuilder::new().with_trait("A").metadata("k", "v")];
        let good = crate::testing::identity(&builders);
        assert_eq!(crate::check_identity(&good, 1), Ok(()));
        assert!(crate::check_identity(&good, 2)
            .unwrap_err()
            .contains("1 names for 2 hosts"));
        let mut bad = good.clone();
        bad.trait_start = vec![0, 5];
        assert!(crate::check_identity(&bad, 1)
            .unwrap_err()
            .contains("trait-start"));
        let mut bad = good.clone();
        bad.metadata_value_idx[0] = 99;
        assert!(crate::check_identity(&bad, 1)
            .unwrap_err()
            .contains("string index 99"));
        let mut bad = good;
        bad.metadata_value_idx.clear();
        assert!(crate::check_identity(&bad, 1).is_err());
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
