//! Sluice's durable storage: the event-sourced log of runs, the hub of records and the
//! catalog of definitions, in one embedded sled database ([`Store`]).
//!
//! The engine sees storage only through the types this crate exports; no sled type
//! crosses its boundary, so a PostgreSQL backend can implement the same interface
//! for clusters.

mod catalog;
pub mod hub;
pub mod log;
mod open;
pub mod run_logs;
pub(crate) mod staged;
mod store;

pub use catalog::Catalog;
pub use log::{EventLog, Lease, LogConfig, LogError, RunEvent, RunId, RunState, RunStatus};
pub use store::{BatchCommit, Committed, Store, StoreError, StreamEnd};
