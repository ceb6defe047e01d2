//! [`HostInner`]: what every connector of the process shares — the wasmtime engine
//! (with the ticker that advances its epochs), the linker, the compiled-component
//! cache and outbound HTTP. The host builds it once; each loaded connector keeps a
//! handle on it. It holds no per-run state.

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cache::ComponentCache;
use crate::egress::Egress;
use crate::engine::EpochTicker;
use crate::state::State;

pub(crate) struct HostInner {
    pub engine: Engine,
    pub linker: Linker<State>,
    pub cache: ComponentCache,
    pub egress: Arc<Egress>,
    /// The pool's component instance slots: a store takes one before anything is
    /// instantiated in it and holds it until dropped, so connectors past the pool's
    /// size wait for a slot instead of failing to instantiate.
    pub instances: Arc<tokio::sync::Semaphore>,
    /// Kept alive for as long as any connector may run.
    pub _ticker: EpochTicker,
}
