//! [`Footprint`]: the resource limiter of one connector store. It caps what all of a
//! component's core instances hold together — the sum of their linear memories under
//! `memory_bytes`, the sum of their table elements under `table_elements`, and how
//! many instances, memories and tables the store may create — and remembers the
//! memory size asked for past the cap, so the call can be failed with the named
//! memory error.
//!
//! It must never judge one memory alone: a component can hold several core
//! instances, each with memories of its own, and the node pays for all of them.

use wasmtime::ResourceLimiter;

use crate::limits::Limits;

/// What one store may hold, and what it holds so far.
#[derive(Debug)]
pub(crate) struct Footprint {
    memory_cap: usize,
    table_cap: usize,
    max_instances: usize,
    max_memories: usize,
    max_tables: usize,
    /// Bytes of linear memory over every memory of the store (memories live as long
    /// as the store, so this only grows).
    memory_bytes: usize,
    /// The last growth allowed, undone if wasmtime fails to carry it out.
    memory_pending: usize,
    /// Table elements over every table of the store.
    table_elements: usize,
    /// See `memory_pending`.
    table_pending: usize,
    /// The total memory the store would have reached when growth was refused.
    requested: Option<usize>,
}

impl Footprint {
    pub fn new(limits: &Limits) -> Self {
        Self {
            memory_cap: limits.memory_bytes,
            table_cap: limits.table_elements,
            max_instances: limits.max_instances,
            max_memories: limits.max_memories,
            max_tables: limits.max_tables,
            memory_bytes: 0,
            memory_pending: 0,
            table_elements: 0,
            table_pending: 0,
            requested: None,
        }
    }

    /// The total memory asked for past the cap since the last call to this, if any.
    pub fn take_requested(&mut self) -> Option<usize> {
        self.requested.take()
    }

    /// Bytes of linear memory the store holds, over all its memories.
    #[cfg(test)]
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for Footprint {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        let total = self.memory_bytes.saturating_add(delta);
        if total > self.memory_cap {
            self.requested = Some(total);
            // Trap instead of returning -1 from memory.grow: Rust guests abort on
            // allocation failure anyway, and a trap names the cause.
            return Err(wasmtime::Error::msg(format!(
                "memory cap of {} bytes exceeded: the component's memories would hold \
                 {total} bytes in all",
                self.memory_cap
            )));
        }
        self.memory_bytes = total;
        self.memory_pending = delta;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes = self.memory_bytes.saturating_sub(self.memory_pending);
        self.memory_pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        let total = self.table_elements.saturating_add(delta);
        if total > self.table_cap {
            return Err(wasmtime::Error::msg(format!(
                "table_elements limit of {} exceeded: the component's tables would hold \
                 {total} elements in all",
                self.table_cap
            )));
        }
        self.table_elements = total;
        self.table_pending = delta;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements = self.table_elements.saturating_sub(self.table_pending);
        self.table_pending = 0;
        Ok(())
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_memories
    }

    fn tables(&self) -> usize {
        self.max_tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn footprint(memory: usize) -> Footprint {
        Footprint::new(&Limits {
            memory_bytes: memory,
            table_elements: 100,
            ..Limits::default()
        })
    }

    #[test]
    fn memories_count_together_against_the_cap() {
        let mut f = footprint(64 * MIB);
        // Three memories of 20 MiB each fit; a fourth does not.
        for _ in 0..3 {
            assert!(f.memory_growing(0, 20 * MIB, None).unwrap());
        }
        assert_eq!(f.memory_bytes(), 60 * MIB);
        let err = f.memory_growing(0, 20 * MIB, None).unwrap_err();
        assert!(
            err.to_string().contains("memory cap of 67108864 bytes"),
            "{err}"
        );
        assert_eq!(f.take_requested(), Some(80 * MIB));
        // Growing one of them by the rest still fits; one byte more does not.
        assert!(f.memory_growing(20 * MIB, 24 * MIB, None).unwrap());
        assert!(f.memory_growing(24 * MIB, 24 * MIB + 1, None).is_err());
    }

    #[test]
    fn a_failed_growth_is_given_back() {
        let mut f = footprint(64 * MIB);
        assert!(f.memory_growing(0, 60 * MIB, None).unwrap());
        f.memory_grow_failed(wasmtime::Error::msg("no room"))
            .unwrap();
        assert_eq!(f.memory_bytes(), 0);
        assert!(f.memory_growing(0, 64 * MIB, None).unwrap());
    }

    #[test]
    fn tables_count_together_against_their_cap() {
        let mut f = footprint(64 * MIB);
        assert!(f.table_growing(0, 60, None).unwrap());
        assert!(f.table_growing(0, 40, None).unwrap());
        let err = f.table_growing(40, 41, None).unwrap_err();
        assert!(
            err.to_string().contains("table_elements limit of 100"),
            "{err}"
        );
    }
}
