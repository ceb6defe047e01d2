//! The fold of a run's events into its state.
//!
//! Owns the meaning of events: which sequences are valid and what state they
//! produce. It is pure — no I/O, no clock, no randomness — so that folding the same
//! events always gives the same state, on any node, at any time. It must never read
//! the time or touch storage; times come only from the events themselves.
//!
//! Rules:
//! - seqs are 1, 2, 3, … without gaps ([`FoldError::Gap`]); all events belong to the
//!   run of the first one ([`FoldError::WrongRun`]);
//! - the first event is `RunScheduled` and no later one is ([`FoldError::Unexpected`]);
//! - an event whose kind this code does not know (a newer writer's variant) stops the
//!   fold ([`FoldError::UnknownEvent`]): a run is never folded by guessing;
//! - Completed, Cancelled and DeadLettered are terminal: any later event is refused
//!   ([`FoldError::AfterTerminal`]), except `ManualRetryRequested` after
//!   DeadLettered, which moves the run back to RetryWaiting (or Scheduled when it
//!   asks for no delay), resuming from the last checkpoints;
//! - `ManualRetryRequested` anywhere else is [`FoldError::Unexpected`].
//!
//! Ordering of the other events (attempts, checkpoints, heartbeats) is not policed:
//! the engine writes them, and refusing an odd but harmless order would make a
//! committed log unreadable. What is policed is who may append them: [`fence`], which
//! the stores apply to every append (never to a stored log), refuses an event of an
//! attempt that is no longer the run's current one.

use std::collections::BTreeMap;

use crate::{EventKind, FailureKind, RunEvent, RunId, Trigger};

/// The lifecycle status of a run, without its details: what the indexes store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusKind {
    /// Waiting for a worker.
    Scheduled,
    /// A worker runs it.
    Running,
    /// Waiting for the next attempt.
    RetryWaiting,
    /// Done: every stream completed.
    Completed,
    /// Stopped for good, with a cause; only a manual retry revives it.
    DeadLettered,
    /// Cancelled.
    Cancelled,
}

impl StatusKind {
    /// Every status, in order.
    pub const ALL: [StatusKind; 6] = [
        StatusKind::Scheduled,
        StatusKind::Running,
        StatusKind::RetryWaiting,
        StatusKind::Completed,
        StatusKind::DeadLettered,
        StatusKind::Cancelled,
    ];

    /// Whether no further event (but a manual retry of a dead letter) may follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StatusKind::Completed | StatusKind::DeadLettered | StatusKind::Cancelled
        )
    }

    /// A stable lowercase name (used as index key).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Scheduled => "scheduled",
            StatusKind::Running => "running",
            StatusKind::RetryWaiting => "retry_waiting",
            StatusKind::Completed => "completed",
            StatusKind::DeadLettered => "dead_lettered",
            StatusKind::Cancelled => "cancelled",
        }
    }
}

/// A failure's kind and message (from `AttemptFailed` or `RunDeadLettered`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error kind.
    pub kind: FailureKind,
    /// The message.
    pub message: String,
}

/// A run's status with its details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for a worker.
    Scheduled,
    /// A worker runs attempt `attempt` (0 before the first `AttemptBegun`).
    Running {
        /// Current attempt.
        attempt: u32,
    },
    /// Attempt `attempt` will start not before `not_before_unix_ms`.
    RetryWaiting {
        /// The next attempt.
        attempt: u32,
        /// Earliest start, Unix ms.
        not_before_unix_ms: i64,
    },
    /// Every stream completed.
    Completed,
    /// Stopped for good.
    DeadLettered {
        /// Why.
        cause: Failure,
    },
    /// Cancelled.
    Cancelled,
}

impl RunStatus {
    /// The status without details.
    pub fn kind(&self) -> StatusKind {
        match self {
            RunStatus::Scheduled => StatusKind::Scheduled,
            RunStatus::Running { .. } => StatusKind::Running,
            RunStatus::RetryWaiting { .. } => StatusKind::RetryWaiting,
            RunStatus::Completed => StatusKind::Completed,
            RunStatus::DeadLettered { .. } => StatusKind::DeadLettered,
            RunStatus::Cancelled => StatusKind::Cancelled,
        }
    }
}

/// Progress of one stream, summed over the run's committed checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamProgress {
    /// The last committed checkpoint (resume from here).
    pub checkpoint: Option<String>,
    /// Committed batches.
    pub batches: u64,
    /// Records committed.
    pub records: u64,
    /// Bytes committed.
    pub bytes: u64,
    /// Records created in the hub.
    pub created: u64,
    /// Records updated in the hub.
    pub updated: u64,
    /// Records unchanged in the hub.
    pub unchanged: u64,
    /// Records marked deleted.
    pub deleted: u64,
    /// Whether the stream was read to its end.
    pub complete: bool,
}

/// A run's state: the fold of its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// The run.
    pub run_id: RunId,
    /// Workflow name.
    pub workflow: String,
    /// Connection name.
    pub connection: String,
    /// Tenant id.
    pub tenant: String,
    /// Priority (higher first).
    pub priority: i32,
    /// Why it was scheduled.
    pub trigger: Trigger,
    /// Stream names in the order scheduled.
    pub streams: Vec<String>,
    /// Status.
    pub status: RunStatus,
    /// Highest attempt begun.
    pub attempts: u32,
    /// The last attempt failure, if any.
    pub last_error: Option<Failure>,
    /// Per-stream progress, by stream name.
    pub progress: BTreeMap<String, StreamProgress>,
    /// When scheduled (Unix ms).
    pub scheduled_at_unix_ms: i64,
    /// When first started.
    pub started_at_unix_ms: Option<i64>,
    /// When it reached its current terminal status.
    pub finished_at_unix_ms: Option<i64>,
    /// The last heartbeat.
    pub last_heartbeat_unix_ms: Option<i64>,
    /// The worker that started the run (`RunStarted`).
    pub worker: String,
    /// The lease of the worker running the current attempt, while one runs.
    pub lease: Option<Lease>,
    /// Seq of the last applied event (0 before any).
    pub last_seq: u64,
}

/// A worker's claim on a running attempt: no other node may take the run over
/// before `until_unix_ms`. Heartbeats extend it; the attempt's end releases it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The worker (node) holding it.
    pub worker: String,
    /// The attempt it covers.
    pub attempt: u32,
    /// When it expires (Unix ms); 0 when the log states none (written before leases
    /// existed): such a lease counts as expired.
    pub until_unix_ms: i64,
}

impl Lease {
    /// Whether another node may take the run over at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: i64) -> bool {
        now_unix_ms >= self.until_unix_ms
    }
}

impl RunState {
    /// The state before any event: apply `RunScheduled` at seq 1 to it.
    pub fn empty() -> Self {
        RunState {
            run_id: RunId::default(),
            workflow: String::new(),
            connection: String::new(),
            tenant: String::new(),
            priority: 0,
            trigger: Trigger::Manual,
            streams: Vec::new(),
            status: RunStatus::Scheduled,
            attempts: 0,
            last_error: None,
            progress: BTreeMap::new(),
            scheduled_at_unix_ms: 0,
            started_at_unix_ms: None,
            finished_at_unix_ms: None,
            last_heartbeat_unix_ms: None,
            worker: String::new(),
            lease: None,
            last_seq: 0,
        }
    }

    /// Records committed across all streams.
    pub fn total_records(&self) -> u64 {
        self.progress.values().map(|p| p.records).sum()
    }
}

/// Why a sequence of events does not fold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// No events at all.
    #[error("no events")]
    Empty,
    /// A seq is missing or repeated.
    #[error("expected event seq {expected}, found {found}")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The event's kind is unknown to this version (written by a newer one).
    #[error("event seq {seq} has a kind this version does not know")]
    UnknownEvent {
        /// Its seq.
        seq: u64,
    },
    /// An event follows a terminal status.
    #[error("event seq {seq} follows a terminal status")]
    AfterTerminal {
        /// Its seq.
        seq: u64,
    },
    /// An event belongs to another run.
    #[error("event seq {seq} belongs to another run")]
    WrongRun {
        /// Its seq.
        seq: u64,
    },
    /// An event is out of place (e.g. the first event is not `RunScheduled`).
    #[error("event seq {seq}: {reason}")]
    Unexpected {
        /// Its seq.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An event of an attempt that is no longer the run's current one: its worker
    /// lost the lease (another node took the run over, or the run moved on).
    #[error(
        "attempt {attempt} no longer holds the run (its current attempt is {current}, {status}): \
         its worker lost the lease"
    )]
    Fenced {
        /// The attempt the event belongs to.
        attempt: u32,
        /// The run's current attempt.
        current: u32,
        /// The run's status.
        status: &'static str,
    },
}

/// The attempt an event belongs to, for the events an attempt's worker appends while
/// it runs (0: not recorded, as in events written before it was).
pub fn attempt_of(kind: &EventKind) -> u32 {
    match kind {
        EventKind::CheckpointCommitted(c) => c.attempt,
        EventKind::StreamCompleted(s) => s.attempt,
        EventKind::AttemptFailed(f) => f.attempt,
        EventKind::Heartbeat(h) => h.attempt,
        _ => 0,
    }
}

/// Whether the worker of an event's attempt still holds the run, given the run's
/// status and its current attempt (the last one begun): the fencing check every
/// append passes. An attempt is a fencing token — a node takes a run over only by
/// beginning a higher one — so a worker that was frozen, cut off or just slow past
/// its lease can never append to the run again, whatever it was doing. Events of no
/// attempt (a cancel, a retry decision) and records written before attempts were
/// recorded pass.
pub fn fence(status: StatusKind, current: u32, kind: &EventKind) -> Result<(), FoldError> {
    let attempt = attempt_of(kind);
    if attempt == 0 || current == 0 || (status == StatusKind::Running && attempt == current) {
        return Ok(());
    }
    Err(FoldError::Fenced {
        attempt,
        current,
        status: status.as_str(),
    })
}

/// The status an event leads to from `from` (after `last_seq` events), or why it
/// may not follow. Shared by [`apply`] and the log, which checks appends with it.
pub fn transition(
    from: StatusKind,
    last_seq: u64,
    seq: u64,
    kind: &EventKind,
) -> Result<StatusKind, FoldError> {
    if seq != last_seq + 1 {
        return Err(FoldError::Gap {
            expected: last_seq + 1,
            found: seq,
        });
    }
    let first = last_seq == 0;
    match (first, kind) {
        (true, EventKind::RunScheduled(_)) => return Ok(StatusKind::Scheduled),
        (true, _) => {
            return Err(FoldError::Unexpected {
                seq,
                reason: "the first event must be RunScheduled",
            });
        }
        (false, EventKind::RunScheduled(_)) => {
            return Err(FoldError::Unexpected {
                seq,
                reason: "RunScheduled may only be the first event",
            });
        }
        _ => {}
    }
    if from.is_terminal() {
        return match (from, kind) {
            (StatusKind::DeadLettered, EventKind::ManualRetryRequested(m)) => {
                Ok(if m.not_before_unix_ms > 0 {
                    StatusKind::RetryWaiting
                } else {
                    StatusKind::Scheduled
                })
            }
            _ => Err(FoldError::AfterTerminal { seq }),
        };
    }
    Ok(match kind {
        EventKind::RunScheduled(_) => StatusKind::Scheduled,
        EventKind::RunStarted(_) | EventKind::AttemptBegun(_) => StatusKind::Running,
        EventKind::RetryScheduled(_) => StatusKind::RetryWaiting,
        EventKind::RunCancelled(_) => StatusKind::Cancelled,
        EventKind::RunCompleted(_) => StatusKind::Completed,
        EventKind::RunDeadLettered(_) => StatusKind::DeadLettered,
        EventKind::ManualRetryRequested(_) => {
            return Err(FoldError::Unexpected {
                seq,
                reason: "a manual retry applies only to a dead-lettered run",
            });
        }
        EventKind::CheckpointCommitted(_)
        | EventKind::StreamCompleted(_)
        | EventKind::AttemptFailed(_)
        | EventKind::Heartbeat(_) => from,
    })
}

/// Applies one event to `state`. On error `state` is left unchanged.
pub fn apply(state: &mut RunState, event: &RunEvent) -> Result<(), FoldError> {
    let seq = event.seq;
    let kind = &event.kind;
    let next = transition(state.status.kind(), state.last_seq, seq, kind)?;
    let run = event.run;
    if state.last_seq > 0 && run != state.run_id {
        return Err(FoldError::WrongRun { seq });
    }
    let at = event.at_unix_ms;
    match kind {
        EventKind::RunScheduled(s) => {
            state.run_id = run;
            state.workflow.clone_from(&s.workflow);
            state.connection.clone_from(&s.connection);
            state.tenant.clone_from(&s.tenant);
            state.priority = s.priority;
            state.trigger = s.trigger;
            state.streams.clone_from(&s.streams);
            for name in &s.streams {
                state.progress.entry(name.clone()).or_default();
            }
            state.scheduled_at_unix_ms = at;
            state.status = RunStatus::Scheduled;
        }
        EventKind::RunStarted(s) => {
            state.worker.clone_from(&s.worker);
            state.started_at_unix_ms.get_or_insert(at);
            state.status = RunStatus::Running {
                attempt: state.attempts,
            };
        }
        EventKind::AttemptBegun(a) => {
            state.started_at_unix_ms.get_or_insert(at);
            state.attempts = state.attempts.max(a.attempt);
            state.status = RunStatus::Running { attempt: a.attempt };
            state.lease = Some(Lease {
                worker: if a.worker.is_empty() {
                    state.worker.clone()
                } else {
                    a.worker.clone()
                },
                attempt: a.attempt,
                until_unix_ms: a.lease_until_unix_ms,
            });
        }
        EventKind::CheckpointCommitted(c) => {
            let p = state.progress.entry(c.stream.clone()).or_default();
            p.checkpoint = Some(c.checkpoint.clone());
            p.batches += 1;
            p.records += c.records;
            p.bytes += c.bytes;
            p.created += c.created;
            p.updated += c.updated;
            p.unchanged += c.unchanged;
            p.deleted += c.deleted;
        }
        EventKind::StreamCompleted(s) => {
            state.progress.entry(s.stream.clone()).or_default().complete = true;
        }
        EventKind::AttemptFailed(f) => {
            state.lease = None;
            state.last_error = Some(Failure {
                kind: f.kind,
                message: f.message.clone(),
            });
        }
        EventKind::RetryScheduled(r) => {
            state.status = RunStatus::RetryWaiting {
                attempt: r.attempt,
                not_before_unix_ms: r.not_before_unix_ms,
            };
        }
        EventKind::RunCancelled(_) => {
            state.status = RunStatus::Cancelled;
            state.finished_at_unix_ms = Some(at);
        }
        EventKind::RunCompleted(_) => {
            state.status = RunStatus::Completed;
            state.finished_at_unix_ms = Some(at);
        }
        EventKind::RunDeadLettered(d) => {
            state.status = RunStatus::DeadLettered {
                cause: Failure {
                    kind: d.kind,
                    message: d.message.clone(),
                },
            };
            state.finished_at_unix_ms = Some(at);
        }
        EventKind::ManualRetryRequested(m) => {
            state.finished_at_unix_ms = None;
            state.status = if next == StatusKind::RetryWaiting {
                RunStatus::RetryWaiting {
                    attempt: state.attempts + 1,
                    not_before_unix_ms: m.not_before_unix_ms,
                }
            } else {
                RunStatus::Scheduled
            };
        }
        EventKind::Heartbeat(h) => {
            state.last_heartbeat_unix_ms = Some(at);
            if let Some(lease) = state.lease.as_mut()
                && lease.attempt == h.attempt
            {
                lease.until_unix_ms = lease.until_unix_ms.max(h.lease_until_unix_ms);
            }
        }
    }
    if next != StatusKind::Running {
        state.lease = None;
    }
    debug_assert_eq!(state.status.kind(), next);
    state.last_seq = seq;
    Ok(())
}

/// Folds a run's events, in order, into its state.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> Result<RunState, FoldError> {
    let mut state = RunState::empty();
    for event in events {
        apply(&mut state, event)?;
    }
    if state.last_seq == 0 {
        return Err(FoldError::Empty);
    }
    Ok(state)
}
