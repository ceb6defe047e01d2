//! The run log's contract: what the engine and the API need of a durable, event-sourced
//! log of runs, whatever backend holds it.
//!
//! Owns the [`RunLog`] trait and the types its callers see ([`RunSummary`],
//! [`RunFilter`], [`Appending`], [`LogError`]); run events and their fold are
//! `sluice_model`'s, re-exported here. It holds no storage of its own and never names
//! a backend: the sled backend (`crate::sled`) and any other implement it, and one
//! conformance suite (`tests/contract`) holds each of them to it.
//!
//! Promises every backend keeps:
//! - an append is acknowledged only once durable; all events of one call commit
//!   together or not at all, in the order queued, and a later append by the same
//!   caller is refused if an earlier one was;
//! - an event that may not follow the run's log ([`transition`]), or whose attempt is
//!   no longer the run's current one ([`fence`]), is refused with
//!   [`LogError::Refused`]; a conditional append whose expected seq is stale fails
//!   with [`LogError::Conflict`]; neither writes anything;
//! - on a store several nodes share, a second run for one schedule fire is refused
//!   ([`LogError::FireTaken`]), and so is a run's start while another run of its
//!   workflow holds it ([`LogError::WorkflowBusy`]), when its `RunStarted` is exclusive,
//!   and while its tenant has as many runs running as the start allows
//!   ([`LogError::TenantBusy`]);
//! - reads see every acknowledged append, and a stored event this version cannot read
//!   is reported with its run and seq, never skipped.

use async_trait::async_trait;
use tokio::sync::oneshot;

pub use sluice_model::fold;
pub use sluice_model::{
    AttemptBegun, AttemptFailed, BadRunId, CheckpointCommitted, EventKind, Failure, FailureKind,
    FoldError, Heartbeat, Lease, ManualRetryRequested, RetryScheduled, RunCancelled, RunCompleted,
    RunDeadLettered, RunEvent, RunId, RunScheduled, RunStarted, RunState, RunStatus, StatusKind,
    StreamCompleted, StreamProgress, Trigger, apply, fence, transition,
};

/// The current time in Unix milliseconds: the stamp of appends that give none.
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The durable log of runs. Implemented by every storage backend.
#[async_trait]
pub trait RunLog: Send + Sync {
    /// Whether the log can write now, as far as it can tell without writing: a store
    /// that reached its disk's reserve or stopped writing says so here (a networked
    /// store that is out of reach finds out by writing).
    fn write_state(&self) -> WriteState {
        WriteState::Writable
    }

    /// Appends events stamped `at_unix_ms`; returns their seqs once durable.
    ///
    /// All events of one call commit together or not at all. The first event of a
    /// run must be `RunScheduled`; an event that may not follow the log (see
    /// [`transition`]) is refused with [`LogError::Refused`] and nothing of the call
    /// is written.
    async fn append_at(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
    ) -> Result<Vec<u64>, LogError> {
        self.enqueue_at(run, at_unix_ms, kinds).await?.await
    }

    /// Appends events to `run`'s log, stamped with the current time; returns their
    /// seqs once they are durable.
    async fn append(&self, run: RunId, kinds: Vec<EventKind>) -> Result<Vec<u64>, LogError> {
        self.append_at(run, now_unix_ms(), kinds).await
    }

    /// Appends events only if `run`'s last event is still `expected_seq`, else fails
    /// with [`LogError::Conflict`] and writes nothing: how one of several nodes takes
    /// a run over (e.g. after its holder's lease expired) without racing another.
    async fn append_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Vec<u64>, LogError> {
        self.enqueue_expecting(run, expected_seq, kinds)
            .await?
            .await
    }

    /// Queues events stamped `at_unix_ms` for `run`'s log and returns as soon as they
    /// are queued: the returned [`Appending`] resolves to their seqs once they are
    /// durable (or to why they were refused, as [`RunLog::append_at`] would).
    ///
    /// Appends are committed in the order they are queued, so a later append by the
    /// same task never lands before this one, and is refused if this one was (its
    /// events then do not follow the log). That lets a caller start the work an event
    /// announces while the event is being made durable, as long as it checks the
    /// outcome before it reports the work done.
    async fn enqueue_at(
        &self,
        run: RunId,
        at_unix_ms: i64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError>;

    /// Queues events stamped with the current time (see [`RunLog::enqueue_at`]).
    async fn enqueue(&self, run: RunId, kinds: Vec<EventKind>) -> Result<Appending, LogError> {
        self.enqueue_at(run, now_unix_ms(), kinds).await
    }

    /// Queues events that are written only if `run`'s last seq is still
    /// `expected_seq` when they are committed, else refused with
    /// [`LogError::Conflict`]. A caller holding a state it read earlier acts on it
    /// without reading the log again: the commit checks it.
    async fn enqueue_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError>;

    /// Holds events (stamped now, written only if `run`'s last seq is still
    /// `expected_seq`) back until [`RunLog::release`] or the next append for `run`,
    /// which queues them first. So a short piece of work that an event announces and
    /// another event ends (an attempt beginning and its run completing) commits as
    /// one group. A crash before the release loses them, and with them nothing else:
    /// whatever the work appends is queued after them.
    async fn hold_expecting(
        &self,
        run: RunId,
        expected_seq: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Appending, LogError>;

    /// Queues the events held back for `run`, if any.
    async fn release(&self, run: RunId) -> Result<(), LogError>;

    /// Every event of `run`, in order (empty for an unknown run).
    async fn read(&self, run: RunId) -> Result<Vec<RunEvent>, LogError>;

    /// The fold of `run`'s events.
    async fn state(&self, run: RunId) -> Result<RunState, LogError> {
        let events = self.read(run).await?;
        if events.is_empty() {
            return Err(LogError::UnknownRun(run));
        }
        fold(&events).map_err(|error| match error {
            // Every backend writes a run's seqs without gaps: a gap is damage.
            FoldError::Gap { expected, found } => LogError::Corrupt {
                run,
                seq: expected,
                reason: format!(
                    "the store's files are damaged: the event is missing (the next one \
                     stored is {found})"
                ),
            },
            error => LogError::Fold { run, error },
        })
    }

    /// The summary of `run`, if it exists.
    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, LogError>;

    /// Runs matching `filter`, in the order it asks for.
    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError>;

    /// Runs not in a terminal status matching `filter` (which may name one of those
    /// statuses), by run id: oldest or newest first, as the filter says.
    async fn list_in_flight(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, LogError>;

    /// Ids of every run not in a terminal status (to resume after a restart).
    async fn in_flight(&self) -> Result<Vec<RunId>, LogError>;
}

/// Errors of the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogError {
    /// The storage engine failed (I/O, a broken database).
    #[error("storage: {0}")]
    Storage(String),
    /// A stored event of `run` at `seq` cannot be read.
    #[error("corrupt event {seq} of run {run}: {reason}")]
    Corrupt {
        /// The run.
        run: RunId,
        /// The event's seq.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A run's summary record cannot be read.
    #[error("corrupt summary of run {run}: {reason}")]
    CorruptSummary {
        /// The run.
        run: RunId,
        /// What is wrong with it.
        reason: String,
    },
    /// The run's stored events do not fold (e.g. an unknown event kind).
    #[error("run {run} cannot be folded: {error}")]
    Fold {
        /// The run.
        run: RunId,
        /// Why.
        error: FoldError,
    },
    /// An append was refused: the event may not follow the run's log.
    #[error("append to run {run} refused: {error}")]
    Refused {
        /// The run.
        run: RunId,
        /// Why.
        error: FoldError,
    },
    /// An append was rejected by writes sharing its group (a hook's).
    #[error("append rejected: {0}")]
    Rejected(String),
    /// A conditional append found the run moved on: another writer appended first.
    #[error("run {run} moved on: expected its last event to be {expected}, found {actual}")]
    Conflict {
        /// The run.
        run: RunId,
        /// The seq the appender had read.
        expected: u64,
        /// The seq the log holds.
        actual: u64,
    },
    /// The request is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// No such run.
    #[error("unknown run {0}")]
    UnknownRun(RunId),
    /// The log is closed (its committer stopped).
    #[error("the log is closed")]
    Closed,
    /// The disk holding the store has less free space than the store keeps in
    /// reserve: nothing of the append was written, and the same append succeeds once
    /// space is freed (the store itself is intact).
    #[error(
        "no space left for the store: {available} bytes free on the device holding {path}, \
         below the {reserve} bytes it keeps in reserve; free some space and it writes again"
    )]
    NoSpace {
        /// The store's directory.
        path: String,
        /// Bytes free for the store.
        available: u64,
        /// Bytes the store keeps free.
        reserve: u64,
    },
    /// The storage engine failed while writing and stopped: nothing more is written
    /// until the store is opened again (by restarting the node), which completes or
    /// discards what was in progress.
    #[error("the store stopped writing: {reason}; it writes again once it is opened again")]
    Stopped {
        /// What failed.
        reason: String,
        /// Whether it failed for want of space (it can be opened again once there is).
        no_space: bool,
    },
    /// Another run was already created for this schedule fire (by another node).
    #[error("workflow `{workflow}` already has a run for its fire at {fire_at_unix_ms} ms")]
    FireTaken {
        /// The workflow.
        workflow: String,
        /// The fire (Unix ms).
        fire_at_unix_ms: i64,
    },
    /// A run may not start while another run of its workflow is running or waiting
    /// for a retry (runs of one workflow never overlap).
    #[error("run {run} of workflow `{workflow}` waits: run {holder} of it is in flight")]
    WorkflowBusy {
        /// The run that may not start.
        run: RunId,
        /// Its workflow.
        workflow: String,
        /// The run in flight.
        holder: RunId,
    },
    /// A run may not start while its tenant has as many runs running as its start
    /// allows (the tenant's slots across the nodes sharing the store).
    #[error("run {run} of tenant `{tenant}` waits: the tenant has {limit} run(s) running")]
    TenantBusy {
        /// The run that may not start.
        run: RunId,
        /// Its tenant.
        tenant: String,
        /// The tenant's slots.
        limit: u32,
    },
}

impl LogError {
    /// Whether the append was refused because its attempt no longer holds the run
    /// (see [`fence`]): its worker lost the lease to another.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            LogError::Refused {
                error: FoldError::Fenced { .. },
                ..
            }
        )
    }
}

impl LogError {
    /// Whether the store cannot write for want of disk space: the append may succeed
    /// once space is freed (at once for [`LogError::NoSpace`], after the store is
    /// opened again for [`LogError::Stopped`]).
    pub fn is_out_of_space(&self) -> bool {
        matches!(
            self,
            LogError::NoSpace { .. } | LogError::Stopped { no_space: true, .. }
        )
    }

    /// Whether the store stopped writing until it is opened again.
    pub fn is_stopped(&self) -> bool {
        matches!(self, LogError::Stopped { .. })
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        LogError::Storage(e.to_string())
    }
}

/// Whether a log can write (see [`RunLog::write_state`]).
#[derive(Clone, Debug)]
pub enum WriteState {
    /// Appends are written.
    Writable,
    /// Appends are refused for want of disk space ([`LogError::NoSpace`]) and are
    /// written again once space is freed.
    NoSpace(LogError),
    /// The store stopped writing ([`LogError::Stopped`]) until it is opened again;
    /// `reopen` tells whether opening it again would now succeed as far as is known
    /// (space is free again).
    Stopped {
        /// Why it stopped.
        error: LogError,
        /// Whether to open it again now.
        reopen: bool,
    },
}

/// A queued append (see [`RunLog::enqueue`]): resolves to its seqs once durable.
#[must_use = "an append's outcome must be checked before the work it announces is reported"]
pub struct Appending(oneshot::Receiver<Result<Vec<u64>, LogError>>);

impl Appending {
    /// An append whose outcome `reply` will carry; a dropped sender reads as
    /// [`LogError::Closed`].
    pub(crate) fn new(reply: oneshot::Receiver<Result<Vec<u64>, LogError>>) -> Self {
        Appending(reply)
    }
}

impl std::future::Future for Appending {
    type Output = Result<Vec<u64>, LogError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| LogError::Closed).and_then(|r| r))
    }
}

/// A run as listed: its summary record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Workflow name.
    pub workflow: String,
    /// Connection name.
    pub connection: String,
    /// Tenant id.
    pub tenant: String,
    /// Priority.
    pub priority: i32,
    /// Current status.
    pub status: StatusKind,
    /// When scheduled (Unix ms).
    pub created_at_unix_ms: i64,
    /// When its last event was recorded.
    pub updated_at_unix_ms: i64,
    /// Seq of its last event.
    pub last_seq: u64,
    /// Its current attempt: the last one begun (0: none yet).
    pub attempt: u32,
    /// The worker of its current attempt (empty: none yet).
    pub worker: String,
    /// While it runs, when its worker's lease ends (Unix ms); 0 otherwise.
    pub lease_until_unix_ms: i64,
}

/// The `RunScheduled` of a run's first event, or an empty one (the event will be
/// refused: a run's first event must be `RunScheduled`).
pub(crate) fn scheduled_of(kind: &EventKind) -> &RunScheduled {
    static NONE: std::sync::OnceLock<RunScheduled> = std::sync::OnceLock::new();
    match kind {
        EventKind::RunScheduled(s) => s,
        _ => NONE.get_or_init(RunScheduled::default),
    }
}

impl RunSummary {
    /// The summary of a run whose first event, `scheduled`, lands at `seq` (1).
    pub(crate) fn scheduled(run: RunId, s: &RunScheduled, seq: u64, at_unix_ms: i64) -> Self {
        RunSummary {
            run_id: run,
            workflow: s.workflow.clone(),
            connection: s.connection.clone(),
            tenant: s.tenant.clone(),
            priority: s.priority,
            status: StatusKind::Scheduled,
            created_at_unix_ms: at_unix_ms,
            updated_at_unix_ms: at_unix_ms,
            last_seq: seq,
            attempt: 0,
            worker: String::new(),
            lease_until_unix_ms: 0,
        }
    }

    /// Checks that `kind` may follow the run's log as this summary leaves it
    /// ([`transition`], then [`fence`]); returns the status it leads to.
    pub(crate) fn check(&self, run: RunId, kind: &EventKind) -> Result<StatusKind, LogError> {
        let refused = |error| LogError::Refused { run, error };
        let status =
            transition(self.status, self.last_seq, self.last_seq + 1, kind).map_err(refused)?;
        fence(self.status, self.attempt, kind).map_err(refused)?;
        Ok(status)
    }

    /// Moves the summary past `kind`, which [`RunSummary::check`] let through, landing
    /// at `at_unix_ms` with `status`.
    pub(crate) fn follow(&mut self, kind: &EventKind, status: StatusKind, at_unix_ms: i64) {
        match kind {
            EventKind::RunStarted(s) => self.worker.clone_from(&s.worker),
            EventKind::AttemptBegun(a) => {
                self.attempt = a.attempt;
                if !a.worker.is_empty() {
                    self.worker.clone_from(&a.worker);
                }
                self.lease_until_unix_ms = a.lease_until_unix_ms;
            }
            EventKind::Heartbeat(h) if h.attempt == self.attempt => {
                self.lease_until_unix_ms = self.lease_until_unix_ms.max(h.lease_until_unix_ms);
            }
            EventKind::AttemptFailed(_) => self.lease_until_unix_ms = 0,
            _ => {}
        }
        if status != StatusKind::Running {
            self.lease_until_unix_ms = 0;
        }
        self.status = status;
        self.last_seq += 1;
        self.updated_at_unix_ms = at_unix_ms;
    }
}

/// Which runs [`RunLog::list`] returns: all given
/// conditions must hold. Results are ordered by run id (creation order for UUID v7
/// ids) when an equality condition is given, else by creation time; oldest first,
/// or newest first with `newest_first` (a limit then keeps the newest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this connection.
    pub connection: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this status.
    pub status: Option<StatusKind>,
    /// Only runs created at or after this time (Unix ms).
    pub created_from_unix_ms: Option<i64>,
    /// Only runs created before this time (Unix ms).
    pub created_before_unix_ms: Option<i64>,
    /// At most this many runs (0 means no limit).
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl RunFilter {
    /// Most runs to list (`limit`, where 0 means no limit).
    pub(crate) fn max_runs(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }

    /// Whether `s` satisfies every condition.
    pub fn matches(&self, s: &RunSummary) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == s.workflow)
            && self.connection.as_ref().is_none_or(|c| *c == s.connection)
            && self.tenant.as_ref().is_none_or(|t| *t == s.tenant)
            && self.status.is_none_or(|st| st == s.status)
            && self
                .created_from_unix_ms
                .is_none_or(|f| s.created_at_unix_ms >= f)
            && self
                .created_before_unix_ms
                .is_none_or(|b| s.created_at_unix_ms < b)
    }
}
