//! The schedules service: firing workflows whose trigger is due, by their overlap
//! policy.
//!
//! Owns each schedule's progress (its anchor and the last fire handled, a catalog
//! document of kind `schedule`), whether the whole scheduler is paused, the table of
//! compiled schedules and the decision per fire. A run started for a fire is appended
//! together with the schedule's progress past that fire, in one transaction, so across
//! a crash a fire is neither lost nor started twice. It never drives, queues or
//! cancels runs itself: it asks the node's [`Runs`] (the engine), and the dispatcher
//! starts them.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_model::{RunId, RunState};
use sluice_scheduler::{Candidate, OnFire, OverlapPolicy, OverlapState, Schedule, TriggerDef};
use sluice_store::{LogError, Store, StoreError};

use crate::clock::{new_run_id, now_unix_ms};
use crate::definition::WorkflowDef;
use crate::definitions::DefinitionService;
use crate::definitions::kind::{SCHEDULE, SCHEDULER, WORKFLOW};
use crate::dispatch::{id_of, overlap_group};
use crate::error::EngineError;

/// Workflows whose fires are handled at once in a pass.
const FIRE_CONCURRENCY: usize = 256;
/// How far ahead of its time the running scheduler handles a fire: the run is recorded
/// and queued early, and the dispatcher starts it when it is due, so the durable write
/// of the fire is not part of the latency from due to started. A policy decision
/// (overlap, pause) is made this much before the fire's time.
pub const FIRE_AHEAD: std::time::Duration = std::time::Duration::from_millis(100);

/// What a schedule pass asks of the node's runs: the schedules decide each fire, the
/// engine holds, queues and cancels the runs.
pub(crate) trait Runs: Sync {
    /// The workflow's runs this node holds: (run, whether it is driven).
    fn held(&self, workflow: &str) -> Vec<(RunId, bool)>;

    /// Queues a run just recorded, with the state its first event folds to.
    fn hold(&self, workflow: &str, candidate: Candidate, known: Option<RunState>);

    /// Whether this node handles the workflow's fires (in a cluster, each workflow
    /// has one owner among the live nodes).
    fn owns(&self, workflow: &str) -> bool;

    /// Cancels a run a newer fire replaces.
    fn cancel(
        &self,
        run: RunId,
        reason: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// The schedules of the node's workflows.
pub(crate) struct Schedules {
    store: Store,
    definitions: Arc<DefinitionService>,
    /// The schedules, compiled; one pass at a time holds it.
    table: tokio::sync::Mutex<ScheduleTable>,
}

/// The compiled schedules of the workflows not paused, with each one's progress and
/// next fire, so that a pass looks only at the schedules due. Rebuilt from the
/// catalog when a workflow changes; the catalog stays the durable truth.
#[derive(Default)]
struct ScheduleTable {
    /// The definitions' generation it was built from.
    generation: Option<u64>,
    entries: Vec<ScheduleEntry>,
}

struct ScheduleEntry {
    wf: Arc<WorkflowDef>,
    schedule: Arc<Schedule>,
    /// As last written to the catalog; `None`: read it there.
    progress: Option<Progress>,
    /// No fire is due before this (Unix ms); `None`: look at the next pass.
    next_ms: Option<i64>,
}

/// A schedule's progress, stored in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// When the schedule was first seen; intervals count from here.
    anchor_unix_ms: i64,
    /// The last fire handled (started, buffered or dropped).
    last_fire_unix_ms: i64,
}

/// What one pass over the schedules did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Runs started (queued) for fires.
    pub started: Vec<RunId>,
    /// Fires dropped by an overlap policy or missed and not caught up.
    pub dropped: usize,
    /// The next fire of any schedule.
    pub next: Option<DateTime<Utc>>,
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Whether the scheduler as a whole is paused, stored in the catalog.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SchedulerState {
    paused: bool,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Schedules {
    /// The schedules of the workflows in `definitions`, their progress in `store`'s
    /// catalog; nothing is read until the first pass.
    pub(crate) fn new(store: Store, definitions: Arc<DefinitionService>) -> Self {
        Schedules {
            store,
            definitions,
            table: tokio::sync::Mutex::default(),
        }
    }

    async fn progress(&self, workflow: &str) -> Result<Option<Progress>, EngineError> {
        let raw = self.store.catalog().get(SCHEDULE, workflow).await?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }

    /// Records progress past fires that started nothing (dropped or skipped). Not
    /// flushed on its own: the next durable append flushes it. A crash before that
    /// only makes the node look at those fires again, and none of them has a run.
    async fn put_progress(&self, workflow: &str, p: Progress) -> Result<(), EngineError> {
        self.store
            .catalog()
            .put_unflushed(SCHEDULE, workflow, &json(&p))
            .await?;
        Ok(())
    }

    /// Forgets the progress of a workflow's schedule (the workflow is gone).
    pub(crate) async fn forget(&self, workflow: &str) -> Result<(), EngineError> {
        self.store.catalog().remove(SCHEDULE, workflow).await?;
        Ok(())
    }

    /// Pauses or resumes the whole scheduler (durable).
    pub(crate) async fn pause(&self, paused: bool) -> Result<(), EngineError> {
        self.store
            .catalog()
            .put(SCHEDULER, "state", &json(&SchedulerState { paused }))
            .await?;
        Ok(())
    }

    /// Whether the scheduler is paused.
    pub(crate) async fn paused(&self) -> Result<bool, EngineError> {
        let raw = self.store.catalog().get(SCHEDULER, "state").await?;
        Ok(raw
            .and_then(|r| serde_json::from_slice::<SchedulerState>(&r).ok())
            .is_some_and(|s| s.paused))
    }

    /// The next `count` fires of a workflow's schedule after `now`.
    pub(crate) async fn upcoming(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
        count: usize,
    ) -> Result<Vec<DateTime<Utc>>, EngineError> {
        let wf = self.definitions.workflow(workflow).await?;
        let Some(def) = &wf.schedule else {
            return Ok(Vec::new());
        };
        let schedule = def.compile().map_err(|e| EngineError::CorruptDefinition {
            kind: WORKFLOW,
            name: wf.name.clone(),
            message: e.to_string(),
        })?;
        let anchor = self
            .progress(workflow)
            .await?
            .map_or(now, |p| at(p.anchor_unix_ms));
        Ok(schedule.upcoming(anchor, now, count))
    }

    /// Fires every schedule due at `now`, queueing runs through `runs`. A schedule
    /// seen for the first time starts counting from `now`. Paused workflows and a
    /// paused scheduler fire nothing (their fires are missed, and caught up by policy
    /// on resume). Passes run one at a time.
    pub(crate) async fn tick(
        &self,
        now: DateTime<Utc>,
        runs: &impl Runs,
    ) -> Result<Tick, EngineError> {
        let mut tick = Tick::default();
        let mut table = self.table.lock().await;
        if self.paused().await? {
            return Ok(tick);
        }
        self.refresh(&mut table).await?;
        let now_ms = now.timestamp_millis();
        // Workflows fire concurrently, so their appends share group commits; the fires
        // of one workflow go in order, each seeing the runs the previous one queued.
        // Another node handles the fires of the workflows it owns; one that moves here
        // starts from the catalog's progress, which that node kept.
        for e in &mut table.entries {
            if !runs.owns(&e.wf.name) {
                e.progress = None;
                e.next_ms = None;
            }
        }
        let due: Vec<_> = table
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| runs.owns(&e.wf.name))
            .filter(|(_, e)| e.next_ms.is_none_or(|n| n <= now_ms))
            .map(|(i, e)| (i, Arc::clone(&e.wf), Arc::clone(&e.schedule), e.progress))
            .collect();
        let mut passes = futures::stream::iter(due)
            .map(|(i, wf, schedule, progress)| async move {
                (
                    i,
                    self.tick_workflow(&wf, &schedule, progress, now, runs)
                        .await,
                )
            })
            .buffer_unordered(FIRE_CONCURRENCY);
        let mut failed = None;
        while let Some((i, pass)) = passes.next().await {
            let Some(entry) = table.entries.get_mut(i) else {
                continue;
            };
            match pass {
                Ok((pass, progress)) => {
                    entry.progress = Some(progress);
                    entry.next_ms = Some(pass.next.map_or(i64::MAX, |n| n.timestamp_millis()));
                    tick.started.extend(pass.started);
                    tick.dropped += pass.dropped;
                }
                // Looked at again next pass, from the catalog's progress.
                Err(e) => {
                    entry.progress = None;
                    entry.next_ms = None;
                    failed = Some(e);
                }
            }
        }
        drop(passes);
        if let Some(e) = failed {
            return Err(e);
        }
        tick.next = table
            .entries
            .iter()
            .filter_map(|e| e.next_ms)
            .filter(|&n| n < i64::MAX)
            .min()
            .map(at);
        Ok(tick)
    }

    /// Rebuilds the table from the catalog when a workflow changed since it was built.
    async fn refresh(&self, table: &mut ScheduleTable) -> Result<(), EngineError> {
        let generation = self.definitions.generation();
        if table.generation == Some(generation) {
            return Ok(());
        }
        let mut entries = Vec::new();
        for wf in self.definitions.readable_workflows().await? {
            let Some(schedule) = wf.schedule.as_ref().filter(|_| !wf.paused) else {
                continue;
            };
            let Ok(schedule) = schedule.compile() else {
                continue;
            };
            entries.push(ScheduleEntry {
                wf,
                schedule: Arc::new(schedule),
                progress: None,
                next_ms: None,
            });
        }
        *table = ScheduleTable {
            generation: Some(generation),
            entries,
        };
        Ok(())
    }

    /// Handles the fires of one workflow due by `now`, from its progress (`known`, or
    /// the catalog's); returns what it did and the progress after it.
    async fn tick_workflow(
        &self,
        wf: &WorkflowDef,
        schedule: &Schedule,
        known: Option<Progress>,
        now: DateTime<Utc>,
        runs: &impl Runs,
    ) -> Result<(Tick, Progress), EngineError> {
        let mut tick = Tick::default();
        let stored = match known {
            Some(p) => Some(p),
            None => self.progress(&wf.name).await?,
        };
        let progress = match stored {
            Some(p) => p,
            None => {
                let p = Progress {
                    anchor_unix_ms: now.timestamp_millis(),
                    last_fire_unix_ms: now.timestamp_millis(),
                };
                self.put_progress(&wf.name, p).await?;
                p
            }
        };
        let mut current = progress;
        let anchor = at(progress.anchor_unix_ms);
        let fires = schedule.due(&wf.name, anchor, at(progress.last_fire_unix_ms), now);
        tick.dropped += fires.skipped;
        for fire in &fires.due {
            let p = Progress {
                last_fire_unix_ms: fire.timestamp_millis(),
                ..progress
            };
            let due = schedule.jittered(&wf.name, *fire).timestamp_millis();
            match self.fire(wf, *fire, due, p, runs).await? {
                Some(run) => tick.started.push(run),
                None => tick.dropped += 1,
            }
            current = p;
        }
        if let Some(handled) = fires.handled
            && fires.due.last() != Some(&handled)
        {
            current = Progress {
                last_fire_unix_ms: handled.timestamp_millis(),
                ..progress
            };
            self.put_progress(&wf.name, current).await?;
        }
        tick.next = fires.next;
        Ok((tick, current))
    }

    /// One fire of `wf`: by its overlap policy, queue a run (recording the schedule's
    /// progress with it), or drop the fire (recording the progress alone).
    async fn fire(
        &self,
        wf: &WorkflowDef,
        fire: DateTime<Utc>,
        due_ms: i64,
        progress: Progress,
        runs: &impl Runs,
    ) -> Result<Option<RunId>, EngineError> {
        let held = runs.held(&wf.name);
        let mut state = OverlapState {
            running: held.iter().filter(|(_, driving)| *driving).count() as u32,
            buffered: held.iter().filter(|(_, driving)| !*driving).count() as u32,
        };
        // A run queued but not dispatched yet is the current run, not a buffered fire:
        // the decision must not depend on how soon the dispatcher took it.
        if state.running == 0 && state.buffered > 0 {
            state.running = 1;
            state.buffered -= 1;
        }
        match wf.overlap.on_fire(&mut state) {
            OnFire::Dropped => {
                self.put_progress(&wf.name, progress).await?;
                return Ok(None);
            }
            OnFire::CancelRunning | OnFire::Start | OnFire::Buffered => {}
        }
        if wf.overlap == OverlapPolicy::CancelOther {
            // The newest fire wins: the run in flight and fires still waiting stop.
            for (run, _) in &held {
                if let Err(e) = runs.cancel(*run, "a newer fire replaces it").await {
                    tracing::warn!(%run, error = %e, "cannot cancel the run a fire replaces");
                }
            }
        }
        let conn = self.definitions.connection(&wf.connection).await?;
        let trigger = match wf.schedule.as_ref().map(|s| &s.trigger) {
            Some(TriggerDef::Cron { .. }) => sluice_model::Trigger::Cron,
            Some(TriggerDef::Interval { .. }) => sluice_model::Trigger::Interval,
            _ => sluice_model::Trigger::Manual,
        };
        let run = new_run_id();
        let at = now_unix_ms();
        let event = wf.scheduled(&conn, trigger, fire.timestamp_millis());
        let appended = self
            .store
            .append_with_document(
                run,
                at,
                vec![event.clone()],
                SCHEDULE,
                &wf.name,
                json(&progress),
            )
            .await;
        match appended {
            Ok(_) => {}
            // Another node decided this fire (it owned the workflow a moment ago).
            Err(StoreError::Log(LogError::FireTaken { .. })) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let known = sluice_model::fold(&[sluice_model::RunEvent::new(run, 1, at, event)]).ok();
        runs.hold(
            &wf.name,
            Candidate {
                id: id_of(run),
                tenant: conn.tenant.clone(),
                connector: conn.connector.clone(),
                priority: wf.priority,
                due_ms,
                group: overlap_group(wf.overlap, &wf.name),
            },
            known,
        );
        Ok(Some(run))
    }
}
