//! Exit codes, derived from the error chain so every command maps errors the same way.

use sluice_host::HostError;

/// Other failures.
pub const FAILURE: u8 = 1;
/// The connector reported an error of its own.
pub const CONNECTOR_ERROR: u8 = 3;
/// The connector broke the sandbox or the contract.
pub const SANDBOX_VIOLATION: u8 = 4;

/// A run ended other than completed (dead-lettered or cancelled).
pub const RUN_FAILED: u8 = 5;

/// The server found the request invalid (as a bad command line).
pub const INVALID: u8 = 2;
/// What the request names does not exist.
pub const NOT_FOUND: u8 = 6;
/// The token is missing, unknown or read-only.
pub const NOT_ALLOWED: u8 = 7;
/// The server (or the store) cannot be reached or is unavailable.
pub const UNAVAILABLE: u8 = 8;

/// Some runs did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{0} run(s) did not complete")]
pub struct RunsFailed(pub usize);

/// The exit code for `error`.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<RunsFailed>().is_some() {
        return RUN_FAILED;
    }
    if let Some(status) = error
        .chain()
        .find_map(|e| e.downcast_ref::<tonic::Status>())
    {
        return match status.code() {
            tonic::Code::InvalidArgument => INVALID,
            tonic::Code::NotFound => NOT_FOUND,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => NOT_ALLOWED,
            tonic::Code::Unavailable => UNAVAILABLE,
            _ => FAILURE,
        };
    }
    if error
        .chain()
        .any(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
    {
        return UNAVAILABLE;
    }
    if error.chain().any(|e| {
        matches!(
            e.downcast_ref::<sluice_store::StoreError>(),
            Some(sluice_store::StoreError::Unreachable { .. })
        )
    }) {
        return UNAVAILABLE;
    }
    match error.chain().find_map(|e| e.downcast_ref::<HostError>()) {
        Some(HostError::Connector { .. }) => CONNECTOR_ERROR,
        Some(HostError::Internal(_)) | None => FAILURE,
        Some(_) => SANDBOX_VIOLATION,
    }
}
