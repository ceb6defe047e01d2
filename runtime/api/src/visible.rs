//! The objects a caller may see: a connection, workflow or run of a tenant outside
//! the caller's tenants is answered exactly as one that does not exist (NOT_FOUND
//! with the same message), so a token learns nothing of other tenants.
//!
//! Owns the lookups every handler makes before acting on a named object. It must
//! never return an object of a tenant the caller does not see.

use std::sync::Arc;

use sluice_engine::{ConnectionDef, Engine, EngineError, WorkflowDef};
use sluice_store::RunId;
use sluice_store::log::RunSummary;
use tonic::Status;

use crate::auth::Caller;
use crate::status;

/// The connection `name`, if the caller sees its tenant.
pub(crate) async fn connection(
    engine: &Engine,
    caller: &Caller,
    name: &str,
) -> Result<Arc<ConnectionDef>, Status> {
    let def = engine.connection(name).await.map_err(status::of)?;
    if !caller.sees(&def.tenant) {
        return Err(status::of(EngineError::UnknownConnection(name.to_owned())));
    }
    Ok(def)
}

/// The tenant of a workflow (its connection's), when the connection exists.
pub(crate) async fn tenant_of(engine: &Engine, workflow: &WorkflowDef) -> Option<String> {
    engine
        .connection(&workflow.connection)
        .await
        .ok()
        .map(|c| c.tenant.clone())
}

/// Whether the caller sees `workflow` (a workflow whose connection is gone is seen
/// only by a caller of every tenant).
pub(crate) async fn sees_workflow(
    engine: &Engine,
    caller: &Caller,
    workflow: &WorkflowDef,
) -> bool {
    if !caller.limited() {
        return true;
    }
    tenant_of(engine, workflow)
        .await
        .is_some_and(|t| caller.sees(&t))
}

/// The workflow `name`, if the caller sees its tenant.
pub(crate) async fn workflow(
    engine: &Engine,
    caller: &Caller,
    name: &str,
) -> Result<Arc<WorkflowDef>, Status> {
    let def = engine.workflow(name).await.map_err(status::of)?;
    if !sees_workflow(engine, caller, &def).await {
        return Err(status::of(EngineError::UnknownWorkflow(name.to_owned())));
    }
    Ok(def)
}

/// The summary of run `id`, if the caller sees its tenant.
pub(crate) async fn run(engine: &Engine, caller: &Caller, id: RunId) -> Result<RunSummary, Status> {
    let summary = engine
        .store()
        .log()
        .summary(id)
        .await
        .map_err(|e| status::of(e.into()))?
        .filter(|s| caller.sees(&s.tenant))
        .ok_or_else(|| status::of(EngineError::UnknownRun(id)))?;
    Ok(summary)
}

/// ALREADY_EXISTS when `name` is taken by an object of a tenant the caller does not
/// see: replacing it would change another tenant's object. (Names are node-wide, so
/// that a name is taken cannot be hidden; what it holds is.)
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn name_free(what: &str, name: &str, taken_elsewhere: bool) -> Result<(), Status> {
    if taken_elsewhere {
        return Err(Status::already_exists(format!(
            "the {what} name `{name}` is in use outside this API token's tenants; choose another"
        )));
    }
    Ok(())
}
