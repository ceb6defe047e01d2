//! Overlap policies: what a fire does while a run of the same workflow is in flight.
//!
//! Owns the per-workflow decision only (as Temporal's schedules offer): it never
//! starts or cancels anything itself. The caller applies the returned action and
//! reports finishes. Every policy but `AllowAll` keeps at most one run in flight.

use serde::{Deserialize, Serialize};

/// What a fire does while a run of the workflow is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Drop the fire.
    #[default]
    Skip,
    /// Keep one fire to start when the run finishes; drop further ones.
    BufferOne,
    /// Keep every fire; start them one after another.
    BufferAll,
    /// Cancel the run in flight; start the fire once it has stopped.
    CancelOther,
    /// Start the fire at once, beside the run in flight.
    AllowAll,
}

/// What the caller does for a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFire {
    /// Start a run now.
    Start,
    /// Nothing now: the fire waits for the run in flight to finish.
    Buffered,
    /// Nothing: the fire is dropped.
    Dropped,
    /// Cancel the run(s) in flight; the fire waits for them to stop.
    CancelRunning,
}

/// What the caller does when a run finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFinish {
    /// Start a buffered fire now.
    StartBuffered,
    /// Nothing.
    Idle,
}

/// A workflow's runs in flight and fires waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapState {
    /// Runs in flight.
    pub running: u32,
    /// Fires waiting to start.
    pub buffered: u32,
}

impl OverlapPolicy {
    /// Decides a fire and updates `state` as if the caller applied the decision.
    pub fn on_fire(self, state: &mut OverlapState) -> OnFire {
        if self == OverlapPolicy::AllowAll || (state.running == 0 && state.buffered == 0) {
            state.running += 1;
            return OnFire::Start;
        }
        match self {
            OverlapPolicy::Skip => OnFire::Dropped,
            OverlapPolicy::BufferOne if state.buffered >= 1 => OnFire::Dropped,
            OverlapPolicy::BufferOne | OverlapPolicy::BufferAll => {
                state.buffered += 1;
                OnFire::Buffered
            }
            OverlapPolicy::CancelOther => {
                // The newest fire wins: one waits, older waiting fires are dropped.
                state.buffered = 1;
                if state.running > 0 {
                    OnFire::CancelRunning
                } else {
                    OnFire::Buffered
                }
            }
            OverlapPolicy::AllowAll => OnFire::Start,
        }
    }

    /// Records that a run finished; says whether a buffered fire starts now.
    pub fn on_finish(self, state: &mut OverlapState) -> OnFinish {
        state.running = state.running.saturating_sub(1);
        if state.running == 0 && state.buffered > 0 {
            state.buffered -= 1;
            state.running += 1;
            OnFinish::StartBuffered
        } else {
            OnFinish::Idle
        }
    }
}
