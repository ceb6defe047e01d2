//! Sluice's domain vocabulary, shared by the host, the store, the engine, the API and
//! the CLI: what a run is ([`RunId`], [`RunEvent`], [`RunState`]), why it started
//! ([`Trigger`]) and why it failed ([`FailureKind`]).
//!
//! Owns the meaning of these types and nothing else. It must never do I/O, read the
//! clock, or know how anything is stored: the store's codec turns these types into
//! its versioned protobuf messages and back, so that a change of the storage format
//! never reaches the code above it.

mod event;
mod failure;
pub mod fold;
mod run_id;
mod trigger;

pub use event::{
    AttemptBegun, AttemptFailed, CheckpointCommitted, EventKind, Heartbeat, ManualRetryRequested,
    RetryScheduled, RunCancelled, RunCompleted, RunDeadLettered, RunEvent, RunScheduled,
    RunStarted, StreamCompleted,
};
pub use failure::FailureKind;
pub use fold::{
    Failure, FoldError, Lease, RunState, RunStatus, StatusKind, StreamProgress, apply, attempt_of,
    fence, fold, transition,
};
pub use run_id::{BadRunId, RunId};
pub use trigger::Trigger;
