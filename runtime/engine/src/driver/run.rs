//! The runner: performs the driver's steps for one run until the run ends, waits for
//! a retry or is left to another node.
//!
//! Owns turning a step into events and appending them (conditionally where two nodes
//! may race), running a begun attempt (module `supervise`), recording how it failed
//! and what the retry policy makes of it, and the metrics of failed attempts. It
//! never decides a step itself (`step::next_step` does, from the fold), never holds a
//! run's state across a refused append (it reads the log again), and never touches
//! the queue: it returns how it stopped, and the engine's dispatcher settles that.

use std::sync::Arc;

use sluice_model::{
    AttemptBegun, AttemptFailed, EventKind, FailureKind, RetryScheduled, RunCancelled,
    RunCompleted, RunDeadLettered, RunId, RunStarted, RunState, StatusKind,
};
use sluice_scheduler::OverlapPolicy;
use sluice_store::{LogError, Store, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::step::{Origin, Seen, Step, failures, next_step};
use super::supervise::{Lease, Supervised};
use crate::attempt::{AttemptEnd, Done, Failure};
use crate::clock::now_unix_ms;
use crate::connectors::Connectors;
use crate::definition::WorkflowDef;
use crate::definitions::DefinitionService;
use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::progress::Progress;
use crate::retry::Decision;

/// How long a run whose workflow another run holds waits before it tries again.
const BUSY_WAIT_MS: i64 = 500;

/// How a driver stopped.
pub(crate) enum Driven {
    /// The run completed (it leaves the node); it started then.
    Completed { started_at_unix_ms: Option<i64> },
    /// The run ended otherwise (or cannot go on here): it leaves the node.
    Ended,
    /// The run waits for a retry: it goes back to the queue, due then.
    WaitUntil(i64),
    /// Another node appended first (it took the run over): leave the run to it.
    Elsewhere,
}

/// What the runner does once an attempt is over.
enum Then {
    /// Stop driving.
    Stop(Driven),
    /// Decide again, from `known` (or the log's state) reached by `origin`.
    Again {
        known: Option<Box<RunState>>,
        origin: Origin,
    },
}

/// What driving a run needs of the node.
pub(crate) struct Driver<'a> {
    pub store: &'a Store,
    pub definitions: &'a DefinitionService,
    /// Resolvable, registered ones included.
    pub connectors: &'a Connectors,
    pub metrics: &'a EngineMetrics,
    /// This node's name in the log.
    pub worker: &'a str,
    /// The node's runs per tenant at once; on a shared store, a start checks it across
    /// the nodes (0: no limit).
    pub tenant_slots: u32,
    /// The node is one of a cluster: other nodes' leases are respected, and an
    /// attempt whose lease cannot be renewed stops.
    pub clustered: bool,
}

/// Shows a watcher what the log says of the run.
fn show(progress: &watch::Sender<Progress>, state: &RunState) {
    progress.send_modify(|p| {
        p.records = state.total_records();
        p.batches = state.progress.values().map(|s| s.batches).sum();
        p.bytes = state.progress.values().map(|s| s.bytes).sum();
        p.attempt = state.attempts;
    });
}

impl Driver<'_> {
    /// Drives `run` until it ends or the store fails, re-deriving each step from the
    /// log. `known` is the state the queuer folded, used without reading the log: the
    /// appends expect the log to be still where that state ends, and a conflict comes
    /// back here to read it. `free_slot` gives the run's slot back once its work is
    /// over and its end queued.
    pub(crate) async fn drive(
        &self,
        run: RunId,
        cancel: &CancellationToken,
        progress: &watch::Sender<Progress>,
        mut known: Option<RunState>,
        free_slot: &(dyn Fn() + Sync),
    ) -> Result<Driven, EngineError> {
        let mut origin = Origin::Queued;
        loop {
            let state = match known.take() {
                Some(s) => s,
                None => self.state(run).await?,
            };
            // Where the log is as far as this driver knows.
            let mut last_seq = state.last_seq;
            let mut shown = false;
            let then = loop {
                let seen = Seen {
                    now_unix_ms: now_unix_ms(),
                    cancelled: cancel.is_cancelled(),
                    origin,
                    clustered: self.clustered,
                };
                let step = next_step(&state, &seen);
                // A run left to another driver is not this one's to show.
                if !shown && step != Step::Elsewhere {
                    show(progress, &state);
                    shown = true;
                }
                match step {
                    Step::Ended => return Ok(Driven::Ended),
                    Step::WaitUntil(due) => return Ok(Driven::WaitUntil(due)),
                    Step::Elsewhere => return Ok(Driven::Elsewhere),
                    Step::Cancel => return self.cancelled(run).await,
                    Step::TakeOver { attempt, holder } => {
                        match self.take_over(run, last_seq, attempt, &holder).await? {
                            Some(seq) => {
                                last_seq = seq;
                                origin = Origin::TakenOver;
                            }
                            None => return Ok(Driven::Elsewhere),
                        }
                    }
                    Step::Begin { attempt, first } => {
                        let begin = Begin {
                            run,
                            state: &state,
                            last_seq,
                            attempt,
                            first,
                        };
                        break self.begin(begin, cancel, progress, free_slot).await?;
                    }
                }
            };
            match then {
                Then::Stop(driven) => return Ok(driven),
                Then::Again {
                    known: k,
                    origin: o,
                } => {
                    known = k.map(|s| *s);
                    origin = o;
                }
            }
        }
    }

    async fn state(&self, run: RunId) -> Result<RunState, EngineError> {
        match self.store.log().state(run).await {
            Err(LogError::UnknownRun(_)) => Err(EngineError::UnknownRun(run)),
            other => Ok(other?),
        }
    }

    /// Records that `attempt`, held by `holder`, was cut off, if the log is still at
    /// `last_seq`; returns the log's new last seq, or `None` if it moved (another
    /// node appended first).
    async fn take_over(
        &self,
        run: RunId,
        last_seq: u64,
        attempt: u32,
        holder: &str,
    ) -> Result<Option<u64>, EngineError> {
        let failed = EventKind::AttemptFailed(AttemptFailed {
            attempt,
            kind: FailureKind::Orchestration,
            message: format!(
                "attempt {attempt} on worker `{holder}` was interrupted (its node stopped \
                 or its lease expired); resuming from the last checkpoint"
            ),
            retry_after_ms: 0,
        });
        match self
            .store
            .log()
            .append_expecting(run, last_seq, vec![failed])
            .await
        {
            Ok(seqs) => {
                self.metrics.runs_taken_over.inc();
                tracing::info!(%run, attempt, %holder, "took the run over: its attempt was cut off");
                Ok(Some(seqs.last().copied().unwrap_or(last_seq)))
            }
            Err(LogError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Begins an attempt, runs it, and records how it ended.
    async fn begin(
        &self,
        b: Begin<'_>,
        cancel: &CancellationToken,
        progress: &watch::Sender<Progress>,
        free_slot: &(dyn Fn() + Sync),
    ) -> Result<Then, EngineError> {
        let (run, attempt) = (b.run, b.attempt);
        let started_at_unix_ms = b.state.started_at_unix_ms.or(Some(now_unix_ms()));
        let mut events = Vec::with_capacity(2);
        let wf = self.definitions.workflow(&b.state.workflow).await;
        // A start out of `Scheduled` (the first, or after a manual retry) says whether
        // the run holds its workflow alone, which a shared store checks.
        if b.first || b.state.status.kind() == StatusKind::Scheduled {
            events.push(EventKind::RunStarted(RunStarted {
                worker: self.worker.to_owned(),
                exclusive: wf
                    .as_ref()
                    .map_or(true, |w| w.overlap != OverlapPolicy::AllowAll),
                tenant_slots: self.tenant_slots,
            }));
        }
        let lease = Lease::of(&wf);
        let lease_until_unix_ms = lease.until(now_unix_ms());
        events.push(EventKind::AttemptBegun(AttemptBegun {
            attempt,
            worker: self.worker.to_owned(),
            lease_until_unix_ms,
        }));
        // The attempt starts while its beginning is held back and then made durable
        // (neither is part of the latency from due to started); the supervisor checks
        // the outcome before the attempt counts. Anything the attempt appends is
        // queued after it, so it is refused if the beginning was.
        let begun = self
            .store
            .log()
            .hold_expecting(run, b.last_seq, events)
            .await?;
        // Other nodes may race for the run or its workflow: the beginning goes to the
        // store at once, so a lost race stops the attempt before it has done much.
        if self.store.shared() {
            self.store.log().release(run).await?;
        }
        progress.send_modify(|p| {
            p.attempt = attempt;
            p.retry_at_unix_ms = None;
        });
        let supervised = Supervised {
            store: self.store,
            definitions: self.definitions,
            connectors: self.connectors,
            metrics: self.metrics,
            run,
            attempt,
            state: b.state,
            workflow: &wf,
            cancel,
            progress,
            lease_until_unix_ms,
            clustered: self.clustered,
        };
        let end = match supervised.run(begun).await {
            Ok(done) => {
                if done == Done::StreamsDone {
                    let completed = self
                        .store
                        .log()
                        .enqueue(run, vec![EventKind::RunCompleted(RunCompleted {})])
                        .await?;
                    // The work is over and its end stamped: the next run may take the
                    // slot while the end is made durable (this run stays held, so its
                    // workflow's next run still waits for it).
                    free_slot();
                    completed.await?;
                }
                tracing::info!(%run, "run completed");
                return Ok(Then::Stop(Driven::Completed { started_at_unix_ms }));
            }
            Err(end) => end,
        };
        match end {
            AttemptEnd::Cancelled => Ok(Then::Stop(self.cancelled(run).await?)),
            // Something was appended since the state this attempt began from (a
            // cancel, another node beginning it): nothing of the attempt was written.
            AttemptEnd::Store(StoreError::Log(LogError::Conflict { .. })) => Ok(Then::Again {
                known: Some(Box::new(self.state(run).await?)),
                origin: Origin::Refused,
            }),
            // Another run of the workflow holds it, or the tenant's slots are taken (on
            // other nodes): this one waits.
            AttemptEnd::Store(StoreError::Log(
                e @ (LogError::WorkflowBusy { .. } | LogError::TenantBusy { .. }),
            )) => {
                tracing::debug!(%run, error = %e, "waiting to start");
                Ok(Then::Stop(Driven::WaitUntil(
                    now_unix_ms().saturating_add(BUSY_WAIT_MS),
                )))
            }
            AttemptEnd::Store(StoreError::Log(e)) => self.refused(run, e).await,
            AttemptEnd::Store(e) => Err(e.into()),
            AttemptEnd::LeaseLost => Ok(Then::Stop(Driven::Elsewhere)),
            AttemptEnd::Failed(failure) => self.failed(run, attempt, failure, wf).await,
        }
    }

    /// How the driver stops after the log refused one of the attempt's appends: the
    /// attempt lost the run to another node (fenced), or the run ended meanwhile (a
    /// cancel from another node); anything else is the store's failure.
    async fn refused(&self, run: RunId, e: LogError) -> Result<Then, EngineError> {
        if e.is_fenced() {
            self.metrics.fenced_commits.inc();
            tracing::warn!(%run, error = %e, "this node lost the run to another; its late commit was refused");
            return Ok(Then::Stop(Driven::Elsewhere));
        }
        if matches!(e, LogError::Refused { .. })
            && self.state(run).await?.status.kind().is_terminal()
        {
            return Ok(Then::Stop(Driven::Ended));
        }
        Err(StoreError::Log(e).into())
    }

    /// Records a failed attempt, then the retry or the dead letter its policy decides.
    async fn failed(
        &self,
        run: RunId,
        attempt: u32,
        failure: Failure,
        wf: Result<Arc<WorkflowDef>, EngineError>,
    ) -> Result<Then, EngineError> {
        let failed = EventKind::AttemptFailed(AttemptFailed {
            attempt,
            kind: failure.kind,
            message: failure.message.clone(),
            retry_after_ms: failure
                .retry_after
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        let failed_seq = match self.store.log().append(run, vec![failed]).await {
            Ok(seqs) => seqs.last().copied().unwrap_or_default(),
            // A timeout can stop the attempt while its last commit, which completes
            // the run, is already on its way: then the run ended and nothing failed.
            // Or another node took the run over meanwhile.
            Err(e) => return self.refused(run, e).await,
        };
        tracing::warn!(%run, attempt, kind = ?failure.kind, error = %failure.message, "attempt failed");
        self.metrics
            .attempt_failed(failure.kind, failure.retry_after);
        let policy = wf.map(|w| w.retry.clone()).unwrap_or_default();
        let failures = failures(&self.store.log().read(run).await?);
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
        // Only if nothing came between: once the failure is recorded the run has no
        // lease, and another node may take it over.
        match self
            .store
            .log()
            .append_expecting(run, failed_seq, vec![next])
            .await
        {
            Ok(_) => {}
            Err(LogError::Conflict { .. }) => return Ok(Then::Stop(Driven::Elsewhere)),
            Err(e) => return Err(e.into()),
        }
        Ok(Then::Again {
            known: None,
            origin: Origin::Queued,
        })
    }

    async fn cancelled(&self, run: RunId) -> Result<Driven, EngineError> {
        let cancelled = EventKind::RunCancelled(RunCancelled {
            reason: "cancelled on request".into(),
        });
        self.store.log().append(run, vec![cancelled]).await?;
        Ok(Driven::Ended)
    }
}

/// An attempt to begin, from `state` as the log held it at `last_seq`.
struct Begin<'a> {
    run: RunId,
    state: &'a RunState,
    last_seq: u64,
    attempt: u32,
    first: bool,
}
