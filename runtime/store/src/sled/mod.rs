//! The embedded backend: every part of the storage contract in one sled database.
//!
//! Owns everything that names sled: the database's trees and key layouts
//! (`layout`), opening it (`open`), the high-water mark that tells a rolled-back
//! store (`durable`), atomic groups of writes across trees (`staged`),
//! and the parts: `log` (the run log, with its single committer thread), `hub`,
//! `catalog`, `run_logs`, `store` ([`SledStore`], the [`crate::Backend`]) and `import`
//! (the hub's bulk reads and writes, for copying a store). It
//! must never let a sled type out of this module.

mod catalog;
pub mod durable;
pub mod hub;
mod import;
pub mod layout;
mod log;
mod open;
pub mod repair;
mod run_logs;
mod space;
pub(crate) mod staged;
mod store;
pub mod verify;

pub use hub::{BatchMeta, SledHub};
pub use log::{EventLog, LogConfig};
pub use store::SledStore;
