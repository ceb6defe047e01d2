//! Engine and store types as API messages, and request fields as engine types.
//!
//! Owns the shapes only. It must never copy a connection's secrets into a message:
//! a connection leaves the node with its secrets' names, not their values.

use sluice_engine::{ConnectionDef, WorkflowDef};
use sluice_store::log::{RunEvent, RunSummary, StatusKind};
use sluice_store::{RunId, RunState, RunStatus};
use tonic::Status;

use crate::pb;
use crate::status::invalid;

/// The run id in a request field.
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn run_id(field: &str, text: &str) -> Result<RunId, Status> {
    text.trim().parse().map_err(|e| invalid(field, e))
}

/// A status name in a request field (`""`: any).
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn status(field: &str, text: &str) -> Result<Option<StatusKind>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    StatusKind::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .map(Some)
        .ok_or_else(|| {
            let names: Vec<&str> = StatusKind::ALL.iter().map(|s| s.as_str()).collect();
            invalid(
                field,
                format!("unknown status `{text}`; one of {}", names.join(", ")),
            )
        })
}

pub(crate) fn connection(def: &ConnectionDef) -> pb::Connection {
    let secret_names = def
        .secrets
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut public = def.clone();
    public.secrets = serde_json::Value::Object(serde_json::Map::new());
    pb::Connection {
        name: def.name.clone(),
        tenant: def.tenant.clone(),
        connector: def.connector.clone(),
        definition_json: serde_json::to_string(&public).unwrap_or_default(),
        secret_names,
    }
}

pub(crate) fn workflow(def: &WorkflowDef) -> pb::Workflow {
    pb::Workflow {
        name: def.name.clone(),
        connection: def.connection.clone(),
        priority: def.priority,
        paused: def.paused,
        definition_json: serde_json::to_string(def).unwrap_or_default(),
    }
}

pub(crate) fn summary(s: &RunSummary) -> pb::RunSummary {
    pb::RunSummary {
        run_id: s.run_id.to_string(),
        workflow: s.workflow.clone(),
        connection: s.connection.clone(),
        tenant: s.tenant.clone(),
        priority: s.priority,
        status: s.status.as_str().to_owned(),
        created_at_unix_ms: s.created_at_unix_ms,
        updated_at_unix_ms: s.updated_at_unix_ms,
    }
}

pub(crate) fn kind_name(kind: sluice_store::FailureKind) -> String {
    kind.as_str().to_owned()
}

/// The run's state (and its events, when given) as the API shows it.
pub(crate) fn run(state: &RunState, updated_at: i64, events: &[RunEvent]) -> pb::Run {
    let mut run = pb::Run {
        summary: Some(pb::RunSummary {
            run_id: state.run_id.to_string(),
            workflow: state.workflow.clone(),
            connection: state.connection.clone(),
            tenant: state.tenant.clone(),
            priority: state.priority,
            status: state.status.kind().as_str().to_owned(),
            created_at_unix_ms: state.scheduled_at_unix_ms,
            updated_at_unix_ms: updated_at,
        }),
        attempts: state.attempts,
        started_at_unix_ms: state.started_at_unix_ms.unwrap_or_default(),
        finished_at_unix_ms: state.finished_at_unix_ms.unwrap_or_default(),
        lease_worker: state
            .lease
            .as_ref()
            .map(|l| l.worker.clone())
            .unwrap_or_default(),
        events: events
            .iter()
            .map(sluice_store::codec::event_to_wire)
            .collect(),
        ..pb::Run::default()
    };
    if let Some(f) = &state.last_error {
        run.last_error_kind = kind_name(f.kind);
        run.last_error = f.message.clone();
    }
    match &state.status {
        RunStatus::DeadLettered { cause } => {
            run.dead_letter_kind = kind_name(cause.kind);
            run.dead_letter_message = cause.message.clone();
        }
        RunStatus::RetryWaiting {
            not_before_unix_ms, ..
        } => run.retry_at_unix_ms = *not_before_unix_ms,
        _ => {}
    }
    run.streams = state
        .streams
        .iter()
        .map(|name| {
            let p = state.progress.get(name).cloned().unwrap_or_default();
            pb::StreamProgress {
                stream: name.clone(),
                records: p.records,
                batches: p.batches,
                bytes: p.bytes,
                created: p.created,
                updated: p.updated,
                unchanged: p.unchanged,
                deleted: p.deleted,
                complete: p.complete,
                checkpoint: p.checkpoint.unwrap_or_default(),
            }
        })
        .collect();
    run
}

pub(crate) fn log_entry(e: sluice_store::run_logs::LogEntry) -> pb::RunLogEntry {
    pb::RunLogEntry {
        run_id: String::new(),
        at_unix_ms: e.at_unix_ms,
        attempt: e.attempt,
        stream: e.stream.unwrap_or_default(),
        level: e.level,
        context: e.context,
        message: e.message,
        request: e.request.map(|r| pb::HttpRequest {
            method: r.method,
            host: r.host,
            path: r.path,
            status: u32::from(r.status.unwrap_or(0)),
            latency_ms: r.latency_ms,
            waited_ms: r.waited_ms,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            error: r.error.unwrap_or_default(),
        }),
    }
}
