//! Run events as tests write them: run ids of a known creation time and the events a
//! test appends most (a run scheduled, an attempt begun, a checkpoint). Pure data of
//! `sluice-model`, so the store's own tests use them without the rest of the kit.

use sluice_model::{AttemptBegun, CheckpointCommitted, EventKind, RunId, RunScheduled, Trigger};

/// A run id of creation time `1_700_000_000_000 + n` ms.
pub fn run_id(n: u8) -> RunId {
    RunId::v7(1_700_000_000_000 + u64::from(n), [n; 10])
}

/// `RunScheduled` of a run of `workflow` on `connection` of `tenant`, priority 1,
/// streams `users` and `orders`.
pub fn scheduled(workflow: &str, connection: &str, tenant: &str) -> EventKind {
    EventKind::RunScheduled(RunScheduled {
        workflow: workflow.into(),
        connection: connection.into(),
        tenant: tenant.into(),
        priority: 1,
        streams: vec!["users".into(), "orders".into()],
        trigger: Trigger::Manual,
        fire_at_unix_ms: 0,
    })
}

/// `AttemptBegun` of `attempt`.
pub fn begun(attempt: u32) -> EventKind {
    EventKind::AttemptBegun(AttemptBegun {
        attempt,
        ..Default::default()
    })
}

/// `CheckpointCommitted` of `records` new records of `stream` (200 bytes each), at
/// checkpoint `cp`, by attempt 1.
pub fn checkpoint(stream: &str, cp: &str, records: u64) -> EventKind {
    EventKind::CheckpointCommitted(CheckpointCommitted {
        stream: stream.into(),
        checkpoint: cp.into(),
        records,
        bytes: records * 200,
        created: records,
        attempt: 1,
        ..Default::default()
    })
}
