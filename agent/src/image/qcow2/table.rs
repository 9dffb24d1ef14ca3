//! L1/L2 geometry and the refcount structures.
//!
//! An L2 table is one cluster of 8-byte entries (16 with extended L2), each mapping one data
//! cluster, so one L1 entry covers `cluster_size * cluster_size / 8` bytes of the virtual disk
//! (512 MiB with 64 KiB clusters). The refcount table lists refcount blocks; a refcount block is
//! one cluster of `2^refcount_order`-bit counts, one per cluster of the file.

/// Bytes of the virtual disk one L1 entry maps.
pub(crate) fn bytes_per_l1_entry(cluster_bits: u32, extended_l2: bool) -> u64 {
    let cluster_size = 1u64 << cluster_bits;
    let l2_entry = if extended_l2 { 16 } else { 8 };
    cluster_size * (cluster_size / l2_entry)
}

/// L1 entries needed to map `virtual_size` bytes.
pub(crate) fn l1_entries_for(virtual_size: u64, cluster_bits: u32, extended_l2: bool) -> u64 {
    virtual_size.div_ceil(bytes_per_l1_entry(cluster_bits, extended_l2))
}

/// Where everything goes in a new overlay (all offsets in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverlayLayout {
    pub(crate) cluster_bits: u32,
    pub(crate) refcount_table_offset: u64,
    pub(crate) refcount_block_offset: u64,
    pub(crate) l1_table_offset: u64,
    pub(crate) l1_size: u32,
    /// Clusters in use: header, refcount table, refcount block, L1 table.
    pub(crate) clusters: u64,
    /// The file length: the end of the L1 table, as QEMU writes it.
    pub(crate) file_len: u64,
}

/// 16-bit refcounts, QEMU's default.
pub(crate) const REFCOUNT_ORDER: u32 = 4;

impl OverlayLayout {
    /// The layout for an overlay of `virtual_size` bytes; `None` when the L1 table would exceed
    /// QEMU's limit or the metadata would not fit one refcount block.
    pub(crate) fn new(virtual_size: u64, cluster_bits: u32) -> Option<Self> {
        let cluster_size = 1u64 << cluster_bits;
        let l1_entries = l1_entries_for(virtual_size, cluster_bits, false);
        let l1_bytes = l1_entries.checked_mul(8)?;
        if l1_bytes > super::MAX_L1_BYTES {
            return None;
        }
        let l1_clusters = l1_bytes.div_ceil(cluster_size).max(1);
        let clusters = 3 + l1_clusters;
        if clusters > refcounts_per_block(cluster_bits) {
            return None;
        }
        Some(Self {
            cluster_bits,
            refcount_table_offset: cluster_size,
            refcount_block_offset: 2 * cluster_size,
            l1_table_offset: 3 * cluster_size,
            l1_size: u32::try_from(l1_entries).ok()?,
            clusters,
            file_len: 3 * cluster_size + l1_bytes,
        })
    }

    /// The refcount table's used part: one entry pointing at the single refcount block.
    pub(crate) fn refcount_table(&self) -> [u8; 8] {
        self.refcount_block_offset.to_be_bytes()
    }

    /// The refcount block's used part: a count of 1 for every metadata cluster.
    pub(crate) fn refcount_block(&self) -> Vec<u8> {
        (0..self.clusters)
            .flat_map(|_| 1u16.to_be_bytes())
            .collect()
    }
}

/// How many clusters one refcount block covers (16-bit refcounts).
pub(crate) fn refcounts_per_block(cluster_bits: u32) -> u64 {
    ((1u64 << cluster_bits) * 8) >> REFCOUNT_ORDER
}

/// The largest virtual size an overlay with `cluster_bits` can have.
pub(crate) fn max_overlay_size(cluster_bits: u32) -> u64 {
    (super::MAX_L1_BYTES / 8) * bytes_per_l1_entry(cluster_bits, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_geometry_for_64k_clusters() {
        assert_eq!(bytes_per_l1_entry(16, false), 512 << 20);
        assert_eq!(bytes_per_l1_entry(16, true), 256 << 20);
        assert_eq!(l1_entries_for(1 << 30, 16, false), 2);
        assert_eq!(l1_entries_for((1 << 30) + 512, 16, false), 3);
        assert_eq!(l1_entries_for(512, 16, false), 1);
        assert_eq!(l1_entries_for(10 << 20, 12, false), 5);
        assert_eq!(l1_entries_for(10 << 20, 12, true), 10);
    }

    #[test]
    fn layout_of_a_1g_overlay_matches_qemu() {
        let l = OverlayLayout::new(1 << 30, 16).unwrap();
        assert_eq!(l.refcount_table_offset, 0x10000);
        assert_eq!(l.refcount_block_offset, 0x20000);
        assert_eq!(l.l1_table_offset, 0x30000);
        assert_eq!(l.l1_size, 2);
        assert_eq!(l.clusters, 4);
        // qemu-img create -f qcow2 x 1G gives a 196624-byte file.
        assert_eq!(l.file_len, 196_624);
        assert_eq!(l.refcount_table(), [0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(l.refcount_block(), vec![0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn large_overlays_use_several_l1_clusters() {
        // 64 TiB: 131072 entries = 1 MiB of L1 = 16 clusters.
        let l = OverlayLayout::new(64 << 40, 16).unwrap();
        assert_eq!(l.l1_size, 131_072);
        assert_eq!(l.clusters, 3 + 16);
        assert_eq!(l.file_len, 3 * 65536 + (1 << 20));
    }

    #[test]
    fn limits() {
        assert_eq!(refcounts_per_block(16), 32_768);
        assert_eq!(max_overlay_size(16), 1 << 51);
        assert!(OverlayLayout::new(1 << 51, 16).is_some());
        assert!(OverlayLayout::new((1 << 51) + 512, 16).is_none());
    }
}
