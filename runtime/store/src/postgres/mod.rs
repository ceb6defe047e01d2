//! The PostgreSQL backend ([`PgStore`]): the whole store in one PostgreSQL schema, so
//! that several nodes can share it and operators can back it up, replicate it and
//! watch it with the tools they already have.
//!
//! - `connect`: the URL, the pool, TLS; a password never leaves it.
//! - `migrations`: versioned schema, applied at start under an advisory lock.
//! - `committer`: group commit of run events and hub batches, one transaction per
//!   group; waits out a database that went away.
//! - `log`, `hub`, `catalog`, `run_logs`: each part of the contract on its tables.
//! - `import`: the hub's bulk reads and writes (`HubBulk`), for copying a store.
//! - `budgets`: the rate-limit budgets the nodes share (`SharedBudgets`).
//! - `pool`: reads, patient with a database that is briefly away.
//! - `stuck`: ends the sessions of a node frozen mid-statement that block others.
//!
//! Nothing in it keeps a run's or a record's state in memory beyond one transaction:
//! the database is the truth, so nodes never disagree with it.

mod budgets;
mod catalog;
mod claims;
mod committer;
mod connect;
mod copy_in;
mod errors;
mod hub;
mod import;
mod log;
mod migrations;
mod pool;
mod run_logs;
mod store;
mod stuck;

pub use budgets::PgBudgets;
pub use catalog::PgCatalog;
pub use connect::{PgOptions, is_postgres_url, redact_url};
pub use hub::PgHub;
pub use log::PgRunLog;
pub use migrations::{Migrated, SCHEMA_VERSION};
pub use run_logs::PgRunLogs;
pub use store::PgStore;
