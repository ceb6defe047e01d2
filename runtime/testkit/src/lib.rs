//! What Sluice's tests and benchmarks share, defined once:
//!
//! - [`events`]: run ids and run events as tests write them (no feature needed).
//! - [`stats`]: benchmark statistics (percentiles, rates, a spread of latencies) and
//!   settings from the environment. Needs nothing else of Sluice, so the crates below
//!   the engine take the kit with `default-features = false` for it alone.
//! - [`node`] (feature `node`, on by default): hosts, connectors and engines over a
//!   store, built in one place; defining connections and workflows from JSON.
//! - [`servers`]: local HTTP servers that stand in for third-party APIs.
//! - [`pg`] (feature `postgres`): a PostgreSQL schema of its own per test.
//! - [`process`]: the output and signals of a `sluice` process under test.

pub mod events;
pub mod stats;

#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "node")]
pub mod process;
#[cfg(feature = "node")]
pub mod servers;

#[cfg(feature = "node")]
pub use node::{NodeBuilder, NodeDir, TempNode};
#[cfg(feature = "node")]
pub use servers::serve;
