//! Sluice's scheduler: when runs are due, whether they may start, and in which order.
//!
//! Pure decisions over an explicit clock, so every rule is tested with a controllable
//! time and the same code decides after a restart:
//! - `trigger` — cron (with a time zone) and interval triggers, jitter, and what to
//!   do about fires missed while the node was down (catch-up policy);
//! - `overlap` — what a fire does while a run of the same workflow is in flight
//!   (skip, buffer one, buffer all, cancel the other, allow all);
//! - `queue` — the ready queue: priority, then due time, with aging so waiting work
//!   rises, under a global slot limit and limits per tenant and per connector, with
//!   fair share between tenants.
//!
//! This crate never runs anything, never sleeps and never reads the system clock
//! itself: callers pass `now`.

pub mod overlap;
pub mod queue;
pub mod trigger;

pub use overlap::{OnFinish, OnFire, OverlapPolicy, OverlapState};
pub use queue::{Aging, Candidate, Limits, ReadyQueue};
pub use trigger::{CatchUp, Fires, Schedule, TriggerDef, TriggerError};
