//! The memory budget of one plugin instance: `memory_limit_mb` covers all its linear memories
//! together *and* what the host spends copying its answers out of them.
//!
//! An eighth of the limit is the instance's answer budget: wasmtime's hostcall fuel, one unit
//! per byte of the strings and lists lifted from the guest in one copy (an export's result, or
//! an import's arguments). The host's real cost of a lifted answer is at most about twice its
//! fuel (a heap allocation per string), so the guest's linear memories get the rest: three
//! quarters of the limit. Guest and host together thus stay within `memory_limit_mb`.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// The share of the limit that is the answer budget (hostcall fuel).
const ANSWER_SHARE: usize = 8;

/// The store limiter of one instance: counts its linear memories against what the limit leaves
/// beside the answer budget, and caps instances, tables and memories.
pub struct MemoryBudget {
    /// What the linear memories may take together.
    limit: usize,
    /// The configured limit.
    total: usize,
    answers: usize,
    used: usize,
    /// The growth last allowed, undone if the growth then fails.
    pending: usize,
    counts: StoreLimits,
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let answers = total / ANSWER_SHARE;
        let limit = total - 2 * answers;
        Self {
            limit,
            total,
            answers,
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

    /// The answer budget: the most bytes of strings and lists one copy from the guest lifts.
    pub fn answers(&self) -> usize {
        self.answers
    }

    /// Bytes the linear memories may still grow by.
    #[cfg(test)]
    fn room(&self) -> usize {
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
                "out of memory: its memories would take {} bytes, over the {} bytes its \
                 memory_limit_mb of {} MiB leaves beside its answer budget",
                self.used + grow,
                self.limit,
                self.total >> 20
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
        // 16 MiB: 2 MiB of answers (up to 4 MiB of host memory), 12 MiB of linear memory.
        let mut budget = MemoryBudget::new(16 << 20);
        assert_eq!(budget.answers(), 2 << 20);
        assert!(budget.memory_growing(0, 8 << 20, None).unwrap());
        assert_eq!(budget.room(), 4 << 20);
        // A second memory may not take more than what the first one left.
        assert!(budget.memory_growing(0, 5 << 20, None).is_err());
        assert!(budget.memory_growing(0, 4 << 20, None).unwrap());
        assert_eq!(budget.room(), 0);
        // A growth that fails gives its bytes back.
        let mut budget = MemoryBudget::new(16 << 20);
        assert!(budget.memory_growing(0, 1 << 20, None).unwrap());
        budget
            .memory_grow_failed(wasmtime::format_err!("mmap failed"))
            .ok();
        assert_eq!(budget.room(), 12 << 20);
    }
}
