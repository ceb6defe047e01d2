//! The one place that builds the wasmtime `Engine` and its epoch ticker.
//!
//! Compiled artifacts only load into an engine with the same configuration, so the
//! configuration lives here and nowhere else. There is one engine per process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::HostError;

/// How often the epoch advances. CPU budgets are counted in these ticks, and a
/// running guest yields to the async executor once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Process-wide settings of the connector host.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Connector instances that may exist at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// The largest memory any connector may ever have; per-connection caps are
    /// enforced below this.
    pub max_memory_bytes: usize,
    /// Directory of compiled components, keyed by content digest. `None` disables
    /// the on-disk cache.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 1 << 30,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice/components`, else
/// `~/.cache/sluice/components`.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("sluice").join("components"))
}

/// Bytes of a pooled linear memory reset in place when its instance is dropped.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// Instance slots freed before their memory beyond the resident part is returned to
/// the kernel. One: a slot's pages past `KEEP_RESIDENT_BYTES` go back as soon as its
/// store is dropped. Batching saved a `madvise` (and TLB shootdown) per slot, but a
/// queued slot keeps every page it touched resident until the batch fills, per
/// thread shard: with a batch of 32, slots of connectors that grew to their caps
/// kept gigabytes resident after their runs ended. Only slots that touched more
/// than the resident part are queued at all (the rest are reset in place), so the
/// `madvise` is paid by connectors that used real memory, once per store.
const DECOMMIT_BATCH: usize = 1;

/// The wasmtime configuration of the process's engine. Everything that affects
/// compiled code is here.
pub fn engine_config(settings: &HostSettings) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);

    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(settings.max_instances);
    pool.total_core_instances(settings.max_instances * 4);
    pool.total_memories(settings.max_instances * 2);
    pool.total_tables(settings.max_instances * 4);
    pool.total_stacks(settings.max_instances);
    pool.max_memory_size(settings.max_memory_bytes);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(8);
    pool.max_core_instances_per_component(32);
    // Zero the first pages of a freed slot in place instead of returning them to the
    // kernel: most connectors touch little memory, and `madvise` on every instance
    // drop costs a TLB shootdown on every core.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
    pool.table_keep_resident(KEEP_RESIDENT_BYTES / 16);
    pool.decommit_batch_size(DECOMMIT_BATCH);
    // Where the kernel can say which pages an instance touched (Linux 6.7+), reset
    // only those: a connector that touched a few pages costs a few pages, not the
    // whole resident part.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Build the process's engine.
pub fn build_engine(settings: &HostSettings) -> Result<Engine, HostError> {
    Engine::new(&engine_config(settings))
        .map_err(|e| HostError::Internal(format!("cannot create the wasmtime engine: {e:#}")))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: &Engine) -> Result<Self, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| HostError::Internal(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
