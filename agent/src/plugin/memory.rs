//! The memory budget of one plugin instance: `memory_limit_mb` covers all its linear memories
//! together, and what the host keeps of its answers (`answer.rs`) must fit in what they leave.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// The store limiter of one instance: counts its linear memories against the limit, and caps
/// instances, tables and memories.
pub struct MemoryBudget {
    limit: usize,
    used: usize,
    /// The growth last allowed, undone if the growth then fails.
    pending: usize,
    counts: StoreLimits,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            pending: 0,
            counts: StoreLimitsBuilder::new()
                .memory_size(limit)
                .instances(32)
                .tables(32)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
        }
    }

    /// The limit, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes left for the host to spend on an answer.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.counts.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let grow = desired.saturating_sub(current);
        if self.used.saturating_add(grow) > self.limit {
            wasmtime::bail!(
                "out of memory: its memories would take {} bytes, over its memory_limit_mb of {} MiB",
                self.used + grow,
                self.limit >> 20
            );
        }
        self.used += grow;
        self.pending = grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used -= std::mem::take(&mut self.pending);
        self.counts.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_memories_count_against_one_limit() {
        let mut budget = MemoryBudget::new(10 << 20);
        assert!(budget.memory_growing(0, 6 << 20, None).unwrap());
        assert_eq!(budget.room(), 4 << 20);
        // A second memory may not take more than what the first one left.
        assert!(budget.memory_growing(0, 5 << 20, None).is_err());
        assert!(budget.memory_growing(0, 4 << 20, None).unwrap());
        assert_eq!(budget.room(), 0);
        // A growth that fails gives its bytes back.
        let mut budget = MemoryBudget::new(10 << 20);
        assert!(budget.memory_growing(0, 1 << 20, None).unwrap());
        budget
            .memory_grow_failed(wasmtime::format_err!("mmap failed"))
            .ok();
        assert_eq!(budget.room(), 10 << 20);
    }
}
