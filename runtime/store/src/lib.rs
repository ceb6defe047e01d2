//! Sluice's durable storage: the event-sourced log of runs, the hub of records, the
//! catalog of definitions and the per-run logs, behind one contract.
//!
//! The contract is the traits [`log::RunLog`], [`hub::Hub`] (and [`hub::HubBulk`], the
//! bulk reads and writes that copying a store takes), [`catalog::Catalog`],
//! [`run_logs::RunLogs`] and [`Backend`] (the writes that span them), with the types
//! they share; [`budgets::SharedBudgets`] is the rate-limit budgets the nodes of a
//! cluster share; [`Store`] is its front door. [`copy`] copies a whole store to another
//! backend through the contract alone. Backends: [`sled`] (embedded, the
//! default), [`postgres`] (shared by the nodes of a cluster), chosen by a
//! [`Location`]; [`faults::FaultyBackend`] wraps any backend to fail chosen
//! operations in tests. Stored formats are versioned protobuf messages, converted to the domain
//! types of `sluice_model` in [`codec`] only. Nothing outside this crate names a
//! backend's trees, tables or keys, and no backend type crosses the contract.

mod backend;
pub mod budgets;
pub mod catalog;
pub mod codec;
pub mod copy;
pub mod faults;
pub mod hub;
mod location;
pub mod log;
pub mod postgres;
mod records;
pub mod run_logs;
pub mod sled;
mod store;
pub mod verify;

pub use backend::{Backend, BatchCommit, Committed, StoreError, StreamEnd};
pub use budgets::SharedBudgets;
pub use catalog::Catalog;
pub use hub::{Hub, HubBulk};
pub use location::Location;
pub use log::{LogError, RunLog, WriteState};
pub use run_logs::RunLogs;
pub use sluice_model::{
    EventKind, FailureKind, Lease, RunEvent, RunId, RunState, RunStatus, StatusKind, Trigger,
};
pub use store::Store;
