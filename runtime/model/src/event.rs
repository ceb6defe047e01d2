//! [`RunEvent`]: one step of a run, as the engine writes it and the fold reads it.
//!
//! These are domain types: the store's codec maps each to its versioned protobuf
//! message (`proto/sluice/log/v1/events.proto`), field for field, so a new event kind
//! or field is added in both places, and nowhere else.

use crate::{FailureKind, RunId, Trigger};

/// One event in a run's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEvent {
    /// The run it belongs to.
    pub run: RunId,
    /// Position in the run's log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When it was recorded, in Unix milliseconds.
    pub at_unix_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

impl RunEvent {
    /// The event of `run` at position `seq`, recorded at `at_unix_ms`.
    pub fn new(run: RunId, seq: u64, at_unix_ms: i64, kind: EventKind) -> Self {
        RunEvent {
            run,
            seq,
            at_unix_ms,
            kind,
        }
    }
}

/// What happened in one step of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The run was created and waits for a worker.
    RunScheduled(RunScheduled),
    /// A worker took the run.
    RunStarted(RunStarted),
    /// An attempt began under a lease.
    AttemptBegun(AttemptBegun),
    /// A batch was committed to the hub together with its checkpoint.
    CheckpointCommitted(CheckpointCommitted),
    /// A stream was read to its end.
    StreamCompleted(StreamCompleted),
    /// An attempt failed.
    AttemptFailed(AttemptFailed),
    /// Another attempt will be made.
    RetryScheduled(RetryScheduled),
    /// The run was cancelled.
    RunCancelled(RunCancelled),
    /// Every stream completed.
    RunCompleted(RunCompleted),
    /// The run stopped for good, keeping its cause until a manual retry.
    RunDeadLettered(RunDeadLettered),
    /// A manual retry of a dead-lettered run was asked for.
    ManualRetryRequested(ManualRetryRequested),
    /// The worker running the run is alive.
    Heartbeat(Heartbeat),
}

impl EventKind {
    /// The event's name, as the log's protobuf message names it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunScheduled(_) => "RunScheduled",
            EventKind::RunStarted(_) => "RunStarted",
            EventKind::AttemptBegun(_) => "AttemptBegun",
            EventKind::CheckpointCommitted(_) => "CheckpointCommitted",
            EventKind::StreamCompleted(_) => "StreamCompleted",
            EventKind::AttemptFailed(_) => "AttemptFailed",
            EventKind::RetryScheduled(_) => "RetryScheduled",
            EventKind::RunCancelled(_) => "RunCancelled",
            EventKind::RunCompleted(_) => "RunCompleted",
            EventKind::RunDeadLettered(_) => "RunDeadLettered",
            EventKind::ManualRetryRequested(_) => "ManualRetryRequested",
            EventKind::Heartbeat(_) => "Heartbeat",
        }
    }
}

/// The run was created and waits for a worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunScheduled {
    /// The workflow it runs.
    pub workflow: String,
    /// The workflow's connection.
    pub connection: String,
    /// The connection's tenant.
    pub tenant: String,
    /// Higher runs first.
    pub priority: i32,
    /// Names of the streams the run syncs, in order.
    pub streams: Vec<String>,
    /// Why it started.
    pub trigger: Trigger,
    /// For a scheduled run, the schedule's fire it runs for (Unix ms); 0 otherwise.
    pub fire_at_unix_ms: i64,
}

/// A worker took the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStarted {
    /// Which node or worker took it; informational.
    pub worker: String,
    /// The run holds its workflow alone (every overlap policy but `allow_all`): on a
    /// store several nodes share, it starts only while no other run of the workflow
    /// is running or waiting for a retry.
    pub exclusive: bool,
    /// On a store several nodes share, the run starts only while fewer runs of its
    /// tenant than this are running (the starting node's per-tenant slots); 0: no
    /// limit.
    pub tenant_slots: u32,
}

/// An attempt (1, 2, ...) began; its worker holds a lease on the run until
/// `lease_until_unix_ms` (0: none recorded), which heartbeats extend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptBegun {
    /// The attempt.
    pub attempt: u32,
    /// The worker running it.
    pub worker: String,
    /// When its lease expires (Unix ms).
    pub lease_until_unix_ms: i64,
}

/// A batch of a stream was committed to the hub together with its checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointCommitted {
    /// The stream.
    pub stream: String,
    /// The connector's opaque checkpoint after this batch.
    pub checkpoint: String,
    /// Records in the batch.
    pub records: u64,
    /// Bytes of NDJSON in the batch.
    pub bytes: u64,
    /// Records the hub created.
    pub created: u64,
    /// Records the hub updated.
    pub updated: u64,
    /// Records the hub already held unchanged.
    pub unchanged: u64,
    /// The attempt that read it.
    pub attempt: u32,
    /// Records marked deleted (full-refresh deletion detection).
    pub deleted: u64,
}

/// A stream was read to its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCompleted {
    /// The stream.
    pub stream: String,
    /// Whether it was a full refresh that read every record (deletion detection).
    pub full_refresh: bool,
    /// The attempt that read it to its end (0: not recorded).
    pub attempt: u32,
}

/// An attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailed {
    /// The attempt.
    pub attempt: u32,
    /// Why.
    pub kind: FailureKind,
    /// What went wrong, for a person.
    pub message: String,
    /// How long the source asked to wait (rate limits); 0 when it did not say.
    pub retry_after_ms: u64,
}

/// Another attempt will be made, not before the given time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryScheduled {
    /// The attempt that will run next.
    pub attempt: u32,
    /// Its earliest start (Unix ms).
    pub not_before_unix_ms: i64,
}

/// The run was cancelled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCancelled {
    /// Why.
    pub reason: String,
}

/// Every stream completed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCompleted {}

/// The run stopped for good; it keeps the cause until a manual retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDeadLettered {
    /// Why.
    pub kind: FailureKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// A retry of a dead-lettered run from its last checkpoint was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManualRetryRequested {
    /// Who asked.
    pub requested_by: String,
    /// Earliest time for the retry; 0 means as soon as a worker is free.
    pub not_before_unix_ms: i64,
}

/// The worker running the run is alive; its lease runs until `lease_until_unix_ms`
/// (0: not stated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The attempt it runs.
    pub attempt: u32,
    /// When its lease expires (Unix ms).
    pub lease_until_unix_ms: i64,
}
