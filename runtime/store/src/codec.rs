//! The one place where stored protobuf messages meet domain types.
//!
//! Owns the mapping between the versioned messages of `proto/sluice/log/v1` (the
//! generated module [`v1`]) and `sluice_model`'s run events, failure kinds and
//! triggers, and the run summary record. Everything above the store works with the
//! domain types; this module must never do I/O, and no other module converts between
//! the two.
//!
//! Reading is lenient where the format allows it (an enum value a newer writer added
//! is read as the closest kind this version knows) and strict where guessing would be
//! wrong: an event kind this version does not know is refused, never skipped.

use crate::log::RunSummary;
use sluice_model::{
    AttemptBegun, AttemptFailed, CheckpointCommitted, EventKind, FailureKind, FoldError, Heartbeat,
    ManualRetryRequested, RetryScheduled, RunCancelled, RunCompleted, RunDeadLettered, RunEvent,
    RunId, RunScheduled, RunStarted, StatusKind, StreamCompleted, Trigger,
};

/// Generated protobuf messages of the `sluice.log.v1` package: the durable format of
/// the run log, and the wire format of run events in the gRPC API.
///
/// Field numbers are never renumbered, so logs written by any earlier version decode.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sluice.log.v1.rs"));
}

/// The event format version this code writes.
pub const EVENT_FORMAT: u32 = 1;

/// `event` as its stored (and wire) message.
pub fn event_to_wire(event: &RunEvent) -> v1::RunEvent {
    wire_event(event.run, event.seq, event.at_unix_ms, &event.kind)
}

/// The stored message of the event `kind` of `run` at `seq`, recorded at `at_unix_ms`.
pub(crate) fn wire_event(run: RunId, seq: u64, at_unix_ms: i64, kind: &EventKind) -> v1::RunEvent {
    v1::RunEvent {
        format: EVENT_FORMAT,
        run_id: run.0.to_vec(),
        seq,
        at_unix_ms,
        kind: Some(kind_to_wire(kind)),
    }
}

/// A stored event of `run` as a domain event.
pub fn event_from_wire(run: RunId, event: v1::RunEvent) -> Result<RunEvent, FoldError> {
    let seq = event.seq;
    if event.run_id.as_slice() != run.0.as_slice() {
        return Err(FoldError::WrongRun { seq });
    }
    let kind = event.kind.ok_or(FoldError::UnknownEvent { seq })?;
    Ok(RunEvent::new(
        run,
        seq,
        event.at_unix_ms,
        kind_from_wire(kind),
    ))
}

fn kind_to_wire(kind: &EventKind) -> v1::run_event::Kind {
    use v1::run_event::Kind as W;
    match kind {
        EventKind::RunScheduled(s) => W::RunScheduled(v1::RunScheduled {
            workflow: s.workflow.clone(),
            connection: s.connection.clone(),
            tenant: s.tenant.clone(),
            priority: s.priority,
            streams: s.streams.clone(),
            trigger: trigger_to_wire(s.trigger) as i32,
            fire_at_unix_ms: s.fire_at_unix_ms,
        }),
        EventKind::RunStarted(s) => W::RunStarted(v1::RunStarted {
            worker: s.worker.clone(),
            exclusive: s.exclusive,
            tenant_slots: s.tenant_slots,
        }),
        EventKind::AttemptBegun(a) => W::AttemptBegun(v1::AttemptBegun {
            attempt: a.attempt,
            worker: a.worker.clone(),
            lease_until_unix_ms: a.lease_until_unix_ms,
        }),
        EventKind::CheckpointCommitted(c) => W::CheckpointCommitted(v1::CheckpointCommitted {
            stream: c.stream.clone(),
            checkpoint: c.checkpoint.clone(),
            records: c.records,
            bytes: c.bytes,
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            attempt: c.attempt,
            deleted: c.deleted,
        }),
        EventKind::StreamCompleted(s) => W::StreamCompleted(v1::StreamCompleted {
            stream: s.stream.clone(),
            full_refresh: s.full_refresh,
            attempt: s.attempt,
        }),
        EventKind::AttemptFailed(f) => W::AttemptFailed(v1::AttemptFailed {
            attempt: f.attempt,
            kind: failure_to_wire(f.kind) as i32,
            message: f.message.clone(),
            retry_after_ms: f.retry_after_ms,
        }),
        EventKind::RetryScheduled(r) => W::RetryScheduled(v1::RetryScheduled {
            attempt: r.attempt,
            not_before_unix_ms: r.not_before_unix_ms,
        }),
        EventKind::RunCancelled(c) => W::RunCancelled(v1::RunCancelled {
            reason: c.reason.clone(),
        }),
        EventKind::RunCompleted(RunCompleted {}) => W::RunCompleted(v1::RunCompleted {}),
        EventKind::RunDeadLettered(d) => W::RunDeadLettered(v1::RunDeadLettered {
            kind: failure_to_wire(d.kind) as i32,
            message: d.message.clone(),
        }),
        EventKind::ManualRetryRequested(m) => W::ManualRetryRequested(v1::ManualRetryRequested {
            requested_by: m.requested_by.clone(),
            not_before_unix_ms: m.not_before_unix_ms,
        }),
        EventKind::Heartbeat(h) => W::Heartbeat(v1::Heartbeat {
            attempt: h.attempt,
            lease_until_unix_ms: h.lease_until_unix_ms,
        }),
    }
}

fn kind_from_wire(kind: v1::run_event::Kind) -> EventKind {
    use v1::run_event::Kind as W;
    match kind {
        W::RunScheduled(s) => EventKind::RunScheduled(RunScheduled {
            trigger: trigger_from_wire(s.trigger),
            workflow: s.workflow,
            connection: s.connection,
            tenant: s.tenant,
            priority: s.priority,
            streams: s.streams,
            fire_at_unix_ms: s.fire_at_unix_ms,
        }),
        W::RunStarted(s) => EventKind::RunStarted(RunStarted {
            worker: s.worker,
            exclusive: s.exclusive,
            tenant_slots: s.tenant_slots,
        }),
        W::AttemptBegun(a) => EventKind::AttemptBegun(AttemptBegun {
            attempt: a.attempt,
            worker: a.worker,
            lease_until_unix_ms: a.lease_until_unix_ms,
        }),
        W::CheckpointCommitted(c) => EventKind::CheckpointCommitted(CheckpointCommitted {
            stream: c.stream,
            checkpoint: c.checkpoint,
            records: c.records,
            bytes: c.bytes,
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            attempt: c.attempt,
            deleted: c.deleted,
        }),
        W::StreamCompleted(s) => EventKind::StreamCompleted(StreamCompleted {
            stream: s.stream,
            full_refresh: s.full_refresh,
            attempt: s.attempt,
        }),
        W::AttemptFailed(f) => EventKind::AttemptFailed(AttemptFailed {
            attempt: f.attempt,
            kind: failure_from_wire(f.kind),
            message: f.message,
            retry_after_ms: f.retry_after_ms,
        }),
        W::RetryScheduled(r) => EventKind::RetryScheduled(RetryScheduled {
            attempt: r.attempt,
            not_before_unix_ms: r.not_before_unix_ms,
        }),
        W::RunCancelled(c) => EventKind::RunCancelled(RunCancelled { reason: c.reason }),
        W::RunCompleted(v1::RunCompleted {}) => EventKind::RunCompleted(RunCompleted {}),
        W::RunDeadLettered(d) => EventKind::RunDeadLettered(RunDeadLettered {
            kind: failure_from_wire(d.kind),
            message: d.message,
        }),
        W::ManualRetryRequested(m) => EventKind::ManualRetryRequested(ManualRetryRequested {
            requested_by: m.requested_by,
            not_before_unix_ms: m.not_before_unix_ms,
        }),
        W::Heartbeat(h) => EventKind::Heartbeat(Heartbeat {
            attempt: h.attempt,
            lease_until_unix_ms: h.lease_until_unix_ms,
        }),
    }
}

fn trigger_to_wire(t: Trigger) -> v1::Trigger {
    match t {
        Trigger::Manual => v1::Trigger::Manual,
        Trigger::Cron => v1::Trigger::Cron,
        Trigger::Interval => v1::Trigger::Interval,
        Trigger::Webhook => v1::Trigger::Webhook,
        Trigger::Recovery => v1::Trigger::Recovery,
    }
}

/// A stored trigger; one a log does not state (or a newer writer's) reads as manual.
fn trigger_from_wire(raw: i32) -> Trigger {
    match v1::Trigger::try_from(raw) {
        Ok(v1::Trigger::Cron) => Trigger::Cron,
        Ok(v1::Trigger::Interval) => Trigger::Interval,
        Ok(v1::Trigger::Webhook) => Trigger::Webhook,
        Ok(v1::Trigger::Recovery) => Trigger::Recovery,
        Ok(v1::Trigger::Manual | v1::Trigger::Unspecified) | Err(_) => Trigger::Manual,
    }
}

fn failure_to_wire(k: FailureKind) -> v1::ErrorKind {
    match k {
        FailureKind::Config => v1::ErrorKind::Config,
        FailureKind::Auth => v1::ErrorKind::Auth,
        FailureKind::RateLimited => v1::ErrorKind::RateLimited,
        FailureKind::Transient => v1::ErrorKind::Transient,
        FailureKind::Permanent => v1::ErrorKind::Permanent,
        FailureKind::Schema => v1::ErrorKind::Schema,
        FailureKind::Sandbox => v1::ErrorKind::Sandbox,
        FailureKind::Orchestration => v1::ErrorKind::Orchestration,
    }
}

/// A stored failure kind; one a log does not state (or a newer writer's) reads as
/// transient, which is retried as every unknown failure always was.
fn failure_from_wire(raw: i32) -> FailureKind {
    match v1::ErrorKind::try_from(raw) {
        Ok(v1::ErrorKind::Config) => FailureKind::Config,
        Ok(v1::ErrorKind::Auth) => FailureKind::Auth,
        Ok(v1::ErrorKind::RateLimited) => FailureKind::RateLimited,
        Ok(v1::ErrorKind::Permanent) => FailureKind::Permanent,
        Ok(v1::ErrorKind::Schema) => FailureKind::Schema,
        Ok(v1::ErrorKind::Sandbox) => FailureKind::Sandbox,
        Ok(v1::ErrorKind::Orchestration) => FailureKind::Orchestration,
        Ok(v1::ErrorKind::Transient | v1::ErrorKind::Unspecified) | Err(_) => {
            FailureKind::Transient
        }
    }
}

/// A run's summary as its stored record (without the events the record holds).
pub(crate) fn summary_to_wire(s: &RunSummary) -> v1::StoredRunSummary {
    v1::StoredRunSummary {
        workflow: s.workflow.clone(),
        connection: s.connection.clone(),
        tenant: s.tenant.clone(),
        priority: s.priority,
        status: status_to_wire(s.status) as i32,
        created_at_unix_ms: s.created_at_unix_ms,
        updated_at_unix_ms: s.updated_at_unix_ms,
        last_seq: s.last_seq,
        recent: Vec::new(),
        attempt: s.attempt,
        worker: s.worker.clone(),
        lease_until_unix_ms: s.lease_until_unix_ms,
    }
}

/// A stored summary record of `run_id`, or `None` if its status is unknown to this
/// version.
pub fn summary_from_wire(run_id: RunId, s: v1::StoredRunSummary) -> Option<RunSummary> {
    Some(RunSummary {
        run_id,
        status: status_from_wire(s.status)?,
        workflow: s.workflow,
        connection: s.connection,
        tenant: s.tenant,
        priority: s.priority,
        created_at_unix_ms: s.created_at_unix_ms,
        updated_at_unix_ms: s.updated_at_unix_ms,
        last_seq: s.last_seq,
        attempt: s.attempt,
        worker: s.worker,
        lease_until_unix_ms: s.lease_until_unix_ms,
    })
}

/// A status as the summary record stores it.
fn status_to_wire(s: StatusKind) -> v1::RunStatusKind {
    match s {
        StatusKind::Scheduled => v1::RunStatusKind::Scheduled,
        StatusKind::Running => v1::RunStatusKind::Running,
        StatusKind::RetryWaiting => v1::RunStatusKind::RetryWaiting,
        StatusKind::Completed => v1::RunStatusKind::Completed,
        StatusKind::DeadLettered => v1::RunStatusKind::DeadLettered,
        StatusKind::Cancelled => v1::RunStatusKind::Cancelled,
    }
}

/// A stored status, or `None` for one this version does not know.
fn status_from_wire(raw: i32) -> Option<StatusKind> {
    Some(match v1::RunStatusKind::try_from(raw).ok()? {
        v1::RunStatusKind::Unspecified => return None,
        v1::RunStatusKind::Scheduled => StatusKind::Scheduled,
        v1::RunStatusKind::Running => StatusKind::Running,
        v1::RunStatusKind::RetryWaiting => StatusKind::RetryWaiting,
        v1::RunStatusKind::Completed => StatusKind::Completed,
        v1::RunStatusKind::DeadLettered => StatusKind::DeadLettered,
        v1::RunStatusKind::Cancelled => StatusKind::Cancelled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_and_trigger_round_trips() {
        for kind in FailureKind::ALL {
            assert_eq!(failure_from_wire(failure_to_wire(kind) as i32), kind);
        }
        for t in [
            Trigger::Manual,
            Trigger::Cron,
            Trigger::Interval,
            Trigger::Webhook,
            Trigger::Recovery,
        ] {
            assert_eq!(trigger_from_wire(trigger_to_wire(t) as i32), t);
        }
        for s in StatusKind::ALL {
            assert_eq!(status_from_wire(status_to_wire(s) as i32), Some(s));
        }
    }

    #[test]
    fn unknown_values_read_as_the_closest_known_kind() {
        assert_eq!(failure_from_wire(0), FailureKind::Transient);
        assert_eq!(failure_from_wire(99), FailureKind::Transient);
        assert_eq!(trigger_from_wire(0), Trigger::Manual);
        assert_eq!(trigger_from_wire(99), Trigger::Manual);
        assert_eq!(status_from_wire(0), None);
        assert_eq!(status_from_wire(99), None);
    }

    #[test]
    fn every_event_kind_round_trips() {
        let run = RunId::v7(1, [7; 10]);
        let kinds = vec![
            EventKind::RunScheduled(RunScheduled {
                workflow: "w".into(),
                connection: "c".into(),
                tenant: "t".into(),
                priority: -3,
                streams: vec!["a".into(), "b".into()],
                trigger: Trigger::Cron,
                fire_at_unix_ms: 42,
            }),
            EventKind::RunStarted(RunStarted {
                worker: "n".into(),
                exclusive: true,
                tenant_slots: 4,
            }),
            EventKind::AttemptBegun(AttemptBegun {
                attempt: 2,
                worker: "n".into(),
                lease_until_unix_ms: 9,
            }),
            EventKind::CheckpointCommitted(CheckpointCommitted {
                stream: "a".into(),
                checkpoint: "cp".into(),
                records: 1,
                bytes: 2,
                created: 3,
                updated: 4,
                unchanged: 5,
                attempt: 6,
                deleted: 7,
            }),
            EventKind::StreamCompleted(StreamCompleted {
                stream: "a".into(),
                full_refresh: true,
                attempt: 2,
            }),
            EventKind::AttemptFailed(AttemptFailed {
                attempt: 2,
                kind: FailureKind::Sandbox,
                message: "m".into(),
                retry_after_ms: 11,
            }),
            EventKind::RetryScheduled(RetryScheduled {
                attempt: 3,
                not_before_unix_ms: 12,
            }),
            EventKind::RunCancelled(RunCancelled { reason: "r".into() }),
            EventKind::RunCompleted(RunCompleted {}),
            EventKind::RunDeadLettered(RunDeadLettered {
                kind: FailureKind::Auth,
                message: "m".into(),
            }),
            EventKind::ManualRetryRequested(ManualRetryRequested {
                requested_by: "op".into(),
                not_before_unix_ms: 13,
            }),
            EventKind::Heartbeat(Heartbeat {
                attempt: 3,
                lease_until_unix_ms: 14,
            }),
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let event = RunEvent::new(run, i as u64 + 1, 100 + i as i64, kind);
            let back = event_from_wire(run, event_to_wire(&event));
            assert_eq!(back, Ok(event));
        }
    }

    #[test]
    fn an_unknown_kind_or_another_runs_event_is_refused() {
        let run = RunId::v7(1, [7; 10]);
        let mut wire = event_to_wire(&RunEvent::new(
            run,
            3,
            0,
            EventKind::RunCompleted(RunCompleted {}),
        ));
        let other = RunId::v7(2, [7; 10]);
        assert_eq!(
            event_from_wire(other, wire.clone()),
            Err(FoldError::WrongRun { seq: 3 })
        );
        wire.kind = None;
        assert_eq!(
            event_from_wire(run, wire),
            Err(FoldError::UnknownEvent { seq: 3 })
        );
    }
}
