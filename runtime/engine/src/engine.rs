//! [`Engine`]: starts runs, drives each through its attempts, and resumes in-flight
//! runs after a restart.
//!
//! Owns the lifecycle of runs: every decision (start, attempt, retry, dead-letter,
//! cancel, complete) is an event appended to the run's log *before* it takes effect
//! (an attempt's beginning is only queued first: whatever the attempt records is
//! committed after it, and the attempt counts only once it is durable), and the
//! driver re-derives what to do next from the log's fold, never from memory.
//! So a crash at any instant leaves a log from which [`Engine::recover`] carries on.
//! The only in-memory state is which runs this process holds (module `dispatch`):
//! waiting in the ready queue, which starts them by priority within the slot limits
//! and never two runs of one workflow at once, or being driven.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_scheduler::{Aging, Candidate, Limits, OverlapPolicy};

use sluice_model::{
    AttemptBegun, AttemptFailed, EventKind, FailureKind, Heartbeat, ManualRetryRequested,
    RetryScheduled, RunCancelled, RunCompleted, RunDeadLettered, RunScheduled, RunStarted,
    StatusKind,
};
use sluice_store::log::Appending;
use sluice_store::log::RunFilter;
use sluice_store::{LogError, RunId, RunState, RunStatus, Store, StoreError};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::attempt::{Attempt, AttemptEnd, Done, Failure};
use crate::connectors::Connectors;
use crate::cpu::CpuTimed;
use crate::definition::{ConnectionDef, WorkflowDef};
use crate::definitions::DefinitionCache;
use crate::dispatch::{Dispatch, Ready, id_of};
use crate::error::EngineError;
use crate::metrics::{self, EngineMetrics};
use crate::progress::Progress;
use crate::retry::{Decision, Failures};
use crate::schedules::ScheduleTable;

pub(crate) const CONNECTION: &str = "connection";
pub(crate) const WORKFLOW: &str = "workflow";
/// How long an attempt's beginning is held back from the log before it is queued on
/// its own: an attempt that ends sooner (a sync with nothing new) commits its
/// beginning and its end as one group. Meanwhile the log shows the run as scheduled,
/// and a crash forgets that the attempt began (it had committed nothing).
const BEGIN_HELD: Duration = Duration::from_millis(50);

/// Why a run starts.
pub use sluice_model::Trigger;

/// The engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) connectors: Connectors,
    worker: String,
    pub(crate) dispatch: Dispatch,
    pub(crate) definitions: DefinitionCache,
    pub(crate) metrics: EngineMetrics,
    /// The schedules, compiled; one pass at a time holds it.
    pub(crate) schedules: tokio::sync::Mutex<ScheduleTable>,
    /// Wakes the dispatcher: a run was queued or gave back its slot.
    wake: Arc<Notify>,
    dispatcher_started: AtomicBool,
    /// Runs that left this node (ended, or stopped being driven).
    ended: tokio::sync::broadcast::Sender<RunId>,
    /// Held from the overlap check to the durable `RunScheduled`, so that two starts
    /// of one workflow cannot both pass the check.
    pub(crate) starting: tokio::sync::Mutex<()>,
    /// Set once the connectors registered in the catalog are resolvable.
    registered_loaded: tokio::sync::OnceCell<()>,
}

/// How a driver stopped.
enum Driven {
    /// The run completed (it leaves the node); it started then.
    Completed { started_at_unix_ms: Option<i64> },
    /// The run ended otherwise (or cannot go on here): it leaves the node.
    Ended,
    /// The run waits for a retry: it goes back to the queue, due then.
    WaitUntil(i64),
    /// Another node appended first (it took the run over): leave the run to it.
    Elsewhere,
}

/// How long a worker's lease on a running attempt lasts, and how often it renews it
/// with a heartbeat: three missed heartbeats let another node take the run over.
#[derive(Clone, Copy, Debug)]
struct Lease {
    beat: Duration,
}

impl Lease {
    fn of(workflow: &Result<Arc<WorkflowDef>, EngineError>) -> Lease {
        let heartbeat_secs = workflow
            .as_ref()
            .map(|w| w.timeouts.heartbeat_secs)
            .unwrap_or_else(|_| crate::definition::Timeouts::default().heartbeat_secs);
        let stuck_after = Duration::from_secs(heartbeat_secs);
        Lease {
            beat: (stuck_after / 3).clamp(Duration::from_millis(250), Duration::from_secs(10)),
        }
    }

    /// The lease's end when renewed at `now_ms`.
    fn until(self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.beat.as_millis() * 3).unwrap_or(i64::MAX))
    }
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

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The first event of a run of `wf` over `conn`.
pub(crate) fn scheduled(
    wf: &WorkflowDef,
    conn: &ConnectionDef,
    trigger: Trigger,
    fire_at_unix_ms: i64,
) -> EventKind {
    EventKind::RunScheduled(RunScheduled {
        workflow: wf.name.clone(),
        connection: conn.name.clone(),
        tenant: conn.tenant.clone(),
        priority: wf.priority,
        streams: wf.streams.iter().map(|s| s.name.clone()).collect(),
        trigger,
        fire_at_unix_ms,
    })
}

/// The group a workflow's runs queue in: runs of one workflow never overlap, unless
/// its policy allows it.
pub(crate) fn overlap_group(overlap: OverlapPolicy, workflow: &str) -> Option<String> {
    (overlap != OverlapPolicy::AllowAll).then(|| workflow.to_owned())
}

pub(crate) fn new_run_id() -> RunId {
    let id = uuid::Uuid::now_v7();
    RunId::from_slice(id.as_bytes()).unwrap_or_default()
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
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                connectors,
                worker: worker.into(),
                dispatch: Dispatch::new(limits, aging),
                definitions: DefinitionCache::default(),
                metrics: EngineMetrics::new(limiter),
                schedules: tokio::sync::Mutex::default(),
                wake: Arc::new(Notify::new()),
                dispatcher_started: AtomicBool::new(false),
                ended: tokio::sync::broadcast::channel(1024).0,
                starting: tokio::sync::Mutex::new(()),
                registered_loaded: tokio::sync::OnceCell::new(),
            }),
        };
        engine
    }

    /// The node's rate limiter: every connector request's budget and breaker.
    pub fn limiter(&self) -> &Arc<sluice_host::limiter::Limiter> {
        self.inner.connectors.host().limiter()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The connectors, once those registered in the catalog are resolvable: read on
    /// first use, so that building an engine does no I/O.
    pub(crate) async fn connectors(&self) -> &Connectors {
        self.inner
            .registered_loaded
            .get_or_init(|| async {
                if let Err(e) = self.load_registered().await {
                    tracing::error!(error = %e, "cannot read the registered connectors");
                }
            })
            .await;
        &self.inner.connectors
    }

    /// Defines (or replaces) a connection, after checking it and that its connector
    /// loads.
    pub async fn define_connection(&self, def: &ConnectionDef) -> Result<(), EngineError> {
        def.validate("")?;
        self.connectors()
            .await
            .load(&def.connector)
            .map_err(|e| EngineError::Connector {
                reference: def.connector.clone(),
                message: e.to_string(),
            })?;
        self.put(CONNECTION, &def.name, def).await?;
        self.inner.definitions.put_connection(Arc::new(def.clone()));
        Ok(())
    }

    /// Defines (or replaces) a workflow, after checking it and that its connection
    /// exists.
    pub async fn define_workflow(&self, def: &WorkflowDef) -> Result<(), EngineError> {
        def.validate("")?;
        self.connection(&def.connection).await?;
        self.put(WORKFLOW, &def.name, def).await?;
        self.inner
            .definitions
            .workflow_changed(Arc::new(def.clone()));
        Ok(())
    }

    async fn put<T: serde::Serialize>(
        &self,
        kind: &str,
        name: &str,
        def: &T,
    ) -> Result<(), EngineError> {
        let json = serde_json::to_vec(def).map_err(|e| EngineError::CorruptDefinition {
            kind: if kind == CONNECTION {
                CONNECTION
            } else {
                WORKFLOW
            },
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        self.inner.store.catalog().put(kind, name, &json).await?;
        Ok(())
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<T>, EngineError> {
        let Some(raw) = self.inner.store.catalog().get(kind, name).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| EngineError::CorruptDefinition {
                kind,
                name: name.to_owned(),
                message: e.to_string(),
            })
    }

    /// The connection named `name`.
    pub async fn connection(&self, name: &str) -> Result<Arc<ConnectionDef>, EngineError> {
        let cache = &self.inner.definitions;
        if let Some(def) = cache.connection(name) {
            return Ok(def);
        }
        let def: Arc<ConnectionDef> = self
            .get::<ConnectionDef>(CONNECTION, name)
            .await?
            .ok_or_else(|| EngineError::UnknownConnection(name.to_owned()))?
            .into();
        cache.put_connection(Arc::clone(&def));
        Ok(def)
    }

    /// The workflow named `name`.
    pub async fn workflow(&self, name: &str) -> Result<Arc<WorkflowDef>, EngineError> {
        let cache = &self.inner.definitions;
        if let Some(def) = cache.workflow(name) {
            return Ok(def);
        }
        let def: Arc<WorkflowDef> = self
            .get::<WorkflowDef>(WORKFLOW, name)
            .await?
            .ok_or_else(|| EngineError::UnknownWorkflow(name.to_owned()))?
            .into();
        cache.put_workflow(Arc::clone(&def));
        Ok(def)
    }

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
            .append(run, vec![scheduled(&wf, &conn, trigger, 0)])
            .await?;
        self.enqueue(run, now_unix_ms()).await?;
        Ok(run)
    }

    /// Drives again every run that was in flight when the node stopped, from its last
    /// committed checkpoint.
    pub async fn recover(&self) -> Result<Recovery, EngineError> {
        let mut recovery = Recovery::default();
        for run in self.inner.store.log().in_flight().await? {
            match self.inner.store.log().state(run).await {
                Ok(state) => {
                    let due = match state.status {
                        RunStatus::RetryWaiting {
                            not_before_unix_ms, ..
                        } => not_before_unix_ms,
                        _ => now_unix_ms(),
                    };
                    self.enqueue(run, due).await?;
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
        let running = self
            .inner
            .store
            .log()
            .list(&RunFilter {
                status: Some(StatusKind::Running),
                ..RunFilter::default()
            })
            .await?;
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

    /// Counts a run that ended, by status, with its duration.
    fn record_end(&self, state: &RunState) {
        let span = state.started_at_unix_ms.zip(state.finished_at_unix_ms);
        self.count_end(state.status.kind(), span);
    }

    /// Counts a run that ended with status `kind`, with its (start, end) if known.
    fn count_end(&self, kind: StatusKind, span: Option<(i64, i64)>) {
        let m = &self.inner.metrics;
        m.runs_ended
            .get_or_create(&metrics::kind(kind.as_str()))
            .inc();
        if let Some((start, end)) = span {
            m.run_duration_seconds
                .observe(end.saturating_sub(start).max(0) as f64 / 1000.0);
        }
    }

    /// The node's metrics in the Prometheus text format (gauges read now).
    pub fn metrics_text(&self) -> String {
        let m = &self.inner.metrics;
        let (waiting, driven) = self.load();
        m.runs_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        m.runs_driven.set(i64::try_from(driven).unwrap_or(i64::MAX));
        if let Ok(bytes) = self.inner.store.size_on_disk() {
            m.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        m.encode()
    }

    /// Runs waiting for a slot and runs being driven on this node.
    pub fn load(&self) -> (usize, usize) {
        self.inner.dispatch.counts()
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
        self.inner
            .store
            .log()
            .append(
                run,
                vec![EventKind::RunCancelled(RunCancelled {
                    reason: reason.to_owned(),
                })],
            )
            .await?;
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
        self.inner
            .store
            .log()
            .append(
                run,
                vec![EventKind::ManualRetryRequested(ManualRetryRequested {
                    requested_by: requested_by.to_owned(),
                    not_before_unix_ms: 0,
                })],
            )
            .await?;
        self.enqueue(run, now_unix_ms()).await?;
        Ok(())
    }

    /// Puts a run of the log in the ready queue, due at `due_ms`; nothing if this node
    /// holds it already.
    pub(crate) async fn enqueue(&self, run: RunId, due_ms: i64) -> Result<(), EngineError> {
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
    pub(crate) fn hold(&self, workflow: &str, candidate: Candidate, known: Option<RunState>) {
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
        let spent = self.scheduler_cpu(crate::cpu::DISPATCH);
        let dispatcher = async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else { return };
                    let engine = Engine { inner };
                    let (ready, next) = engine.inner.dispatch.take_ready(now_unix_ms());
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

    /// The counter of the scheduler's own CPU time spent in loop `part`.
    pub(crate) fn scheduler_cpu(&self, part: &str) -> crate::cpu::Seconds {
        self.inner
            .metrics
            .scheduler_cpu_seconds
            .get_or_create(&crate::metrics::kind(part))
            .clone()
    }

    /// CPU seconds the scheduler spent on its own work so far: handling fires and
    /// starting runs (not the runs' work, nor writing the log).
    pub fn scheduler_cpu_seconds(&self) -> f64 {
        crate::cpu::LOOPS
            .iter()
            .map(|part| self.scheduler_cpu(part).get())
            .sum()
    }

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
            let m = &engine.inner.metrics;
            let waited_ms = now_unix_ms().saturating_sub(candidate.due_ms).max(0);
            m.queue_wait_seconds.observe(waited_ms as f64 / 1000.0);
            let free_slot = || {
                if engine.inner.dispatch.free_slot(&candidate) {
                    engine.inner.wake.notify_one();
                }
            };
            let result = engine
                .drive(run, &cancel, &progress, known, &free_slot)
                .await;
            let dispatch = &engine.inner.dispatch;
            if let Ok(Driven::WaitUntil(due)) = result {
                dispatch.requeue(&candidate, due);
                progress.send_modify(|p| p.retry_at_unix_ms = Some(due));
            } else {
                dispatch.release(&candidate);
                match result {
                    // Only a dead-lettered run can be retried: a completed one needs
                    // no second look at its log.
                    Ok(Driven::Completed { started_at_unix_ms }) => {
                        let span = started_at_unix_ms.map(|start| (start, now_unix_ms()));
                        engine.count_end(StatusKind::Completed, span);
                    }
                    Ok(Driven::Ended) => match engine.state(run).await {
                        Ok(state) if state.status.kind().is_terminal() => {
                            engine.record_end(&state);
                        }
                        // A manual retry may have landed between the driver's last
                        // append and the release, when `enqueue` still saw the run held.
                        Ok(_) => {
                            if let Err(e) = engine.enqueue(run, now_unix_ms()).await {
                                tracing::error!(%run, error = %e, "cannot queue retried run");
                            }
                        }
                        Err(e) => tracing::error!(%run, error = %e, "cannot read the ended run"),
                    },
                    Ok(_) => tracing::info!(%run, "another node took the run over"),
                    Err(e) => {
                        tracing::error!(%run, error = %e, "stopped driving run; it resumes on restart");
                    }
                }
                progress.send_modify(|p| p.finished = true);
                let _ = engine.inner.ended.send(run);
            }
            engine.inner.wake.notify_one();
        });
    }

    async fn append(&self, run: RunId, kinds: Vec<EventKind>) -> Result<(), EngineError> {
        self.inner.store.log().append(run, kinds).await?;
        Ok(())
    }

    /// Drives `run` until it ends or the store fails, re-deriving each step from the log.
    /// `free_slot` gives the run's slot back once its work is over and its end queued.
    async fn drive(
        &self,
        run: RunId,
        cancel: &CancellationToken,
        progress: &watch::Sender<Progress>,
        mut known: Option<RunState>,
        free_slot: &(dyn Fn() + Sync),
    ) -> Result<Driven, EngineError> {
        loop {
            // A state the queuer had is used without reading the log: the appends
            // below expect the log to be still where that state ends, and a conflict
            // comes back here to read it.
            let state = match known.take() {
                Some(s) => s,
                None => self.state(run).await?,
            };
            // Where the log is as far as this driver knows.
            let mut last_seq = state.last_seq;
            progress.send_modify(|p| {
                p.records = state.total_records();
                p.batches = state.progress.values().map(|s| s.batches).sum();
                p.bytes = state.progress.values().map(|s| s.bytes).sum();
                p.attempt = state.attempts;
            });
            match &state.status {
                RunStatus::Completed | RunStatus::Cancelled | RunStatus::DeadLettered { .. } => {
                    return Ok(Driven::Ended);
                }
                RunStatus::RetryWaiting {
                    not_before_unix_ms, ..
                } => {
                    // Waiting holds no slot: back to the queue until it is due.
                    if *not_before_unix_ms > now_unix_ms() && !cancel.is_cancelled() {
                        return Ok(Driven::WaitUntil(*not_before_unix_ms));
                    }
                }
                RunStatus::Running { attempt } => {
                    // A run found running that this node does not drive was cut off:
                    // its node restarted (recovery) or its lease expired (takeover).
                    // Say so, only if nobody appended since we read it, so that two
                    // nodes never both take it; it does not count as a failure.
                    let holder = state
                        .lease
                        .as_ref()
                        .map_or_else(|| state.worker.clone(), |l| l.worker.clone());
                    let failed = EventKind::AttemptFailed(AttemptFailed {
                        attempt: *attempt,
                        kind: FailureKind::Orchestration,
                        message: format!(
                            "attempt {attempt} on worker `{holder}` was interrupted (its \
                             node stopped or its lease expired); resuming from the last \
                             checkpoint"
                        ),
                        retry_after_ms: 0,
                    });
                    match self
                        .inner
                        .store
                        .log()
                        .append_expecting(run, last_seq, vec![failed])
                        .await
                    {
                        Ok(seqs) => last_seq = seqs.last().copied().unwrap_or(last_seq),
                        Err(LogError::Conflict { .. }) => return Ok(Driven::Elsewhere),
                        Err(e) => return Err(e.into()),
                    }
                }
                RunStatus::Scheduled => {}
            }
            if cancel.is_cancelled() {
                return self.cancelled(run).await;
            }
            let attempt = state.attempts + 1;
            let started_at_unix_ms = state.started_at_unix_ms.or(Some(now_unix_ms()));
            let mut begin = Vec::with_capacity(2);
            if state.started_at_unix_ms.is_none() {
                begin.push(EventKind::RunStarted(RunStarted {
                    worker: self.inner.worker.clone(),
                }));
            }
            let wf = self.workflow(&state.workflow).await;
            let lease = Lease::of(&wf);
            begin.push(EventKind::AttemptBegun(AttemptBegun {
                attempt,
                worker: self.inner.worker.clone(),
                lease_until_unix_ms: lease.until(now_unix_ms()),
            }));
            // The attempt starts while its beginning is held back (see `BEGIN_HELD`)
            // and then made durable (neither is part of the latency from due to
            // started); `supervised` checks the outcome before the attempt counts.
            // Anything the attempt appends is queued after it, so it is refused if
            // the beginning was.
            let begun = self
                .inner
                .store
                .log()
                .hold_expecting(run, last_seq, begin)
                .await?;
            progress.send_modify(|p| {
                p.attempt = attempt;
                p.retry_at_unix_ms = None;
            });

            let end = match self
                .supervised(run, attempt, &state, &wf, begun, cancel, progress)
                .await
            {
                Ok(done) => {
                    if done == Done::StreamsDone {
                        let completed = self
                            .inner
                            .store
                            .log()
                            .enqueue(run, vec![EventKind::RunCompleted(RunCompleted {})])
                            .await?;
                        // The work is over and its end stamped: the next run may take
                        // the slot while the end is made durable (this run stays held,
                        // so its workflow's next run still waits for it).
                        free_slot();
                        completed.await?;
                    }
                    tracing::info!(%run, "run completed");
                    return Ok(Driven::Completed { started_at_unix_ms });
                }
                Err(end) => end,
            };
            let failure = match end {
                AttemptEnd::Cancelled => return self.cancelled(run).await,
                // Something was appended since the state this attempt began from (a
                // cancel, another node beginning it): nothing of the attempt was
                // written. A run that another driver began is left to it.
                AttemptEnd::Store(StoreError::Log(LogError::Conflict { .. })) => {
                    let now = self.state(run).await?;
                    if matches!(now.status, RunStatus::Running { .. }) {
                        return Ok(Driven::Elsewhere);
                    }
                    known = Some(now);
                    continue;
                }
                AttemptEnd::Store(e) => return Err(e.into()),
                AttemptEnd::Failed(f) => f,
            };
            let failed = EventKind::AttemptFailed(AttemptFailed {
                attempt,
                kind: failure.kind,
                message: failure.message.clone(),
                retry_after_ms: failure
                    .retry_after
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
            match self.inner.store.log().append(run, vec![failed]).await {
                Ok(_) => {}
                // A timeout can stop the attempt while its last commit, which completes
                // the run, is already on its way: then the run ended and nothing failed.
                Err(LogError::Refused { .. })
                    if self.state(run).await?.status.kind().is_terminal() =>
                {
                    return Ok(Driven::Ended);
                }
                Err(e) => return Err(e.into()),
            }
            tracing::warn!(%run, attempt, kind = ?failure.kind, error = %failure.message, "attempt failed");
            let m = &self.inner.metrics;
            m.attempt_failures
                .get_or_create(&metrics::kind(failure.kind.as_str()))
                .inc();
            if failure.kind == FailureKind::RateLimited {
                m.rate_limit_waits.inc();
                if let Some(wait) = failure.retry_after {
                    m.rate_limit_wait_seconds.inc_by(wait.as_secs_f64());
                }
            }
            let policy = wf.map(|w| w.retry.clone()).unwrap_or_default();
            let failures = self.failures(run).await?;
            let next = match policy.decide(failure.kind, failure.retry_after, failures) {
                Decision::Retry(delay) => EventKind::RetryScheduled(RetryScheduled {
                    attempt: attempt + 1,
                    not_before_unix_ms: now_unix_ms()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                }),
                Decision::DeadLetter => EventKind::RunDeadLettered(RunDeadLettered {
                    kind: failure.kind,
                    message: failure.message,
                }),
            };
            self.append(run, vec![next]).await?;
        }
    }

    /// Runs an attempt under its timeouts, appending a `Heartbeat` (the node's lease
    /// on the run, for other nodes to see) while it goes. An attempt that commits
    /// nothing for `heartbeat_secs` is stopped as stuck (transient: retried); a run
    /// past `run_secs` is stopped for good (permanent: dead-lettered). If `begun`
    /// (the attempt's own beginning) fails, so does the attempt, with its error.
    #[allow(clippy::too_many_arguments)]
    async fn supervised(
        &self,
        run: RunId,
        attempt: u32,
        state: &RunState,
        workflow: &Result<Arc<WorkflowDef>, EngineError>,
        begun: Appending,
        cancel: &CancellationToken,
        progress: &watch::Sender<Progress>,
    ) -> Result<Done, AttemptEnd> {
        let timeouts = workflow
            .as_ref()
            .map(|w| w.timeouts.clone())
            .unwrap_or_default();
        let stuck_after = Duration::from_secs(timeouts.heartbeat_secs);
        let lease = Lease::of(workflow);
        let beat = lease.beat;
        let deadline_ms = timeouts.run_secs.map(|secs| {
            state
                .started_at_unix_ms
                .unwrap_or_else(now_unix_ms)
                .saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
        });
        // Checks run often enough for short timeouts; heartbeats are appended less
        // often (see `Lease`), so that a long run's log does not fill with them.
        let mut ticker = tokio::time::interval(beat.min(Duration::from_millis(500)));
        ticker.tick().await;
        let mut last_beat = tokio::time::Instant::now();
        let mut live = progress.subscribe();
        let mut last_progress = tokio::time::Instant::now();
        let work = self.attempt(run, attempt, state, workflow, cancel, progress);
        tokio::pin!(work);
        let mut begun = Some(begun);
        let held = tokio::time::sleep(BEGIN_HELD);
        tokio::pin!(held);
        let mut holding = true;
        loop {
            tokio::select! {
                () = &mut held, if holding => {
                    holding = false;
                    if let Err(e) = self.inner.store.log().release(run).await {
                        return Err(AttemptEnd::Store(e.into()));
                    }
                }
                result = &mut work => {
                    if let Some(begun) = begun.take() {
                        // Still held if the attempt appended nothing.
                        let log = self.inner.store.log();
                        log.release(run).await.map_err(|e| AttemptEnd::Store(e.into()))?;
                        begun.await.map_err(|e| AttemptEnd::Store(e.into()))?;
                    }
                    return result;
                }
                outcome = async { begun.as_mut()?.await.err() }, if begun.is_some() => {
                    begun = None;
                    if let Some(e) = outcome {
                        return Err(AttemptEnd::Store(e.into()));
                    }
                }
                changed = live.changed() => {
                    if changed.is_ok() {
                        last_progress = tokio::time::Instant::now();
                    }
                }
                _ = ticker.tick() => {
                    if deadline_ms.is_some_and(|d| now_unix_ms() >= d) {
                        return Err(AttemptEnd::Failed(Failure::new(
                            FailureKind::Permanent,
                            format!(
                                "the run timed out after {} s (timeouts.run_secs); \
                                 a manual retry resumes it from its last checkpoint",
                                timeouts.run_secs.unwrap_or_default()
                            ),
                        )));
                    }
                    if last_progress.elapsed() >= stuck_after {
                        return Err(AttemptEnd::Failed(Failure::new(
                            FailureKind::Transient,
                            format!(
                                "attempt {attempt} committed nothing for {} s \
                                 (timeouts.heartbeat_secs): stopped as stuck",
                                timeouts.heartbeat_secs
                            ),
                        )));
                    }
                    if last_beat.elapsed() >= beat {
                        last_beat = tokio::time::Instant::now();
                        let heartbeat = EventKind::Heartbeat(Heartbeat {
                            attempt,
                            lease_until_unix_ms: lease.until(now_unix_ms()),
                        });
                        if let Err(e) = self.inner.store.log().append(run, vec![heartbeat]).await {
                            return Err(AttemptEnd::Store(e.into()));
                        }
                    }
                }
            }
        }
    }

    async fn attempt(
        &self,
        run: RunId,
        attempt: u32,
        state: &RunState,
        workflow: &Result<Arc<WorkflowDef>, EngineError>,
        cancel: &CancellationToken,
        progress: &watch::Sender<Progress>,
    ) -> Result<Done, AttemptEnd> {
        let config = |m: String| AttemptEnd::Failed(Failure::new(FailureKind::Config, m));
        let workflow = workflow.as_ref().map_err(|e| config(e.to_string()))?;
        let connection = self
            .connection(&state.connection)
            .await
            .map_err(|e| config(e.to_string()))?;
        let connector = self
            .connectors()
            .await
            .load(&connection.connector)
            .map_err(|e| config(format!("connector `{}`: {e}", connection.connector)))?;
        let activities = crate::run_log::Activities::default();
        let result = Attempt {
            store: &self.inner.store,
            metrics: &self.inner.metrics,
            activities: &activities,
            connector,
            connectors: &self.inner.connectors,
            run,
            attempt,
            state,
            connection: &connection,
            workflow,
            cancel,
            progress,
        }
        .run()
        .await;
        let entries = activities.entries(attempt);
        if let Err(e) = self.inner.store.run_logs().append(run, &entries).await {
            tracing::warn!(%run, error = %e, "cannot keep the attempt's logs");
        }
        result
    }

    async fn cancelled(&self, run: RunId) -> Result<Driven, EngineError> {
        self.append(
            run,
            vec![EventKind::RunCancelled(RunCancelled {
                reason: "cancelled on request".into(),
            })],
        )
        .await?;
        Ok(Driven::Ended)
    }

    /// The run's failures since its last manual retry, as the retry policy counts them:
    /// interruptions by a restart are not the run's failures.
    async fn failures(&self, run: RunId) -> Result<Failures, EngineError> {
        let events = self.inner.store.log().read(run).await?;
        let mut f = Failures::default();
        for e in &events {
            match &e.kind {
                EventKind::ManualRetryRequested(_) => f = Failures::default(),
                EventKind::AttemptFailed(a) => match a.kind {
                    FailureKind::RateLimited => f.rate_limited += 1,
                    FailureKind::Orchestration => {}
                    _ => f.attempts += 1,
                },
                _ => {}
            }
        }
        Ok(f)
    }
}
