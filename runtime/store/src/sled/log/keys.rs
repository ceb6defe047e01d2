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

use prost::Message;
use sluice_model::RunId;

use crate::codec::v1;
use crate::log::{LogError, RunSummary};

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

/// A run's head: its summary and the events its summary record holds.
#[derive(Clone)]
pub(crate) struct Head {
    pub summary: RunSummary,
    /// Events stored in the summary record, not under keys of their own.
    pub recent: Vec<v1::RunEvent>,
}

impl Head {
    pub(crate) fn decode(run: RunId, raw: &[u8]) -> Result<Self, LogError> {
        let corrupt = |reason: String| LogError::CorruptSummary { run, reason };
        let mut stored = v1::StoredRunSummary::decode(raw).map_err(|e| corrupt(e.to_string()))?;
        let recent = std::mem::take(&mut stored.recent);
        let summary = crate::codec::summary_from_wire(run, stored)
            .ok_or_else(|| corrupt("unknown status".into()))?;
        Ok(Head { summary, recent })
    }
}

/// The watermark before and after one group of writes.
#[derive(Clone, Copy)]
pub(crate) struct Watermark {
    pub from: RunId,
    pub to: RunId,
}

impl Watermark {
    /// Whether the group moves it.
    pub(crate) fn moves(self) -> bool {
        self.to > self.from
    }

    /// Whether a run in flight with this id had a `runs_active` key before the group.
    pub(crate) fn keyed_before(self, run: RunId) -> bool {
        run < self.from
    }

    /// Whether a run in flight with this id has one after the group.
    pub(crate) fn keyed_after(self, run: RunId) -> bool {
        run < self.to
    }

    /// Whether a run in flight through the group gets its key in it.
    pub(crate) fn passes(self, run: RunId) -> bool {
        !self.keyed_before(run) && self.keyed_after(run)
    }
}
