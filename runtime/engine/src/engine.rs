//! [`Engine`]: the front door of a node. It starts runs, hands them to drivers in
//! priority order, and resumes in-flight runs after a restart; definitions and
//! schedules are delegated to their services.
//!
//! Owns the lifecycle requests (start, cancel, manual retry, recovery, takeover) and
//! the dispatcher loop that takes ready runs from the queue (module `dispatch`) to a
//! driver (module `driver`) and settles how each driver stopped. Every decision is an
//! event appended to the run's log *before* it takes effect, and drivers re-derive what
//! to do next from the log's fold, never from memory, so a crash at any instant leaves
//! a log from which [`Engine::recover`] carries on. The only in-memory state is which
//! runs this process holds: waiting in the ready queue, which starts them by priority
//! within the slot limits and never two runs of one workflow at once, or being driven.
//! It must never decide a run's next step itself (the driver's `next_step` does) nor
//! read or write definitions but through the definitions service.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_model::{EventKind, ManualRetryRequested, RunCancelled, StatusKind, Trigger};
use sluice_scheduler::{Aging, Candidate, Limits};
use sluice_store::log::RunFilter;
use sluice_store::{LogError, RunId, RunState, RunStatus, Store, StoreError};
use tokio::sync::{Notify, watch};

use crate::clock::{new_run_id, now_unix_ms};
use crate::cluster::Membership;
use crate::connectors::Connectors;
use crate::cpu::CpuTimed;
use crate::definition::{ConnectionDef, WorkflowDef};
use crate::definitions::DefinitionService;
use crate::dispatch::{Dispatch, Ready, id_of, overlap_group};
use crate::driver::{Driven, Driver};
use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::progress::Progress;
use crate::schedules::{FIRE_AHEAD, Runs, Schedules, Tick};

/// The engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) connectors: Connectors,
    pub(crate) worker: String,
    pub(crate) dispatch: Dispatch,
    pub(crate) definitions: Arc<DefinitionService>,
    schedules: Schedules,
    pub(crate) metrics: EngineMetrics,
    /// Wakes the dispatcher: a run was queued or gave back its slot.
    wake: Arc<Notify>,
    dispatcher_started: AtomicBool,
    /// Runs that left this node (ended, or stopped being driven).
    ended: tokio::sync::broadcast::Sender<RunId>,
    /// Held from the overlap check to the durable `RunScheduled`, so that two starts
    /// of one workflow cannot both pass the check.
    starting: tokio::sync::Mutex<()>,
    /// Set once the connectors registered in the catalog are resolvable (module
    /// `registry`).
    pub(crate) registered_loaded: tokio::sync::OnceCell<()>,
    /// This node among the nodes sharing the store, once it joined (module
    /// `cluster`).
    pub(crate) cluster: std::sync::OnceLock<Arc<Membership>>,
    /// The node drains: the dispatcher starts nothing more.
    pub(crate) draining: AtomicBool,
    /// Runs per tenant at once (0: no limit), which a start on a shared store checks
    /// across the nodes.
    tenant_slots: u32,
    /// Whether the store can write, and the runs waiting until it can.
    pub(crate) health: crate::store_health::StoreHealth,
}

/// What [`Engine::recover`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Runs that were in flight and are driven again.
    pub resumed: Vec<RunId>,
    /// Runs whose log cannot be read; they keep their status and are reported, never
    /// dropped.
    pub unreadable: Vec<(RunId, LogError)>,
}

impl Engine {
    /// An engine over `store`, running connectors resolved by `connectors`; `worker`
    /// names this node in the log.
    pub fn new(store: Store, connectors: Connectors, worker: impl Into<String>) -> Self {
        Self::with_limits(
            store,
            connectors,
            worker,
            Limits::default(),
            Aging::default(),
        )
    }

    /// An engine that drives at most `limits` runs at once (globally, per tenant, per
    /// connector), higher priority first, with waiting runs rising by `aging`.
    pub fn with_limits(
        store: Store,
        connectors: Connectors,
        worker: impl Into<String>,
        limits: Limits,
        aging: Aging,
    ) -> Self {
        let limiter = connectors.host().limiter().clone();
        let definitions = Arc::new(DefinitionService::new(store.clone()));
        let tenant_slots = limits
            .per_tenant
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        Engine {
            inner: Arc::new(Inner {
                schedules: Schedules::new(store.clone(), Arc::clone(&definitions)),
                store,
                connectors,
                worker: worker.into(),
                dispatch: Dispatch::new(limits, aging),
                definitions,
                metrics: EngineMetrics::new(limiter),
                wake: Arc::new(Notify::new()),
                dispatcher_started: AtomicBool::new(false),
                ended: tokio::sync::broadcast::channel(1024).0,
                starting: tokio::sync::Mutex::new(()),
                registered_loaded: tokio::sync::OnceCell::new(),
                cluster: std::sync::OnceLock::new(),
                draining: AtomicBool::new(false),
                tenant_slots,
                health: crate::store_health::StoreHealth::default(),
            }),
        }
    }

    /// The node's rate limiter: every connector request's budget and breaker.
    pub fn limiter(&self) -> &Arc<sluice_host::limiter::Limiter> {
        self.inner.connectors.host().limiter()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    // Definitions: the definitions service's.

    /// Defines (or replaces) a connection, after checking it and that its connector
    /// loads.
    pub async fn define_connection(&self, def: &ConnectionDef) -> Result<(), EngineError> {
        let connectors = self.connectors().await;
        self.inner
            .definitions
            .define_connection(def, connectors)
            .await
    }

    /// Defines (or replaces) a connection whose connector must come from the
    /// registry: a first-party or registered connector by name, `name@version` or
    /// digest, never a file of the node (the API's way; files and the CLI may name a
    /// local `.wasm`).
    pub async fn define_connection_from_registry(
        &self,
        def: &ConnectionDef,
    ) -> Result<(), EngineError> {
        let connectors = self.connectors().await;
        connectors
            .check_registry_reference(&def.connector)
            .map_err(|message| EngineError::Connector {
                reference: def.connector.clone(),
                message,
            })?;
        self.inner
            .definitions
            .define_connection(def, connectors)
            .await
    }

    /// Defines (or replaces) a workflow, after checking it and that its connection
    /// exists.
    pub async fn define_workflow(&self, def: &WorkflowDef) -> Result<(), EngineError> {
        self.inner.definitions.define_workflow(def).await
    }

    /// The connection named `name`.
    pub async fn connection(&self, name: &str) -> Result<Arc<ConnectionDef>, EngineError> {
        self.inner.definitions.connection(name).await
    }

    /// The workflow named `name`.
    pub async fn workflow(&self, name: &str) -> Result<Arc<WorkflowDef>, EngineError> {
        self.inner.definitions.workflow(name).await
    }

    /// Every defined connection, by name.
    pub async fn connections(&self) -> Result<Vec<Arc<ConnectionDef>>, EngineError> {
        self.inner.definitions.connections().await
    }

    /// The credential label `connection`'s requests draw their budget under, as its
    /// runs label it (a keyed label of its secrets unless it names one), so callers
    /// can tell which rate-limit keys and breakers are the connection's.
    pub fn credential_of(&self, connection: &ConnectionDef) -> String {
        self.inner
            .definitions
            .resolve(connection)
            .map(|resolved| resolved.credential())
            .unwrap_or_else(|_| connection.credential())
    }

    /// Every defined workflow, by name.
    pub async fn workflows(&self) -> Result<Vec<Arc<WorkflowDef>>, EngineError> {
        self.inner.definitions.workflows().await
    }

    /// Deletes a workflow and its schedule's progress; refused while it has a run in
    /// flight (cancel it first). Its runs stay in the log, with their history.
    pub async fn delete_workflow(&self, workflow: &str) -> Result<(), EngineError> {
        self.workflow(workflow).await?;
        let _starting = self.inner.starting.lock().await;
        if let Some(run) = self.in_flight_run(workflow).await? {
            return Err(EngineError::AlreadyRunning {
                workflow: workflow.to_owned(),
                run,
            });
        }
        self.inner.definitions.remove_workflow(workflow).await?;
        self.inner.schedules.forget(workflow).await
    }

    // Schedules: the schedules service's.

    /// Pauses or resumes one workflow's schedule (durable).
    pub async fn pause_workflow(&self, workflow: &str, paused: bool) -> Result<(), EngineError> {
        let mut wf = WorkflowDef::clone(&*self.workflow(workflow).await?);
        wf.paused = paused;
        self.define_workflow(&wf).await
    }

    /// Pauses or resumes the whole scheduler (durable).
    pub async fn pause_scheduler(&self, paused: bool) -> Result<(), EngineError> {
        self.inner.schedules.pause(paused).await
    }

    /// Whether the scheduler is paused.
    pub async fn scheduler_paused(&self) -> Result<bool, EngineError> {
        self.inner.schedules.paused().await
    }

    /// The next `count` fires of a workflow's schedule after `now`.
    pub async fn upcoming(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
        count: usize,
    ) -> Result<Vec<DateTime<Utc>>, EngineError> {
        self.inner.schedules.upcoming(workflow, now, count).await
    }

    /// Fires every schedule due at `now`. A schedule seen for the first time starts
    /// counting from `now`. Paused workflows and a paused scheduler fire nothing (their
    /// fires are missed, and caught up by policy on resume). Passes run one at a time.
    pub async fn tick_schedules(&self, now: DateTime<Utc>) -> Result<Tick, EngineError> {
        self.inner.schedules.tick(now, self).await
    }

    /// Runs the schedules until the engine is dropped: a pass [`FIRE_AHEAD`] of every
    /// fire, and at least every `max_sleep`.
    pub fn start_scheduler(&self, max_sleep: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let ahead = chrono::Duration::from_std(FIRE_AHEAD).unwrap_or_default();
        let spent = self.inner.metrics.scheduler_cpu(crate::cpu::FIRE_PASS);
        let passes = async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else { return };
                    let engine = Engine { inner };
                    match engine.tick_schedules(Utc::now() + ahead).await {
                        Ok(tick) => tick.next,
                        Err(e) => {
                            tracing::error!(error = %e, "schedule pass failed");
                            None
                        }
                    }
                };
                let wait = next
                    .map(|n| (n - ahead - Utc::now()).to_std().unwrap_or_default())
                    .unwrap_or(max_sleep)
                    .min(max_sleep);
                tokio::time::sleep(wait).await;
            }
        };
        tokio::spawn(CpuTimed::new(passes, spent));
    }

    // Runs.

    /// The workflow's run in flight, if any.
    pub async fn in_flight_run(&self, workflow: &str) -> Result<Option<RunId>, EngineError> {
        let runs = self
            .inner
            .store
            .log()
            .list_in_flight(&RunFilter {
                workflow: Some(workflow.to_owned()),
                limit: 1,
                ..RunFilter::default()
            })
            .await?;
        Ok(runs.first().map(|r| r.run_id))
    }

    /// Starts a run of `workflow`, unless one is in flight (runs of one workflow never
    /// overlap). Returns once `RunScheduled` is durable; the run goes on in the
    /// background.
    pub async fn start(&self, workflow: &str, trigger: Trigger) -> Result<RunId, EngineError> {
        let wf = self.workflow(workflow).await?;
        let conn = self.connection(&wf.connection).await?;
        let _starting = self.inner.starting.lock().await;
        if let Some(run) = self.in_flight_run(workflow).await? {
            return Err(EngineError::AlreadyRunning {
                workflow: workflow.to_owned(),
                run,
            });
        }
        let run = new_run_id();
        self.inner
            .store
            .log()
            .append(run, vec![wf.scheduled(&conn, trigger, 0)])
            .await?;
        self.enqueue(run, now_unix_ms()).await?;
        Ok(run)
    }

    /// Drives again every run that was in flight when the node stopped, from its last
    /// committed checkpoint.
    ///
    /// For a process that uses the store alone (`sluice run`, one node): a node of a
    /// cluster does not call it, but picks up what its sweeps find left (module
    /// `sweep`).
    pub async fn recover(&self) -> Result<Recovery, EngineError> {
        let mut recovery = Recovery::default();
        for run in self.inner.store.log().in_flight().await? {
            match self.inner.store.log().state(run).await {
                Ok(state) => {
                    self.enqueue(run, due_of(&state)).await?;
                    recovery.resumed.push(run);
                }
                Err(e) => {
                    tracing::error!(%run, error = %e, "cannot resume run: its log is unreadable");
                    recovery.unreadable.push((run, e));
                }
            }
        }
        Ok(recovery)
    }

    /// Queues a run in flight from its log: due now, or a retry when it is due.
    pub(crate) async fn resume(&self, run: RunId) -> Result<(), EngineError> {
        let state = self.inner.store.log().state(run).await?;
        self.enqueue(run, due_of(&state)).await
    }

    /// Takes over the runs another worker was running whose lease expired by
    /// `at_unix_ms` (its node died, or stopped heartbeating): they are queued here at
    /// once and resume from their last checkpoint. Returns them.
    ///
    /// Safe with several nodes on one store: the takeover appends only if the run's
    /// log has not moved since it was read, so a heartbeat that lands in between, or
    /// another node taking the run first, leaves it alone. [`Engine::recover`] needs
    /// no lease check: the embedded store is open in one process at a time, so every
    /// lease it holds at start belongs to a stopped process.
    pub async fn take_over_expired(&self, at_unix_ms: i64) -> Result<Vec<RunId>, EngineError> {
        let running = self.running().await?;
        let mut taken = Vec::new();
        for summary in running {
            let run = summary.run_id;
            if self.inner.dispatch.watch(run).is_some() {
                continue;
            }
            let state = self.state(run).await?;
            let expired = state.lease.as_ref().is_none_or(|l| l.expired(at_unix_ms));
            if matches!(state.status, RunStatus::Running { .. }) && expired {
                self.enqueue(run, now_unix_ms()).await?;
                taken.push(run);
            }
        }
        Ok(taken)
    }

    /// The summaries of every run with an attempt running, on any node.
    pub(crate) async fn running(&self) -> Result<Vec<sluice_store::log::RunSummary>, EngineError> {
        let filter = RunFilter {
            status: Some(StatusKind::Running),
            ..RunFilter::default()
        };
        Ok(self.inner.store.log().list(&filter).await?)
    }

    /// The run's folded state.
    pub async fn state(&self, run: RunId) -> Result<RunState, EngineError> {
        match self.inner.store.log().state(run).await {
            Err(LogError::UnknownRun(_)) => Err(EngineError::UnknownRun(run)),
            other => Ok(other?),
        }
    }

    /// Live progress of a run this node holds (queued or driven).
    pub fn watch(&self, run: RunId) -> Option<watch::Receiver<Progress>> {
        self.inner.dispatch.watch(run)
    }

    /// Runs as they leave this node: completed, dead-lettered, cancelled, or no
    /// longer driven because the store failed. A slow receiver misses the oldest.
    pub fn subscribe_ended(&self) -> tokio::sync::broadcast::Receiver<RunId> {
        self.inner.ended.subscribe()
    }

    /// Waits until `run` leaves this node (it completed, was dead-lettered or
    /// cancelled, or its store failed), then returns its state.
    pub async fn wait(&self, run: RunId) -> Result<RunState, EngineError> {
        if let Some(mut rx) = self.watch(run) {
            // An error means the driver is gone, which is what we wait for.
            let _ = rx.wait_for(|p| p.finished).await;
        }
        self.state(run).await
    }

    /// Cancels a run: a driven run stops at its next batch boundary, a waiting one at
    /// once.
    pub async fn cancel(&self, run: RunId, reason: &str) -> Result<(), EngineError> {
        if let Some(token) = self.inner.dispatch.driving(run) {
            token.cancel();
            return Ok(());
        }
        let queued = self.inner.dispatch.unqueue(run);
        let state = self.state(run).await?;
        let kind = state.status.kind();
        if kind.is_terminal() {
            return Err(EngineError::WrongStatus {
                run,
                status: kind.as_str(),
                why: if kind == StatusKind::DeadLettered {
                    "a dead-lettered run is already stopped"
                } else {
                    "only a run that has not ended can be cancelled"
                },
            });
        }
        let cancelled = EventKind::RunCancelled(RunCancelled {
            reason: reason.to_owned(),
        });
        self.inner.store.log().append(run, vec![cancelled]).await?;
        if let Some(held) = queued {
            held.progress.send_modify(|p| p.finished = true);
            let _ = self.inner.ended.send(run);
        }
        Ok(())
    }

    /// Retries a dead-lettered run from its last checkpoint.
    pub async fn retry(&self, run: RunId, requested_by: &str) -> Result<(), EngineError> {
        let state = self.state(run).await?;
        if state.status.kind() != StatusKind::DeadLettered {
            return Err(EngineError::WrongStatus {
                run,
                status: state.status.kind().as_str(),
                why: "only a dead-lettered run can be retried",
            });
        }
        let requested = EventKind::ManualRetryRequested(ManualRetryRequested {
            requested_by: requested_by.to_owned(),
            not_before_unix_ms: 0,
        });
        self.inner.store.log().append(run, vec![requested]).await?;
        self.enqueue(run, now_unix_ms()).await?;
        Ok(())
    }

    // Metrics.

    /// The node's metrics in the Prometheus text format (gauges read now).
    pub async fn metrics_text(&self) -> String {
        let (waiting, driven) = self.load();
        let bytes = self.inner.store.size_on_disk().await.ok();
        self.inner.metrics.text(waiting, driven, bytes)
    }

    /// Runs waiting for a slot and runs being driven on this node.
    pub fn load(&self) -> (usize, usize) {
        self.inner.dispatch.counts()
    }

    /// CPU seconds the scheduler spent on its own work so far: handling fires and
    /// starting runs (not the runs' work, nor writing the log).
    pub fn scheduler_cpu_seconds(&self) -> f64 {
        self.inner.metrics.scheduler_cpu_total()
    }

    // The dispatcher.

    /// Puts a run of the log in the ready queue, due at `due_ms`; nothing if this node
    /// holds it already.
    async fn enqueue(&self, run: RunId, due_ms: i64) -> Result<(), EngineError> {
        let state = self.state(run).await?;
        let connector = self
            .connection(&state.connection)
            .await
            .map_or_else(|_| state.connection.clone(), |c| c.connector.clone());
        let overlap = self
            .workflow(&state.workflow)
            .await
            .map(|w| w.overlap)
            .unwrap_or_default();
        let workflow = state.workflow.clone();
        let candidate = Candidate {
            id: id_of(run),
            tenant: state.tenant.clone(),
            connector,
            priority: state.priority,
            due_ms,
            group: overlap_group(overlap, &state.workflow),
        };
        self.hold(&workflow, candidate, Some(state));
        Ok(())
    }

    /// Queues a run whose candidate is at hand (a fire just recorded it), without
    /// reading its log back.
    fn hold(&self, workflow: &str, candidate: Candidate, known: Option<RunState>) {
        if self.inner.dispatch.hold(workflow, candidate, known) {
            self.ensure_dispatcher();
            self.inner.wake.notify_one();
        }
    }

    /// Starts the dispatcher loop once. It holds the engine only weakly, so dropping
    /// every handle on the engine closes the store.
    fn ensure_dispatcher(&self) {
        if self.inner.dispatcher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.wake);
        let spent = self.inner.metrics.scheduler_cpu(crate::cpu::DISPATCH);
        let dispatcher = async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else { return };
                    let engine = Engine { inner };
                    let (ready, next) = if engine.inner.draining.load(Ordering::Acquire) {
                        (Vec::new(), None)
                    } else {
                        engine.inner.dispatch.take_ready(now_unix_ms())
                    };
                    for r in ready {
                        engine.drive_in_background(r);
                    }
                    next
                };
                match next {
                    Some(due) => {
                        let wait = u64::try_from(due.saturating_sub(now_unix_ms())).unwrap_or(0);
                        tokio::select! {
                            () = wake.notified() => {}
                            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        }
                    }
                    None => wake.notified().await,
                }
            }
        };
        tokio::spawn(CpuTimed::new(dispatcher, spent));
    }

    /// Drives a run taken from the queue, then settles how its driver stopped: back
    /// to the queue for a retry, or out of the node.
    fn drive_in_background(&self, ready: Ready) {
        let engine = self.clone();
        tokio::spawn(async move {
            let Ready {
                run,
                cancel,
                progress,
                candidate,
                known,
            } = ready;
            let inner = &engine.inner;
            let waited_ms = now_unix_ms().saturating_sub(candidate.due_ms).max(0);
            inner
                .metrics
                .queue_wait_seconds
                .observe(waited_ms as f64 / 1000.0);
            let free_slot = || {
                if inner.dispatch.free_slot(&candidate) {
                    inner.wake.notify_one();
                }
            };
            let driver = Driver {
                store: &inner.store,
                definitions: &inner.definitions,
                connectors: engine.connectors().await,
                metrics: &inner.metrics,
                worker: &inner.worker,
                tenant_slots: inner.tenant_slots,
                clustered: inner.cluster.get().is_some(),
            };
            let result = driver
                .drive(run, &cancel, &progress, known, &free_slot)
                .await;
            if let Ok(Driven::WaitUntil(due)) = result {
                inner.dispatch.requeue(&candidate, due);
                progress.send_modify(|p| p.retry_at_unix_ms = Some(due));
            } else {
                inner.dispatch.release(&candidate);
                engine.settle(run, result).await;
                progress.send_modify(|p| p.finished = true);
                let _ = inner.ended.send(run);
            }
            inner.wake.notify_one();
        });
    }

    /// Counts a run that left the node, or queues it again if a manual retry came in
    /// while it was still held.
    async fn settle(&self, run: RunId, result: Result<Driven, EngineError>) {
        match result {
            // Only a dead-lettered run can be retried: a completed one needs no second
            // look at its log.
            Ok(Driven::Completed { started_at_unix_ms }) => {
                let span = started_at_unix_ms.map(|start| (start, now_unix_ms()));
                self.inner.metrics.run_ended(StatusKind::Completed, span);
            }
            Ok(Driven::Ended) => match self.state(run).await {
                Ok(state) if state.status.kind().is_terminal() => {
                    let span = state.started_at_unix_ms.zip(state.finished_at_unix_ms);
                    self.inner.metrics.run_ended(state.status.kind(), span);
                }
                // A manual retry may have landed between the driver's last append and
                // the release, when `enqueue` still saw the run held.
                Ok(_) => {
                    if let Err(e) = self.enqueue(run, now_unix_ms()).await {
                        tracing::error!(%run, error = %e, "cannot queue retried run");
                    }
                }
                Err(e) => tracing::error!(%run, error = %e, "cannot read the ended run"),
            },
            Ok(_) => tracing::info!(%run, "another node took the run over"),
            Err(EngineError::Store(StoreError::Log(e)))
                if crate::store_health::cannot_write(&e) =>
            {
                self.park(run, &e);
            }
            Err(e) => {
                tracing::error!(%run, error = %e, "stopped driving run; it resumes on restart");
            }
        }
    }
}

/// When a run in flight is due: a retry at its time, anything else now.
fn due_of(state: &RunState) -> i64 {
    match state.status {
        RunStatus::RetryWaiting {
            not_before_unix_ms, ..
        } => not_before_unix_ms,
        _ => now_unix_ms(),
    }
}

/// A schedule pass queues and cancels runs through the engine, like any other start.
impl Runs for Engine {
    fn held(&self, workflow: &str) -> Vec<(RunId, bool)> {
        let mut held = self.inner.dispatch.of_workflow(workflow);
        if let Some(cluster) = self.inner.cluster.get() {
            held.extend(cluster.elsewhere(workflow));
        }
        held
    }

    fn owns(&self, workflow: &str) -> bool {
        Engine::owns(self, workflow)
    }

    fn hold(&self, workflow: &str, candidate: Candidate, known: Option<RunState>) {
        Engine::hold(self, workflow, candidate, known);
    }

    fn cancel(
        &self,
        run: RunId,
        reason: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        Engine::cancel(self, run, reason)
    }
}
