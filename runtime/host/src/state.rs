//! The data of one connector store: the WASI context (empty: no files, no
//! environment, no sockets), the HTTP hooks, the resource limiter (`footprint`),
//! the connector's log lines (`log_gate`) and the per-call CPU accounting. A store
//! lives for one attempt, or one reader/writer.
//!
//! CPU budget: every epoch tick in which the guest runs costs one tick. Time the
//! guest spends in a host call is charged the same way as long as each host call is
//! short: a guest looping over host calls re-enters WebAssembly (and so meets its
//! epoch deadline) in every tick. Host calls are therefore kept short — random
//! bytes are capped per call (`random_bytes_per_call`), log lines are cut before
//! anything else is done with them — and the one that can still take a while,
//! `wasi:logging` on a line as large as the guest's memory, charges its own time.
//! Waiting (for an HTTP answer, for rate-limit budget, on a clock) costs nothing:
//! the guest does not run, so no tick is charged. Measuring the thread's CPU time
//! per poll of the call would need the call's future, which `call` owns; the bound
//! per host call gets the same answer from here.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::activity::LogLine;
use crate::bindings::wit_logging;
use crate::egress::{Egress, EgressHooks};
use crate::engine::EPOCH_TICK;
use crate::footprint::Footprint;
use crate::limits::Grant;
use crate::log_gate::{self, LogGate};

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
    limiter: Footprint,
    logs: LogGate,
    pub violations: Violations,
    /// Epoch ticks left in the current call.
    pub cpu_ticks_left: u64,
    /// Name of the connector, for logs.
    pub connector: Arc<str>,
    /// The pool slot the store's instance takes (see `crate::shared`), given back
    /// when the store is dropped.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl State {
    pub fn new(grant: Arc<Grant>, egress: Arc<Egress>, connector: Arc<str>) -> Self {
        let stderr = MemoryOutputPipe::new(grant.limits.stderr_bytes);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(grant.limits.random_bytes_per_call)
            .build();
        // Every resource the guest holds lives in the host's memory: their number
        // is bounded, so is their footprint.
        let mut table = ResourceTable::new();
        table.set_max_capacity(grant.limits.max_host_resources);
        Self {
            wasi,
            table,
            http: crate::egress::http_ctx(&grant.limits),
            hooks: EgressHooks::new(egress, grant.clone()),
            limiter: Footprint::new(&grant.limits),
            logs: LogGate::new(&grant.limits),
            grant,
            stderr,
            violations: Violations::default(),
            cpu_ticks_left: 0,
            connector,
            slot: None,
        }
    }

    /// Reset per-call accounting before entering the guest.
    pub fn begin_call(&mut self) {
        let ticks = self.grant.limits.cpu_per_call.as_millis() / EPOCH_TICK.as_millis().max(1);
        self.cpu_ticks_left = (ticks as u64).max(1);
        self.violations = Violations::default();
        self.limiter.take_requested();
        self.hooks.begin_call();
    }

    /// Collect what the sandbox saw during the call.
    pub fn end_call(&mut self) {
        self.violations.memory_requested = self.limiter.take_requested();
        // Lines dropped at the end of a call are reported with it, not whenever the
        // next line comes.
        self.report_dropped_lines();
    }

    fn report_dropped_lines(&mut self) {
        if let Some(report) = self.logs.take_report(&self.grant.limits) {
            tracing::warn!(connector = &*self.connector, "{}", report.message);
            self.grant.activity.record_line(report);
        }
    }

    /// Charge `elapsed` of host work to the call's CPU budget.
    fn charge(&mut self, elapsed: std::time::Duration) {
        let ticks = log_gate::ticks(elapsed, EPOCH_TICK);
        self.cpu_ticks_left = self.cpu_ticks_left.saturating_sub(ticks);
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
        let started = Instant::now();
        if !self.logs.admit(started) {
            return;
        }
        self.report_dropped_lines();
        let message = log_gate::bound(&self.grant, &message);
        let context = log_gate::bound(&self.grant, &context);
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
        // Redacting a line is the one host call here that can take a while (the line
        // can be as large as the guest's memory): it costs the guest's CPU budget.
        // An exhausted budget fails the call at the guest's next epoch check.
        self.charge(started.elapsed());
    }
}
