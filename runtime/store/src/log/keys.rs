//! Key layouts of the log's sled trees and the run summary record.
//!
//! Owns the byte layout of keys (so that every tree sorts the way queries need) and
//! the conversion between the stored summary and [`RunSummary`]. Pure: it must never
//! touch storage.
//!
//! | tree                 | key                                        | value              |
//! |----------------------|--------------------------------------------|--------------------|
//! | `events`             | run id (16) ++ seq (u64 BE)                | encoded `RunEvent` |
//! | `events`             | run id ++ first seq ++ last seq (u64 BE)   | `StoredEventBatch` |
//! | `runs`               | run id (16)                                | `StoredRunSummary` (with the run's latest events) |
//! | `runs_by_workflow`   | workflow ++ 0x00 ++ run id                 | further run ids    |
//! | `runs_by_connection` | connection ++ 0x00 ++ run id               | further run ids    |
//! | `runs_by_tenant`     | tenant ++ 0x00 ++ run id                   | further run ids    |
//! | `runs_by_status`     | terminal status name ++ 0x00 ++ run id     | further run ids    |
//! | `runs_by_time`       | created at ms (i64, sign-flipped BE) ++ id | further run ids    |
//! | `runs_active`        | run id, for each run not in a terminal status below the watermark | empty |
//! | `log_meta`           | `active_from`                              | the watermark: a run id |
//!
//! Index values may not contain 0x00, so a prefix scan of `value ++ 0x00` finds
//! exactly that value's runs. An index key's value lists more runs with the same
//! index value (16 bytes each, ascending): one key per group of writes, see
//! `super::index`.

use super::events::{RunId, v1};
use super::fold::StatusKind;

/// Length of an `events` key.
pub(crate) const EVENT_KEY_LEN: usize = 24;

/// `events` key of (run, seq).
pub(crate) fn event_key(run: &RunId, seq: u64) -> [u8; EVENT_KEY_LEN] {
    let mut k = [0u8; EVENT_KEY_LEN];
    k[..16].copy_from_slice(&run.0);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Length of an `events` key holding a batch.
pub(crate) const EVENT_BATCH_KEY_LEN: usize = 32;

/// `events` key of the batch of `run`'s events `first..=last`. It sorts by `first`
/// among the single keys, so a prefix scan yields events in seq order.
pub(crate) fn event_batch_key(run: &RunId, first: u64, last: u64) -> [u8; EVENT_BATCH_KEY_LEN] {
    let mut k = [0u8; EVENT_BATCH_KEY_LEN];
    k[..EVENT_KEY_LEN].copy_from_slice(&event_key(run, first));
    k[EVENT_KEY_LEN..].copy_from_slice(&last.to_be_bytes());
    k
}

/// The seqs an `events` key holds: `(seq, None)` for a single event, `(first,
/// Some(last))` for a batch; `None` for a key of another length.
pub(crate) fn seqs_of_event_key(key: &[u8]) -> Option<(u64, Option<u64>)> {
    let u64_at = |at: usize| -> Option<u64> {
        let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    };
    match key.len() {
        EVENT_KEY_LEN => Some((u64_at(16)?, None)),
        EVENT_BATCH_KEY_LEN => Some((u64_at(16)?, Some(u64_at(EVENT_KEY_LEN)?))),
        _ => None,
    }
}

/// Prefix of all index keys of `value`.
pub(crate) fn index_prefix(value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 1);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// The run id at the end of an index key.
pub(crate) fn run_of_index_key(key: &[u8]) -> Option<RunId> {
    split_index_key(key).map(|(_, run)| run)
}

/// An index key's value prefix and the run id at its end.
pub(crate) fn split_index_key(key: &[u8]) -> Option<(&[u8], RunId)> {
    let (prefix, run) = key.split_at_checked(key.len().checked_sub(16)?)?;
    Some((prefix, RunId::from_slice(run)?))
}

/// Order-preserving bytes of a signed time.
pub(crate) fn time_bytes(unix_ms: i64) -> [u8; 8] {
    ((unix_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// A run as listed: its summary record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Workflow name.
    pub workflow: String,
    /// Connection name.
    pub connection: String,
    /// Tenant id.
    pub tenant: String,
    /// Priority.
    pub priority: i32,
    /// Current status.
    pub status: StatusKind,
    /// When scheduled (Unix ms).
    pub created_at_unix_ms: i64,
    /// When its last event was recorded.
    pub updated_at_unix_ms: i64,
    /// Seq of its last event.
    pub last_seq: u64,
}

pub(crate) fn status_to_proto(s: StatusKind) -> v1::RunStatusKind {
    match s {
        StatusKind::Scheduled => v1::RunStatusKind::Scheduled,
        StatusKind::Running => v1::RunStatusKind::Running,
        StatusKind::RetryWaiting => v1::RunStatusKind::RetryWaiting,
        StatusKind::Completed => v1::RunStatusKind::Completed,
        StatusKind::DeadLettered => v1::RunStatusKind::DeadLettered,
        StatusKind::Cancelled => v1::RunStatusKind::Cancelled,
    }
}

pub(crate) fn status_from_proto(raw: i32) -> Option<StatusKind> {
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

impl RunSummary {
    pub(crate) fn to_stored(&self) -> v1::StoredRunSummary {
        v1::StoredRunSummary {
            workflow: self.workflow.clone(),
            connection: self.connection.clone(),
            tenant: self.tenant.clone(),
            priority: self.priority,
            status: status_to_proto(self.status) as i32,
            created_at_unix_ms: self.created_at_unix_ms,
            updated_at_unix_ms: self.updated_at_unix_ms,
            last_seq: self.last_seq,
            recent: Vec::new(),
        }
    }

    pub(crate) fn from_stored(run_id: RunId, s: v1::StoredRunSummary) -> Option<Self> {
        Some(RunSummary {
            run_id,
            status: status_from_proto(s.status)?,
            workflow: s.workflow,
            connection: s.connection,
            tenant: s.tenant,
            priority: s.priority,
            created_at_unix_ms: s.created_at_unix_ms,
            updated_at_unix_ms: s.updated_at_unix_ms,
            last_seq: s.last_seq,
        })
    }
}

/// Which runs [`EventLog::list`](super::EventLog::list) returns: all given
/// conditions must hold. Results are ordered by run id (creation order for UUID v7
/// ids) when an equality condition is given, else by creation time; oldest first,
/// or newest first with `newest_first` (a limit then keeps the newest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this connection.
    pub connection: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this status.
    pub status: Option<StatusKind>,
    /// Only runs created at or after this time (Unix ms).
    pub created_from_unix_ms: Option<i64>,
    /// Only runs created before this time (Unix ms).
    pub created_before_unix_ms: Option<i64>,
    /// At most this many runs (0 means no limit).
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl RunFilter {
    /// Most runs to list (`limit`, where 0 means no limit).
    pub(crate) fn max_runs(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }

    /// Whether `s` satisfies every condition.
    pub fn matches(&self, s: &RunSummary) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == s.workflow)
            && self.connection.as_ref().is_none_or(|c| *c == s.connection)
            && self.tenant.as_ref().is_none_or(|t| *t == s.tenant)
            && self.status.is_none_or(|st| st == s.status)
            && self
                .created_from_unix_ms
                .is_none_or(|f| s.created_at_unix_ms >= f)
            && self
                .created_before_unix_ms
                .is_none_or(|b| s.created_at_unix_ms < b)
    }
}
