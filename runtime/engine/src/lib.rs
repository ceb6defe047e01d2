//! Sluice's engine: runs sync workflows — streams of a connection, through the
//! connector host, into the hub — durably.
//!
//! Every batch commits with its checkpoint in one transaction; every lifecycle step is
//! an event in the run's log before it takes effect; a restart resumes in-flight runs
//! from their last checkpoint ([`Engine::recover`]). Retries follow the workflow's
//! [`RetryPolicy`] by error kind; config, auth, schema and permanent failures
//! dead-letter the run with their cause, and a manual retry resumes it.
//!
//! Modules: `engine` (the front door: lifecycle requests and the dispatcher),
//! `driver` (a run's next step, pure, and the runner that performs it), `attempt`
//! (reading and committing), `definition` (what users write), `definitions` (the
//! catalog's definitions, checked and cached), `schedules` (firing due schedules),
//! `dispatch` (the runs this node holds), `retry` (decisions), `clock` (time and run
//! ids), `connectors` (resolving components), `registry` (connectors registered
//! through the API), `inspect` (check and discover), `progress` (live view), `run_log`
//! (an attempt's activity), `metrics` and `cpu` (what operators watch). Modules depend
//! one way: none `use`s a module that `use`s it. The engine sees storage only through
//! `sluice-store`'s interface.

mod attempt;
mod clock;
mod cluster;
mod connectors;
mod cpu;
mod definition;
mod definitions;
mod dispatch;
mod driver;
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
mod sealing;
pub mod secrets;
mod shared_budget;
mod store_health;
mod sweep;

pub use attempt::Failure;
pub use cluster::{ClusterSettings, NodeInfo, NodeRecord, NodeState};
pub use connectors::Connectors;
pub use definition::{
    ConnectionDef, DEFAULT_BATCH_SIZE, Definitions, ScheduleDef, StreamDef, Timeouts, WorkflowDef,
};
pub use engine::{Engine, Recovery};
pub use error::{DefinitionError, EngineError};
pub use progress::Progress;
pub use registry::ConnectorInfo;
pub use retry::{Decision, Failures, RetryPolicy};
pub use schedules::{FIRE_AHEAD, Tick};
pub use sealing::{StoredSecrets, reseal_secrets, stored_secrets};
pub use shared_budget::{StoreBudgets, share_limiter_budgets, share_rate_budgets};
/// Why a run starts.
pub use sluice_model::Trigger;
pub use sluice_scheduler::{Aging, Limits};
pub use sluice_scheduler::{CatchUp, OverlapPolicy, TriggerDef};
pub use store_health::StoreFault;
