//! Engine and store errors as gRPC status codes, with a message a user can act on.
//!
//! Owns the mapping only. It must never put a secret in a message: engine errors
//! carry names and field paths, not values.

use sluice_engine::EngineError;
use sluice_store::{LogError, StoreError};
use tonic::Status;

/// The status for an engine error.
pub(crate) fn of(e: EngineError) -> Status {
    let message = e.to_string();
    match e {
        EngineError::Definition(_)
        | EngineError::Connector { .. }
        | EngineError::InvalidConnector { .. } => Status::invalid_argument(message),
        EngineError::UnknownWorkflow(_)
        | EngineError::UnknownConnection(_)
        | EngineError::UnknownRun(_)
        | EngineError::UnknownConnector(_)
        | EngineError::UnknownNode(_) => Status::not_found(message),
        EngineError::AlreadyRunning { .. }
        | EngineError::WrongStatus { .. }
        | EngineError::FirstPartyConnector(_)
        | EngineError::ConnectorInUse { .. }
        | EngineError::Cluster(_) => Status::failed_precondition(message),
        EngineError::CorruptDefinition { .. } => Status::data_loss(message),
        EngineError::Store(StoreError::Log(LogError::Conflict { .. })) => Status::aborted(message),
        EngineError::Store(StoreError::Log(LogError::Closed)) => Status::unavailable(message),
        EngineError::Store(_) => Status::internal(message),
    }
}

/// INVALID_ARGUMENT naming the request field that is wrong.
pub(crate) fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// INVALID_ARGUMENT when a required field is empty.
pub(crate) fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    Ok(())
}
