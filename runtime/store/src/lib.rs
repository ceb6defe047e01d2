//! Sluice's durable storage: the event-sourced log of runs and the hub of records.
//!
//! The engine sees storage only through the types this crate exports; no sled type
//! crosses its boundary, so a PostgreSQL backend can implement the same interface
//! for clusters.

pub mod hub;
pub mod log;

pub use log::{EventLog, LogConfig, LogError, RunEvent, RunId, RunState, RunStatus};
