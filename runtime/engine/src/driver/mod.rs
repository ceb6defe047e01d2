//! The driver: takes one run this node holds from its folded state to its end, a
//! wait for a retry, or another node.
//!
//! Split so the decisions can be read and tested on their own: `step` (the next step,
//! a pure function of the run's state), `run` (performing steps: events, appends,
//! metrics) and `supervise` (an attempt under its timeouts and lease). The log
//! decides and memory follows: every step is derived again from the fold after the
//! driver's own appends, so recovery is the same code path as normal running. The
//! driver never touches the ready queue or the slots (the engine's dispatcher
//! settles what a driver returns) and never reads definitions but through the
//! definitions service.

mod run;
mod step;
mod supervise;

pub(crate) use run::{Driven, Driver};
