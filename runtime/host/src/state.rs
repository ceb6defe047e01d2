//! The data of one connector store: the WASI context (empty: no files, no
//! environment, no sockets), the HTTP hooks, the memory limiter and the per-call
//! CPU accounting. A store lives for one attempt, or one reader/writer.

use std::sync::Arc;
use std::time::SystemTime;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::activity::LogLine;
use crate::bindings::wit_logging;
use crate::egress::{Egress, EgressHooks};
use crate::engine::EPOCH_TICK;
use crate::limits::Grant;

/// What a call's sandbox observed, read after the call to name what went wrong.
#[derive(Debug, Default)]
pub(crate) struct Violations {
    /// The memory size the guest asked for past its cap.
    pub memory_requested: Option<usize>,
    /// The guest ran out of CPU budget.
    pub cpu_exhausted: bool,
}

pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    pub hooks: EgressHooks,
    pub grant: Arc<Grant>,
    pub stderr: MemoryOutputPipe,
    limiter: MemoryCap,
    pub violations: Violations,
    /// Epoch ticks left in the current call.
    pub cpu_ticks_left: u64,
    /// Name of the connector, for logs.
    pub connector: Arc<str>,
}

impl State {
    pub fn new(grant: Arc<Grant>, egress: Arc<Egress>, connector: Arc<str>) -> Self {
        let stderr = MemoryOutputPipe::new(grant.limits.stderr_bytes);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            http: crate::egress::http_ctx(&grant.limits),
            hooks: EgressHooks::new(egress, grant.clone()),
            limiter: MemoryCap {
                cap: grant.limits.memory_bytes,
                requested: None,
            },
            grant,
            stderr,
            violations: Violations::default(),
            cpu_ticks_left: 0,
            connector,
        }
    }

    /// Reset per-call accounting before entering the guest.
    pub fn begin_call(&mut self) {
        let ticks = self.grant.limits.cpu_per_call.as_millis() / EPOCH_TICK.as_millis().max(1);
        self.cpu_ticks_left = (ticks as u64).max(1);
        self.violations = Violations::default();
        self.limiter.requested = None;
        self.hooks.begin_call();
    }

    /// Collect what the sandbox saw during the call.
    pub fn end_call(&mut self) {
        self.violations.memory_requested = self.limiter.requested;
    }
}

/// Make a store for `state` with its memory cap and CPU accounting installed.
pub(crate) fn new_store(engine: &wasmtime::Engine, state: State) -> Store<State> {
    let mut store = Store::new(engine, state);
    // Instantiation runs guest code too: it gets a call's budget.
    store.data_mut().begin_call();
    store.limiter(|s| &mut s.limiter);
    // Each tick the guest runs costs one tick of budget, and yields to the
    // executor so wall-clock timeouts can fire even in a tight loop.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if state.cpu_ticks_left == 0 {
            state.violations.cpu_exhausted = true;
            return Err(wasmtime::Error::msg("connector exceeded its CPU budget"));
        }
        state.cpu_ticks_left -= 1;
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Caps linear memory growth and remembers what was asked for.
struct MemoryCap {
    cap: usize,
    requested: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.requested = Some(desired);
            // Trap instead of returning -1 from memory.grow: Rust guests abort on
            // allocation failure anyway, and a trap names the cause.
            return Err(wasmtime::Error::msg(format!(
                "memory cap of {} bytes exceeded (asked for {desired})",
                self.cap
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl wit_logging::Host for State {
    async fn log(&mut self, level: wit_logging::Level, context: String, message: String) {
        let message = self.grant.redact(&message);
        let level_name = match level {
            wit_logging::Level::Trace => "trace",
            wit_logging::Level::Debug => "debug",
            wit_logging::Level::Info => "info",
            wit_logging::Level::Warn => "warn",
            wit_logging::Level::Error => "error",
            wit_logging::Level::Critical => "critical",
        };
        let connector = &*self.connector;
        match level {
            wit_logging::Level::Trace => tracing::trace!(connector, %context, "{message}"),
            wit_logging::Level::Debug => tracing::debug!(connector, %context, "{message}"),
            wit_logging::Level::Info => tracing::info!(connector, %context, "{message}"),
            wit_logging::Level::Warn => tracing::warn!(connector, %context, "{message}"),
            wit_logging::Level::Error | wit_logging::Level::Critical => {
                tracing::error!(connector, %context, "{message}")
            }
        }
        self.grant.activity.record_line(LogLine {
            at: SystemTime::now(),
            level: level_name,
            context,
            message,
        });
    }
}
