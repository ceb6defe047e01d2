//! The run log's check at open: every run's events are all there, without a gap,
//! from its first to the last its summary names.
//!
//! sled checksums what it writes, and a store that lost its latest flushes is told by
//! its high-water mark (`crate::sled::durable`); but damage in the middle of sled's
//! log can drop one page's later change and keep the rest, so a run comes back
//! without some of its events. A node must not start on that store. The check reads
//! every run's summary and the keys of its events (not the events themselves): one
//! pass over two trees, linear in the runs and batches of events stored.
//!
//! It never writes, and it runs before the committer starts.

use sled::Tree;

use super::keys::{Head, seqs_of_event_key};
use crate::log::LogError;
use sluice_model::RunId;

/// What the check went through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Checked {
    pub runs: u64,
    pub event_keys: u64,
}

/// Checks every run of `runs` against its `events` keys; the first damage found
/// is the error, naming the run and the seq.
pub(crate) fn check_runs(runs: &Tree, events: &Tree) -> Result<Checked, LogError> {
    let mut checked = Checked::default();
    for item in runs.iter() {
        let (key, raw) = item.map_err(LogError::storage)?;
        let Ok(id) = <[u8; 16]>::try_from(key.as_ref()) else {
            continue;
        };
        let run = RunId(id);
        let head = Head::decode(run, &raw).map_err(|e| damaged(e.to_string(), run, 0))?;
        let mut next = 1;
        for item in events.scan_prefix(run.0) {
            let (key, _) = item.map_err(LogError::storage)?;
            checked.event_keys += 1;
            let Some((first, last)) = seqs_of_event_key(&key) else {
                continue;
            };
            if first != next {
                return Err(missing(run, next, first));
            }
            next = last.unwrap_or(first) + 1;
        }
        for event in &head.recent {
            if event.seq != next {
                return Err(missing(run, next, event.seq));
            }
            next += 1;
        }
        let last = head.summary.last_seq;
        if next != last + 1 {
            return Err(damaged(
                format!(
                    "its summary names event {last} as its last, but the stored events end at {}",
                    next - 1
                ),
                run,
                next,
            ));
        }
        checked.runs += 1;
    }
    Ok(checked)
}

fn missing(run: RunId, seq: u64, found: u64) -> LogError {
    damaged(
        format!("the event is missing (the next one stored is {found})"),
        run,
        seq,
    )
}

fn damaged(reason: String, run: RunId, seq: u64) -> LogError {
    LogError::Corrupt {
        run,
        seq,
        reason: format!("the store's files are damaged: {reason}"),
    }
}
