//! The run log on sled: [`EventLog`] implements [`crate::log::RunLog`].
//!
//! Every step of a run is an event appended to the run's log; a run's state is the
//! fold of its events. [`EventLog`] stores logs in sled, indexes runs by workflow,
//! connection, tenant, status and creation time, and acknowledges an append only
//! once it is durable (group commit: see `commit`).
//!
//! Submodules: `keys` (key layouts), `check` (every run's events there, at open),
//! `commit` (the single writer), `index`
//! (postings), `active` (which runs are in flight), `store` (the handle and reads).
//! No sled type appears in this module's public API.

mod active;
mod check;
mod commit;
mod index;
mod keys;
mod store;

pub(crate) use commit::TxHook;
pub use store::{EventLog, LogConfig};
pub(crate) use store::{decoded, head_of, read_events};
