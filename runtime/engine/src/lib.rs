//! Sluice's engine: runs sync workflows — streams of a connection, through the
//! connector host, into the hub — durably.
//!
//! Every batch commits with its checkpoint in one transaction; every lifecycle step is
//! an event in the run's log before it takes effect; a restart resumes in-flight runs
//! from their last checkpoint ([`Engine::recover`]). Retries follow the workflow's
//! [`RetryPolicy`] by error kind; config, auth, schema and permanent failures
//! dead-letter the run with their cause, and a manual retry resumes it.
//!
//! Modules: `definition` (what users write), `connectors` (resolving components),
//! `retry` (decisions), `attempt` (reading and committing), `engine` (lifecycle),
//! `progress` (live view), `cpu` (the scheduler's own CPU time). The engine sees storage only through `sluice-store`'s
//! interface.

mod attempt;
mod connectors;
mod cpu;
mod definition;
mod definitions;
mod dispatch;
mod engine;
mod error;
mod inspect;
mod limiter_metrics;
mod metrics;
mod progress;
mod registry;
mod retry;
mod run_log;
mod schedules;

pub use attempt::Failure;
pub use connectors::Connectors;
pub use definition::{
    ConnectionDef, DEFAULT_BATCH_SIZE, Definitions, ScheduleDef, StreamDef, Timeouts,
    WorkflowDef,
};
pub use engine::{Engine, Recovery, Trigger};
pub use error::{DefinitionError, EngineError};
pub use progress::Progress;
pub use registry::ConnectorInfo;
pub use retry::{Decision, Failures, RetryPolicy};
pub use schedules::{FIRE_AHEAD, Tick};
pub use sluice_scheduler::{Aging, Limits};
pub use sluice_scheduler::{CatchUp, OverlapPolicy, TriggerDef};
