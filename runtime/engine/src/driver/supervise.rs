//! One attempt under supervision: the attempt itself (module `attempt`) raced against
//! its timeouts, with heartbeats renewing the node's lease on the run, and the
//! attempt's beginning held back from the log for a moment.
//!
//! Owns the lease's rhythm, the stuck and run timeouts and the release of a held
//! beginning. It never decides what follows an attempt (the runner does, from what
//! this returns) and appends nothing but heartbeats; a beginning that failed fails
//! the attempt, so no work counts that the log refused.

use std::sync::Arc;
use std::time::Duration;

use sluice_model::{EventKind, FailureKind, Heartbeat, RunId, RunState};
use sluice_store::Store;
use sluice_store::log::Appending;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::attempt::{Attempt, AttemptEnd, Done, Failure};
use crate::clock::now_unix_ms;
use crate::connectors::Connectors;
use crate::definition::{Timeouts, WorkflowDef};
use crate::definitions::DefinitionService;
use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::progress::Progress;

/// How long an attempt's beginning is held back from the log before it is queued on
/// its own: an attempt that ends sooner (a sync with nothing new) commits its
/// beginning and its end as one group. Meanwhile the log shows the run as scheduled,
/// and a crash forgets that the attempt began (it had committed nothing).
const BEGIN_HELD: Duration = Duration::from_millis(50);

/// How long a worker's lease on a running attempt lasts, and how often it renews it
/// with a heartbeat: three missed heartbeats let another node take the run over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    beat: Duration,
}

impl Lease {
    /// The lease of an attempt of `workflow` (the default timeouts if it cannot be
    /// read: the attempt then fails, but its beginning still needs a lease).
    pub(crate) fn of(workflow: &Result<Arc<WorkflowDef>, EngineError>) -> Lease {
        let heartbeat_secs = workflow
            .as_ref()
            .map(|w| w.timeouts.heartbeat_secs)
            .unwrap_or_else(|_| Timeouts::default().heartbeat_secs);
        let stuck_after = Duration::from_secs(heartbeat_secs);
        Lease {
            beat: (stuck_after / 3).clamp(Duration::from_millis(250), Duration::from_secs(10)),
        }
    }

    /// The lease's end when renewed at `now_ms`.
    pub(crate) fn until(self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.beat.as_millis() * 3).unwrap_or(i64::MAX))
    }
}

/// Everything one supervised attempt needs.
pub(crate) struct Supervised<'a> {
    pub store: &'a Store,
    pub definitions: &'a DefinitionService,
    pub connectors: &'a Connectors,
    pub metrics: &'a EngineMetrics,
    pub run: RunId,
    pub attempt: u32,
    pub state: &'a RunState,
    pub workflow: &'a Result<Arc<WorkflowDef>, EngineError>,
    pub cancel: &'a CancellationToken,
    pub progress: &'a watch::Sender<Progress>,
    /// When the lease the attempt began with ends (Unix ms).
    pub lease_until_unix_ms: i64,
    /// The node is one of a cluster: an attempt whose lease ran out stops.
    pub clustered: bool,
}

impl Supervised<'_> {
    /// Runs the attempt under its timeouts, appending a `Heartbeat` (the node's lease
    /// on the run, for other nodes to see) while it goes. An attempt that commits
    /// nothing for `heartbeat_secs` is stopped as stuck (transient: retried); a run
    /// past `run_secs` is stopped for good (permanent: dead-lettered). If `begun`
    /// (the attempt's own beginning) fails, so does the attempt, with its error.
    ///
    /// Heartbeats are queued, not waited for, so a store out of reach never stalls
    /// the attempt's own checks. On a node of a cluster, an attempt whose lease ran
    /// out before a heartbeat renewed it stops: another node may have taken
    /// the run over, and whatever this one still committed would be refused.
    pub(crate) async fn run(&self, begun: Appending) -> Result<Done, AttemptEnd> {
        let (run, attempt) = (self.run, self.attempt);
        let log = self.store.log();
        let timeouts = self
            .workflow
            .as_ref()
            .map(|w| w.timeouts.clone())
            .unwrap_or_default();
        let stuck_after = Duration::from_secs(timeouts.heartbeat_secs);
        let lease = Lease::of(self.workflow);
        let beat = lease.beat;
        let deadline_ms = timeouts.run_secs.map(|secs| {
            self.state
                .started_at_unix_ms
                .unwrap_or_else(now_unix_ms)
                .saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
        });
        // Checks run often enough for short timeouts; heartbeats are appended less
        // often (see `Lease`), so that a long run's log does not fill with them.
        let mut ticker = tokio::time::interval(beat.min(Duration::from_millis(500)));
        ticker.tick().await;
        let mut last_beat = tokio::time::Instant::now();
        let mut live = self.progress.subscribe();
        let mut last_progress = tokio::time::Instant::now();
        let work = self.attempt();
        tokio::pin!(work);
        let mut begun = Some(begun);
        // On a node of a cluster another node may begin the same attempt at the same
        // moment: only the one whose beginning landed may do the attempt's work, so
        // the attempt number is one holder's fencing token.
        if self.clustered
            && let Some(b) = begun.take()
        {
            log.release(run)
                .await
                .map_err(|e| AttemptEnd::Store(e.into()))?;
            b.await.map_err(|e| AttemptEnd::Store(e.into()))?;
        }
        let held = tokio::time::sleep(BEGIN_HELD);
        tokio::pin!(held);
        let mut holding = true;
        let mut lease_until = self.lease_until_unix_ms;
        // The heartbeat on its way, and the lease's end once it lands.
        let mut beating: Option<(Appending, i64)> = None;
        loop {
            tokio::select! {
                () = &mut held, if holding => {
                    holding = false;
                    if let Err(e) = log.release(run).await {
                        return Err(AttemptEnd::Store(e.into()));
                    }
                }
                result = &mut work => {
                    if let Some(begun) = begun.take() {
                        // Still held if the attempt appended nothing.
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
                    if self.clustered && now_unix_ms() >= lease_until {
                        self.metrics.leases_lost.inc();
                        tracing::warn!(%run, attempt, "lease ran out before a heartbeat renewed it; leaving the run to whichever node takes it over");
                        return Err(AttemptEnd::LeaseLost);
                    }
                    if beating.is_none() && last_beat.elapsed() >= beat {
                        last_beat = tokio::time::Instant::now();
                        let until = lease.until(now_unix_ms());
                        let heartbeat = EventKind::Heartbeat(Heartbeat {
                            attempt,
                            lease_until_unix_ms: until,
                        });
                        let queued = log
                            .enqueue(run, vec![heartbeat])
                            .await
                            .map_err(|e| AttemptEnd::Store(e.into()))?;
                        beating = Some((queued, until));
                    }
                }
                landed = async { (&mut beating.as_mut()?.0).await.err() }, if beating.is_some() => {
                    let until = beating.take().map_or(lease_until, |(_, until)| until);
                    match landed {
                        None => lease_until = lease_until.max(until),
                        Some(e) if e.is_fenced() => return Err(AttemptEnd::Store(e.into())),
                        // Queued behind the attempt's own last commit, which ended
                        // the run: the attempt's result says how it ended.
                        Some(sluice_store::LogError::Refused { .. }) => {
                            tracing::debug!(%run, "heartbeat refused: the run moved on");
                        }
                        Some(e) => return Err(AttemptEnd::Store(e.into())),
                    }
                }
            }
        }
    }

    /// The attempt itself; its activity goes to the run's logs whatever its outcome.
    async fn attempt(&self) -> Result<Done, AttemptEnd> {
        let config = |m: String| AttemptEnd::Failed(Failure::new(FailureKind::Config, m));
        let workflow = self.workflow.as_ref().map_err(|e| config(e.to_string()))?;
        let connection = self
            .definitions
            .connection(&self.state.connection)
            .await
            .map_err(|e| config(e.to_string()))?;
        let connection = self
            .definitions
            .resolve(&connection)
            .map_err(|e| config(format!("connection `{}`: {e}", connection.name)))?;
        let connector = self
            .connectors
            .load(&connection.connector)
            .map_err(|e| config(format!("connector `{}`: {e}", connection.connector)))?;
        let activities = crate::run_log::Activities::default();
        let result = Attempt {
            store: self.store,
            metrics: self.metrics,
            activities: &activities,
            connector,
            connectors: self.connectors,
            run: self.run,
            attempt: self.attempt,
            state: self.state,
            connection: &connection,
            workflow,
            cancel: self.cancel,
            progress: self.progress,
        }
        .run()
        .await;
        let entries = activities.entries(self.attempt);
        if let Err(e) = self.store.run_logs().append(self.run, &entries).await {
            tracing::warn!(run = %self.run, error = %e, "cannot keep the attempt's logs");
        }
        result
    }
}
