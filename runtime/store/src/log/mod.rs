//! The event-sourced run log.
//!
//! Every step of a run is a [`RunEvent`] appended to the run's log; a run's state is
//! the [`fold`] of its events. [`EventLog`] stores logs in sled, indexes runs by
//! workflow, connection, tenant, status and creation time, and acknowledges an
//! append only once it is durable (group commit: see `commit`).
//!
//! Submodules: `events` (wire format), `fold` (pure state machine), `keys` (tree
//! layouts), `commit` (the single writer), `index` (postings), `active` (which runs
//! are in flight), `store` (the public handle and reads).
//! No sled type appears in this module's public API.

mod active;
mod commit;
mod events;
mod fold;
mod index;
mod keys;
mod store;

pub use events::{BadRunId, EVENT_FORMAT, EventKind, RunEvent, RunId, v1};
pub use fold::{
    Failure, FoldError, Lease, RunState, RunStatus, StatusKind, StreamProgress, apply, fold,
    transition,
};
pub use keys::{RunFilter, RunSummary};
pub(crate) use store::now_unix_ms;
pub use store::{Appending, EventLog, LogConfig, LogError};

pub(crate) use commit::TxHook;
